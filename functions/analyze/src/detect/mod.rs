//! Online anomaly models per (device, metric) series and what turns their
//! scores into alerts.
//!
//! - [`spike`]: spike-and-dip (robust z against the recent median),
//! - [`changepoint`]: level shifts (two-window median test),
//! - [`seasonal`]: values unusual for the time of day,
//! - [`rules`]: operator thresholds like `temperature > 90 for 30s`,
//! - [`SeriesModel`]: the combiner, giving every value a [`Verdict`],
//! - [`alert`]: the incident state machine.
//!
//! Every model is one pass with no look-ahead: a value is scored only from
//! what came before it (and itself). Memory per series is bounded by the
//! configuration. With the defaults the f64 rings hold
//! 512 (spike) + 468 (change point) + 144 x 8 + 288 (seasonal) + 50 (novelty)
//! = 2470 values (19.3 KiB), the scratch buffers at most 512 + 468 + 288
//! values (9.9 KiB), plus three calibration sketches of at most 128 buckets
//! each and one timestamp per rule: about 35 KiB per series. All scores are in [0, 1].

pub mod alert;
pub mod changepoint;
pub mod rules;
pub mod seasonal;
pub mod spike;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::sketch::QuantileSketch;
use changepoint::{ChangePointConfig, ChangePointDetector};
use rules::{Rule, RuleState};
use seasonal::{SeasonalConfig, SeasonalDetector};
use spike::{SpikeConfig, SpikeDetector};

/// Median and median absolute deviation of `xs` (reordered in place).
/// Returns `(0, 0)` for an empty slice.
pub(crate) fn median_mad(xs: &mut [f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let mid = xs.len() / 2;
    let (_, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    let med = *m;
    xs.iter_mut().for_each(|x| *x = (*x - med).abs());
    let (_, d, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    (med, *d)
}

/// Map a non-negative strength `z` to [0, 1): `z^2 / (z^2 + half^2)`, 0.5 at
/// `z = half`, 0.9 at `3 * half`. Squaring keeps ordinary noise near 0.
pub(crate) fn squash(z: f64, half: f64) -> f64 {
    if !z.is_finite() {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    let z2 = z * z;
    (z2 / (z2 + half * half)).clamp(0.0, 1.0)
}

/// Configuration of the models of one series. The defaults are the ones
/// tuned on NAB (see [`crate::nab`]).
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// Spike-and-dip parameters.
    pub spike: SpikeConfig,
    /// Change-point parameters.
    pub changepoint: ChangePointConfig,
    /// Seasonal parameters (`None`: no seasonal model).
    pub seasonal: Option<SeasonalConfig>,
    /// Threshold rules (only those whose metric matches a series apply to it).
    pub rules: Vec<Rule>,
    /// Novelty window of the detection score (see [`Verdict::detection`]); 0
    /// turns the filter off. Default [`DEFAULT_NOVELTY`].
    pub novelty: Option<usize>,
    /// Per-series calibration of the model strengths.
    pub calibration: Calibration,
}

/// Per-series calibration: each model's raw strength `z` (robust z of a
/// spike, size of a shift) is compared with the `quantile` of that model's
/// own past strengths on the series, `q`, and scored
/// `squash(max(0, z / q - 1), half)`. A series that is always jumpy thus
/// needs a bigger jump to score high than a calm one, and one threshold fits
/// every series. Memory: one [`QuantileSketch`] of `max_buckets` buckets per model.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Off: scores are `squash(z, z_half)` of each model's own config.
    pub enabled: bool,
    /// The quantile of past strengths that counts as "usual".
    pub quantile: f64,
    /// Excess over the usual (`z / q - 1`) at which the score is 0.5.
    pub half: f64,
    /// Strengths seen before any score above 0 is given.
    pub min_samples: u64,
    /// Relative accuracy of the sketch of past strengths.
    pub alpha: f64,
    /// Bucket cap of that sketch.
    pub max_buckets: usize,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.99,
            half: 1.0,
            min_samples: 100,
            alpha: 0.05,
            max_buckets: 128,
        }
    }
}

