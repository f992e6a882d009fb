//! Seasonal (time-of-day) detector: how far a value is from what the series
//! usually does at the same time of day, in robust standard deviations of
//! those residuals. Catches a missing daily peak or a flat stretch that the
//! spike and change-point models see as ordinary values.
//!
//! The day is cut into `bins` slots; each slot remembers the last
//! `per_bin` values that fell into it (from earlier days). A value's residual
//! is its distance from the median of its slot; its strength is the robust z
//! of that residual against the last `residuals` residuals. One pass, no
//! look-ahead. Memory per series: `8 * (bins * per_bin + residuals)` bytes
//! (11.5 KiB with the defaults) plus a small scratch buffer.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::{median_mad, squash};

/// Seasonal parameters.
#[derive(Clone, Debug)]
pub struct SeasonalConfig {
    /// Length of a season in seconds (a day by default).
    pub period_seconds: i64,
    /// Slots per season.
    pub bins: usize,
    /// Values remembered per slot.
    pub per_bin: usize,
    /// Residuals the scale is taken over.
    pub residuals: usize,
    /// Robust z at which the standalone score is 0.5.
    pub z_half: f64,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            period_seconds: 86_400,
            bins: 144,
            per_bin: 8,
            residuals: 288,
            z_half: 6.0,
        }
    }
}

/// Seasonal state of one series.
#[derive(Clone, Debug)]
pub struct SeasonalDetector {
    config: SeasonalConfig,
    slots: Vec<VecDeque<f64>>,
    residuals: VecDeque<f64>,
    scratch: Vec<f64>,
}

impl SeasonalDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "seasonal";

    /// A detector with empty history.
    pub fn new(config: SeasonalConfig) -> Self {
        let config = SeasonalConfig {
            period_seconds: config.period_seconds.max(1),
            bins: config.bins.max(1),
            per_bin: config.per_bin.max(1),
            residuals: config.residuals.max(8),
            ..config
        };
        Self {
            slots: vec![VecDeque::new(); config.bins],
            residuals: VecDeque::with_capacity(config.residuals),
            scratch: Vec::new(),
            config,
        }
    }

    /// Score the value `x` at `t` in [0, 1] (standalone use).
    pub fn update(&mut self, t: DateTime<Utc>, x: f64) -> f64 {
        self.strength(t, x).map_or(0.0, |z| squash(z, self.config.z_half))
    }

    /// The raw robust z of the seasonal residual (`None` while the slot or
    /// the residual history is too short).
    pub fn strength(&mut self, t: DateTime<Utc>, x: f64) -> Option<f64> {
        let phase = t.timestamp().rem_euclid(self.config.period_seconds);
        let bin = ((phase as i128 * self.config.bins as i128) / self.config.period_seconds as i128) as usize;
        let bin = bin.min(self.config.bins - 1);
        let slot = &mut self.slots[bin];
        let mut out = None;
        if slot.len() >= 2 {
            self.scratch.clear();
            self.scratch.extend(slot.iter().copied());
            let (expected, _) = median_mad(&mut self.scratch);
            let r = x - expected;
            if self.residuals.len() >= self.config.residuals / 2 {
                self.scratch.clear();
                self.scratch.extend(self.residuals.iter().copied());
                let (lo, hi) = self
                    .scratch
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let (med, mad) = median_mad(&mut self.scratch);
                let scale = (1.4826 * mad).max(0.01 * (hi - lo)).max(1e-6 * (1.0 + x.abs()));
                out = Some((r - med).abs() / scale);
            }
            if self.residuals.len() == self.config.residuals {
                self.residuals.pop_front();
            }
            self.residuals.push_back(r);
        }
        if slot.len() == self.config.per_bin {
            slot.pop_front();
        }
        slot.push_back(x);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use chrono::TimeZone;

    #[test]
    fn a_missing_daily_peak_scores_high() {
        let mut d = SeasonalDetector::new(SeasonalConfig::default());
        let mut rng = Rng::new(6);
        let step = 600; // 10 minutes
        let value = |i: i64| if (i % 144) >= 60 && (i % 144) < 72 { 100.0 } else { 10.0 };
        let mut max_normal: f64 = 0.0;
        for i in 0..144 * 10 {
            let t = Utc.timestamp_opt(i * step, 0).single().expect("valid");
            let s = d.update(t, value(i) + rng.normal());
            if i > 144 * 4 {
                max_normal = max_normal.max(s);
            }
        }
        // Day 11: the peak does not come.
        let t = Utc.timestamp_opt((144 * 10 + 65) * step, 0).single().expect("valid");
        let missing = d.update(t, 10.0);
        assert!(missing > 0.9, "missing peak {missing}");
        assert!(max_normal < 0.5, "normal days {max_normal}");
    }
}
