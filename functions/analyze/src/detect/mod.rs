//! Online anomaly models per (device, metric) series and what turns their
//! scores into alerts.
//!
//! - [`spike`]: spike-and-dip (robust z against the recent level),
//! - [`changepoint`]: level shifts (fast against slow robust level),
//! - [`seasonal`]: values unusual for the time of day,
//! - [`range`]: values beyond every value the series has shown,
//! - [`rules`]: operator thresholds like `temperature > 90 for 30s`,
//! - [`rulebook`]: which of them apply to which series (per group, per device),
//! - [`robust`]: the streaming robust level and spread they share,
//! - [`calibrate`]: per-series calibration of each model's strength,
//! - [`SeriesModel`]: the combiner, giving every value a [`Verdict`],
//! - [`alert`]: the incident state machine.
//!
//! Every model is one pass with no look-ahead: a value is scored only from
//! what came before it (and itself). The state of a series has a fixed size
//! whatever its input (no rings of past values, no scratch space): with the
//! defaults [`SeriesModel::memory_bytes`] is under 1.5 KB (a test holds it
//! to 1,536 bytes), of which the 144 seasonal slots take 600 bytes, the
//! three calibration histograms about 420 and the range 8.
//! The settings are shared by every series, not copied into each. All scores
//! are in [0, 1].

pub mod alert;
pub mod calibrate;
pub mod changepoint;
pub mod range;
pub mod robust;
pub mod rulebook;
pub mod rules;
pub mod seasonal;
pub mod spike;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::state::codec::{Corrupt, Reader, Writer};
pub use calibrate::Calibration;
use calibrate::Calibrator;
use changepoint::{ChangePointConfig, ChangePointDetector};
use range::{RangeConfig, RangeDetector};
use rules::{Rule, RuleState};
use seasonal::{SeasonalConfig, SeasonalDetector};
use spike::{SpikeConfig, SpikeDetector};

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
    /// Range parameters (`None`: no range model).
    pub range: Option<RangeConfig>,
    /// The default threshold rules (`TRIBUTARY_RULES`): see
    /// [`rulebook::RuleBook`] for which rules a series gets.
    pub rules: Vec<Rule>,
    /// Novelty window of the detection score (see [`Verdict::detection`]); 0
    /// turns the filter off. Default [`DEFAULT_NOVELTY`].
    pub novelty: Option<usize>,
    /// Per-series calibration of the model strengths.
    pub calibration: Calibration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            spike: SpikeConfig::default(),
            changepoint: ChangePointConfig::default(),
            seasonal: Some(SeasonalConfig::default()),
            range: Some(RangeConfig::default()),
            rules: Vec::new(),
            novelty: None,
            calibration: Calibration::default(),
        }
    }
}

/// Default novelty window, in values.
pub const DEFAULT_NOVELTY: usize = 50;

/// Every model a [`Verdict`] can name, in the combiner's order of precedence.
pub const MODELS: [&str; 5] = [
    Rule::NAME,
    SpikeDetector::NAME,
    RangeDetector::NAME,
    SeasonalDetector::NAME,
    ChangePointDetector::NAME,
];

/// The position of `name` in [`MODELS`]: what a window stores instead of the
/// name (one byte, not sixteen).
pub fn model_code(name: &str) -> Option<u8> {
    MODELS.iter().position(|m| *m == name).map(|i| i as u8)
}

/// The model at `code` in [`MODELS`].
pub fn model_at(code: u8) -> Option<&'static str> {
    MODELS.get(usize::from(code)).copied()
}