/// The calibration state of one model on one series.
#[derive(Clone, Debug)]
struct Calibrator {
    past: QuantileSketch,
}

impl Calibrator {
    fn new(c: &Calibration) -> Self {
        Self {
            past: QuantileSketch::new(c.alpha, c.max_buckets),
        }
    }

    /// Score `z` against the past strengths, then remember it.
    fn score(&mut self, c: &Calibration, z: Option<f64>, z_half: f64) -> f64 {
        let Some(z) = z.filter(|z| z.is_finite()) else {
            return 0.0;
        };
        if !c.enabled {
            return squash(z, z_half);
        }
        let s = if self.past.count() >= c.min_samples {
            let q = self.past.quantile(c.quantile).unwrap_or(0.0).max(1e-9);
            squash((z / q - 1.0).max(0.0), c.half)
        } else {
            0.0
        };
        self.past.insert(z);
        s
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            spike: SpikeConfig::default(),
            changepoint: ChangePointConfig::default(),
            seasonal: Some(SeasonalConfig::default()),
            rules: Vec::new(),
            novelty: None,
            calibration: Calibration::default(),
        }
    }
}

/// Default novelty window, in values.
pub const DEFAULT_NOVELTY: usize = 50;

/// The combined verdict on one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The highest model score, in [0, 1]: what aggregates and alerts use.
    pub score: f64,
    /// The model that gave `score` (`threshold`, `spike` or `changepoint`; on
    /// a tie the first in that order).
    pub model: &'static str,
    /// `score * (1 - m)`, `m` the highest `score` of the previous `novelty`
    /// values: "a new incident starts here". An ongoing anomaly is reported
    /// once, at its start, not at every value; this is what the NAB
    /// evaluation scores, as NAB counts the first detection in a window and
    /// penalises every later one outside it.
    pub detection: f64,
    /// Human-readable reason.
    pub reason: String,
}

/// All models of one series and the combiner.
#[derive(Clone, Debug)]
pub struct SeriesModel {
    spike: SpikeDetector,
    changepoint: ChangePointDetector,
    seasonal: Option<(SeasonalDetector, Calibrator, f64)>,
    rules: Vec<RuleState>,
    calibration: Calibration,
    spike_cal: Calibrator,
    changepoint_cal: Calibrator,
    spike_half: f64,
    changepoint_half: f64,
    novelty: usize,
    recent: VecDeque<f64>,
}

impl SeriesModel {
    /// Fresh models for the series of `metric`.
    pub fn new(config: &DetectorConfig, metric: &str) -> Self {
        let novelty = config.novelty.unwrap_or(DEFAULT_NOVELTY);
        Self {
            spike: SpikeDetector::new(config.spike.clone()),
            changepoint: ChangePointDetector::new(config.changepoint.clone()),
            seasonal: config.seasonal.clone().map(|c| {
                let half = c.z_half;
                (SeasonalDetector::new(c), Calibrator::new(&config.calibration), half)
            }),
            rules: config
                .rules
                .iter()
                .filter(|r| r.metric == metric)
                .cloned()
                .map(RuleState::new)
                .collect(),
            calibration: config.calibration.clone(),
            spike_cal: Calibrator::new(&config.calibration),
            changepoint_cal: Calibrator::new(&config.calibration),
            spike_half: config.spike.z_half,
            changepoint_half: config.changepoint.z_half,
            novelty,
            recent: VecDeque::with_capacity(novelty),
        }
    }

