//! The argument groups every function's config flattens (clap
//! `#[command(flatten)]`): where to listen, the broker, the topic names,
//! Cosmos DB and logging. Each is a plain struct whose [`Default`] works on a laptop; the
//! flags and environment variables only override it, and their defaults are
//! read from that `Default`, so each default is written once. The KEDA
//! manifests set the same names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{ArgAction, Args};

use crate::raw::CosmosAuth;

/// Where a function serves HTTP (its API and the ops endpoints); `PORT` is
/// the function's own default port.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct ListenArgs<const PORT: u16> {
    /// Address to bind.
    #[arg(long = "bind", env = "TRIBUTARY_BIND", default_value_t = Self::default().bind)]
    pub bind: IpAddr,

    /// TCP port to listen on.
    #[arg(long = "port", env = "PORT", default_value_t = PORT)]
    pub port: u16,
}

impl<const PORT: u16> Default for ListenArgs<PORT> {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: PORT,
        }
    }
}

impl<const PORT: u16> ListenArgs<PORT> {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// How to reach the Kafka-protocol broker, and how hard to try.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated `host:port`.
    #[arg(long = "kafka-brokers", env = "TRIBUTARY_KAFKA_BROKERS", default_value_t = Self::default().brokers)]
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
        default_value_t = Self::default().delivery_timeout_ms
    )]
    pub delivery_timeout_ms: u64,

    /// Most records waiting in the producer's queue; past it, publishes fail
    /// fast with "queue full" instead of buffering without bound.
    #[arg(
        long = "kafka-queue-max-messages",
        env = "TRIBUTARY_KAFKA_QUEUE_MAX_MESSAGES",
        default_value_t = Self::default().queue_max_messages
    )]
    pub queue_max_messages: u32,

    /// Create missing topics on start (off in production, where the
    /// deployment creates them).
    #[arg(
        long = "kafka-create-topics",
        env = "TRIBUTARY_KAFKA_CREATE_TOPICS",
        default_value_t = Self::default().create_topics,
        action = ArgAction::Set
    )]
    pub create_topics: bool,

    /// Partitions of topics created on start; also the most consumers KEDA
    /// can usefully run per group.
    #[arg(long = "kafka-partitions", env = "TRIBUTARY_KAFKA_PARTITIONS", default_value_t = Self::default().partitions)]
    pub partitions: i32,

    /// Replication factor of topics created on start.
    #[arg(long = "kafka-replication", env = "TRIBUTARY_KAFKA_REPLICATION", default_value_t = Self::default().replication)]
    pub replication: i32,

    /// Prefix of the topics that keep offset-commit metadata (a consumer's
    /// checkpoint, such as analyze's watermark) on brokers that drop it
    /// (tansu 0.6): one single-partition compacted topic per consumer group,
    /// `<prefix><group>`, created (even with topic creation off) and written
    /// only after a commit's metadata did not come back from the broker.
    /// Apache Kafka and Event Hubs keep the metadata themselves and never
    /// need it.
    #[arg(
        long = "kafka-metadata-topic-prefix",
        env = "TRIBUTARY_KAFKA_METADATA_TOPIC_PREFIX",
        default_value_t = Self::default().metadata_topic_prefix
    )]
    pub metadata_topic_prefix: String,

    /// Least time between two offset commits of a consumer, in milliseconds:
    /// what batches made committable meanwhile is committed together (always
    /// before a revocation and a clean stop). A crash replays up to this much
    /// more; 0 commits after every batch.
    #[arg(
        long = "kafka-commit-every-ms",
        env = "TRIBUTARY_KAFKA_COMMIT_EVERY_MS",
        default_value_t = Self::default().commit_every_ms
    )]
    pub commit_every_ms: u64,
}

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
            metadata_topic_prefix: "tributary.offset-metadata.".into(),
            commit_every_ms: 1_000,
        }
    }
}

/// The pipeline's topic names: every Kafka-side function takes all four (so a
/// deployment renames a topic the same way everywhere) and uses those it
/// reads or writes.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct TopicArgs {
    /// Raw readings: ingest writes, archive and analyze read.
    #[arg(long = "raw-topic", env = "TRIBUTARY_RAW_TOPIC", default_value_t = Self::default().raw)]
    pub raw: String,

    /// Window aggregates: analyze writes, process reads.
    #[arg(long = "aggregates-topic", env = "TRIBUTARY_AGGREGATES_TOPIC", default_value_t = Self::default().aggregates)]
    pub aggregates: String,

    /// Alerts: analyze writes, process reads.
    #[arg(long = "alerts-topic", env = "TRIBUTARY_ALERTS_TOPIC", default_value_t = Self::default().alerts)]
    pub alerts: String,

    /// Records a consumer cannot handle, with the reason in their headers.
    #[arg(long = "deadletter-topic", env = "TRIBUTARY_DEADLETTER_TOPIC", default_value_t = Self::default().deadletter)]
    pub deadletter: String,

    /// The device registry's changes (compacted): ingest follows it.
    #[arg(long = "devices-topic", env = "TRIBUTARY_DEVICES_TOPIC", default_value_t = Self::default().devices)]
    pub devices: String,

    /// The alert rules (compacted): process publishes, analyze follows.
    #[arg(id = "rules_topic", long = "rules-topic", env = "TRIBUTARY_RULES_TOPIC", default_value_t = Self::default().rules)]
    pub rules: String,
}

impl Default for TopicArgs {
    fn default() -> Self {
        Self {
            raw: crate::topics::RAW.into(),
            aggregates: crate::topics::AGGREGATES.into(),
            alerts: crate::topics::ALERTS.into(),
            deadletter: crate::topics::DEADLETTER.into(),
            devices: crate::topics::DEVICES.into(),
            rules: crate::topics::RULES.into(),
        }
    }
}

