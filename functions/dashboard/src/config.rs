//! The dashboard's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::Parser;
use tributary_shared::config::LogArgs;

/// Configuration of the dashboard function.
#[derive(Parser, Clone, Debug)]
#[command(name = "tributary-dashboard", about = "Web UI and JSON API for the fleet: overview, device charts, alerts", version)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8081)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Results store URL (history: aggregates, alerts, devices): PostgreSQL
    /// (`postgres://…`) or an SQLite file (`sqlite://PATH`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub database_url: String,

    /// Redis connection URL (hot data and live change notifications).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Token operators present to acknowledge or resolve alerts
    /// (`Authorization: Bearer <token>`). Unset: the dashboard is read-only.
    #[arg(long, env = "TRIBUTARY_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Seconds since its last window after which a device counts as offline.
    #[arg(long, env = "TRIBUTARY_OFFLINE_AFTER_SECS", default_value_t = 300)]
    pub offline_after_secs: i64,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// The documented defaults, ignoring the environment (tests, all-in-one mode).
    pub fn defaults() -> Self {
        let mut c = Self::parse_from(["tributary-dashboard"]);
        c.operator_token = None;
        c
    }
}
