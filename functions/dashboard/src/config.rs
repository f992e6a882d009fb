//! The dashboard's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::Parser;
use tributary_shared::config::LogArgs;
use tributary_shared::raw::CosmosAuth;

/// Configuration of the dashboard function.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tributary-dashboard",
    about = "Web UI and JSON API for the fleet: overview, device charts, alerts",
    version
)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8081)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Results store URL (history: aggregates, alerts, devices): PostgreSQL
    /// (`postgres://…`) or an SQLite file (`sqlite://PATH`).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,

    /// Redis connection URL (hot data and live change notifications).
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Cosmos DB account endpoint of the raw archive, for a device's raw
    /// readings on its charts (plain http only for a local emulator).
    /// Unset: the page shows window aggregates only.
    #[arg(long, env = "TRIBUTARY_COSMOS_ENDPOINT")]
    pub cosmos_endpoint: Option<String>,

    /// Account key (with `--cosmos-auth key`); a read-only key is enough.
    #[arg(long, env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    pub cosmos_key: Option<String>,

    /// Authentication to Cosmos DB: `key` or `identity` (workload or managed identity).
    #[arg(long, env = "TRIBUTARY_COSMOS_AUTH", value_enum, default_value_t = CosmosAuth::Key)]
    pub cosmos_auth: CosmosAuth,

    /// Client id of a user-assigned managed identity (with `--cosmos-auth identity`).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// Cosmos DB database of the raw archive.
    #[arg(long, env = "TRIBUTARY_COSMOS_DATABASE", default_value = "tributary")]
    pub cosmos_database: String,

    /// Cosmos DB container of the raw archive (partition key `/deviceId`).
    #[arg(long, env = "TRIBUTARY_COSMOS_CONTAINER", default_value = "raw")]
    pub cosmos_container: String,

    /// Preferred Azure region (routing hint for multi-region accounts).
    #[arg(long, env = "TRIBUTARY_COSMOS_REGION", default_value = "South Central US")]
    pub cosmos_region: String,

    /// Longest wait for one Cosmos DB request, milliseconds.
    #[arg(long, env = "TRIBUTARY_COSMOS_TIMEOUT_MS", default_value_t = 5_000)]
    pub cosmos_timeout_ms: u64,

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
        c.cosmos_endpoint = None;
        c.cosmos_key = None;
        c
    }

    /// The raw archive's settings, when an endpoint is configured.
    pub fn cosmos_settings(
        &self,
    ) -> Result<Option<tributary_shared::raw::cosmos::CosmosSettings>, tributary_shared::raw::StoreError> {
        let Some(endpoint) = self.cosmos_endpoint.clone().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(tributary_shared::raw::cosmos::CosmosSettings {
            endpoint,
            credential: tributary_shared::raw::cosmos::credential(
                self.cosmos_auth,
                self.cosmos_key.clone(),
                self.azure_client_id.clone(),
            )?,
            database: self.cosmos_database.clone(),
            container: self.cosmos_container.clone(),
            ttl_secs: 0,
            concurrency: 1,
            timeout: std::time::Duration::from_millis(self.cosmos_timeout_ms.max(1)),
            region: self.cosmos_region.clone(),
        }))
    }
}
