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

    /// Token viewers present to read the dashboard and its API (as a bearer
    /// token, or once at the page's sign-in). Required in `token` mode
    /// unless `--public-read` says that anyone may read.
    #[arg(long, env = "TRIBUTARY_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,

    /// In `token` mode without a viewer token: let anyone who reaches the
    /// dashboard read it (a laptop, or a network that is itself the gate).
    #[arg(long, env = "TRIBUTARY_PUBLIC_READ")]
    pub public_read: bool,

    /// How users are known: `token` (readers by TRIBUTARY_VIEWER_TOKEN,
    /// operators by TRIBUTARY_OPERATOR_TOKEN) or `app-service` (signed in by Azure App
    /// Service authentication, whose X-MS-CLIENT-PRINCIPAL headers are then
    /// trusted: set it only where App Service is in front).
    #[arg(long = "auth", env = "TRIBUTARY_AUTH", value_enum, default_value_t = Config::default().users)]
    pub users: AuthKind,

    /// With `app-service`: the Entra app role whose holders may acknowledge and resolve alerts.
    #[arg(long, env = "TRIBUTARY_OPERATOR_ROLE", default_value_t = Config::default().operator_role)]
    pub operator_role: String,

    /// With `app-service`: the Entra app role whose holders may read (the
    /// operator role reads too); unset or empty: every signed-in user of
    /// the tenant may read.
    #[arg(long, env = "TRIBUTARY_VIEWER_ROLE")]
    pub viewer_role: Option<String>,

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
            viewer_token: None,
            // In-process use (`tributary dev`, tests) is a laptop's; the
            // binary's flag starts false, so a deployment must choose.
            public_read: true,
            users: AuthKind::Token,
            operator_role: "Tributary.Operator".into(),
            viewer_role: None,
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

    /// How users are known, from `users`, the tokens and `operator_role`;
    /// [`crate::Error::NoViewerToken`] when token mode would let anyone read
    /// without `public_read` saying so.
    pub fn auth_mode(&self) -> Result<crate::auth::AuthMode, crate::Error> {
        let empty_is_none = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
        Ok(match self.users {
            AuthKind::Token => {
                let viewer = empty_is_none(&self.viewer_token);
                if viewer.is_none() && !self.public_read {
                    return Err(crate::Error::NoViewerToken);
                }
                crate::auth::AuthMode::Token {
                    operator: empty_is_none(&self.operator_token),
                    viewer,
                }
            }
            AuthKind::AppService => crate::auth::AuthMode::AppService {
                operator_role: self.operator_role.clone(),
                viewer_role: empty_is_none(&self.viewer_role),
            },
        })
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
        // The binary starts without public reads; in-process use with them.
        let public_read = std::mem::replace(&mut parsed.public_read, defaults.public_read);
        parsed.viewer_token.clone_from(&defaults.viewer_token);
        assert_eq!(parsed, defaults);
        if std::env::var_os("TRIBUTARY_PUBLIC_READ").is_none() {
            assert!(!public_read, "a deployment must choose viewers or public reads");
        }
    }

    #[test]
    fn token_mode_needs_a_viewer_token_or_public_reads() {
        let config = |viewer: Option<&str>, public_read: bool| Config {
            viewer_token: viewer.map(str::to_owned),
            public_read,
            ..Config::default()
        };
        assert!(matches!(
            config(None, false).auth_mode(),
            Err(crate::Error::NoViewerToken)
        ));
        assert!(matches!(
            config(Some(""), false).auth_mode(),
            Err(crate::Error::NoViewerToken)
        ));
        assert!(matches!(
            config(None, true).auth_mode(),
            Ok(crate::auth::AuthMode::Token { viewer: None, .. })
        ));
        assert!(matches!(
            config(Some("v"), false).auth_mode(),
            Ok(crate::auth::AuthMode::Token { viewer: Some(_), .. })
        ));
        let app_service = Config {
            users: AuthKind::AppService,
            public_read: false,
            ..Config::default()
        };
        assert!(app_service.auth_mode().is_ok(), "App Service signs readers in itself");
    }
}
