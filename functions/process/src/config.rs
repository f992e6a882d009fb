//! The process function's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::{ArgAction, Parser};
use tributary_shared::config::{KafkaArgs, LogArgs};
use tributary_shared::topics;

/// Configuration of the process function.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tributary-process",
    about = "Writes aggregates and alerts to PostgreSQL and keeps the Redis cache fresh",
    version
)]
pub struct Config {
    /// Port of the ops endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "PORT", default_value_t = 8082)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Results store URL: PostgreSQL (`postgres://…`), or an SQLite file
    /// (`sqlite://PATH`) for a single-node setup.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,

    /// Most PostgreSQL connections.
    #[arg(long, env = "TRIBUTARY_DATABASE_MAX_CONNECTIONS", default_value_t = 4)]
    pub database_max_connections: u32,

    /// Run the migrations in `shared/migrations` on start (off when the deployment migrates).
    #[arg(long, env = "TRIBUTARY_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub migrate: bool,

    /// Redis connection URL (the cache; the function keeps writing to PostgreSQL when it is down).
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Seconds cache entries live without being refreshed.
    #[arg(long, env = "TRIBUTARY_CACHE_TTL_SECS", default_value_t = 86_400)]
    pub cache_ttl_secs: u64,

    /// Most alerts in the cached "recent alerts" list.
    #[arg(long, env = "TRIBUTARY_RECENT_ALERTS", default_value_t = 100)]
    pub recent_alerts: usize,

    /// Days aggregates are kept; older windows are deleted (0 keeps everything).
    #[arg(long, env = "TRIBUTARY_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic of window aggregates.
    #[arg(long, env = "TRIBUTARY_AGGREGATES_TOPIC", default_value = topics::AGGREGATES)]
    pub aggregates_topic: String,

    /// Topic of alerts.
    #[arg(long, env = "TRIBUTARY_ALERTS_TOPIC", default_value = topics::ALERTS)]
    pub alerts_topic: String,

    /// Topic for records that cannot be stored.
    #[arg(long, env = "TRIBUTARY_DEADLETTER_TOPIC", default_value = topics::DEADLETTER)]
    pub deadletter_topic: String,

    /// Consumer group.
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value = topics::GROUP_PROCESS)]
    pub group: String,

    /// Most records per batch (one PostgreSQL transaction each).
    #[arg(long, env = "TRIBUTARY_BATCH_MAX", default_value_t = 1000)]
    pub batch_max: usize,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// The documented defaults, ignoring the environment (for tests and the all-in-one mode).
    pub fn defaults() -> Self {
        let mut c = Self::parse_from(["tributary-process"]);
        c.kafka = KafkaArgs::default();
        c.aggregates_topic = topics::AGGREGATES.into();
        c.alerts_topic = topics::ALERTS.into();
        c.deadletter_topic = topics::DEADLETTER.into();
        c.group = topics::GROUP_PROCESS.into();
        c
    }
}