/// The combined verdict on one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The highest model score, in [0, 1]: what aggregates and alerts use.
    pub score: f64,
    /// The model that gave `score` (`threshold`, `spike`, `range`,
    /// `seasonal` or `changepoint`; on a tie the first in that order).
    pub model: &'static str,
    /// `score * (1 - m)`, `m` the highest `score` of the previous `novelty`
    /// values: "a new incident starts here". An ongoing anomaly is reported
    /// once, at its start, not at every value; this is what the NAB
    /// evaluation scores, as NAB counts the first detection in a window and
    /// penalises every later one outside it.
    pub detection: f64,
    /// The band the value was expected in: where the winning model (the
    /// spike model for a change point or a rule) would have scored it below
    /// 0.5. `None` while the models warm up.
    pub expected: Option<(f64, f64)>,
    /// For a change point: the level before and the level now.
    pub shift: Option<(f64, f64)>,
    /// The models have not seen enough of the series to score it yet.
    pub warming: bool,
}

impl Verdict {
    /// A sentence for an operator, built only when an alert needs it (`x` is
    /// the value the verdict is about, `rule` the rule that fired).
    pub fn reason(&self, x: f64, rule: Option<&Rule>) -> String {
        let expected = self
            .expected
            .map(|(lo, hi)| format!(", expected {} to {}", sig(lo), sig(hi)))
            .unwrap_or_default();
        match (self.model, rule) {
            (Rule::NAME, Some(rule)) => format!("rule {} holds (value {x}{expected})", rule.describe()),
            (ChangePointDetector::NAME, _) => match self.shift {
                Some((from, to)) => format!(
                    "level shift from about {} to about {} (change-point score {:.3})",
                    sig(from),
                    sig(to),
                    self.score
                ),
                None => format!("level shift (change-point score {:.3})", self.score),
            },
            (RangeDetector::NAME, _) => format!(
                "value {x} is beyond every value seen on this series{} (range score {:.3})",
                self.expected
                    .map(|(lo, hi)| format!(", {} to {}", sig(lo), sig(hi)))
                    .unwrap_or_default(),
                self.score
            ),
            (SeasonalDetector::NAME, _) => format!(
                "value {x} is unusual for this time of day{expected} (seasonal score {:.3})",
                self.score
            ),
            _ => format!(
                "value {x} is far from the recent level{expected} (spike score {:.3})",
                self.score
            ),
        }
    }
}

/// Four significant digits: what a band in a sentence needs.
fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{v:.digits$}")
}

/// All models of one series and the combiner. The configuration is passed
/// to [`SeriesModel::update`], not kept: it is the same for every series.
#[derive(Clone, Debug)]
pub struct SeriesModel {
    spike: SpikeDetector,
    changepoint: ChangePointDetector,
    seasonal: Option<Box<(SeasonalDetector, Calibrator)>>,
    range: RangeDetector,
    rules: Box<[RuleState]>,
    spike_cal: Calibrator,
    changepoint_cal: Calibrator,
    /// The last `novelty` scores in 1/255ths, a ring written at
    /// `recent_at` (zeros before there were `novelty` scores, which leaves
    /// their maximum unchanged as scores are never negative).
    recent: Box<[u8]>,
    recent_at: u16,
}

impl SeriesModel {
    /// Fresh models for the series of `metric` (its rules come with each
    /// value, see [`SeriesModel::update`]).
    pub fn new(config: &DetectorConfig, _metric: &str) -> Self {
        let novelty = config.novelty.unwrap_or(DEFAULT_NOVELTY);
        Self {
            spike: SpikeDetector::default(),
            changepoint: ChangePointDetector::default(),
            seasonal: config
                .seasonal
                .as_ref()
                .map(|c| Box::new((SeasonalDetector::new(c), Calibrator::default()))),
            range: RangeDetector::default(),
            rules: Box::default(),
            spike_cal: Calibrator::default(),
            changepoint_cal: Calibrator::default(),
            recent: vec![0; novelty.min(usize::from(u16::MAX))].into_boxed_slice(),
            recent_at: 0,
        }
    }

    /// Bytes this series' models hold, inline and on the heap: fixed by the
    /// configuration, whatever the values.
    pub fn memory_bytes(&self) -> usize {
        let seasonal = self
            .seasonal
            .as_ref()
            .map_or(0, |s| size_of::<(SeasonalDetector, Calibrator)>() + s.0.heap_bytes());
        size_of::<Self>() + seasonal + self.rules.len() * size_of::<RuleState>() + self.recent.len()
    }

