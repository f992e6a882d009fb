//! Seasonal (time-of-day) detector: how far a value is from what the series
//! usually does at the same time of day, in robust standard deviations of
//! those residuals. Catches a missing daily peak or a flat stretch that the
//! spike and change-point models see as ordinary values.
//!
//! The day is cut into `bins` slots; each slot keeps a streaming median of
//! the values that fell into it (weight about `1 / per_bin`, steps in
//! residual spreads, so one odd day does not rewrite the slot). A value's residual is its distance from its
//! slot's level; its strength is the robust z of that residual against the
//! residuals so far. One pass, no look-ahead. Memory per series: `4 * bins`
//! bytes of slot levels (`f32`, relative to the series' first value, so a
//! large offset costs no precision), a bitset of warm slots and one
//! [`RobustEw`]: 660 bytes with the default 144 slots.

use chrono::{DateTime, Utc};

use super::robust::{RobustEw, alpha};
use super::squash;
use crate::state::codec::{Corrupt, Reader, Writer};

/// Seasonal parameters.
#[derive(Clone, Debug)]
pub struct SeasonalConfig {
    /// Length of a season in seconds (a day by default).
    pub period_seconds: i64,
    /// Slots per season.
    pub bins: usize,
    /// Span of a slot's level, in values that fell into the slot.
    pub per_bin: usize,
    /// Span of the residuals' level and spread, in values.
    pub residuals: usize,
    /// Robust z at which the uncalibrated score is 0.5.
    pub z_half: f64,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            period_seconds: 86_400,
            bins: 144,
            per_bin: 16,
            residuals: 288,
            z_half: 6.0,
        }
    }
}

/// Seasonal state of one series.
#[derive(Clone, Debug)]
pub struct SeasonalDetector {
    /// Slot levels minus `anchor`; NaN: the slot has seen nothing yet.
    levels: Box<[f32]>,
    /// Slots that have seen at least two values (scored from then on).
    warm: Box<[u64]>,
    anchor: f64,
    residual: RobustEw,
}

impl SeasonalDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "seasonal";

    /// A detector with empty slots.
    pub fn new(c: &SeasonalConfig) -> Self {
        let bins = c.bins.max(1);
        Self {
            levels: vec![f32::NAN; bins].into_boxed_slice(),
            warm: vec![0; bins.div_ceil(64)].into_boxed_slice(),
            anchor: f64::NAN,
            residual: RobustEw::default(),
        }
    }

    /// Heap bytes held (the slots and the bitset).
    pub fn heap_bytes(&self) -> usize {
        4 * self.levels.len() + 8 * self.warm.len()
    }

    fn slot(&self, c: &SeasonalConfig, t: DateTime<Utc>) -> usize {
        let period = c.period_seconds.max(1);
        let phase = t.timestamp().rem_euclid(period);
        let bin = (i128::from(phase) * self.levels.len() as i128 / i128::from(period)) as usize;
        bin.min(self.levels.len() - 1)
    }

    /// Score the value `x` at `t` in [0, 1] (standalone use).
    pub fn update(&mut self, c: &SeasonalConfig, t: DateTime<Utc>, x: f64) -> f64 {
        self.strength(c, t, x).map_or(0.0, |z| squash(z, c.z_half))
    }

    /// The raw robust z of the seasonal residual (`None` while the slot or
    /// the residual history is too short).
    pub fn strength(&mut self, c: &SeasonalConfig, t: DateTime<Utc>, x: f64) -> Option<f64> {
        if self.anchor.is_nan() {
            self.anchor = x;
        }
        let bin = self.slot(c, t);
        let rel = x - self.anchor;
        let level = f64::from(self.levels[bin]);
        if level.is_nan() {
            self.levels[bin] = (rel as f32).clamp(-f32::MAX, f32::MAX);
            return None;
        }
        let r = rel - level;
        if !r.is_finite() {
            // A value too far from the slot to subtract in f64 says nothing
            // about the season; leave the state as it is.
            return None;
        }
        let warm = self.warm[bin / 64] & (1 << (bin % 64)) != 0;
        let mut out = None;
        if warm {
            if self.residual.count() as usize >= c.residuals / 2 {
                out = Some((r - self.residual.loc()).abs() / self.residual.sigma());
            }
            self.residual.update(r, alpha(c.residuals));
        }
        // The slot's level: the mean of its first two values, then a frugal
        // streaming median (steps of 2 residual spreads times the slot's
        // weight towards the value, once the residuals have a spread), so
        // one odd day barely moves it.
        let step = if warm && self.residual.count() >= super::robust::WARM_UP {
            alpha(c.per_bin) * 2.0 * self.residual.sigma() * r.signum()
        } else if warm {
            // No residual spread to step by yet: an exponentially weighted mean.
            alpha(c.per_bin) * r
        } else {
            self.warm[bin / 64] |= 1 << (bin % 64);
            0.5 * r
        };
        self.levels[bin] = ((level + step) as f32).clamp(-f32::MAX, f32::MAX);
        out
    }

    /// The band of values within `z` residual deviations of what the slot of
    /// `t` expects (`None` while the slot is empty).
    pub fn band(&self, c: &SeasonalConfig, t: DateTime<Utc>, z: f64) -> Option<(f64, f64)> {
        let level = f64::from(self.levels[self.slot(c, t)]);
        if level.is_nan() || self.residual.count() == 0 {
            return None;
        }
        let m = self.anchor + level + self.residual.loc();
        let s = self.residual.sigma();
        Some((m - z * s, m + z * s))
    }
}

