//! Range detector (what Numenta's NAB detector calls a spatial anomaly): a
//! value beyond everything the series has shown since it started, a new
//! all-time high or low, scored by how far beyond, relative to the range.
//!
//! The other models compare a value with the recent level and spread, which
//! adapt: a slow climb to a value never seen before moves them along and
//! scores low, and so does a jump on a series whose spread is wide. The
//! range remembers the extremes for good, so the first value past them
//! stands out whatever the recent past did. A series whose values trend
//! (every value a new high) scores each step by its small excess only,
//! and the novelty filter reports such a run once.
//!
//! Scored `weight * e / (e + half)` for an excess `e` (a share of the
//! range's width), so a new extreme alone stays below an alert (see
//! [`RangeConfig::weight`]); with the defaults a value 1% of the width
//! beyond the range scores 0.3, one a whole width beyond about 0.6.
//!
//! Memory per series: the range as two `f32`s, the low rounded down and the
//! high rounded up, so a value inside the true range is never beyond the
//! stored one. One pass, no look-ahead.

use crate::state::codec::{Corrupt, Reader, Writer};

/// Range parameters.
#[derive(Clone, Debug)]
pub struct RangeConfig {
    /// Values seen before any score above 0 is given (the range of the first
    /// few values is no range yet).
    pub min_history: u32,
    /// Excess beyond the range, as a share of its width, at which the score
    /// is half its most (score `weight * e / (e + half)`).
    pub half: f64,
    /// The most a new extreme scores. Below 1, and below the alerts'
    /// opening score (0.9), on purpose: a value past the range is evidence,
    /// not an incident by itself (every series that trends sets new
    /// extremes). On NAB a weight of 0.6 scored best; 0.8 and 1.0 scored 0.4
    /// and 0.6 points lower (more false positives on trending series).
    pub weight: f64,
}

impl Default for RangeConfig {
    fn default() -> Self {
        Self {
            min_history: 100,
            half: 0.01,
            weight: 0.6,
        }
    }
}

/// The range of one series (empty: `lo > hi`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RangeDetector {
    lo: f32,
    hi: f32,
}

impl Default for RangeDetector {
    fn default() -> Self {
        Self {
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
        }
    }
}

/// `x` as an `f32` no greater than `x` (saturating at the `f32` range).
fn down(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) > x { f.next_down() } else { f }
}

/// `x` as an `f32` no smaller than `x` (saturating at the `f32` range).
fn up(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

impl RangeDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "range";

    /// Score `x` in [0, 1] against the range before it (0 while fewer than
    /// `min_history` values were seen, `seen` counting this one), then widen
    /// the range to hold it.
    pub fn update(&mut self, c: &RangeConfig, seen: u32, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let (lo, hi) = (f64::from(self.lo), f64::from(self.hi));
        let width = hi - lo;
        let score = if seen > c.min_history && width > 0.0 && width.is_finite() {
            let excess = (x - hi).max(lo - x).max(0.0) / width;
            if excess > 0.0 {
                c.weight * excess / (excess + c.half)
            } else {
                0.0
            }
        } else {
            0.0
        };
        self.lo = self.lo.min(down(x));
        self.hi = self.hi.max(up(x));
        score
    }

    /// The range so far (`None` before the first value).
    pub fn range(&self) -> Option<(f64, f64)> {
        (self.lo <= self.hi).then(|| (f64::from(self.lo), f64::from(self.hi)))
    }
}

impl RangeDetector {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.u32(self.lo.to_bits());
        w.u32(self.hi.to_bits());
    }

    /// Read what [`RangeDetector::save`] wrote.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let (lo, hi) = (f32::from_bits(r.u32()?), f32::from_bits(r.u32()?));
        if lo.is_nan() || hi.is_nan() {
            return Err(Corrupt);
        }
        Ok(Self { lo, hi })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_extreme_scores_by_its_excess_and_values_inside_never() {
        let c = RangeConfig {
            min_history: 10,
            half: 0.01,
            weight: 1.0,
        };
        let mut d = RangeDetector::default();
        for i in 0..=10 {
            assert_eq!(d.update(&c, i + 1, 10.0 + f64::from(i % 5)), 0.0, "warming up");
        }
        assert_eq!(d.range(), Some((10.0, 14.0)));
        // Inside, and exactly at the edges: nothing.
        for x in [10.0, 12.5, 14.0] {
            assert_eq!(d.update(&c, 20, x), 0.0);
        }
        // 1% of the width beyond: 0.5; far beyond: near 1.
        assert!((d.update(&c, 21, 14.04) - 0.5).abs() < 1e-3);
        assert!(d.update(&c, 22, 9.0) > 0.95);
        // The range now holds both; they no longer score.
        assert_eq!(d.update(&c, 23, 14.04), 0.0);
        assert_eq!(d.update(&c, 24, 9.0), 0.0);
    }

    #[test]
    fn values_f32_cannot_hold_exactly_are_never_beyond_themselves() {
        let c = RangeConfig {
            min_history: 0,
            ..RangeConfig::default()
        };
        let mut d = RangeDetector::default();
        let xs = [0.1, 1e-9, 123_456.789_012_3, -7.000_000_1, 1e300, -1e300];
        for (i, &x) in xs.iter().enumerate() {
            d.update(&c, i as u32 + 1, x);
        }
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(d.update(&c, 100 + i as u32, x), 0.0, "{x}");
        }
        assert_eq!(d.update(&c, 200, f64::NAN), 0.0);
    }
}