    /// The most severe of this series' rules that holds (the first of them
    /// on a tie), if any.
    pub fn fired_rule(&self) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.fired())
            .map(|r| &**r.rule())
            .reduce(|a, b| if b.severity > a.severity { b } else { a })
    }

    /// Follow `rules` from now on: a rule with the same condition as one
    /// followed before keeps its state (how long it has held); others start
    /// fresh, and rules no longer given are dropped. Nothing is done when the
    /// rules are the very ones followed (the usual case: one pointer
    /// comparison per rule).
    fn follow(&mut self, rules: &[Arc<Rule>]) {
        if self.rules.len() == rules.len() && self.rules.iter().zip(rules).all(|(s, r)| Arc::ptr_eq(s.rule(), r)) {
            return;
        }
        let mut old = std::mem::take(&mut self.rules).into_vec();
        self.rules = rules
            .iter()
            .map(|r| match old.iter().position(|s| s.rule().same_condition(r)) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    s.adopt(Arc::clone(r));
                    s
                }
                None => RuleState::new(Arc::clone(r)),
            })
            .collect();
    }

    /// Score the value `x` taken at event time `t` under the series'
    /// threshold `rules` (values of a series must come in event-time order
    /// for the rules' hold times to mean anything; a change of the rules
    /// applies from this value on).
    pub fn update(&mut self, config: &DetectorConfig, rules: &[Arc<Rule>], t: DateTime<Utc>, x: f64) -> Verdict {
        self.follow(rules);
        let cal = &config.calibration;
        let spike = self
            .spike_cal
            .score(cal, self.spike.strength(&config.spike, x), config.spike.z_half);
        let cp = self.changepoint_cal.score(
            cal,
            self.changepoint.strength(&config.changepoint, x),
            config.changepoint.z_half,
        );
        let seasonal = match (&mut self.seasonal, &config.seasonal) {
            (Some(s), Some(c)) => {
                let (d, sc) = &mut **s;
                sc.score(cal, d.strength(c, t, x), c.z_half)
            }
            _ => 0.0,
        };
        let range_before = self.range.range();
        let range = config
            .range
            .as_ref()
            .map_or(0.0, |c| self.range.update(c, self.spike.seen(), x));
        let mut fired = false;
        for r in &mut self.rules {
            fired |= r.update(t, x) >= 1.0;
        }
        let spike_band = || {
            cal.half_strength(self.spike_cal.usual(cal), config.spike.z_half)
                .map(|z| self.spike.band(z))
        };
        let (score, model, expected, shift) = if fired {
            (1.0, Rule::NAME, spike_band(), None)
        } else if spike >= cp && spike >= seasonal && spike >= range {
            (spike, SpikeDetector::NAME, spike_band(), None)
        } else if range > cp && range > seasonal {
            (range, RangeDetector::NAME, range_before, None)
        } else if seasonal > cp {
            let band = match (&self.seasonal, &config.seasonal) {
                (Some(s), Some(c)) => cal
                    .half_strength(s.1.usual(cal), c.z_half)
                    .and_then(|z| s.0.band(c, t, z)),
                _ => None,
            };
            (seasonal, SeasonalDetector::NAME, band, None)
        } else {
            let shift = Some(self.changepoint.levels());
            (cp, ChangePointDetector::NAME, spike_band(), shift)
        };
        let warming = self.spike_cal.usual(cal).is_none() || self.changepoint_cal.usual(cal).is_none();
        let best_recent = f64::from(self.recent.iter().copied().max().unwrap_or(0)) / 255.0;
        // Damped by how strongly the recent past was already anomalous: an
        // ongoing incident is reported once, at its start.
        let detection = score * (1.0 - best_recent);
        if let Some(slot) = self.recent.get_mut(usize::from(self.recent_at)) {
            *slot = (score * 255.0).round() as u8;
            self.recent_at = ((usize::from(self.recent_at) + 1) % self.recent.len()) as u16;
        }
        Verdict {
            score,
            model,
            detection,
            expected,
            shift,
            warming,
        }
    }
}

