//! Prometheus metrics of the process function, counted per batch.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The process function's counters.
#[derive(Clone)]
pub struct Metrics {
    records: Family<KindLabel, Counter>,
    batches: Family<OutcomeLabel, Counter>,
    deadletter: Counter,
    cache_errors: Counter,
    rollup_buckets: Counter,
    rollup_errors: Counter,
    window_visible: Histogram,
    notifications: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    /// Register in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            records: Family::default(),
            batches: Family::default(),
            deadletter: Counter::default(),
            cache_errors: Counter::default(),
            rollup_buckets: Counter::default(),
            rollup_errors: Counter::default(),
            // 0.25 s to about 34 min: live windows land in the first buckets,
            // a backlog or a replay shows as the tail.
            window_visible: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            notifications: Family::default(),
        };
        registry.register(
            "tributary_notifications",
            "Alert notifications by outcome (queued; delivered; retried: an attempt failed; refused or gave_up: in the channel's dead letters)",
            m.notifications.clone(),
        );
        registry.register(
            "tributary_process_records",
            "Records written to PostgreSQL by kind",
            m.records.clone(),
        );
        registry.register(
            "tributary_process_batches",
            "Batches by outcome (written, failed: retried)",
            m.batches.clone(),
        );
        registry.register(
            "tributary_process_deadletter_records",
            "Records sent to the dead-letter topic",
            m.deadletter.clone(),
        );
        registry.register(
            "tributary_process_cache_errors",
            "Batches whose cache update failed (the cache is rebuilt later)",
            m.cache_errors.clone(),
        );
        registry.register(
            "tributary_process_rollup_buckets",
            "Rollup buckets recomputed by the rollup job (every tier)",
            m.rollup_buckets.clone(),
        );
        registry.register(
            "tributary_process_rollup_errors",
            "Runs of the rollup job that failed (their buckets stay marked and are retried)",
            m.rollup_errors.clone(),
        );
        registry.register(
            "tributary_process_window_visible_seconds",
            "Seconds from a window's end to its aggregate being committed to PostgreSQL and the cache (what the dashboard shows)",
            m.window_visible.clone(),
        );
        m
    }

    /// Time from each window's end to now, once its aggregate is committed and cached.
    pub fn visible(&self, window_ends: impl Iterator<Item = chrono::DateTime<chrono::Utc>>) {
        let now = chrono::Utc::now();
        for end in window_ends {
            let secs = (now - end).num_milliseconds().max(0) as f64 / 1000.0;
            self.window_visible.observe(secs);
        }
    }

    /// Count a run of the rollup job: buckets recomputed, or a failure.
    pub fn rolled_up(&self, outcome: Result<u64, ()>) {
        match outcome {
            Ok(n) => self.rollup_buckets.inc_by(n),
            Err(()) => self.rollup_errors.inc(),
        };
    }

    /// Count a written batch's records.
    pub fn written(&self, aggregates: usize, alerts: usize) {
        self.records
            .get_or_create(&KindLabel { kind: "aggregate" })
            .inc_by(aggregates as u64);
        self.records
            .get_or_create(&KindLabel { kind: "alert" })
            .inc_by(alerts as u64);
    }

    /// Count a notification's outcome.
    pub fn notified(&self, outcome: &'static str) {
        self.notified_n(outcome, 1);
    }

    /// Count `n` notifications of one outcome.
    pub fn notified_n(&self, outcome: &'static str, n: u64) {
        self.notifications.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
    }

    /// Count a batch outcome.
    pub fn batch(&self, outcome: &'static str) {
        self.batches.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Count dead-lettered records.
    pub fn deadlettered(&self, n: usize) {
        self.deadletter.inc_by(n as u64);
    }

    /// Count a failed cache update.
    pub fn cache_error(&self) {
        self.cache_errors.inc();
    }
}