/// The Azure region Cosmos DB clients prefer unless told otherwise.
pub const DEFAULT_COSMOS_REGION: &str = "South Central US";

/// Which Cosmos DB account, database and container hold the raw archive,
/// and how to authenticate: the same for the writer (archive) and the
/// reader (dashboard).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct CosmosArgs {
    /// Account endpoint, e.g. `https://acct.documents.azure.com:443/` (plain
    /// http only for a local emulator on localhost or 127.0.0.1).
    #[arg(long = "cosmos-endpoint", env = "TRIBUTARY_COSMOS_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Account key (with `--cosmos-auth key`); a read-only key is enough for readers.
    #[arg(long = "cosmos-key", env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// Authentication: `key`, or `identity` (workload identity on AKS, managed identity otherwise).
    #[arg(long = "cosmos-auth", env = "TRIBUTARY_COSMOS_AUTH", value_enum, default_value_t = Self::default().auth)]
    pub auth: CosmosAuth,

    /// Client id of a user-assigned managed identity (with `--cosmos-auth identity`).
    #[arg(long = "azure-client-id", env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// Preferred Azure region (routing hint for multi-region accounts).
    #[arg(long = "cosmos-region", env = "TRIBUTARY_COSMOS_REGION", default_value_t = Self::default().region)]
    pub region: String,

    /// Database name.
    #[arg(long = "cosmos-database", env = "TRIBUTARY_COSMOS_DATABASE", default_value_t = Self::default().database)]
    pub database: String,

    /// Container name (partition key `/deviceId`).
    #[arg(long = "cosmos-container", env = "TRIBUTARY_COSMOS_CONTAINER", default_value_t = Self::default().container)]
    pub container: String,
}

impl Default for CosmosArgs {
    fn default() -> Self {
        Self {
            endpoint: None,
            key: None,
            auth: CosmosAuth::Key,
            azure_client_id: None,
            region: DEFAULT_COSMOS_REGION.into(),
            database: "tributary".into(),
            container: "raw".into(),
        }
    }
}

#[cfg(feature = "cosmos")]
impl CosmosArgs {
    /// The store settings these arguments name, with the caller's request
    /// `timeout`, when an endpoint is set; builds the identity credential
    /// when asked for. Writer-only settings (TTL, concurrency) keep
    /// [`CosmosSettings`](crate::raw::cosmos::CosmosSettings)' defaults.
    pub fn settings(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Option<crate::raw::cosmos::CosmosSettings>, crate::raw::StoreError> {
        let Some(endpoint) = self.endpoint.clone().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        let credential = crate::raw::cosmos::credential(self.auth, self.key.clone(), self.azure_client_id.clone())?;
        let mut settings =
            crate::raw::cosmos::CosmosSettings::new(endpoint, credential, &self.database, &self.container);
        settings.timeout = timeout;
        settings.region.clone_from(&self.region);
        Ok(Some(settings))
    }
}

/// Logging options.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct LogArgs {
    /// Log filter, as `RUST_LOG` (e.g. `info,tributary_ingest=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value_t = Self::default().filter)]
    pub filter: String,

    /// Log format: `json` (one object per line, for collectors) or `text`.
    #[arg(long = "log-format", env = "TRIBUTARY_LOG_FORMAT", value_enum, default_value_t = Self::default().format)]
    pub format: crate::telemetry::LogFormat,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: crate::telemetry::LogFormat::Json,
        }
    }
}

impl LogArgs {
    /// Install the global log subscriber with these settings, and traces
    /// when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for them (see
    /// [`crate::telemetry::trace`]); keep the guard until the process ends.
    pub fn init(&self) -> Result<crate::telemetry::TelemetryGuard, crate::telemetry::trace::TraceError> {
        crate::telemetry::init(&self.filter, self.format, &crate::telemetry::binary_name())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct All {
        #[command(flatten)]
        listen: ListenArgs<8099>,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        topics: TopicArgs,
        #[command(flatten)]
        cosmos: CosmosArgs,
        #[command(flatten)]
        log: LogArgs,
    }

    /// The flags' defaults are the structs' `Default`s.
    #[test]
    fn flag_defaults_are_the_struct_defaults() {
        for var in [
            "PORT",
            "TRIBUTARY_BIND",
            "TRIBUTARY_KAFKA_BROKERS",
            "TRIBUTARY_COSMOS_DATABASE",
        ] {
            assert!(
                std::env::var_os(var).is_none(),
                "{var} is set: this test reads the flags' defaults"
            );
        }
        let all = All::parse_from(["test"]);
        assert_eq!(all.listen, ListenArgs::<8099>::default());
        assert_eq!(all.listen.addr().port(), 8099);
        assert_eq!(all.kafka, KafkaArgs::default());
        assert_eq!(all.topics, TopicArgs::default());
        assert_eq!(all.cosmos, CosmosArgs::default());
        // RUST_LOG may be set by whoever runs the tests; only its default is ours.
        let log = LogArgs {
            filter: std::env::var("RUST_LOG").unwrap_or(LogArgs::default().filter),
            ..LogArgs::default()
        };
        assert_eq!(all.log, log);
        let set = All::parse_from([
            "test",
            "--port",
            "1",
            "--kafka-create-topics",
            "false",
            "--cosmos-auth",
            "identity",
        ]);
        assert_eq!(set.listen.port, 1);
        assert!(!set.kafka.create_topics);
        assert_eq!(set.cosmos.auth, CosmosAuth::Identity);
    }
}
