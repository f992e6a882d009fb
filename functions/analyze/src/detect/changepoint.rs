//! Change-point (level shift) detector, in the spirit of Azure Stream
//! Analytics' `AnomalyDetection_ChangePoint`: a two-window test comparing the
//! median of the last `recent` values with the median of the `reference`
//! values before them, in robust standard deviations of the reference.
//!
//! Medians make single spikes irrelevant here (that is the spike detector's
//! job): the score rises only once more than half of the recent window has
//! moved. One pass, no look-ahead. Memory per series: a ring of
//! `recent + reference` f64 values (`8 * (recent + reference)` bytes, 3.7 KiB
//! with the defaults) plus a scratch buffer of the same size.

use std::collections::VecDeque;

use super::{median_mad, squash};

/// Change-point parameters.
#[derive(Clone, Debug)]
pub struct ChangePointConfig {
    /// Length of the recent window.
    pub recent: usize,
    /// Length of the reference window before it.
    pub reference: usize,
    /// Shift (in robust standard deviations of the reference) at which the
    /// score reaches 0.5.
    pub z_half: f64,
}

impl Default for ChangePointConfig {
    fn default() -> Self {
        Self {
            recent: 36,
            reference: 432,
            z_half: 4.0,
        }
    }
}

/// Change-point state of one series.
#[derive(Clone, Debug)]
pub struct ChangePointDetector {
    config: ChangePointConfig,
    values: VecDeque<f64>,
    scratch: Vec<f64>,
}

impl ChangePointDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "changepoint";

    /// A detector with empty history.
    pub fn new(config: ChangePointConfig) -> Self {
        let config = ChangePointConfig {
            recent: config.recent.max(1),
            reference: config.reference.max(4),
            ..config
        };
        let cap = config.recent + config.reference;
        Self {
            config,
            values: VecDeque::with_capacity(cap),
            scratch: Vec::with_capacity(cap),
        }
    }

    /// Add `x` (it becomes the newest value of the recent window) and score
    /// the shift between the windows. Score in [0, 1]; 0 until both windows are full.
    pub fn update(&mut self, x: f64) -> f64 {
        self.strength(x).map_or(0.0, |z| squash(z, self.config.z_half))
    }

    /// Like [`ChangePointDetector::update`] but returns the raw shift in
    /// robust standard deviations (`None` until both windows are full).
    pub fn strength(&mut self, x: f64) -> Option<f64> {
        let cap = self.config.recent + self.config.reference;
        if self.values.len() == cap {
            self.values.pop_front();
        }
        self.values.push_back(x);
        if self.values.len() < cap {
            return None;
        }
        self.scratch.clear();
        self.scratch
            .extend(self.values.iter().take(self.config.reference).copied());
        let (lo, hi) = self
            .scratch
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (ref_med, ref_mad) = median_mad(&mut self.scratch);
        self.scratch.clear();
        self.scratch
            .extend(self.values.iter().skip(self.config.reference).copied());
        let (recent_med, _) = median_mad(&mut self.scratch);
        let scale = (1.4826 * ref_mad)
            .max(0.01 * (hi - lo))
            .max(1e-6 * (1.0 + ref_med.abs()));
        Some((recent_med - ref_med).abs() / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn a_level_shift_scores_high_a_single_spike_does_not() {
        let mut rng = Rng::new(2);
        let mut d = ChangePointDetector::new(ChangePointConfig {
            recent: 12,
            reference: 144,
            ..ChangePointConfig::default()
        });
        let mut before: f64 = 0.0;
        for _ in 0..400 {
            before = before.max(d.update(5.0 + rng.normal()));
        }
        assert!(before < 0.5, "noise {before}");
        assert!(d.update(100.0) < 0.5, "a lone spike is not a change point");
        let mut after: f64 = 0.0;
        for _ in 0..12 {
            after = after.max(d.update(15.0 + rng.normal()));
        }
        assert!(after > 0.8, "shift {after}");
    }
}
