//! The archive function's one typed configuration, from flags and environment.
//!
//! Guarantees: every setting has a documented default or is required; the
//! Cosmos key is never printed (`hide_env_values`).

use std::net::IpAddr;

use clap::{ArgAction, Parser};
use tributary_shared::config::{KafkaArgs, LogArgs};
pub use tributary_shared::raw::CosmosAuth;
use tributary_shared::raw::cosmos::{CosmosSettings, credential};
use tributary_shared::topics;

/// Configuration of the archive function (`tributary-archive`).
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tributary-archive",
    about = "Archives every raw reading in Azure Cosmos DB",
    version
)]
pub struct ArchiveConfig {
    /// Port of the ops endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "PORT", default_value_t = 8083)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Cosmos DB account endpoint, e.g. https://acct.documents.azure.com:443/
    /// (plain http only for localhost / 127.0.0.1, the local emulator).
    #[arg(long, env = "TRIBUTARY_COSMOS_ENDPOINT")]
    pub cosmos_endpoint: String,

    /// Account key (with `--cosmos-auth key`).
    #[arg(long, env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    pub cosmos_key: Option<String>,

    /// Authentication: `key` or `identity`.
    #[arg(long, env = "TRIBUTARY_COSMOS_AUTH", value_enum, default_value_t = CosmosAuth::Key)]
    pub cosmos_auth: CosmosAuth,

    /// Client id of a user-assigned managed identity (with `--cosmos-auth identity`).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// Preferred Azure region (routing hint for multi-region accounts).
    #[arg(long, env = "TRIBUTARY_COSMOS_REGION", default_value = "South Central US")]
    pub cosmos_region: String,

    /// Database name.
    #[arg(long, env = "TRIBUTARY_COSMOS_DATABASE", default_value = "tributary")]
    pub cosmos_database: String,

    /// Container name (partition key `/deviceId`).
    #[arg(long, env = "TRIBUTARY_COSMOS_CONTAINER", default_value = "raw")]
    pub cosmos_container: String,

    /// Seconds a raw reading is kept (container default TTL and per-document
    /// `ttl`); 0 keeps readings forever.
    #[arg(long, env = "TRIBUTARY_COSMOS_TTL_SECS", default_value_t = 0)]
    pub cosmos_ttl_secs: u32,

    /// Create the database and container on start when missing (off in production).
    #[arg(long, env = "TRIBUTARY_COSMOS_CREATE", default_value_t = true, action = ArgAction::Set)]
    pub cosmos_create: bool,

    /// Most upserts in flight at once.
    #[arg(long, env = "TRIBUTARY_COSMOS_CONCURRENCY", default_value_t = 16)]
    pub cosmos_concurrency: usize,

    /// Longest wait for one Cosmos request, milliseconds (then it counts as a timeout and is retried).
    #[arg(long, env = "TRIBUTARY_COSMOS_TIMEOUT_MS", default_value_t = 10_000)]
    pub cosmos_timeout_ms: u64,

    /// Tries of a record that fails on its own (while others of its batch are
    /// stored) before it is dead-lettered. Outages never count.
    #[arg(long, env = "TRIBUTARY_COSMOS_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic of raw readings.
    #[arg(long, env = "TRIBUTARY_RAW_TOPIC", default_value = topics::RAW)]
    pub raw_topic: String,

    /// Topic for records that cannot be stored.
    #[arg(long, env = "TRIBUTARY_DEADLETTER_TOPIC", default_value = topics::DEADLETTER)]
    pub deadletter_topic: String,

    /// Consumer group (KEDA scales on its lag).
    #[arg(long, env = "TRIBUTARY_CONSUMER_GROUP", default_value = topics::GROUP_ARCHIVE)]
    pub group: String,

    /// Most records per batch.
    #[arg(long, env = "TRIBUTARY_BATCH_MAX", default_value_t = 500)]
    pub batch_max: usize,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl ArchiveConfig {
    /// The Cosmos DB settings this config names; builds the identity
    /// credential when asked for.
    pub fn cosmos_settings(&self) -> anyhow::Result<CosmosSettings> {
        // The SDK's control-plane calls (create database/container) need key auth.
        anyhow::ensure!(
            !(self.cosmos_auth == CosmosAuth::Identity && self.cosmos_create),
            "TRIBUTARY_COSMOS_AUTH=identity cannot create the database and container: provision them in the deployment and set TRIBUTARY_COSMOS_CREATE=false"
        );
        Ok(CosmosSettings {
            endpoint: self.cosmos_endpoint.clone(),
            credential: credential(self.cosmos_auth, self.cosmos_key.clone(), self.azure_client_id.clone())?,
            database: self.cosmos_database.clone(),
            container: self.cosmos_container.clone(),
            ttl_secs: self.cosmos_ttl_secs,
            concurrency: self.cosmos_concurrency.max(1),
            timeout: std::time::Duration::from_millis(self.cosmos_timeout_ms.max(1)),
            region: self.cosmos_region.clone(),
        })
    }
}
