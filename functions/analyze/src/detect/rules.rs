//! Threshold rules written by operators, e.g. `temperature > 90 for 30s`.
//!
//! Grammar: `<metric> <op> <number> [for <duration>]`, op one of `>`, `>=`,
//! `<`, `<=`, duration a positive integer with unit `ms`, `s`, `m` or `h`
//! (`for 0s` and no `for` mean "at once"). A rule scores 1 once the condition
//! has held continuously, in event time, for the duration, else 0. Memory per
//! series and rule: one timestamp and a shared pointer to the rule.
//!
//! Rules come from two places: `TRIBUTARY_RULES` (parsed here, the default
//! for groups without rules of their own) and the rule store
//! ([`Rule::from_stored`], see [`super::rulebook`]).

use std::sync::Arc;

use crate::state::codec::{Corrupt, Reader, Writer};
use chrono::{DateTime, Duration, Utc};
use tributary_shared::rules::{AlertRule, Condition, Severity};

/// Comparison of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A parsed threshold rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The metric the rule watches.
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold.
    pub hold: Duration,
    /// The condition as written (normalised), for alert reasons: also what
    /// identifies its state in a snapshot.
    pub text: String,
    /// The stored rule's id (`None` for a `TRIBUTARY_RULES` rule).
    pub id: Option<Box<str>>,
    /// The severity of the alerts it opens.
    pub severity: Severity,
}

/// Why a rule did not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("rule '{rule}': {reason}")]
pub struct RuleError {
    /// The rule text.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: i64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::milliseconds(n)),
        "s" => Some(Duration::seconds(n)),
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        _ => None,
    }
}

impl Rule {
    /// Model name used in scores and alerts.
    pub const NAME: &'static str = "threshold";

    /// Parse `metric op number [for duration]`.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let err = |reason: &str| RuleError {
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (metric, op, threshold, rest) = match words.as_slice() {
            [m, op, v, rest @ ..] => (*m, *op, *v, rest),
            _ => return Err(err("expected '<metric> <op> <number> [for <duration>]'")),
        };
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return Err(err("operator must be one of > >= < <=")),
        };
        let threshold: f64 = threshold
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| err("threshold is not a finite number"))?;
        let hold = match rest {
            [] => Duration::zero(),
            ["for", d] => {
                parse_duration(d).ok_or_else(|| err("duration must be an integer with unit ms, s, m or h, e.g. 30s"))?
            }
            _ => return Err(err("only 'for <duration>' may follow the threshold")),
        };
        Ok(Rule {
            metric: metric.to_owned(),
            op,
            threshold,
            hold,
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            id: None,
            severity: Severity::Warning,
        })
    }

    /// A rule of the rule store.
    pub fn from_stored(rule: &AlertRule) -> Rule {
        let spec = &rule.spec;
        Rule {
            metric: spec.metric.clone(),
            op: match spec.condition {
                Condition::Above => Op::Gt,
                Condition::AtLeast => Op::Ge,
                Condition::Below => Op::Lt,
                Condition::AtMost => Op::Le,
            },
            threshold: spec.threshold,
            hold: Duration::seconds(i64::from(spec.hold_seconds)),
            text: spec.condition_text(),
            id: Some(rule.id.as_str().into()),
            severity: spec.severity,
        }
    }

    /// Whether `other` watches for the same thing (a series' state of one
    /// carries over to the other).
    pub fn same_condition(&self, other: &Rule) -> bool {
        self.metric == other.metric
            && self.op == other.op
            && self.threshold == other.threshold
            && self.hold == other.hold
    }

    /// How an alert reason names it: `'freezer-warm' (temperature > -10 for 5m)`
    /// for a stored rule, `'temperature > 90'` for a default one.
    pub fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("'{id}' ({})", self.text),
            None => format!("'{}'", self.text),
        }
    }

    /// Whether `x` meets the condition (ignoring the hold time).
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Op::Gt => x > self.threshold,
            Op::Ge => x >= self.threshold,
            Op::Lt => x < self.threshold,
            Op::Le => x <= self.threshold,
        }
    }
}

/// A rule's state on one series.
#[derive(Clone, Debug)]
pub struct RuleState {
    rule: Arc<Rule>,
    since: Option<DateTime<Utc>>,
    fired: bool,
}

impl RuleState {
    /// Fresh state.
    pub fn new(rule: Arc<Rule>) -> Self {
        Self {
            rule,
            since: None,
            fired: false,
        }
    }

