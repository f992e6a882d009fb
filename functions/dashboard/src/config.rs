//! The dashboard's settings: [`Config::default`] works on a laptop
//! (PostgreSQL and Redis on localhost, no raw archive, read-only); the
//! binary's flags and environment variables override it field by field.
//! Connection URLs, keys and the operator token are never printed.

use std::time::Duration;

use clap::Parser;
use tributary_shared::config::{CosmosArgs, ListenArgs, LogArgs};

/// Configuration of the dashboard function.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "tributary-dashboard",
    about = "Web UI and JSON API for the fleet: overview, device charts, alerts",
    version
)]
pub struct Config {
    /// Where the web UI, the API and the ops endpoints listen.
    #[command(flatten)]
    pub listen: ListenArgs<8081>,

    /// Results store URL (history: aggregates, alerts, devices): PostgreSQL
    /// (`postgres://…`) or an SQLite file (`sqlite://PATH`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value_t = Config::default().database_url)]
    pub database_url: String,

    /// Redis connection URL (hot data and live change notifications).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, default_value_t = Config::default().redis_url)]
    pub redis_url: String,

    /// The raw archive, for a device's raw readings on its charts (a
    /// read-only key is enough). Without an endpoint the page shows window
    /// aggregates only.
    #[command(flatten)]
    pub cosmos: CosmosArgs,

    /// Longest wait for one Cosmos DB request, milliseconds.
    #[arg(long, env = "TRIBUTARY_COSMOS_TIMEOUT_MS", default_value_t = Config::default().cosmos_timeout_ms)]
    pub cosmos_timeout_ms: u64,

    /// Token operators present to acknowledge or resolve alerts
    /// (`Authorization: Bearer <token>`). Unset: the dashboard is read-only.
    #[arg(long, env = "TRIBUTARY_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// How users are known: `token` (readers anonymous, operators by
    /// TRIBUTARY_OPERATOR_TOKEN) or `app-service` (signed in by Azure App
    /// Service authentication, whose X-MS-CLIENT-PRINCIPAL headers are then
    /// trusted: set it only where App Service is in front).
    #[arg(long = "auth", env = "TRIBUTARY_AUTH", value_enum, default_value_t = Config::default().users)]
    pub users: AuthKind,

    /// With `app-service`: the Entra app role whose holders may acknowledge and resolve alerts.
    #[arg(long, env = "TRIBUTARY_OPERATOR_ROLE", default_value_t = Config::default().operator_role)]
    pub operator_role: String,

    /// Seconds between keep-alive comments on the live event stream: below
    /// every idle timeout in front (App Service's front end closes a
    /// response that sends nothing for 230 s).
    #[arg(long, env = "TRIBUTARY_SSE_KEEPALIVE_SECS", default_value_t = Config::default().sse_keepalive_secs)]
    pub sse_keepalive_secs: u64,

    /// Seconds since its last window after which a device counts as offline.
    #[arg(long, env = "TRIBUTARY_OFFLINE_AFTER_SECS", default_value_t = Config::default().offline_after_secs)]
    pub offline_after_secs: i64,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `TRIBUTARY_AUTH`: see [`crate::auth::AuthMode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    /// Readers anonymous, operators by bearer token.
    Token,
    /// Signed in by App Service authentication (Microsoft Entra ID).
    AppService,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenArgs::default(),
            database_url: "postgres://postgres@127.0.0.1:5432/test".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            cosmos: CosmosArgs::default(),
            cosmos_timeout_ms: 5_000,
            operator_token: None,
            users: AuthKind::Token,
            operator_role: "Tributary.Operator".into(),
            sse_keepalive_secs: 15,
            offline_after_secs: 300,
            log: LogArgs::default(),
        }
    }
}

impl Config {
    /// Longest wait for one Cosmos DB request.
    pub fn cosmos_timeout(&self) -> Duration {
        Duration::from_millis(self.cosmos_timeout_ms.max(1))
    }

    /// How users are known, from `users`, `operator_token` and `operator_role`.
    pub fn auth_mode(&self) -> crate::auth::AuthMode {
        match self.users {
            AuthKind::Token => crate::auth::AuthMode::Token(self.operator_token.clone()),
            AuthKind::AppService => crate::auth::AuthMode::AppService {
                operator_role: self.operator_role.clone(),
            },
        }
    }

    /// Between keep-alive comments on `/api/events`.
    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default() {
        let mut parsed = Config::parse_from(["tributary-dashboard"]);
        // The test runner sets DATABASE_URL and REDIS_URL, and maybe RUST_LOG.
        let defaults = Config::default();
        parsed.database_url.clone_from(&defaults.database_url);
        parsed.redis_url.clone_from(&defaults.redis_url);
        parsed.log = LogArgs::default();
        assert_eq!(parsed, defaults);
    }
}
