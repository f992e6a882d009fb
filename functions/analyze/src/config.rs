//! The analyze function's settings: [`Config::default`] works on a laptop
//! and takes the model defaults from [`AnalyzerConfig::default`]; the
//! binary's flags and environment variables override it field by field.

use clap::Parser;
use tributary_shared::config::{KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::topics;

use crate::detect::rules::{Rule, RuleError};
use crate::engine::AnalyzerConfig;

/// Configuration of the analyze function.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "tributary-analyze",
    about = "Windows, anomaly models and alerts over telemetry.raw",
    version
)]
pub struct Config {
    /// Where the ops endpoints (/healthz, /readyz, /metrics) listen.
    #[command(flatten)]
    pub listen: ListenArgs<8084>,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The pipeline's topics.
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Consumer group.
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value_t = Config::default().group)]
    pub group: String,

    /// Tumbling window sizes in seconds, comma-separated.
    #[arg(long, env = "TRIBUTARY_WINDOWS", value_delimiter = ',', default_values_t = Config::default().windows)]
    pub windows: Vec<u32>,

    /// Seconds a reading may arrive behind its partition's newest event time
    /// and still join its window (later ones are counted as late).
    #[arg(long, env = "TRIBUTARY_ALLOWED_LATENESS_SECS", default_value_t = Config::default().allowed_lateness_secs)]
    pub allowed_lateness_secs: i64,

    /// Seconds a partition must be quiet (time spent polling without a record
    /// from it) before its windows close anyway: its event clock then runs on
    /// from its newest event time at wall-clock speed, and windows that
    /// watermark passes are published and their offsets committed. Readings
    /// arriving later for those windows count as late. 0 turns this off
    /// (quiet partitions keep their last windows open until data comes).
    #[arg(long, env = "TRIBUTARY_IDLE_TIMEOUT_SECS", default_value_t = Config::default().idle_timeout_secs)]
    pub idle_timeout_secs: u64,

    /// Seconds of event time without a reading after which a (device, metric)
    /// series' model and alert state is evicted (its windows have closed by
    /// then); a returning device starts with cold models. 0: never evict for
    /// idleness.
    #[arg(long, env = "TRIBUTARY_SERIES_IDLE_SECS", default_value_t = Config::default().series_idle_secs)]
    pub series_idle_secs: u64,

    /// Most (device, metric) series with model state (about 35 KiB each);
    /// beyond it the least recently updated are evicted, counted in
    /// `tributary_analyze_series_evicted_total{reason="cap"}` and logged. 0: no cap.
    #[arg(long, env = "TRIBUTARY_MAX_SERIES", default_value_t = Config::default().max_series)]
    pub max_series: usize,

    /// Threshold rules, `;`-separated, e.g. `temperature > 90 for 30s; vibration >= 2`:
    /// the default for every device group without rules in the rule store.
    #[arg(long, env = "TRIBUTARY_RULES", default_value_t = Config::default().rules)]
    pub rules: String,

    /// Follow the rule store's rules (topic `tributary.rules`) and the
    /// device registry's groups (`tributary.devices`), applying rules per
    /// group from the next reading after a change. Off: `TRIBUTARY_RULES`
    /// applies to every device.
    #[arg(long, env = "TRIBUTARY_FOLLOW_RULES", default_value_t = Config::default().follow_rules, action = clap::ArgAction::Set)]
    pub follow_rules: bool,

    /// Splunk HTTP Event Collector base URL; when set, aggregates and alerts are forwarded.
    #[arg(long, env = "TRIBUTARY_SPLUNK_URL")]
    pub splunk_url: Option<String>,

    /// Splunk HEC token.
    #[arg(long, env = "TRIBUTARY_SPLUNK_TOKEN", hide_env_values = true, default_value_t = Config::default().splunk_token)]
    pub splunk_token: String,

    /// Splunk indexer acknowledgement channel (a GUID); unset sends without acks.
    #[arg(long, env = "TRIBUTARY_SPLUNK_CHANNEL")]
    pub splunk_channel: Option<String>,

    /// PEM file of CA certificates to trust for the HEC endpoint besides the
    /// system's (Splunk's own CA, or a site's internal one).
    #[arg(long, env = "TRIBUTARY_SPLUNK_CA_FILE")]
    pub splunk_ca_file: Option<std::path::PathBuf>,

    /// Compacted topic that model and alert state is snapshotted to, so that
    /// a new owner of a partition (after a crash, restart or rebalance)
    /// continues with warm models and open incidents instead of starting
    /// cold. It needs a partition per input partition; created (compacted)
    /// if missing, even with topic creation off. Empty: `<group>.state`, so
    /// two pipelines on one cluster never read each other's state.
    #[arg(long, env = "TRIBUTARY_ANALYZE_STATE_TOPIC", default_value_t = Config::default().state_topic)]
    pub state_topic: String,

    /// Seconds between snapshots of the state. Offsets are committed only up
    /// to the newest snapshot, so a new owner re-reads up to this much more.
    /// 0: no snapshots (a new owner's models start cold).
    #[arg(long, env = "TRIBUTARY_SNAPSHOT_EVERY_SECS", default_value_t = Config::default().snapshot_every_secs)]
    pub snapshot_every_secs: u64,

    /// Most records per batch.
    #[arg(long, env = "TRIBUTARY_BATCH_MAX", default_value_t = Config::default().batch_max)]
    pub batch_max: usize,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Default for Config {
    fn default() -> Self {
        let models = AnalyzerConfig::default();
        Self {
            listen: ListenArgs::default(),
            kafka: KafkaArgs::default(),
            topics: TopicArgs::default(),
            group: topics::GROUP_ANALYZE.into(),
            windows: models.windows.sizes_seconds,
            allowed_lateness_secs: models.windows.allowed_lateness.num_seconds(),
            idle_timeout_secs: models.idle_timeout.map_or(0, |d| d.as_secs()),
            series_idle_secs: u64::try_from(models.series.idle.num_seconds()).unwrap_or(0),
            max_series: models.series.max,
            rules: String::new(),
            follow_rules: true,
            splunk_url: None,
            splunk_token: String::new(),
            splunk_channel: None,
            splunk_ca_file: None,
            state_topic: String::new(),
            snapshot_every_secs: 30,
            batch_max: 1000,
            log: LogArgs::default(),
        }
    }
}

