//! Which threshold rules apply to which series: compiled from the
//! `TRIBUTARY_RULES` defaults and the rules in force in the rule store
//! (followed from `tributary.rules`, see [`tributary_shared::rules::view`]).
//!
//! For a series (device, metric) of a device in group G, the rules are:
//! the device's own rules for the metric, then G's rules for the metric if
//! G has any rule in the store, else the defaults for the metric. A device
//! the registry does not know is in the default group. A book is immutable:
//! a change of the rules builds a new one, and a series takes its rules
//! from the newest book at its next reading (see [`super::SeriesModel::update`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use tributary_shared::registry::DEFAULT_GROUP;
use tributary_shared::rules::{AlertRule, Scope};

use super::rules::Rule;

type ByMetric = HashMap<Box<str>, Vec<Arc<Rule>>>;

/// The compiled rules (see the module docs).
#[derive(Debug, Default)]
pub struct RuleBook {
    defaults: ByMetric,
    groups: HashMap<Box<str>, ByMetric>,
    devices: HashMap<Box<str>, ByMetric>,
}

fn add(map: &mut ByMetric, rule: Rule) {
    map.entry(rule.metric.as_str().into()).or_default().push(Arc::new(rule));
}

impl RuleBook {
    /// The defaults only.
    pub fn from_defaults(defaults: &[Rule]) -> Self {
        Self::new(defaults, &[])
    }

    /// The defaults and the rules in force in the store.
    pub fn new(defaults: &[Rule], stored: &[AlertRule]) -> Self {
        let mut book = Self::default();
        for r in defaults {
            add(&mut book.defaults, r.clone());
        }
        for r in stored.iter().filter(|r| !r.deleted) {
            let target = match r.spec.scope() {
                Scope::Group(g) => book.groups.entry(g.into()).or_default(),
                Scope::Device(d) => book.devices.entry(d.into()).or_default(),
            };
            add(target, Rule::from_stored(r));
        }
        // Stable order (by id) whatever order the records came in: a series'
        // rules compare by position.
        for map in book.groups.values_mut().chain(book.devices.values_mut()) {
            for rules in map.values_mut() {
                rules.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        book
    }

    /// Whether any rule is per group (only then is a device's group looked up).
    pub fn has_group_rules(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.groups.is_empty() && self.devices.is_empty()
    }

    /// The rules of the series (`device`, `metric`), `device` in `group`
    /// (`None`: not in the registry, so the default group).
    pub fn for_series(&self, device: &str, group: Option<&str>, metric: &str) -> Cow<'_, [Arc<Rule>]> {
        if self.is_empty() {
            return Cow::Borrowed(&[]);
        }
        let group = group.unwrap_or(DEFAULT_GROUP);
        let shared: &[Arc<Rule>] = match self.groups.get(group) {
            Some(by_metric) => by_metric.get(metric).map_or(&[], Vec::as_slice),
            None => self.defaults.get(metric).map_or(&[], Vec::as_slice),
        };
        if self.devices.is_empty() {
            return Cow::Borrowed(shared);
        }
        match self.devices.get(device).and_then(|m| m.get(metric)) {
            None => Cow::Borrowed(shared),
            Some(own) => Cow::Owned(own.iter().chain(shared).cloned().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use tributary_shared::rules::{Condition, RuleSpec, Severity};

    fn stored(id: &str, metric: &str, threshold: f64, scope: Scope) -> AlertRule {
        let (group, device) = match scope {
            Scope::Group(g) => (Some(g), None),
            Scope::Device(d) => (None, Some(d)),
        };
        AlertRule {
            id: id.into(),
            spec: RuleSpec {
                metric: metric.into(),
                condition: Condition::Above,
                threshold,
                hold_seconds: 0,
                severity: Severity::Critical,
                group,
                device,
                description: None,
            },
            revision: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            deleted: false,
        }
    }

    fn ids(rules: &[Arc<Rule>]) -> Vec<String> {
        rules
            .iter()
            .map(|r| r.id.as_deref().map_or_else(|| r.text.clone(), str::to_owned))
            .collect()
    }

    #[test]
    fn groups_with_rules_replace_the_defaults_and_devices_add_their_own() {
        let defaults = [Rule::parse("temperature > 90").expect("valid")];
        let book = RuleBook::new(
            &defaults,
            &[
                stored("freezer-warm", "temperature", -10.0, Scope::Group("freezers".into())),
                stored("freezer-door", "door", 0.0, Scope::Group("freezers".into())),
                stored("f7-warm", "temperature", -15.0, Scope::Device("f-7".into())),
                AlertRule {
                    deleted: true,
                    ..stored("gone", "temperature", 1.0, Scope::Group("trucks".into()))
                },
            ],
        );
        assert!(book.has_group_rules());
        // A group without rules, and a device the registry does not know: the defaults.
        assert_eq!(
            ids(&book.for_series("t-1", Some("trucks"), "temperature")),
            ["temperature > 90"]
        );
        assert_eq!(ids(&book.for_series("new", None, "temperature")), ["temperature > 90"]);
        // A group with rules: its own, not the defaults, and none for other metrics.
        assert_eq!(
            ids(&book.for_series("f-1", Some("freezers"), "temperature")),
            ["freezer-warm"]
        );
        assert!(book.for_series("f-1", Some("freezers"), "humidity").is_empty());
        // A device's own rules come first, then its group's.
        assert_eq!(
            ids(&book.for_series("f-7", Some("freezers"), "temperature")),
            ["f7-warm", "freezer-warm"]
        );
        // The same Arc every time, so a series sees "unchanged" by pointer.
        let a = book.for_series("f-1", Some("freezers"), "temperature");
        let b = book.for_series("f-2", Some("freezers"), "temperature");
        assert!(Arc::ptr_eq(&a[0], &b[0]));
        assert!(RuleBook::default().is_empty());
        assert!(!RuleBook::from_defaults(&defaults).has_group_rules());
    }
}
