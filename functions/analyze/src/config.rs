//! The analyze function's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::Parser;
use tributary_shared::config::{KafkaArgs, LogArgs};
use tributary_shared::topics;

/// Configuration of the analyze function.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tributary-analyze",
    about = "Windows, anomaly models and alerts over telemetry.raw",
    version
)]
pub struct Config {
    /// Port of the ops endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "PORT", default_value_t = 8084)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic of raw readings.
    #[arg(long, env = "TRIBUTARY_RAW_TOPIC", default_value = topics::RAW)]
    pub raw_topic: String,

    /// Topic window aggregates are published to.
    #[arg(long, env = "TRIBUTARY_AGGREGATES_TOPIC", default_value = topics::AGGREGATES)]
    pub aggregates_topic: String,

    /// Topic alerts are published to.
    #[arg(long, env = "TRIBUTARY_ALERTS_TOPIC", default_value = topics::ALERTS)]
    pub alerts_topic: String,

    /// Topic for records that are not readings.
    #[arg(long, env = "TRIBUTARY_DEADLETTER_TOPIC", default_value = topics::DEADLETTER)]
    pub deadletter_topic: String,

    /// Consumer group.
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value = topics::GROUP_ANALYZE)]
    pub group: String,

    /// Tumbling window sizes in seconds, comma-separated.
    #[arg(long, env = "TRIBUTARY_WINDOWS", value_delimiter = ',', default_value = "10,60")]
    pub windows: Vec<u32>,

    /// Seconds a reading may arrive behind its partition's newest event time
    /// and still join its window (later ones are counted as late).
    #[arg(long, env = "TRIBUTARY_ALLOWED_LATENESS_SECS", default_value_t = 5)]
    pub allowed_lateness_secs: i64,

    /// Seconds a partition must be quiet (time spent polling without a record
    /// from it) before its windows close anyway: its event clock then runs on
    /// from its newest event time at wall-clock speed, and windows that
    /// watermark passes are published and their offsets committed. Readings
    /// arriving later for those windows count as late. 0 turns this off
    /// (quiet partitions keep their last windows open until data comes).
    #[arg(long, env = "TRIBUTARY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub idle_timeout_secs: u64,

    /// Seconds of event time without a reading after which a (device, metric)
    /// series' model and alert state is evicted (its windows have closed by
    /// then); a returning device starts with cold models. 0: never evict for
    /// idleness.
    #[arg(long, env = "TRIBUTARY_SERIES_IDLE_SECS", default_value_t = 3600)]
    pub series_idle_secs: u64,

    /// Most (device, metric) series with model state (about 35 KiB each);
    /// beyond it the least recently updated are evicted, counted in
    /// `tributary_analyze_series_evicted_total{reason="cap"}` and logged. 0: no cap.
    #[arg(long, env = "TRIBUTARY_MAX_SERIES", default_value_t = 100_000)]
    pub max_series: usize,

    /// Threshold rules, `;`-separated, e.g. `temperature > 90 for 30s; vibration >= 2`.
    #[arg(long, env = "TRIBUTARY_RULES", default_value = "")]
    pub rules: String,

    /// Splunk HTTP Event Collector base URL; when set, aggregates and alerts are forwarded.
    #[arg(long, env = "TRIBUTARY_SPLUNK_URL")]
    pub splunk_url: Option<String>,

    /// Splunk HEC token.
    #[arg(long, env = "TRIBUTARY_SPLUNK_TOKEN", hide_env_values = true, default_value = "")]
    pub splunk_token: String,

    /// Splunk indexer acknowledgement channel (a GUID); unset sends without acks.
    #[arg(long, env = "TRIBUTARY_SPLUNK_CHANNEL")]
    pub splunk_channel: Option<String>,

    /// Most records per batch.
    #[arg(long, env = "TRIBUTARY_BATCH_MAX", default_value_t = 1000)]
    pub batch_max: usize,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// The documented defaults, ignoring the environment (tests, all-in-one mode).
    pub fn defaults() -> Self {
        let mut c = Self::parse_from(["tributary-analyze"]);
        c.kafka = KafkaArgs::default();
        c.raw_topic = topics::RAW.into();
        c.aggregates_topic = topics::AGGREGATES.into();
        c.alerts_topic = topics::ALERTS.into();
        c.deadletter_topic = topics::DEADLETTER.into();
        c.group = topics::GROUP_ANALYZE.into();
        c.splunk_url = None;
        c
    }

    /// The analyzer's settings from this config; a rule that does not parse is an error naming it.
    pub fn analyzer(&self) -> Result<crate::engine::AnalyzerConfig, String> {
        let mut a = crate::engine::AnalyzerConfig::default();
        a.windows.sizes_seconds = self.windows.clone();
        a.windows.allowed_lateness = chrono::Duration::seconds(self.allowed_lateness_secs.max(0));
        a.idle_timeout = (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs));
        a.series.idle = chrono::Duration::seconds(
            i64::try_from(self.series_idle_secs)
                .unwrap_or(i64::MAX / 1000)
                .min(i64::MAX / 1000),
        );
        a.series.max = self.max_series;
        for text in self.rules.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let rule = crate::detect::rules::Rule::parse(text).map_err(|e| e.to_string())?;
            a.detectors.rules.push(rule);
        }
        Ok(a)
    }
}
