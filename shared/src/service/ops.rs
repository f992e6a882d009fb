//! The operational endpoints every function serves: `/healthz` (the process
//! runs), `/readyz` (it can do its job now: dependencies reachable and not
//! draining) and `/metrics` (Prometheus text format).
//!
//! Guarantees: `/healthz` answers without touching any dependency, so a
//! broker or database outage never gets a healthy pod restarted; once
//! draining, `/readyz` answers 503 whatever the dependencies say.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::readiness::Readiness;
use crate::telemetry::{ErrorChain, MetricsRegistry};

/// Shared state of the ops endpoints.
#[derive(Clone)]
pub struct Ops {
    metrics: MetricsRegistry,
    readiness: Arc<dyn Readiness>,
    draining: Arc<AtomicBool>,
}

impl Ops {
    /// Ops endpoints over `metrics`, ready when `readiness` says so.
    pub fn new(metrics: MetricsRegistry, readiness: Arc<dyn Readiness>) -> Self {
        Self {
            metrics,
            readiness,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Mark the process as draining: `/readyz` answers 503 from now on so the
    /// load balancer stops sending new work while in-flight work finishes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// What `/readyz` checks, without the draining flag.
    pub async fn check(&self) -> Result<(), super::NotReady> {
        self.readiness.check().await
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
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", ErrorChain(&e)),
        )
            .into_response(),
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    match ops.metrics.encode() {
        Ok(body) => (
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
