//! Configuration fragments every function flattens into its own typed config
//! (clap `#[command(flatten)]`), read from flags and environment. Defaults
//! work against a broker on localhost; the KEDA manifests set the same names.

use clap::{ArgAction, Args};

/// How to reach the Kafka-protocol broker, and how hard to try.
#[derive(Args, Clone, Debug)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated `host:port`.
    #[arg(
        long = "kafka-brokers",
        env = "TRIBUTARY_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Extra librdkafka properties as `key=value`, comma-separated (for
    /// example `security.protocol=SASL_SSL,sasl.mechanism=PLAIN` for Event Hubs).
    #[arg(long = "kafka-option", env = "TRIBUTARY_KAFKA_OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,

    /// SASL password, kept out of `options` so it is never logged
    /// (for Event Hubs: the connection string).
    #[arg(
        long = "kafka-sasl-password",
        env = "TRIBUTARY_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,

    /// How long the producer keeps trying to deliver one record before
    /// reporting it failed (ingest then answers 503), in milliseconds.
    #[arg(
        long = "kafka-delivery-timeout-ms",
        env = "TRIBUTARY_KAFKA_DELIVERY_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub delivery_timeout_ms: u64,

    /// Most records waiting in the producer's queue; past it, publishes fail
    /// fast with "queue full" instead of buffering without bound.
    #[arg(
        long = "kafka-queue-max-messages",
        env = "TRIBUTARY_KAFKA_QUEUE_MAX_MESSAGES",
        default_value_t = 100_000
    )]
    pub queue_max_messages: u32,

    /// Create missing topics on start (off in production, where the
    /// deployment creates them).
    #[arg(long = "kafka-create-topics", env = "TRIBUTARY_KAFKA_CREATE_TOPICS", default_value_t = true, action = ArgAction::Set)]
    pub create_topics: bool,

    /// Partitions of topics created on start; also the most consumers KEDA
    /// can usefully run per group.
    #[arg(long = "kafka-partitions", env = "TRIBUTARY_KAFKA_PARTITIONS", default_value_t = crate::topics::DEFAULT_PARTITIONS)]
    pub partitions: i32,

    /// Replication factor of topics created on start.
    #[arg(long = "kafka-replication", env = "TRIBUTARY_KAFKA_REPLICATION", default_value_t = 1)]
    pub replication: i32,

    /// Prefix of the topics that keep offset-commit metadata (a consumer's
    /// checkpoint, such as analyze's watermark) on brokers that drop it
    /// (tansu 0.6): one single-partition compacted topic per consumer group,
    /// `<prefix><group>`, created (even with topic creation off) and written
    /// only after a commit's metadata did not come back from the broker.
    /// Apache Kafka and Event Hubs keep the metadata themselves and never
    /// need it.
    #[arg(long = "kafka-metadata-topic-prefix", env = "TRIBUTARY_KAFKA_METADATA_TOPIC_PREFIX", default_value = DEFAULT_METADATA_TOPIC_PREFIX)]
    pub metadata_topic_prefix: String,
}

/// Default of [`KafkaArgs::metadata_topic_prefix`].
pub const DEFAULT_METADATA_TOPIC_PREFIX: &str = "tributary.offset-metadata.";

impl Default for KafkaArgs {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            options: Vec::new(),
            sasl_password: None,
            delivery_timeout_ms: 5_000,
            queue_max_messages: 100_000,
            create_topics: true,
            partitions: crate::topics::DEFAULT_PARTITIONS,
            replication: 1,
            metadata_topic_prefix: DEFAULT_METADATA_TOPIC_PREFIX.into(),
        }
    }
}

/// Logging options.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, as `RUST_LOG` (e.g. `info,tributary_ingest=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub filter: String,

    /// Log format: `json` (one object per line, for collectors) or `text`.
    #[arg(long = "log-format", env = "TRIBUTARY_LOG_FORMAT", default_value = "json")]
    pub format: crate::telemetry::LogFormat,
}
