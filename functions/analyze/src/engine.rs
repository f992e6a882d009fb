//! The analyze function's per-consumer state, wired together: readings in,
//! aggregates and alerts out, and the offsets that are safe to commit.
//!
//! [`Analyzer::process`] scores every metric of a reading with its series'
//! [`SeriesModel`], feeds the verdict to the series' [`AlertTracker`] and the
//! reading to the [`Windower`]. Deterministic: the same readings in the same
//! order give the same output. Memory: one bounded [`SeriesModel`] per
//! (device, metric) seen (see [`crate::detect`]) plus the open windows.
//!
//! Known limit: model and alert state is not persisted, so after a restart or
//! a rebalance the models of a series start cold from the committed offset;
//! aggregates are re-emitted with the same identity (an overwrite), but their
//! anomaly scores may differ from the first run's until the models warm up.

use std::collections::BTreeMap;

use tributary_shared::model::Reading;

use crate::detect::alert::{AlertConfig, AlertTracker};
use crate::detect::{DetectorConfig, SeriesModel};
use crate::records::{Aggregate, Alert};
use crate::window::{Scored, WindowConfig, Windower};

/// Everything the analyze function can be configured with.
#[derive(Clone, Debug, Default)]
pub struct AnalyzerConfig {
    /// Window sizes and lateness.
    pub windows: WindowConfig,
    /// Models.
    pub detectors: DetectorConfig,
    /// Alerting.
    pub alerts: AlertConfig,
}

/// What one reading produced, in deterministic order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Windows closed by this reading (publish to `telemetry.aggregates`).
    pub aggregates: Vec<Aggregate>,
    /// Alert records (publish to `telemetry.alerts`), in metric order.
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Debug)]
struct Series {
    partition: i32,
    model: SeriesModel,
    alerts: AlertTracker,
}

/// Windows, models and alert state for the partitions one consumer owns.
#[derive(Clone, Debug)]
pub struct Analyzer {
    config: AnalyzerConfig,
    windower: Windower,
    series: BTreeMap<(String, String), Series>,
}

impl Analyzer {
    /// An analyzer with no state.
    pub fn new(config: AnalyzerConfig) -> Self {
        Self { windower: Windower::new(config.windows.clone()), config, series: BTreeMap::new() }
    }

    /// Handle one reading read from `partition` at `offset`.
    pub fn process(&mut self, partition: i32, offset: i64, reading: &Reading) -> Output {
        let mut scores = BTreeMap::new();
        let mut alerts = Vec::new();
        for (metric, &x) in &reading.metrics {
            if !x.is_finite() {
                continue;
            }
            let s = self.series.entry((reading.device_id.clone(), metric.clone())).or_insert_with(|| Series {
                partition,
                model: SeriesModel::new(&self.config.detectors, metric),
                alerts: AlertTracker::new(),
            });
            s.partition = partition;
            let v = s.model.update(reading.event_time, x);
            if let Some(a) = s.alerts.observe(&self.config.alerts, &reading.device_id, metric, reading.event_time, x, v.score, v.model, &v.reason) {
                alerts.push(a);
            }
            scores.insert(metric.clone(), Scored { score: v.score, model: v.model.to_owned() });
        }
        let aggregates = self.windower.push(partition, offset, reading, &scores);
        Output { aggregates, alerts }
    }

    /// The offset safe to commit for `partition` (see [`Windower::committable_offset`]).
    pub fn committable_offset(&self, partition: i32) -> Option<i64> {
        self.windower.committable_offset(partition)
    }

    /// The state to commit with `partition`'s offset (`maxEvent=<epoch ms>`), if any.
    pub fn checkpoint(&self, partition: i32) -> Option<String> {
        self.windower.max_event_ms(partition).map(|m| format!("maxEvent={m}"))
    }

    /// Restore what [`Analyzer::checkpoint`] produced, on assignment; unknown text is ignored.
    pub fn restore(&mut self, partition: i32, checkpoint: &str) -> bool {
        match checkpoint.strip_prefix("maxEvent=").and_then(|v| v.parse::<i64>().ok()) {
            Some(ms) => {
                self.windower.restore_max_event(partition, ms);
                true
            }
            None => false,
        }
    }

