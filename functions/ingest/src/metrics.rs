//! Prometheus metrics of the ingest function, counted per request (never per
//! device: labels stay low-cardinality).

use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The ingest function's counters.
pub struct Metrics {
    requests: Family<StatusLabel, Counter>,
    readings: Family<OutcomeLabel, Counter>,
    duration: Histogram,
}

impl Metrics {
    /// Register the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            readings: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        registry.register(
            "tributary_ingest_requests",
            "HTTP requests to POST /v1/telemetry by status",
            m.requests.clone(),
        );
        registry.register(
            "tributary_ingest_readings",
            "Readings by outcome: accepted (durably in the log), rejected (invalid), failed (log unavailable)",
            m.readings.clone(),
        );
        registry.register(
            "tributary_ingest_request_duration_seconds",
            "Time from request to answer",
            m.duration.clone(),
        );
        m
    }

    /// Count one answered request.
    pub fn observe_request(&self, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&StatusLabel {
                status: status.as_u16(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Count a request's readings, once per request.
    pub fn count_readings(&self, accepted: usize, rejected: usize, failed: usize) {
        for (outcome, n) in [("accepted", accepted), ("rejected", rejected), ("failed", failed)] {
            if n > 0 {
                self.readings.get_or_create(&OutcomeLabel { outcome }).inc_by(n as u64);
            }
        }
    }
}

/// The device registry's view in this replica: how many devices it holds and
/// its memory (an estimate, see [`tributary_shared::registry::view::DeviceView::memory_bytes`]).
#[derive(Clone, Default)]
pub struct ViewGauges {
    devices: Gauge,
    bytes: Gauge,
}

impl ViewGauges {
    /// Register the gauges in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let g = Self::default();
        registry.register(
            "tributary_registry_view_devices",
            "Devices in this replica's view of the device registry",
            g.devices.clone(),
        );
        registry.register(
            "tributary_registry_view_bytes",
            "Memory of this replica's view of the device registry (estimate)",
            g.bytes.clone(),
        );
        g
    }

    /// Set both from `view`.
    pub fn observe(&self, view: &tributary_shared::registry::view::DeviceView) {
        self.devices.set(i64::try_from(view.len()).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(view.memory_bytes()).unwrap_or(i64::MAX));
    }
}
