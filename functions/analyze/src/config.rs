//! The analyze function's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::Parser;
use tributary_shared::config::{KafkaArgs, LogArgs};
use tributary_shared::topics;

/// Configuration of the analyze function.
#[derive(Parser, Clone, Debug)]
#[command(name = "tributary-analyze", about = "Windows, anomaly models and alerts over telemetry.raw", version)]
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
        for text in self.rules.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let rule = crate::detect::rules::Rule::parse(text).map_err(|e| e.to_string())?;
            a.detectors.rules.push(rule);
        }
        Ok(a)
    }
}
