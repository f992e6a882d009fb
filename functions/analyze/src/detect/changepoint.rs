//! Change-point (level shift) detector, in the spirit of Azure Stream
//! Analytics' `AnomalyDetection_ChangePoint`: the distance between a fast
//! and a slow robust level of the series, in robust standard deviations of
//! the slow one.
//!
//! Both levels clip what one value can do (see [`RobustEw`]), so single
//! spikes hardly move them (that is the spike detector's job): the score
//! rises once the fast level has followed a lasting move that the slow one
//! has not yet. One pass, no look-ahead. Memory per series: two
//! [`RobustEw`]s (80 bytes).

use super::robust::{RobustEw, alpha};
use super::squash;
use crate::state::codec::{Corrupt, Reader, Writer};

/// Change-point parameters.
#[derive(Clone, Debug)]
pub struct ChangePointConfig {
    /// Span of the fast ("recent") level, in values.
    pub recent: usize,
    /// Span of the slow ("reference") level, in values.
    pub reference: usize,
    /// Shift (in robust standard deviations of the reference) at which the
    /// uncalibrated score reaches 0.5.
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
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangePointDetector {
    fast: RobustEw,
    slow: RobustEw,
}

impl ChangePointDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "changepoint";

    /// Add `x` and score the shift between the levels in [0, 1]
    /// (standalone use); 0 until `recent + reference` values were seen.
    pub fn update(&mut self, c: &ChangePointConfig, x: f64) -> f64 {
        self.strength(c, x).map_or(0.0, |z| squash(z, c.z_half))
    }

    /// Like [`ChangePointDetector::update`] but returns the raw shift in
    /// robust standard deviations (`None` during warm-up).
    pub fn strength(&mut self, c: &ChangePointConfig, x: f64) -> Option<f64> {
        self.fast.update(x, alpha(c.recent));
        self.slow.update(x, alpha(c.reference));
        let warm = self.slow.count() as usize >= c.recent + c.reference;
        warm.then(|| (self.fast.loc() - self.slow.loc()).abs() / self.slow.sigma())
    }

    /// The level before the shift and the level now.
    pub fn levels(&self) -> (f64, f64) {
        (self.slow.loc(), self.fast.loc())
    }
}

impl ChangePointDetector {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        self.fast.save(w);
        self.slow.save(w);
    }

    /// Read what [`ChangePointDetector::save`] wrote.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Self {
            fast: RobustEw::load(r)?,
            slow: RobustEw::load(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn a_level_shift_scores_high_a_single_spike_does_not() {
        let mut rng = Rng::new(2);
        let c = ChangePointConfig {
            recent: 12,
            reference: 144,
            ..ChangePointConfig::default()
        };
        let mut d = ChangePointDetector::default();
        let mut before: f64 = 0.0;
        for _ in 0..400 {
            before = before.max(d.update(&c, 5.0 + rng.normal()));
        }
        assert!(before < 0.5, "noise {before}");
        assert!(d.update(&c, 100.0) < 0.5, "a lone spike is not a change point");
        let mut after: f64 = 0.0;
        for _ in 0..24 {
            after = after.max(d.update(&c, 15.0 + rng.normal()));
        }
        assert!(after > 0.8, "shift {after}");
        let (from, to) = d.levels();
        assert!(from < 8.0 && to > 12.0, "levels {from} -> {to}");
    }
}