impl SeasonalDetector {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.u32(self.levels.len() as u32);
        for &l in &self.levels {
            w.f32(l);
        }
        for &b in &self.warm {
            w.u64(b);
        }
        w.f64(self.anchor);
        self.residual.save(w);
    }

    /// Read what [`SeasonalDetector::save`] wrote into a detector made for
    /// the same configuration (`self`): another number of slots is
    /// [`Corrupt`] (the configuration changed; the series starts cold).
    pub(crate) fn load_into(&mut self, r: &mut Reader<'_>) -> Result<(), Corrupt> {
        if r.u32()? as usize != self.levels.len() {
            return Err(Corrupt);
        }
        for l in self.levels.iter_mut() {
            *l = r.f32()?;
        }
        for b in self.warm.iter_mut() {
            *b = r.u64()?;
        }
        self.anchor = r.f64()?;
        self.residual = RobustEw::load(r)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use chrono::TimeZone;

    #[test]
    fn a_missing_daily_peak_scores_high() {
        let c = SeasonalConfig::default();
        let mut d = SeasonalDetector::new(&c);
        assert_eq!(d.heap_bytes(), 4 * 144 + 8 * 3);
        let mut rng = Rng::new(6);
        let step = 600; // 10 minutes
        let value = |i: i64| if (i % 144) >= 60 && (i % 144) < 72 { 100.0 } else { 10.0 };
        let mut max_normal: f64 = 0.0;
        for i in 0..144 * 10 {
            let t = Utc.timestamp_opt(i * step, 0).single().expect("valid");
            let s = d.update(&c, t, value(i) + rng.normal());
            if i > 144 * 4 {
                max_normal = max_normal.max(s);
            }
        }
        // Day 11: the peak does not come.
        let t = Utc.timestamp_opt((144 * 10 + 65) * step, 0).single().expect("valid");
        let (lo, hi) = d.band(&c, t, 3.0).expect("warm slot");
        assert!(lo > 90.0 && hi < 110.0, "expected {lo}..{hi} at the peak");
        let missing = d.update(&c, t, 10.0);
        assert!(missing > 0.9, "missing peak {missing}");
        assert!(max_normal < 0.5, "normal days {max_normal}");
    }
}
