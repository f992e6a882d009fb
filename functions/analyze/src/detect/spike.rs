//! Spike-and-dip detector (in the spirit of Azure Stream Analytics'
//! `AnomalyDetection_SpikeAndDip`): how far the new value is from the median
//! of the recent past, in robust standard deviations (1.4826 x MAD).
//!
//! One pass, no look-ahead: a value is scored against the history *before*
//! it, then joins it. Memory per series: a ring of at most `history` f64
//! values (`8 * history` bytes, 4 KiB with the default 512) plus a scratch
//! buffer of the same size.

use std::collections::VecDeque;

use super::{median_mad, squash};

/// Which direction counts as anomalous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpikeMode {
    /// Values above and below the recent median.
    Both,
    /// Only values above it.
    Spikes,
    /// Only values below it.
    Dips,
}

/// Spike-and-dip parameters.
#[derive(Clone, Debug)]
pub struct SpikeConfig {
    /// Number of past values the median and MAD are taken over.
    pub history: usize,
    /// Values needed before any score above 0 is given.
    pub min_history: usize,
    /// Robust z at which the score reaches 0.5 (see `squash`).
    pub z_half: f64,
    /// Direction.
    pub mode: SpikeMode,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            history: 512,
            min_history: 32,
            z_half: 6.0,
            mode: SpikeMode::Both,
        }
    }
}

/// Spike-and-dip state of one series.
#[derive(Clone, Debug)]
pub struct SpikeDetector {
    config: SpikeConfig,
    past: VecDeque<f64>,
    scratch: Vec<f64>,
}

impl SpikeDetector {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "spike";

    /// A detector with empty history.
    pub fn new(config: SpikeConfig) -> Self {
        let history = config.history.max(2);
        Self {
            config: SpikeConfig { history, ..config },
            past: VecDeque::with_capacity(history),
            scratch: Vec::with_capacity(history),
        }
    }

    /// Score `x` against the past, then remember it. Score in [0, 1]:
    /// `squash` of [`SpikeDetector::strength`] at `z_half`.
    pub fn update(&mut self, x: f64) -> f64 {
        self.strength(x).map_or(0.0, |z| squash(z, self.config.z_half))
    }

    /// Like [`SpikeDetector::update`] but returns the raw robust z (`None`
    /// during warm-up), for callers that calibrate it themselves.
    pub fn strength(&mut self, x: f64) -> Option<f64> {
        let mut score = None;
        if self.past.len() >= self.config.min_history.max(2) {
            self.scratch.clear();
            self.scratch.extend(self.past.iter().copied());
            let (med, mad) = median_mad(&mut self.scratch);
            let (lo, hi) = self
                .past
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            // A floor on the scale keeps a flat history from turning any wobble
            // into an infinite z: 1% of the recent range, or 1e-6 of the level.
            let scale = (1.4826 * mad).max(0.01 * (hi - lo)).max(1e-6 * (1.0 + med.abs()));
            let d = x - med;
            let d = match self.config.mode {
                SpikeMode::Both => d.abs(),
                SpikeMode::Spikes => d.max(0.0),
                SpikeMode::Dips => (-d).max(0.0),
            };
            score = Some(d / scale);
        }
        if self.past.len() == self.config.history {
            self.past.pop_front();
        }
        self.past.push_back(x);
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn a_spike_scores_high_and_noise_low() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let mut rng = Rng::new(1);
        let mut noise_max: f64 = 0.0;
        for i in 0..500 {
            let s = d.update(10.0 + rng.normal());
            if i > 40 {
                noise_max = noise_max.max(s);
            }
        }
        let spike = d.update(40.0);
        assert!(spike > 0.9, "spike {spike}");
        assert!(noise_max < 0.5, "noise {noise_max}");
        // A dip only counts in Both/Dips mode.
        let mut only_spikes = SpikeDetector::new(SpikeConfig {
            mode: SpikeMode::Spikes,
            ..SpikeConfig::default()
        });
        for _ in 0..100 {
            only_spikes.update(10.0 + rng.normal());
        }
        assert_eq!(only_spikes.update(-30.0), 0.0);
    }

    #[test]
    fn warm_up_and_bounded_history() {
        let mut d = SpikeDetector::new(SpikeConfig {
            history: 50,
            min_history: 10,
            ..SpikeConfig::default()
        });
        for i in 0..10 {
            assert_eq!(d.update(i as f64 * 1000.0), 0.0, "no score during warm-up");
        }
        for i in 0..1000 {
            d.update(i as f64);
        }
        assert_eq!(d.past.len(), 50);
    }
}
