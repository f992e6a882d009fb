//! Spike-and-dip detector (in the spirit of Azure Stream Analytics'
//! `AnomalyDetection_SpikeAndDip`): how far the new value is from the
//! series' recent level, in robust standard deviations.
//!
//! One pass, no look-ahead: a value is scored against the estimate *before*
//! it, then joins it. Memory per series: one [`RobustEw`] (40 bytes)
//! whatever the span; the settings are shared, not kept per series.

use super::robust::{RobustEw, alpha};
use super::squash;
use crate::state::codec::{Corrupt, Reader, Writer};

/// Which direction counts as anomalous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpikeMode {
    /// Values above and below the recent level.
    Both,
    /// Only values above it.
    Spikes,
    /// Only values below it.
    Dips,
}

/// Spike-and-dip parameters.
#[derive(Clone, Debug)]
pub struct SpikeConfig {
    /// Span of the level and spread estimate, in values (how far back the
    /// "recent" level reaches).
    pub span: usize,
    /// Values needed before any score above 0 is given.
    pub min_history: u32,
    /// Robust z at which the uncalibrated score reaches 0.5 (see `squash`).
    pub z_half: f64,
    /// Direction.
    pub mode: SpikeMode,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            span: 768,
            min_history: 32,
            z_half: 6.0,
            mode: SpikeMode::Both,
        }
    }
}

/// Spike-and-dip state of one series.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpikeDetector {
    level: RobustEw,
}

impl SpikeDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "spike";

    /// Score `x` in [0, 1] against the past, then remember it (standalone
    /// use: `squash` of [`SpikeDetector::strength`] at `z_half`).
    pub fn update(&mut self, c: &SpikeConfig, x: f64) -> f64 {
        self.strength(c, x).map_or(0.0, |z| squash(z, c.z_half))
    }

    /// Like [`SpikeDetector::update`] but returns the raw robust z (`None`
    /// during warm-up), for callers that calibrate it themselves.
    pub fn strength(&mut self, c: &SpikeConfig, x: f64) -> Option<f64> {
        let score = (self.level.count() >= c.min_history.max(2)).then(|| {
            let z = self.level.z(x);
            match c.mode {
                SpikeMode::Both => z.abs(),
                SpikeMode::Spikes => z.max(0.0),
                SpikeMode::Dips => (-z).max(0.0),
            }
        });
        self.level.update(x, alpha(c.span));
        score
    }

    /// Values seen (saturating).
    pub fn seen(&self) -> u32 {
        self.level.count()
    }

    /// The values within `z` robust standard deviations of the level: the
    /// band the next value is expected in.
    pub fn band(&self, z: f64) -> (f64, f64) {
        let (m, s) = (self.level.loc(), self.level.sigma());
        (m - z * s, m + z * s)
    }
}

impl SpikeDetector {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        self.level.save(w);
    }

    /// Read what [`SpikeDetector::save`] wrote.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Self {
            level: RobustEw::load(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn a_spike_scores_high_and_noise_low() {
        let c = SpikeConfig::default();
        let mut d = SpikeDetector::default();
        let mut rng = Rng::new(1);
        let mut noise_max: f64 = 0.0;
        for i in 0..500 {
            let s = d.update(&c, 10.0 + rng.normal());
            if i > 40 {
                noise_max = noise_max.max(s);
            }
        }
        let (lo, hi) = d.band(3.0);
        assert!(lo > 6.0 && lo < 8.0 && hi > 12.0 && hi < 14.0, "band {lo}..{hi}");
        let spike = d.update(&c, 40.0);
        assert!(spike > 0.9, "spike {spike}");
        assert!(noise_max < 0.5, "noise {noise_max}");
        // A dip only counts in Both/Dips mode.
        let only_spikes = SpikeConfig {
            mode: SpikeMode::Spikes,
            ..SpikeConfig::default()
        };
        let mut d = SpikeDetector::default();
        for _ in 0..100 {
            d.update(&only_spikes, 10.0 + rng.normal());
        }
        assert_eq!(d.update(&only_spikes, -30.0), 0.0);
    }

    #[test]
    fn no_score_during_warm_up() {
        let c = SpikeConfig {
            min_history: 10,
            ..SpikeConfig::default()
        };
        let mut d = SpikeDetector::default();
        for i in 0..10 {
            assert_eq!(d.update(&c, f64::from(i) * 1000.0), 0.0, "no score during warm-up");
        }
        assert!(d.update(&c, 1e9) > 0.9);
    }
}
