//! The process function's settings: [`Config::default`] works on a laptop
//! (PostgreSQL and Redis on localhost); the binary's flags and environment
//! variables override it field by field. Connection URLs are never printed.

use clap::{ArgAction, Parser};
use tributary_shared::config::{KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::results::RollupRetention;
use tributary_shared::topics;

/// Configuration of the process function.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "tributary-process",
    about = "Writes aggregates and alerts to PostgreSQL and keeps the Redis cache fresh",
    version
)]
pub struct Config {
    /// Where the ops endpoints (/healthz, /readyz, /metrics) listen.
    #[command(flatten)]
    pub listen: ListenArgs<8082>,

    /// Results store URL: PostgreSQL (`postgres://…`), or an SQLite file
    /// (`sqlite://PATH`) for a single-node setup.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value_t = Config::default().database_url)]
    pub database_url: String,

    /// Most PostgreSQL connections.
    #[arg(
        long,
        env = "TRIBUTARY_DATABASE_MAX_CONNECTIONS",
        default_value_t = Config::default().database_max_connections
    )]
    pub database_max_connections: u32,

    /// Run the migrations in `shared/migrations` on start (off when the deployment migrates).
    #[arg(long, env = "TRIBUTARY_MIGRATE", default_value_t = Config::default().migrate, action = ArgAction::Set)]
    pub migrate: bool,

    /// Password of the dashboard's read-only PostgreSQL role: when set, each
    /// start (after the migrations) lets that role log in with it, sent as a
    /// SCRAM verifier, so the role needs no hand-run SQL. Unset: the role is
    /// left as it is.
    #[arg(long, env = "TRIBUTARY_READONLY_PASSWORD", hide_env_values = true)]
    pub readonly_password: Option<String>,

    /// The dashboard's role (the migrations create `tributary_readonly`).
    #[arg(long, env = "TRIBUTARY_READONLY_ROLE", default_value_t = Config::default().readonly_role)]
    pub readonly_role: String,

    /// Redis connection URL (the cache; the function keeps writing to PostgreSQL when it is down).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value_t = Config::default().redis_url)]
    pub redis_url: String,

    /// Seconds cache entries live without being refreshed.
    #[arg(long, env = "TRIBUTARY_CACHE_TTL_SECS", default_value_t = Config::default().cache_ttl_secs)]
    pub cache_ttl_secs: u64,

    /// Between polls of the device registry's changes and of the alert
    /// rules, which are published to the devices and rules topics ingest and
    /// analyze follow (0: no relays here).
    #[arg(long, env = "TRIBUTARY_REGISTRY_RELAY_MS", default_value_t = Config::default().registry_relay_ms)]
    pub registry_relay_ms: u64,

    /// Most alerts in the cached "recent alerts" list.
    #[arg(long, env = "TRIBUTARY_RECENT_ALERTS", default_value_t = Config::default().recent_alerts)]
    pub recent_alerts: usize,

    /// Days aggregates are kept; older windows are deleted (0 keeps everything).
    #[arg(long, env = "TRIBUTARY_RETENTION_DAYS", default_value_t = Config::default().retention_days)]
    pub retention_days: u32,

    /// Seconds between runs of the rollup job, which recomputes the rollup
    /// tiers (1 min to 1 day) whose windows changed (0: no job; another
    /// replica or `tributary dev` may run it).
    #[arg(long, env = "TRIBUTARY_ROLLUP_INTERVAL_SECS", default_value_t = Config::default().rollup_interval_secs)]
    pub rollup_interval_secs: u64,

    /// How long each rollup tier is kept, e.g. `1m=90d,1h=2y,1d=forever`
    /// (tiers 1m, 5m, 15m, 1h, 6h, 1d; tiers not named keep their default).
    #[arg(long, env = "TRIBUTARY_ROLLUP_RETENTION", default_value_t = Config::default().rollup_retention)]
    pub rollup_retention: RollupRetention,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The pipeline's topics.
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Consumer group.
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value_t = Config::default().group)]
    pub group: String,

    /// Deliver alerts to the notification channels (a consumer group of its
    /// own on the alerts topic, see `notify`).
    #[arg(long, env = "TRIBUTARY_NOTIFY", default_value_t = Config::default().notify, action = ArgAction::Set)]
    pub notify: bool,

    /// The notifier's consumer group.
    #[arg(long, env = "TRIBUTARY_NOTIFY_GROUP", default_value_t = Config::default().notify_group)]
    pub notify_group: String,

    /// How long a notification is retried, from its first attempt, before
    /// it goes to its channel's dead letters (seconds).
    #[arg(long, env = "TRIBUTARY_NOTIFY_RETRY_FOR_SECS", default_value_t = Config::default().notify_retry_for_secs)]
    pub notify_retry_for_secs: u64,

    /// Most records per batch (one PostgreSQL transaction each).
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
            database_url: "postgres://postgres@127.0.0.1:5432/test".into(),
            database_max_connections: 4,
            migrate: true,
            readonly_password: None,
            readonly_role: tributary_shared::results::roles::READONLY_ROLE.into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            cache_ttl_secs: 86_400,
            recent_alerts: 100,
            registry_relay_ms: 500,
            retention_days: 30,
            rollup_interval_secs: 10,
            rollup_retention: RollupRetention::default(),
            kafka: KafkaArgs::default(),
            topics: TopicArgs::default(),
            group: topics::GROUP_PROCESS.into(),
            notify: true,
            notify_group: crate::notify::GROUP.into(),
            // A receiver down for a deploy or a restart still gets everything.
            notify_retry_for_secs: 15 * 60,
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
        let mut parsed = Config::parse_from(["tributary-process"]);
        // The test runner sets DATABASE_URL and REDIS_URL, and maybe RUST_LOG.
        let defaults = Config::default();
        parsed.database_url.clone_from(&defaults.database_url);
        parsed.redis_url.clone_from(&defaults.redis_url);
        parsed.log = LogArgs::default();
        assert_eq!(parsed, defaults);
    }
}
