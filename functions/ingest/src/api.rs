//! The HTTP API of ingest: `POST /v1/telemetry`, from the request to the
//! answer, with the state every request shares ([`Ingest`]).
//!
//! Guarantees: an item is answered `accepted` only after the event log
//! acknowledged it; every refusal names the item, field and reason; a token
//! valid for another device gets 403, not 422 (decided by the item error's
//! kind); when the log cannot take records the answer is 503 with `Retry-After`.
//! With traces on, a request is a span (a child of the device's
//! `traceparent`, if sent) whose context every record it publishes carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use tracing::Instrument;
use tributary_shared::auth::FleetKey;
use tributary_shared::eventlog::{EventLogError, Publisher, Record};
use tributary_shared::model::{self, ItemErrorKind, Limits};
use tributary_shared::registry::view::{DeviceView, EnrollmentMode};
use tributary_shared::telemetry::{ErrorChain, MetricsRegistry, trace};

use crate::error::{self, ApiError};
use crate::oversize::{self, DrainLimits, Refusal};
use crate::{Config, body, metrics, ratelimit};

/// Longest a request waits for the device registry to be read at start.
pub const REGISTRY_WAIT: Duration = Duration::from_secs(5);

/// Everything a request needs, built once at start.
pub struct Ingest {
    publisher: Arc<dyn Publisher>,
    topic: String,
    fleet: FleetKey,
    devices: Arc<DeviceView>,
    enrollment: EnrollmentMode,
    token_max_ttl_secs: u64,
    max_body_bytes: usize,
    drain: DrainLimits,
    max_decoded_bytes: usize,
    max_batch: usize,
    limits: Limits,
    limiter: ratelimit::RateLimiter,
    metrics: metrics::Metrics,
}

impl Ingest {
    /// Build the function's state from its config, publishing through
    /// `publisher`; refused when the config has no usable fleet key.
    pub fn new(
        cfg: &Config,
        publisher: Arc<dyn Publisher>,
        registry: &MetricsRegistry,
    ) -> Result<Self, crate::config::FleetKeyError> {
        Ok(Self {
            publisher,
            topic: cfg.topics.raw.clone(),
            fleet: FleetKey::new(cfg.effective_fleet_key()?),
            devices: Arc::new(DeviceView::new()),
            enrollment: cfg.enrollment,
            token_max_ttl_secs: cfg.token_max_ttl_secs,
            max_body_bytes: cfg.max_body_bytes,
            drain: DrainLimits {
                max_bytes: cfg.oversize_drain_bytes,
                ..DrainLimits::default()
            },
            max_decoded_bytes: cfg.max_decoded_bytes,
            max_batch: cfg.max_batch,
            limits: Limits::default(),
            limiter: ratelimit::RateLimiter::new(cfg.device_rate, cfg.device_burst.max(cfg.max_batch as u32)),
            metrics: registry.register(metrics::Metrics::new),
        })
    }

    /// The registry as this replica knows it: [`crate::run`] keeps it up to
    /// date from the devices topic; every request is admitted by it.
    pub fn devices(&self) -> &Arc<DeviceView> {
        &self.devices
    }
}

