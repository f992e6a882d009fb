//! Tributary's dashboard: the web UI and the JSON API it is built on.
//!
//! Hot data (fleet summary, a device's latest values) comes from the cache
//! the process function keeps (Redis; in-process in the all-in-one mode), with
//! the results store as the fallback when the cache is down; history (a
//! device's window aggregates, alerts) comes from the results store
//! (PostgreSQL; SQLite in the all-in-one mode); raw readings come from the
//! raw archive (Cosmos DB; SQLite in the all-in-one mode). Changes are pushed to browsers
//! as server-sent events fed by the process function's cache notifications
//! (`/api/events`).
//!
//! Guarantees: reading needs the viewer token (or a session signed with it)
//! unless public reads were chosen; read-only unless an operator token is
//! configured; acknowledging or resolving an alert, or changing a device,
//! needs the operator token (compared in constant time), or, behind App
//! Service authentication
//! (`TRIBUTARY_AUTH=app-service`), every request needs App Service's
//! signed-in principal and changes need the operator app role ([`auth`]);
//! bad query parameters get a 400 naming the parameter; errors never leak
//! internals. The API is described in `/api/openapi.json`.
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point, the shared state
//!   ([`Dashboard`]) and the routes ([`app`]);
//! - [`api`]: the JSON API's handlers and the server-sent events;
//! - [`auth`]: who is asking (operator token, or App Service's signed-in principal);
//! - [`channels`]: the notification channels' operator API, with backlog,
//!   test sends and dead letters (sent again on request);
//! - [`live`]: the fan-out of the cache's change notifications to browsers;
//! - [`registry`]: the device registry's operator API (list, add, disable,
//!   enable, rotate a key);
//! - [`rules`]: the alert rules' API (everyone reads, operators write);
//! - [`session`]: the signed session cookie a browser reads with in token mode;
//! - [`config`]: the settings, with their defaults;
//! - [`extract`]: `Query` and `Path` whose rejections are the API's JSON 400s;
//! - [`error`]: request errors ([`error::ApiError`]) and run errors ([`Error`]);
//! - `static/`: the page, its script and style, and the OpenAPI document.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tributary_shared::cache::{KvCache, RedisCache};
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::raw::RawStore;
use tributary_shared::raw::cosmos::LazyCosmosStore;
use tributary_shared::registry::DeviceRegistry;
use tributary_shared::results::ResultStore;
use tributary_shared::rules::RuleStore;
use tributary_shared::service::readiness::ResultStoreReady;
use tributary_shared::service::{Endpoint, Host, Service, Shutdown};

pub mod api;
pub mod auth;
pub mod channels;
pub mod config;
pub mod error;
pub mod extract;
pub mod live;
pub mod registry;
pub mod rules;
pub mod session;

pub use config::Config;
pub use error::{ApiError, Error};

/// What the dashboard reads: the results store, the cache and the raw
/// archive (the last two optional), and its host.
pub struct Deps {
    /// History and fallbacks (PostgreSQL in production).
    pub store: Arc<dyn ResultStore>,
    /// Hot data and change notifications (Redis in production; `None`: read everything from the store).
    pub cache: Option<Arc<dyn KvCache>>,
    /// Raw readings as archived (Cosmos DB in production; `None`: aggregates only).
    pub raw: Option<Arc<dyn RawStore>>,
    /// The device registry, in the results database (`None`: the registry API answers 501).
    pub registry: Option<Arc<dyn DeviceRegistry>>,
    /// The alert rules, in the results database (`None`: the rules API answers 501).
    pub rules: Option<Arc<dyn RuleStore>>,
    /// The notification channels, in the results database (`None`: their API answers 501).
    pub channels: Option<Arc<dyn ChannelStore>>,
    /// Where the page, the API and the ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: PostgreSQL, Redis, Cosmos
    /// DB when an endpoint is set (each connected lazily: an outage costs
    /// only what it serves), and `$PORT` (or the Lambda runtime).
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let store = tributary_shared::results::open(&config.database_url, 8)
            .await
            .map_err(Error::Store)?;
        let cache: Arc<dyn KvCache> = Arc::new(RedisCache::new(&config.redis_url).map_err(Error::Cache)?);
        let raw = match config.cosmos.settings(config.cosmos_timeout()).map_err(Error::Cosmos)? {
            Some(settings) => Some(Arc::new(LazyCosmosStore::new(settings, false)) as Arc<dyn RawStore>),
            None => {
                tracing::info!("no Cosmos DB endpoint configured: charts show window aggregates only");
                None
            }
        };
        let registry = tributary_shared::registry::open(&config.database_url, 4)
            .await
            .map_err(Error::Registry)?;
        let rules = tributary_shared::rules::open(&config.database_url, 2)
            .await
            .map_err(Error::Rules)?;
        let channels = tributary_shared::notify::store::open(&config.database_url, 2)
            .await
            .map_err(Error::Channels)?;
        let endpoint = Endpoint::lambda_or_bind(config.listen.addr()).await?;
        Ok(Self {
            store,
            cache: Some(cache),
            raw,
            registry: Some(registry),
            rules: Some(rules),
            channels: Some(channels),
            host: Host::new(endpoint),
        })
    }
}