    /// The rule.
    pub fn rule(&self) -> &Arc<Rule> {
        &self.rule
    }

    /// Follow `rule` from now on (the same condition, changed otherwise:
    /// its id, severity or description), keeping the state.
    pub fn adopt(&mut self, rule: Arc<Rule>) {
        self.rule = rule;
    }

    /// Score the value at event time `t`: 1 when the condition has held since
    /// at least `t - hold`, else 0. Values must come in event-time order per
    /// series; a value older than the start of the current run does not extend it.
    pub fn update(&mut self, t: DateTime<Utc>, x: f64) -> f64 {
        if !self.rule.holds(x) {
            self.since = None;
            self.fired = false;
            return 0.0;
        }
        let since = *self.since.get_or_insert(t);
        self.fired = t - since >= self.rule.hold;
        if self.fired { 1.0 } else { 0.0 }
    }

    /// Whether the last value scored 1.
    pub fn fired(&self) -> bool {
        self.fired
    }
}

impl RuleState {
    /// Write the state (the rule itself is configuration, not state).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.opt_time(self.since);
        w.bool(self.fired);
    }

    /// Read what [`RuleState::save`] wrote, for the rule written as `text`
    /// (a rule with no id until the series next meets its rule, see
    /// [`crate::detect::SeriesModel::update`]).
    pub(crate) fn load(text: &str, r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let rule = Rule::parse(text).map_err(|_| Corrupt)?;
        Ok(Self {
            rule: Arc::new(rule),
            since: r.opt_time()?,
            fired: r.bool()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("valid")
    }

    #[test]
    fn parses_and_rejects() {
        let r = Rule::parse("temperature > 90 for 30s").expect("valid");
        assert_eq!(
            (r.metric.as_str(), r.op, r.threshold, r.hold),
            ("temperature", Op::Gt, 90.0, Duration::seconds(30))
        );
        assert_eq!(Rule::parse("rpm <= -1.5").expect("valid").hold, Duration::zero());
        assert_eq!(Rule::parse("x >= 1 for 5m").expect("valid").hold, Duration::minutes(5));
        assert_eq!(Rule::parse("x < 1 for 250ms").expect("valid").op, Op::Lt);
        for bad in [
            "",
            "x > ",
            "x => 1",
            "x > abc",
            "x > 1 for",
            "x > 1 for 3 s",
            "x > 1 for 3d",
            "x > 1 during 3s",
            "x > NaN",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn fires_only_after_holding_for_the_duration() {
        let mut s = RuleState::new(Arc::new(Rule::parse("temperature > 90 for 30s").expect("valid")));
        assert_eq!(s.update(t(0), 95.0), 0.0);
        assert_eq!(s.update(t(20), 96.0), 0.0);
        assert_eq!(s.update(t(30), 97.0), 1.0);
        assert_eq!(s.update(t(40), 90.0), 0.0, "90 is not > 90: the run ends");
        assert_eq!(s.update(t(50), 91.0), 0.0, "a new run starts");
        assert_eq!(s.update(t(80), 91.0), 1.0);
        let mut at_once = RuleState::new(Arc::new(Rule::parse("x <= 0").expect("valid")));
        assert_eq!(at_once.update(t(0), 0.0), 1.0);
    }

    #[test]
    fn a_stored_rule_reads_as_its_condition_and_names_itself() {
        use tributary_shared::rules::RuleSpec;
        let stored = AlertRule {
            id: "freezer-warm".into(),
            spec: RuleSpec {
                metric: "temperature".into(),
                condition: Condition::Above,
                threshold: -10.0,
                hold_seconds: 300,
                severity: Severity::Critical,
                group: Some("freezers".into()),
                device: None,
                description: None,
            },
            revision: 1,
            created_at: t(0),
            updated_at: t(0),
            deleted: false,
        };
        let r = Rule::from_stored(&stored);
        let parsed = Rule::parse("temperature > -10 for 5m").expect("valid");
        assert!(r.same_condition(&parsed) && parsed.same_condition(&r));
        assert_eq!(r.text, parsed.text);
        assert_eq!(r.describe(), "'freezer-warm' (temperature > -10 for 5m)");
        assert_eq!(parsed.describe(), "'temperature > -10 for 5m'");
        assert_eq!(r.severity, Severity::Critical);
        assert!(!r.same_condition(&Rule::parse("temperature > -10 for 6m").expect("valid")));
    }
}