impl Config {
    /// The state topic snapshots go to, `None` when they are off.
    pub fn state_topic(&self) -> Option<String> {
        if self.snapshot_every_secs == 0 {
            return None;
        }
        Some(if self.state_topic.is_empty() {
            format!("{}{}", self.group, topics::STATE_SUFFIX)
        } else {
            self.state_topic.clone()
        })
    }

    /// The analyzer's settings from this config; a rule that does not parse is an error naming it.
    pub fn analyzer(&self) -> Result<AnalyzerConfig, RuleError> {
        let mut a = AnalyzerConfig::default();
        a.windows.sizes_seconds.clone_from(&self.windows);
        a.windows.allowed_lateness = chrono::Duration::seconds(self.allowed_lateness_secs.max(0));
        a.idle_timeout = (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs));
        a.series.idle = chrono::Duration::seconds(
            i64::try_from(self.series_idle_secs)
                .unwrap_or(i64::MAX / 1000)
                .min(i64::MAX / 1000),
        );
        a.series.max = self.max_series;
        for text in self.rules.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            a.detectors.rules.push(Rule::parse(text)?);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default() {
        let mut parsed = Config::parse_from(["tributary-analyze"]);
        // Whoever runs the tests may set RUST_LOG; everything else must come from `Default`.
        parsed.log = LogArgs::default();
        assert_eq!(parsed, Config::default());
        assert!(Config::default().analyzer().is_ok());
    }

    #[test]
    fn the_state_topic_is_named_after_the_group_unless_set() {
        let c = Config {
            group: "fleet-a".into(),
            ..Config::default()
        };
        assert_eq!(c.state_topic().as_deref(), Some("fleet-a.state"));
        let set = Config {
            state_topic: "mine".into(),
            ..c
        };
        assert_eq!(set.state_topic().as_deref(), Some("mine"));
        let off = Config {
            snapshot_every_secs: 0,
            ..set
        };
        assert_eq!(off.state_topic(), None);
    }

    #[test]
    fn a_bad_rule_is_an_error_naming_it() {
        let config = Config {
            rules: "temperature > 90; vibration >> 2".into(),
            ..Config::default()
        };
        let e = config.analyzer().expect_err("the second rule does not parse");
        assert!(e.to_string().contains("vibration"), "{e}");
    }
}
