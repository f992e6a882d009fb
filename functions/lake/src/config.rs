//! The lake function's settings: [`Config::default`] works on a laptop (a
//! `lake` directory beside it); the binary's flags and environment variables
//! override it field by field.

use clap::Parser;
use tributary_shared::config::{KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::topics;

/// Configuration of the lake function (`tributary-lake`).
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "tributary-lake",
    about = "Keeps every raw reading and aggregate in Delta Lake tables (Parquet) for data scientists",
    version
)]
pub struct Config {
    /// Where the ops endpoints (/healthz, /readyz, /metrics) listen.
    #[command(flatten)]
    pub listen: ListenArgs<8085>,

    /// Where the tables live: a directory, or
    /// `abfss://<container>@<account>.dfs.core.windows.net/<path>` (credentials
    /// from the AZURE_* environment, e.g. AKS workload identity). The tables
    /// are `<url>/raw` and `<url>/aggregates`.
    #[arg(long, env = "TRIBUTARY_LAKE_URL", default_value_t = Config::default().lake_url)]
    pub lake_url: String,

    /// Roll the open files into the tables once this many MB of records are
    /// buffered (over every partition of both tables).
    #[arg(long, env = "TRIBUTARY_LAKE_ROLL_MB", default_value_t = Config::default().roll_mb)]
    pub roll_mb: u64,

    /// Roll the open files into the tables once the oldest buffered record
    /// is this many seconds old: how soon data is queryable.
    #[arg(long, env = "TRIBUTARY_LAKE_ROLL_SECS", default_value_t = Config::default().roll_secs)]
    pub roll_secs: u64,

    /// Seconds between compactions of the tables: the small files of a
    /// finished hour merged into one (0: never). Done by the member that owns
    /// partition 0 of a table's topic.
    #[arg(long, env = "TRIBUTARY_LAKE_COMPACT_SECS", default_value_t = Config::default().compact_secs)]
    pub compact_secs: u64,

    /// Least number of small files in an hour's partition worth merging.
    #[arg(long, env = "TRIBUTARY_LAKE_COMPACT_MIN_FILES", default_value_t = Config::default().compact_min_files)]
    pub compact_min_files: usize,

    /// Part of the tables' writer ids (Delta `txn` appIds), which say up to
    /// which offset each Kafka partition is in the table. Set a new one when
    /// the topics are recreated (their offsets start again at 0).
    #[arg(long, env = "TRIBUTARY_LAKE_EPOCH", default_value_t = Config::default().epoch)]
    pub epoch: String,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The pipeline's topics.
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Consumer group (KEDA scales on its lag).
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value_t = Config::default().group)]
    pub group: String,

    /// Most records per batch.
    #[arg(long, env = "TRIBUTARY_BATCH_MAX", default_value_t = Config::default().batch_max)]
    pub batch_max: usize,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenArgs::default(),
            lake_url: "lake".into(),
            roll_mb: 128,
            roll_secs: 300,
            compact_secs: 600,
            compact_min_files: 8,
            epoch: "0".into(),
            kafka: KafkaArgs::default(),
            topics: TopicArgs::default(),
            group: topics::GROUP_LAKE.into(),
            batch_max: 1000,
            log: LogArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default() {
        let mut parsed = Config::parse_from(["tributary-lake"]);
        // The test runner may set RUST_LOG.
        parsed.log = LogArgs::default();
        assert_eq!(parsed, Config::default());
    }
}