impl SeriesModel {
    /// Write the models' state (see [`crate::state`]); the configuration is
    /// not written, but each rule's condition is, so a rule's state is only
    /// ever carried over to a rule with the same condition.
    pub(crate) fn save(&self, w: &mut Writer) {
        self.spike.save(w);
        self.changepoint.save(w);
        w.bool(self.seasonal.is_some());
        if let Some(s) = &self.seasonal {
            s.0.save(w);
            s.1.save(w);
        }
        self.range.save(w);
        w.u16(self.rules.len() as u16);
        for r in &self.rules {
            w.str(&r.rule().text);
            r.save(w);
        }
        self.spike_cal.save(w);
        self.changepoint_cal.save(w);
        w.bytes(&self.recent);
        w.u16(self.recent_at);
    }

    /// Read what [`SeriesModel::save`] wrote, for a series of `metric` under
    /// `config`. State of another shape (the configuration changed between
    /// the writer and the reader: seasonal model on or off, other slots or
    /// novelty) is [`Corrupt`]: the series then starts cold rather than with
    /// state that means something else. Rules are not configuration: the
    /// series meets its rules at its next value and keeps the state of those
    /// whose condition is unchanged.
    pub(crate) fn load(config: &DetectorConfig, metric: &str, r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let mut m = Self::new(config, metric);
        m.spike = SpikeDetector::load(r)?;
        m.changepoint = ChangePointDetector::load(r)?;
        match (&mut m.seasonal, r.bool()?) {
            (Some(s), true) => {
                s.0.load_into(r)?;
                s.1 = Calibrator::load(r)?;
            }
            (None, false) => {}
            _ => return Err(Corrupt),
        }
        m.range = RangeDetector::load(r)?;
        let rules = usize::from(r.u16()?);
        m.rules = (0..rules)
            .map(|_| {
                let text = r.str()?.to_owned();
                RuleState::load(&text, r)
            })
            .collect::<Result<_, _>>()?;
        m.spike_cal = Calibrator::load(r)?;
        m.changepoint_cal = Calibrator::load(r)?;
        let recent = r.bytes()?;
        if recent.len() != m.recent.len() {
            return Err(Corrupt);
        }
        m.recent.copy_from_slice(recent);
        m.recent_at = r.u16()?;
        if usize::from(m.recent_at) >= m.recent.len().max(1) {
            return Err(Corrupt);
        }
        Ok(m)
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
    fn squash_and_sig() {
        assert_eq!(squash(2.0, 2.0), 0.5);
        assert_eq!(squash(0.0, 2.0), 0.0);
        assert_eq!(squash(f64::INFINITY, 2.0), 1.0);
        assert_eq!(sig(20.123_45), "20.12");
        assert_eq!(sig(-0.001_234_56), "-0.001235");
        assert_eq!(sig(123_456.7), "123457");
    }

    #[test]
    fn combiner_picks_the_strongest_model_explains_it_and_reports_an_incident_once() {
        let cfg = DetectorConfig::default();
        let rules = [Arc::new(Rule::parse("temp > 1000").expect("valid"))];
        let mut m = SeriesModel::new(&cfg, "temp");
        let mut rng = Rng::new(4);
        assert!(m.update(&cfg, &rules, t(0), 20.0).warming);
        // Warm up past every model's history (the change point needs 468 values).
        for i in 1..1200 {
            let v = m.update(&cfg, &rules, t(i), 20.0 + rng.normal());
            assert!((0.0..=1.0).contains(&v.score) && (0.0..=1.0).contains(&v.detection));
        }
        let spike = m.update(&cfg, &rules, t(1200), 60.0);
        assert_eq!(spike.model, "spike");
        assert!(spike.detection > 0.9 && !spike.warming);
        let (lo, hi) = spike.expected.expect("a warm model expects a band");
        assert!(lo > 10.0 && lo < 20.0 && hi > 20.0 && hi < 30.0, "expected {lo}..{hi}");
        let why = spike.reason(60.0, None);
        assert!(
            why.starts_with("value 60 is far from the recent level, expected 1"),
            "{why}"
        );
        // Calm again, then a lasting level shift: scored high for a while (until
        // the calibration and levels absorb it), but reported as a new
        // incident only at its start.
        (1201..1400).for_each(|i| {
            m.update(&cfg, &rules, t(i), 20.0 + rng.normal());
        });
        let shifted: Vec<Verdict> = (1400..1500)
            .map(|i| m.update(&cfg, &rules, t(i), 35.0 + rng.normal()))
            .collect();
        let high = shifted.iter().filter(|v| v.score > 0.9).count();
        assert!(high >= 5, "the shift scored > 0.9 only {high} times");
        assert!(shifted[0].detection > 0.9);
        let reported = shifted.iter().filter(|v| v.detection > 0.5).count();
        assert!(reported <= 3, "ongoing shift reported {reported} times");
        let cp = shifted
            .iter()
            .find(|v| v.model == "changepoint")
            .expect("a change point among them");
        let (from, to) = cp.shift.expect("a change point says from where to where");
        assert!((from - 20.0).abs() < 3.0 && to > from + 1.0, "shift {from} -> {to}");
        assert!(cp.reason(35.0, None).starts_with("level shift from about "));
        let rule = m.update(&cfg, &rules, t(1500), 2000.0);
        assert_eq!((rule.model, rule.score), ("threshold", 1.0));
        assert_eq!(m.fired_rule().map(|r| r.text.as_str()), Some("temp > 1000"));
        assert!(
            rule.reason(2000.0, m.fired_rule())
                .starts_with("rule 'temp > 1000' holds (value 2000")
        );
        // Without the rule, the same value is only a model's finding.
        let none = m.update(&cfg, &[], t(1501), 2000.0);
        assert_ne!(none.model, "threshold");
        assert!(m.fired_rule().is_none());
    }

    #[test]
    fn a_rule_change_applies_from_the_next_value_and_keeps_the_state_of_unchanged_conditions() {
        let cfg = DetectorConfig::default();
        let mut m = SeriesModel::new(&cfg, "temp");
        let held = Arc::new(Rule::parse("temp > 50 for 30s").expect("valid"));
        let rules = [Arc::clone(&held)];
        assert_ne!(m.update(&cfg, &rules, t(0), 60.0).model, "threshold");
        assert_ne!(
            m.update(&cfg, &rules, t(20), 60.0).model,
            "threshold",
            "held 20 s of 30"
        );
        // The rule is now stored with an id and a severity, same condition:
        // the 20 s already held carry over.
        let mut stored = Rule::parse("temp > 50 for 30s").expect("valid");
        stored.id = Some("hot".into());
        stored.severity = tributary_shared::rules::Severity::Critical;
        let renamed = [Arc::new(stored)];
        let v = m.update(&cfg, &renamed, t(30), 60.0);
        assert_eq!((v.model, v.score), ("threshold", 1.0));
        let fired = m.fired_rule().expect("fired");
        assert_eq!(
            (fired.id.as_deref(), fired.severity),
            (Some("hot"), tributary_shared::rules::Severity::Critical)
        );
        assert!(
            v.reason(60.0, Some(fired))
                .starts_with("rule 'hot' (temp > 50 for 30s) holds (value 60")
        );
        // A new threshold is a new condition: it starts to hold only now.
        let higher = [Arc::new(Rule::parse("temp > 55 for 30s").expect("valid"))];
        assert_ne!(m.update(&cfg, &higher, t(40), 60.0).model, "threshold");
        assert_eq!(m.update(&cfg, &higher, t(70), 60.0).model, "threshold");
        // Several rules fire: the most severe is the one reported.
        let mut info = Rule::parse("temp > 0").expect("valid");
        info.severity = tributary_shared::rules::Severity::Info;
        let mut crit = Rule::parse("temp > 1").expect("valid");
        crit.severity = tributary_shared::rules::Severity::Critical;
        let two = [Arc::new(info), Arc::new(crit)];
        m.update(&cfg, &two, t(80), 60.0);
        assert_eq!(m.fired_rule().map(|r| r.text.as_str()), Some("temp > 1"));
    }

    #[test]
    fn a_value_past_the_whole_range_is_explained_by_the_range() {
        let cfg = DetectorConfig::default();
        let rules: [Arc<Rule>; 0] = [];
        let mut m = SeriesModel::new(&cfg, "x");
        let mut rng = Rng::new(21);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..600 {
            // A wide, calm series: the spike model's band is wide too.
            let x = 20.0 + 3.0 * rng.normal();
            (lo, hi) = (lo.min(x), hi.max(x));
            m.update(&cfg, &rules, t(i), x);
        }
        // A tenth of the width past the highest value ever seen, but only a few
        // spreads from the level: a new extreme, scored by the range model.
        let x = hi + 0.1 * (hi - lo);
        let v = m.update(&cfg, &rules, t(600), x);
        assert_eq!(v.model, "range", "{v:?}");
        assert!(v.score > 0.5 && v.score <= 0.6, "{v:?}");
        let (elo, ehi) = v.expected.expect("the range so far");
        assert!(
            (elo - lo).abs() < 1e-5 && (ehi - hi).abs() < 1e-5,
            "{elo}..{ehi} vs {lo}..{hi}"
        );
        assert!(
            v.reason(x, None).starts_with("value ") && v.reason(x, None).contains("beyond every value seen"),
            "{}",
            v.reason(x, None)
        );
        // Now inside the range: the range model is quiet.
        let again = m.update(&cfg, &rules, t(601), x);
        assert_ne!(again.model, "range");
    }

    #[test]
    fn same_input_same_verdicts() {
        let cfg = DetectorConfig::default();
        let rules: [Arc<Rule>; 0] = [];
        let run = || {
            let mut m = SeriesModel::new(&cfg, "x");
            let mut rng = Rng::new(8);
            (0..2000)
                .map(|i| m.update(&cfg, &rules, t(i), rng.normal() + if i > 1000 { 5.0 } else { 0.0 }))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_series_state_stays_within_its_bound_whatever_the_input() {
        let cfg = DetectorConfig::default();
        let rules: [Arc<Rule>; 0] = [];
        let fresh = SeriesModel::new(&cfg, "x").memory_bytes();
        assert!(fresh <= 1536, "{fresh} bytes per series");
        let inputs: [Box<dyn Fn(i64) -> f64>; 5] = [
            Box::new(|_| 7.0),
            Box::new(|i| if i % 2 == 0 { f64::MAX } else { -f64::MAX }),
            Box::new(|i| if i % 500 < 250 { 1e-300 } else { 1e300 }),
            Box::new(move |i| (i as f64).powi(3)),
            Box::new(|i| if i % 1000 == 0 { 1e12 } else { 0.0 }),
        ];
        for (k, f) in inputs.iter().enumerate() {
            let mut m = SeriesModel::new(&cfg, "x");
            // Gaps of up to a week between values, too.
            let mut s = 0;
            for i in 0..5000 {
                s += if i % 700 == 0 { 7 * 86_400 } else { 60 };
                let v = m.update(&cfg, &rules, t(s), f(i));
                assert!((0.0..=1.0).contains(&v.score), "input {k}: score {}", v.score);
                assert!(
                    (0.0..=1.0).contains(&v.detection),
                    "input {k}: detection {}",
                    v.detection
                );
            }
            assert_eq!(m.memory_bytes(), fresh, "input {k}");
        }
    }
}
