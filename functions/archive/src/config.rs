//! The archive function's settings: [`Config::default`] works on a laptop
//! (it archives to nothing until a store is given: the binary requires
//! `TRIBUTARY_COSMOS_ENDPOINT`); the binary's flags and environment
//! variables override it field by field. The Cosmos key is never printed.

use clap::{ArgAction, Parser};
use tributary_shared::config::{CosmosArgs, KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::topics;

/// Configuration of the archive function (`tributary-archive`).
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "tributary-archive",
    about = "Archives every raw reading in Azure Cosmos DB",
    version
)]
pub struct Config {
    /// Where the ops endpoints (/healthz, /readyz, /metrics) listen.
    #[command(flatten)]
    pub listen: ListenArgs<8083>,

    /// The Cosmos DB account, database and container of the archive.
    #[command(flatten)]
    pub cosmos: CosmosArgs,

    /// Seconds a raw reading is kept (container default TTL and per-document
    /// `ttl`); 0 keeps readings forever.
    #[arg(long, env = "TRIBUTARY_COSMOS_TTL_SECS", default_value_t = Config::default().cosmos_ttl_secs)]
    pub cosmos_ttl_secs: u32,

    /// Create the database and container on start when missing (off in
    /// production, and impossible with identity auth: the deployment creates them).
    #[arg(long, env = "TRIBUTARY_COSMOS_CREATE", default_value_t = Config::default().cosmos_create, action = ArgAction::Set)]
    pub cosmos_create: bool,

    /// Most upserts in flight at once.
    #[arg(long, env = "TRIBUTARY_COSMOS_CONCURRENCY", default_value_t = Config::default().cosmos_concurrency)]
    pub cosmos_concurrency: usize,

    /// Longest wait for one Cosmos request, milliseconds (then it counts as a timeout and is retried).
    #[arg(long, env = "TRIBUTARY_COSMOS_TIMEOUT_MS", default_value_t = Config::default().cosmos_timeout_ms)]
    pub cosmos_timeout_ms: u64,

    /// Tries of a record that fails on its own (while others of its batch are
    /// stored) before it is dead-lettered. Outages never count.
    #[arg(long, env = "TRIBUTARY_COSMOS_MAX_ATTEMPTS", default_value_t = Config::default().max_attempts)]
    pub max_attempts: u32,

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
            cosmos: CosmosArgs::default(),
            cosmos_ttl_secs: 0,
            cosmos_create: true,
            cosmos_concurrency: 16,
            cosmos_timeout_ms: 10_000,
            max_attempts: 5,
            kafka: KafkaArgs::default(),
            topics: TopicArgs::default(),
            group: topics::GROUP_ARCHIVE.into(),
            batch_max: 500,
            log: LogArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default() {
        let mut parsed = Config::parse_from(["tributary-archive"]);
        // The test runner sets the Cosmos stand-in's endpoint and key, and maybe RUST_LOG.
        parsed.cosmos = CosmosArgs::default();
        parsed.log = LogArgs::default();
        assert_eq!(parsed, Config::default());
    }
}
