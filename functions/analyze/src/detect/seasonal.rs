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
//! large offset costs no precision) and a bitset of warm slots, in one
//! allocation, and one [`RobustEw`]: 670 bytes with the default 144 slots.

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
    /// One allocation, not two (the allocator would round each up): first
    /// the `bins` slot levels minus `anchor`, as `f32` bits (NaN: the slot
    /// has seen nothing yet), then a bitset of the slots that have seen at
    /// least two values (scored from then on), in 32-bit words.
    slots: Box<[u32]>,
    bins: u32,
    anchor: f64,
    residual: RobustEw,
}

impl SeasonalDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "seasonal";

    /// A detector with empty slots.
    pub fn new(c: &SeasonalConfig) -> Self {
        // More slots than a `u32` counts would be a day in 20-µs slots.
        let bins = c.bins.clamp(1, u32::MAX as usize / 2);
        let mut slots = vec![f32::NAN.to_bits(); bins + bins.div_ceil(32)];
        slots[bins..].fill(0);
        Self {
            slots: slots.into_boxed_slice(),
            bins: bins as u32,
            anchor: f64::NAN,
            residual: RobustEw::default(),
        }
    }

    /// Heap bytes held (the slots and the bitset).
    pub fn heap_bytes(&self) -> usize {
        4 * self.slots.len()
    }

    fn bins(&self) -> usize {
        self.bins as usize
    }

    fn level(&self, bin: usize) -> f64 {
        f64::from(f32::from_bits(self.slots[bin]))
    }

    fn set_level(&mut self, bin: usize, level: f64) {
        self.slots[bin] = (level as f32).clamp(-f32::MAX, f32::MAX).to_bits();
    }

    fn warm(&self, bin: usize) -> bool {
        self.slots[self.bins() + bin / 32] & (1 << (bin % 32)) != 0
    }

    fn set_warm(&mut self, bin: usize) {
        let word = self.bins() + bin / 32;
        self.slots[word] |= 1 << (bin % 32);
    }

    fn slot(&self, c: &SeasonalConfig, t: DateTime<Utc>) -> usize {
        let period = c.period_seconds.max(1);
        let phase = t.timestamp().rem_euclid(period);
        let bin = (i128::from(phase) * self.bins() as i128 / i128::from(period)) as usize;
        bin.min(self.bins() - 1)
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
        let level = self.level(bin);
        if level.is_nan() {
            self.set_level(bin, rel);
            return None;
        }
        let r = rel - level;
        if !r.is_finite() {
            // A value too far from the slot to subtract in f64 says nothing
            // about the season; leave the state as it is.
            return None;
        }
        let warm = self.warm(bin);
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
            self.set_warm(bin);
            0.5 * r
        };
        self.set_level(bin, level + step);
        out
    }

    /// The band of values within `z` residual deviations of what the slot of
    /// `t` expects (`None` while the slot is empty).
    pub fn band(&self, c: &SeasonalConfig, t: DateTime<Utc>, z: f64) -> Option<(f64, f64)> {
        let level = self.level(self.slot(c, t));
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
        w.u32(self.slots.len() as u32);
        for &word in &self.slots {
            w.u32(word);
        }
        w.f64(self.anchor);
        self.residual.save(w);
    }

    /// Read what [`SeasonalDetector::save`] wrote into a detector made for
    /// the same configuration (`self`): another number of slots is
    /// [`Corrupt`] (the configuration changed; the series starts cold).
    pub(crate) fn load_into(&mut self, r: &mut Reader<'_>) -> Result<(), Corrupt> {
        if r.u32()? as usize != self.slots.len() {
            return Err(Corrupt);
        }
        for word in self.slots.iter_mut() {
            *word = r.u32()?;
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
        assert_eq!(d.heap_bytes(), 4 * 144 + 4 * 5);
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