    /// Drop all state of a revoked partition.
    pub fn revoke(&mut self, partition: i32) {
        self.windower.revoke(partition);
        self.series.retain(|_, s| s.partition != partition);
    }

    /// Close every open window (bounded input, or shutdown after a final commit).
    pub fn flush(&mut self) -> Vec<Aggregate> {
        self.windower.flush()
    }

    /// Values dropped because their window had already closed.
    pub fn late_values(&self) -> u64 {
        self.windower.late_values()
    }

    /// Number of (device, metric) series with model state.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::AlertState;
    use crate::testutil::Rng;
    use chrono::{TimeZone, Utc};

    fn reading(device: &str, s: i64, x: f64) -> Reading {
        let t = Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("valid");
        Reading {
            schema_version: 1,
            id: format!("{device}-{s}"),
            device_id: device.to_owned(),
            event_time: t,
            received_time: t,
            metrics: BTreeMap::from([("temp".to_owned(), x)]),
            tags: BTreeMap::new(),
            location: None,
        }
    }

    fn run(input: &[(i32, Reading)]) -> (Vec<Output>, Analyzer) {
        let mut a = Analyzer::new(AnalyzerConfig::default());
        let out = input.iter().enumerate().map(|(o, (p, r))| a.process(*p, o as i64, r)).collect();
        (out, a)
    }

    #[test]
    fn a_spike_opens_one_alert_and_replay_is_identical() {
        let mut rng = Rng::new(12);
        let mut input: Vec<(i32, Reading)> = (0..1500).map(|s| (0, reading("d", s, 20.0 + rng.normal()))).collect();
        input.push((0, reading("d", 1500, 80.0)));
        input.extend((1501..1900).map(|s| (0, reading("d", s, 20.0 + rng.normal()))));
        input.extend((0..50).map(|s| (1, reading("e", s, 1.0))));
        let (out, mut a) = run(&input);
        let alerts: Vec<&Alert> = out.iter().flat_map(|o| &o.alerts).collect();
        let opened: Vec<_> = alerts.iter().filter(|x| x.state == AlertState::Opened).collect();
        assert!(opened.iter().any(|x| x.updated_at == input[1500].1.event_time && x.model == "spike"), "{alerts:?}");
        assert!(alerts.iter().any(|x| x.state == AlertState::Resolved));
        let aggs: Vec<&Aggregate> = out.iter().flat_map(|o| &o.aggregates).collect();
        let spike_window = aggs.iter().find(|g| g.window_seconds == 10 && g.max == 80.0).expect("spike window emitted");
        assert!(spike_window.anomaly_score > 0.9);
        assert_eq!(run(&input).0, out, "replay gives identical output");
        assert_eq!(a.series_count(), 2);
        assert!(a.committable_offset(0).is_some());
        a.revoke(1);
        assert_eq!((a.series_count(), a.committable_offset(1)), (1, None));
    }

    #[test]
    fn a_restored_checkpoint_keeps_closed_windows_closed_on_replay() {
        let mut a = Analyzer::new(AnalyzerConfig::default());
        for s in 0..100 {
            a.process(0, s, &reading("d", s, 1.0));
        }
        let cp = a.checkpoint(0).expect("checkpoint");
        assert_eq!(cp, format!("maxEvent={}", reading("d", 99, 1.0).event_time.timestamp_millis()));
        // A new owner replays from some offset; a reading for a window that had closed must stay out.
        let mut b = Analyzer::new(AnalyzerConfig::default());
        assert!(b.restore(0, &cp));
        assert!(!b.restore(0, "garbage"));
        let out = b.process(0, 100, &reading("d", 5, 9.0));
        assert!(out.aggregates.is_empty());
        assert!(b.late_values() > 0, "the old window is not rebuilt from a late value");
        // Without the checkpoint the same value would open (and later re-emit) an old window.
        let mut c = Analyzer::new(AnalyzerConfig::default());
        c.process(0, 100, &reading("d", 5, 9.0));
        assert_eq!(c.late_values(), 0);
    }
}
