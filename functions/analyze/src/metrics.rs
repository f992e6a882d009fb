//! Prometheus metrics of the analyze function, counted per batch.

use prometheus_client::metrics::counter::Counter;
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
}

impl Metrics {
    /// Register in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("tributary_analyze_readings", "Readings applied to windows and models", m.readings.clone());
        registry.register("tributary_analyze_aggregates", "Window aggregates published", m.aggregates.clone());
        registry.register("tributary_analyze_alerts", "Alert records published", m.alerts.clone());
        registry.register("tributary_analyze_deadletter_records", "Records that were not readings", m.deadletter.clone());
        registry.register("tributary_analyze_late_values", "Values dropped because their window had closed, since start", m.late.clone());
        m
    }

    pub(crate) fn readings(&self, n: u64, late_total: u64) {
        self.readings.inc_by(n);
        self.late.set(late_total as i64);
    }

    pub(crate) fn published(&self, aggregates: usize, alerts: usize, dead: usize) {
        self.aggregates.inc_by(aggregates as u64);
        self.alerts.inc_by(alerts as u64);
        self.deadletter.inc_by(dead as u64);
    }
}