/// The ingest API (`POST /v1/telemetry`); the harness adds the ops endpoints.
pub fn app(state: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/telemetry", post(ingest))
        // axum's own limit would answer with plain text; we read the body ourselves with a JSON 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// One item's outcome in the response.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ItemResult {
    /// Durably in the event log.
    Accepted {
        /// Position in the request.
        index: usize,
        /// The reading's id (send it again on retry to stay idempotent).
        id: String,
    },
    /// Invalid: do not retry as is.
    Rejected {
        /// Position in the request.
        index: usize,
        /// Offending field, dotted; empty for the item as a whole.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Valid but not stored now: retry later.
    Failed {
        /// Position in the request.
        index: usize,
        /// The reading's id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// The response body of `POST /v1/telemetry`.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Items durably stored.
    pub accepted: usize,
    /// Items refused as invalid.
    pub rejected: usize,
    /// Valid items that could not be stored now.
    pub failed: usize,
    /// One entry per item, in request order.
    pub items: Vec<ItemResult>,
}

async fn ingest(State(st): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let resp = if trace::enabled() {
        // A child of the device's own span when it sent a `traceparent`.
        let span = tracing::info_span!(
            "ingest",
            otel.name = "POST /v1/telemetry",
            otel.kind = "server",
            http.request.method = "POST",
            url.path = "/v1/telemetry",
            device.id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        trace::set_parent_from_http(&span, &headers);
        let resp = respond(&st, &headers, body).instrument(span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        if resp.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
        resp
    } else {
        respond(&st, &headers, body).await
    };
    st.metrics.observe_request(resp.status(), started.elapsed());
    resp
}

async fn respond(st: &Ingest, headers: &HeaderMap, body: Body) -> Response {
    match handle(st, headers, body).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e.error, ApiError::Unavailable(_)) {
                tracing::warn!(error = %e.error, "event log unavailable");
            }
            e.into_response()
        }
    }
}

async fn handle(st: &Ingest, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let verified = st
        .fleet
        .verify_header(auth, tributary_shared::auth::now_unix(), st.token_max_ttl_secs)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    // Until the registry has been read, a disabled device cannot be told
    // from an active one: wait for it a little (a replica just started),
    // then ask the device to come back rather than guess.
    if !st.devices.is_caught_up() && !st.devices.wait_caught_up(REGISTRY_WAIT).await {
        return Err(ApiError::Unavailable("the device registry is still being read; retry shortly".into()).into());
    }
    st.devices
        .admit(&verified.device, verified.key_version, st.enrollment)
        .map_err(ApiError::from)?;
    let device = verified.device;
    if trace::enabled() {
        tracing::Span::current().record("device.id", device.as_str());
    }
    // A declared length over the limit is refused before any of the body is
    // kept; it is still drained (see `oversize`), but only for a device
    // that authenticated, so no one else can make ingest read 64 MiB.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.max_body_bytes) {
        return Err(oversize::refuse_declared(headers, body, st.max_body_bytes, st.drain).await);
    }

    let fmt = body::format(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))?;
    let raw = oversize::read_limited(body, st.max_body_bytes, st.drain).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let decoded = body::decode(encoding, &raw, st.max_decoded_bytes)?;
    let items = body::items(fmt, &decoded, st.max_batch)?;

    st.limiter
        .check(&device, items.len(), Instant::now())
        .map_err(|retry_after| ApiError::RateLimited {
            device: device.clone(),
            retry_after,
        })?;

    let ctx = model::fast::ItemContext::new(Some(&device), chrono::Utc::now(), &st.limits);
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
    let mut records = Vec::with_capacity(items.len());
    let mut record_index = Vec::with_capacity(items.len());
    let mut forbidden = 0usize;
    // Every record of the request continues its trace (nothing when traces are off).
    let trace_headers = if trace::enabled() {
        trace::context_headers(&tracing::Span::current())
    } else {
        Vec::new()
    };
    for (index, raw) in items.iter().enumerate() {
        match model::fast::encode_item(raw, &ctx) {
            Ok(enc) => {
                record_index.push((index, enc.id));
                let mut record = Record::new(enc.device_id, enc.bytes);
                record.headers.clone_from(&trace_headers);
                records.push(record);
                results.push(None);
            }
            Err(e) => {
                if e.kind == ItemErrorKind::OtherDevice {
                    forbidden += 1;
                }
                results.push(Some(ItemResult::Rejected {
                    index,
                    field: e.field,
                    reason: e.reason,
                }));
            }
        }
    }

    let mut any_failed = false;
    if !records.is_empty() {
        let delivered = st.publisher.publish(&st.topic, records).await;
        for ((index, id), res) in record_index.into_iter().zip(delivered) {
            results[index] = Some(match res {
                Ok(_) => ItemResult::Accepted { index, id },
                Err(e) => {
                    any_failed = true;
                    let reason = match &e {
                        EventLogError::QueueFull => "ingest is overloaded; retry later".to_owned(),
                        EventLogError::Unavailable(_) => "event log unavailable; retry later".to_owned(),
                        EventLogError::Rejected(_) | EventLogError::NoSuchTopic(_) | EventLogError::Other(_) => {
                            "could not be stored; retry later".to_owned()
                        }
                    };
                    tracing::warn!(error = %ErrorChain(&e), device = %device, "publish failed");
                    ItemResult::Failed { index, id, reason }
                }
            });
        }
    }

    let items: Vec<ItemResult> = results.into_iter().flatten().collect();
    let (mut accepted, mut rejected, mut failed) = (0, 0, 0);
    for r in &items {
        match r {
            ItemResult::Accepted { .. } => accepted += 1,
            ItemResult::Rejected { .. } => rejected += 1,
            ItemResult::Failed { .. } => failed += 1,
        }
    }
    st.metrics.count_readings(accepted, rejected, failed);

    let status = if any_failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else if accepted > 0 {
        StatusCode::ACCEPTED
    } else if forbidden > 0 {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut resp = (
        status,
        axum::Json(IngestResponse {
            accepted,
            rejected,
            failed,
            items,
        }),
    )
        .into_response();
    if any_failed {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, error::retry_after(Duration::from_secs(1)));
    }
    Ok(resp)
}