/// Serve the page and the API until `shutdown`, then finish the requests in
/// flight (live event streams end with it).
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    let auth = config.auth_mode()?;
    match &auth {
        auth::AuthMode::Token { operator, viewer } => {
            if operator.is_none() {
                tracing::info!("no operator token configured: the dashboard is read-only");
            }
            if viewer.is_none() {
                tracing::warn!("public reads: anyone who reaches the dashboard reads it (no viewer token)");
            }
        }
        auth::AuthMode::AppService {
            operator_role,
            viewer_role,
        } => tracing::info!(
            operator_role = %operator_role,
            viewer_role = viewer_role.as_deref().unwrap_or("(any signed-in user)"),
            "behind App Service authentication: every request needs a signed-in principal"
        ),
    }
    let live = live::Live::new();
    let follower = deps.cache.clone().map(|cache| tokio::spawn(live.clone().follow(cache)));
    let state = Arc::new(Dashboard {
        store: deps.store.clone(),
        cache: deps.cache,
        raw: deps.raw,
        registry: deps.registry,
        rules: deps.rules,
        channels: deps.channels,
        live,
        auth,
        sse_keepalive: config.sse_keepalive(),
        offline_after_secs: config.offline_after_secs,
    });
    let readiness = Arc::new(ResultStoreReady(deps.store));
    let served = Service::new("dashboard", deps.host, readiness)
        .serve(app(state), &shutdown)
        .await;
    if let Some(follower) = follower {
        follower.abort();
    }
    Ok(served?)
}

/// What every handler needs.
pub struct Dashboard {
    /// History and fallbacks.
    pub store: Arc<dyn ResultStore>,
    /// Hot data and change notifications (`None`: read everything from the store).
    pub cache: Option<Arc<dyn KvCache>>,
    /// Raw readings as archived (Cosmos DB; SQLite in the all-in-one mode).
    /// `None`: the raw-points API answers 501 and the page shows aggregates only.
    pub raw: Option<Arc<dyn RawStore>>,
    /// The device registry (`None`: the registry API answers 501).
    pub registry: Option<Arc<dyn DeviceRegistry>>,
    /// The alert rules (`None`: the rules API answers 501).
    pub rules: Option<Arc<dyn RuleStore>>,
    /// The notification channels (`None`: their API answers 501).
    pub channels: Option<Arc<dyn ChannelStore>>,
    /// Change notifications for SSE clients.
    pub live: live::Live,
    /// Who may read and who may change alerts.
    pub auth: auth::AuthMode,
    /// Between keep-alive comments on the live event stream.
    pub sse_keepalive: std::time::Duration,
    /// Offline threshold in seconds.
    pub offline_after_secs: i64,
}

/// The page's files, compiled in: path, content type, body.
const ASSETS: [(&str, &str, &str); 11] = [
    ("/", "text/html; charset=utf-8", include_str!("../static/index.html")),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    ("/app.css", "text/css; charset=utf-8", include_str!("../static/app.css")),
    (
        "/registry.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/registry.js"),
    ),
    (
        "/rules.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/rules.js"),
    ),
    (
        "/channels.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/channels.js"),
    ),
    (
        "/charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/charts.js"),
    ),
    (
        "/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/vendor/uPlot.iife.min.js"),
    ),
    (
        "/vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../static/vendor/uPlot.min.css"),
    ),
    (
        "/vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../static/vendor/uPlot.LICENSE"),
    ),
    (
        "/api/openapi.json",
        "application/json",
        include_str!("../static/openapi.json"),
    ),
];

/// Behind App Service authentication, nothing is served to a request that
/// did not come through its sign-in; with a viewer token, nothing but the
/// page's own files (no data in them) and the sign-in itself is served
/// without a credential. The ops endpoints, served by the harness, stay open
/// for the platform's probes.
async fn signed_in(
    axum::extract::State(state): axum::extract::State<Arc<Dashboard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open_to_all = matches!(state.auth, auth::AuthMode::Token { .. })
        && (request.uri().path() == "/api/session" || ASSETS.iter().any(|(path, _, _)| *path == request.uri().path()));
    if state.auth.requires_sign_in()
        && !open_to_all
        && let Err(e) = state.auth.principal(request.headers())
    {
        return e.into_response();
    }
    next.run(request).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The web UI and the API; the harness adds the ops endpoints.
pub fn app(state: Arc<Dashboard>) -> Router {
    let pages = ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        });
    pages
        .route("/api/fleet", get(api::fleet))
        .route("/api/devices", get(api::devices))
        .route("/api/groups", get(api::groups))
        .route("/api/devices/{id}", get(api::device))
        .route("/api/devices/{id}/series", get(api::series))
        .route("/api/devices/{id}/raw", get(api::raw))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/{id}/ack", post(api::acknowledge))
        .route("/api/alerts/{id}/resolve", post(api::resolve))
        .route("/api/events", get(api::events))
        .route("/api/me", get(api::me))
        .route("/api/session", post(api::sign_in).delete(api::sign_out))
        .route("/api/registry/devices", get(registry::list).post(registry::add))
        .route("/api/registry/devices/{id}", get(registry::show))
        .route("/api/registry/devices/{id}/disable", post(registry::disable))
        .route("/api/registry/devices/{id}/enable", post(registry::enable))
        .route("/api/registry/devices/{id}/rotate-key", post(registry::rotate_key))
        .route("/api/rules", get(rules::list))
        .route(
            "/api/rules/{id}",
            get(rules::show).put(rules::put).delete(rules::delete),
        )
        .route("/api/channels", get(channels::list))
        .route(
            "/api/channels/{id}",
            axum::routing::put(channels::put).delete(channels::delete),
        )
        .route("/api/channels/{id}/dead-letters", get(channels::dead_letters))
        .route(
            "/api/channels/{id}/dead-letters/resend",
            axum::routing::post(channels::resend),
        )
        .route("/api/channels/{id}/test", axum::routing::post(channels::test))
        .layer(axum::middleware::from_fn_with_state(state.clone(), signed_in))
        .with_state(state)
}