    /// Score the value `x` taken at event time `t` (values of a series must
    /// come in event-time order for the rules' hold times to mean anything).
    pub fn update(&mut self, t: DateTime<Utc>, x: f64) -> Verdict {
        let spike = self
            .spike_cal
            .score(&self.calibration, self.spike.strength(x), self.spike_half);
        let cp = self
            .changepoint_cal
            .score(&self.calibration, self.changepoint.strength(x), self.changepoint_half);
        let seasonal = match &mut self.seasonal {
            Some((d, cal, half)) => cal.score(&self.calibration, d.strength(t, x), *half),
            None => 0.0,
        };
        let mut fired: Option<&Rule> = None;
        for r in &mut self.rules {
            if r.update(t, x) >= 1.0 && fired.is_none() {
                fired = Some(r.rule());
            }
        }
        let (score, model, reason) = if let Some(rule) = fired {
            (1.0, Rule::NAME, format!("rule '{}' holds (value {x})", rule.text))
        } else if spike >= cp && spike >= seasonal {
            (
                spike,
                SpikeDetector::NAME,
                format!("value {x} is far from the recent median (spike score {spike:.3})"),
            )
        } else if seasonal > cp {
            (
                seasonal,
                SeasonalDetector::NAME,
                format!("value {x} is unusual for this time of day (seasonal score {seasonal:.3})"),
            )
        } else {
            (
                cp,
                ChangePointDetector::NAME,
                format!("level shift: the recent median moved (change-point score {cp:.3})"),
            )
        };
        let best_recent = self.recent.iter().copied().fold(0.0, f64::max);
        // Damped by how strongly the recent past was already anomalous: an
        // ongoing incident is reported once, at its start.
        let detection = score * (1.0 - best_recent);
        if self.novelty > 0 {
            if self.recent.len() == self.novelty {
                self.recent.pop_front();
            }
            self.recent.push_back(score);
        }
        Verdict {
            score,
            model,
            detection,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("valid")
    }

    #[test]
    fn median_mad_and_squash() {
        let mut xs = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median_mad(&mut xs), (3.0, 1.0));
        assert_eq!(squash(2.0, 2.0), 0.5);
        assert_eq!(squash(0.0, 2.0), 0.0);
        assert_eq!(squash(f64::INFINITY, 2.0), 1.0);
    }

    #[test]
    fn combiner_picks_the_strongest_model_and_reports_an_incident_once() {
        let cfg = DetectorConfig {
            rules: vec![Rule::parse("temp > 1000").expect("valid")],
            ..DetectorConfig::default()
        };
        let mut m = SeriesModel::new(&cfg, "temp");
        let mut rng = Rng::new(4);
        // Warm up past every model's history (the change point needs 468 values).
        for i in 0..1200 {
            let v = m.update(t(i), 20.0 + rng.normal());
            assert!((0.0..=1.0).contains(&v.score) && (0.0..=1.0).contains(&v.detection));
        }
        let spike = m.update(t(1200), 60.0);
        assert_eq!(spike.model, "spike");
        assert!(spike.detection > 0.9);
        // Calm again, then a lasting level shift: scored high for a while (until
        // the calibration and histories absorb the new level), but reported as
        // a new incident only at its start.
        (1201..1400).for_each(|i| {
            m.update(t(i), 20.0 + rng.normal());
        });
        let shifted: Vec<Verdict> = (1400..1500).map(|i| m.update(t(i), 35.0 + rng.normal())).collect();
        let high = shifted.iter().filter(|v| v.score > 0.9).count();
        assert!(high >= 5, "the shift scored > 0.9 only {high} times");
        assert!(shifted[0].detection > 0.9);
        let reported = shifted.iter().filter(|v| v.detection > 0.5).count();
        assert!(reported <= 3, "ongoing shift reported {reported} times");
        let rule = m.update(t(1500), 2000.0);
        assert_eq!((rule.model, rule.score), ("threshold", 1.0));
        // Rules of other metrics do not apply.
        let mut other = SeriesModel::new(&cfg, "rpm");
        assert_ne!(other.update(t(0), 5000.0).model, "threshold");
    }

    #[test]
    fn same_input_same_verdicts() {
        let run = || {
            let mut m = SeriesModel::new(&DetectorConfig::default(), "x");
            let mut rng = Rng::new(8);
            (0..2000)
                .map(|i| m.update(t(i), rng.normal() + if i > 1000 { 5.0 } else { 0.0 }))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
