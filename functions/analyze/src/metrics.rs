//! Prometheus metrics of the analyze function, counted per batch.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The analyze function's counters.
#[derive(Clone, Default)]
pub struct Metrics {
    readings: Counter,
    aggregates: Counter,
    alerts: Counter,
    deadletter: Counter,
    late: Gauge,
    resent: Gauge,
    remembered: Gauge,
    idle_closed: Counter,
    series: Gauge,
    evicted: Family<Vec<(String, String)>, Counter>,
    snapshot_bytes: Counter,
    snapshot_seconds: Counter<f64>,
}

impl Metrics {
    /// Register in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tributary_analyze_readings",
            "Readings applied to windows and models",
            m.readings.clone(),
        );
        registry.register(
            "tributary_analyze_aggregates",
            "Window aggregates published",
            m.aggregates.clone(),
        );
        registry.register("tributary_analyze_alerts", "Alert records published", m.alerts.clone());
        registry.register(
            "tributary_analyze_deadletter_records",
            "Records that were not readings",
            m.deadletter.clone(),
        );
        registry.register(
            "tributary_analyze_late_values",
            "Values dropped because their window had closed, since start",
            m.late.clone(),
        );
        registry.register(
            "tributary_analyze_resent_readings",
            "Readings skipped as resends of one already counted (same device, id and event time), since start",
            m.resent.clone(),
        );
        registry.register(
            "tributary_analyze_remembered_readings",
            "Readings remembered to recognise resends (those that can still join a window)",
            m.remembered.clone(),
        );
        registry.register(
            "tributary_analyze_idle_closed_windows",
            "Windows closed by the idle rule (their partition had gone quiet)",
            m.idle_closed.clone(),
        );
        registry.register(
            "tributary_analyze_series",
            "(device, metric) series with model state",
            m.series.clone(),
        );
        registry.register(
            "tributary_analyze_series_evicted",
            "Series whose model state was evicted, by reason (idle: no readings for TRIBUTARY_SERIES_IDLE_SECS; cap: TRIBUTARY_MAX_SERIES reached)",
            m.evicted.clone(),
        );
        registry.register(
            "tributary_analyze_snapshot_bytes",
            "Bytes of model and alert state written to the state topic",
            m.snapshot_bytes.clone(),
        );
        registry.register(
            "tributary_analyze_snapshot_seconds",
            "Time spent writing snapshots (commits wait for them)",
            m.snapshot_seconds.clone(),
        );
        m
    }

    pub(crate) fn snapshot(&self, bytes: usize, took: std::time::Duration) {
        self.snapshot_bytes.inc_by(bytes as u64);
        self.snapshot_seconds.inc_by(took.as_secs_f64());
    }

    pub(crate) fn readings(&self, n: u64, late_total: u64, resent_total: u64, remembered: usize) {
        self.readings.inc_by(n);
        self.late.set(late_total as i64);
        self.resent.set(resent_total as i64);
        self.remembered.set(remembered as i64);
    }

    pub(crate) fn idle_closed(&self, windows: usize) {
        self.idle_closed.inc_by(windows as u64);
    }

    pub(crate) fn series(&self, count: usize, evicted_idle: u64, evicted_cap: u64) {
        self.series.set(count as i64);
        for (reason, n) in [("idle", evicted_idle), ("cap", evicted_cap)] {
            if n > 0 {
                self.evicted
                    .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
                    .inc_by(n);
            }
        }
    }

    pub(crate) fn published(&self, aggregates: usize, alerts: usize, dead: usize) {
        self.aggregates.inc_by(aggregates as u64);
        self.alerts.inc_by(alerts as u64);
        self.deadletter.inc_by(dead as u64);
    }
}
