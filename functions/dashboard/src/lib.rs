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
//! Guarantees: read-only unless an operator token is configured; acknowledging
//! or resolving an alert needs `Authorization: Bearer <token>` (compared in
//! constant time); bad query parameters get a 400 naming the parameter; errors
//! never leak internals. The API is described in `/api/openapi.json`.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tributary_shared::cache::KvCache;
use tributary_shared::raw::RawStore;
use tributary_shared::results::{ResultStore, StoreError};

pub mod api;
pub mod config;
pub mod live;

pub use config::Config;

/// What every handler needs.
pub struct Dashboard {
    /// History and fallbacks.
    pub store: Arc<dyn ResultStore>,
    /// Hot data and change notifications (`None`: read everything from the store).
    pub cache: Option<Arc<dyn KvCache>>,
    /// Raw readings as archived (Cosmos DB; SQLite in the all-in-one mode).
    /// `None`: the raw-points API answers 501 and the page shows aggregates only.
    pub raw: Option<Arc<dyn RawStore>>,
    /// Change notifications for SSE clients.
    pub live: live::Live,
    /// Operator token for write actions.
    pub operator_token: Option<String>,
    /// Offline threshold in seconds.
    pub offline_after_secs: i64,
}

/// Errors of the API, mapped to status codes without internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or path segment is invalid.
    #[error("invalid parameter '{param}': {reason}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such resource.
    #[error("{0} not found")]
    NotFound(String),
    /// The action conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// Missing or wrong operator token.
    #[error("an operator token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// Write actions are disabled (no operator token configured).
    #[error("the dashboard is read-only: no operator token is configured")]
    ReadOnly,
    /// A store failed.
    #[error("the data store is unavailable; try again shortly")]
    Unavailable,
    /// The feature needs a store this instance was not configured with.
    #[error("{0}")]
    NotConfigured(&'static str),
}

impl From<tributary_shared::raw::StoreError> for ApiError {
    fn from(e: tributary_shared::raw::StoreError) -> Self {
        tracing::warn!(error = %e, "raw store query failed");
        Self::Unavailable
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "results store query failed");
        Self::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::BadParam { .. } => (StatusCode::BAD_REQUEST, "bad_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::ReadOnly => (StatusCode::FORBIDDEN, "read_only"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::NotConfigured(_) => (StatusCode::NOT_IMPLEMENTED, "not_configured"),
        };
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let Self::BadParam { param, .. } = &self {
            body["error"]["parameter"] = json!(param);
        }
        (status, axum::Json(body)).into_response()
    }
}

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");
const OPENAPI: &str = include_str!("../static/openapi.json");

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

/// The whole HTTP service: page, API and ops endpoints.
pub fn app(state: Arc<Dashboard>, ops: &tributary_shared::ops::Ops) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route(
            "/api/openapi.json",
            get(|| async { asset("application/json", OPENAPI) }),
        )
        .route("/api/fleet", get(api::fleet))
        .route("/api/devices", get(api::devices))
        .route("/api/devices/{id}", get(api::device))
        .route("/api/devices/{id}/series", get(api::series))
        .route("/api/devices/{id}/raw", get(api::raw))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/{id}/ack", post(api::acknowledge))
        .route("/api/alerts/{id}/resolve", post(api::resolve))
        .route("/api/events", get(api::events))
        .with_state(state)
        .merge(ops.router())
}

/// `/readyz` for the dashboard: the results store must answer (the cache only speeds things up).
pub struct StoreReadiness(pub Arc<dyn ResultStore>);

#[async_trait::async_trait]
impl tributary_shared::ops::Readiness for StoreReadiness {
    async fn check(&self) -> Result<(), String> {
        let backend = self.0.backend();
        tokio::time::timeout(std::time::Duration::from_secs(2), self.0.ping())
            .await
            .map_err(|_| format!("{backend} timed out"))?
            .map_err(|e| format!("{backend}: {e}"))
    }
}
