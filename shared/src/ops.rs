//! The operational endpoints every function serves: `/healthz` (the process
//! runs), `/readyz` (it can do its job now: dependencies reachable and not
//! draining) and `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Tells whether the function's dependencies are reachable.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `Err` carries a short reason shown on `/readyz` (no secrets).
    async fn check(&self) -> Result<(), String>;
}

/// Shared state of the ops endpoints.
#[derive(Clone)]
pub struct Ops {
    registry: Arc<Registry>,
    readiness: Arc<dyn Readiness>,
    draining: Arc<AtomicBool>,
}

impl Ops {
    /// Ops endpoints over `registry`, ready when `readiness` says so.
    pub fn new(registry: Arc<Registry>, readiness: Arc<dyn Readiness>) -> Self {
        Self {
            registry,
            readiness,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Mark the process as draining: `/readyz` answers 503 from now on so the
    /// load balancer stops sending new work while in-flight work finishes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The routes, to merge into a function's router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }
}

async fn readyz(State(ops): State<Ops>) -> Response {
    if ops.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match ops.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &ops.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
