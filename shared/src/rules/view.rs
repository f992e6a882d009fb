//! The rules as analyze holds them, from the compacted topic
//! `tributary.rules` (key: rule id; value: an [`AlertRule`] as JSON, a
//! deleted one marked `deleted`).
//!
//! Guarantees: a record with a lower revision than the one held for its id
//! never overwrites it (records may come twice or out of order); a record
//! that cannot be read is skipped and logged, never fatal; every change of
//! what is held moves [`RuleView::generation`] up, so a reader rebuilds its
//! compiled rules only when something changed.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::AlertRule;
use crate::eventlog::Record;
use crate::eventlog::follow::{CatchUp, TopicView};

impl AlertRule {
    /// The record to publish: keyed by rule id, so compaction keeps the newest.
    pub fn to_record(&self) -> Record {
        Record::new(self.id.clone(), serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The in-memory rules (see the module docs).
#[derive(Debug, Default)]
pub struct RuleView {
    /// Every record held, deleted ones too (their revision still counts).
    rules: RwLock<BTreeMap<String, AlertRule>>,
    generation: AtomicU64,
    caught_up: CatchUp,
}

impl RuleView {
    /// An empty view, not caught up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves up with every change of the rules held.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The rules in force (not deleted), by id, and the generation they are of.
    pub fn snapshot(&self) -> (u64, Vec<AlertRule>) {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        // Read under the lock, so the generation is exactly that of the rules.
        let generation = self.generation();
        (generation, rules.values().filter(|r| !r.deleted).cloned().collect())
    }

    /// Whether the topic as it was at start has been read.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.is_done()
    }

    /// Say the view has caught up (for views filled by other means, as in tests).
    pub fn mark_caught_up(&self) {
        self.caught_up.mark();
    }
}

impl TopicView for RuleView {
    fn what(&self) -> &'static str {
        "alert rules"
    }

    fn apply(&self, records: &[(Vec<u8>, Vec<u8>)]) -> usize {
        let mut bad = 0;
        let mut changed = false;
        let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in records {
            let Ok(id) = std::str::from_utf8(key) else {
                bad += 1;
                continue;
            };
            if value.is_empty() {
                changed |= rules.remove(id).is_some();
                continue;
            }
            let rule: AlertRule = match serde_json::from_slice(value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(rule.id = id, error = %e, "an alert rule record cannot be read; skipped");
                    bad += 1;
                    continue;
                }
            };
            if rule.id != id {
                tracing::warn!(rule.id = id, record.id = %rule.id, "an alert rule record's id differs from its key; skipped");
                bad += 1;
                continue;
            }
            if let Err(e) = rule.spec.validate(id) {
                tracing::warn!(rule.id = id, error = %e, "an alert rule record is invalid; skipped");
                bad += 1;
                continue;
            }
            if rules.get(id).is_some_and(|held| held.revision >= rule.revision) {
                continue;
            }
            rules.insert(id.to_owned(), rule);
            changed = true;
        }
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        bad
    }

    fn len(&self) -> usize {
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| !r.deleted)
            .count()
    }

    fn catch_up(&self) -> &CatchUp {
        &self.caught_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Condition, RuleSpec, Severity};
    use chrono::{TimeZone, Utc};

    fn rule(id: &str, threshold: f64, revision: i64, deleted: bool) -> (Vec<u8>, Vec<u8>) {
        let at = Utc.timestamp_millis_opt(1_795_608_000_000).single().expect("valid");
        let r = AlertRule {
            id: id.into(),
            spec: RuleSpec {
                metric: "temperature".into(),
                condition: Condition::Above,
                threshold,
                hold_seconds: 0,
                severity: Severity::Critical,
                group: Some("freezers".into()),
                device: None,
                description: Some("too warm".into()),
            },
            revision,
            created_at: at,
            updated_at: at,
            deleted,
        };
        let rec = r.to_record();
        (rec.key, rec.value)
    }

    #[test]
    fn records_round_trip_and_the_newest_revision_wins() {
        let view = RuleView::new();
        let g0 = view.generation();
        let bad = view.apply(&[
            rule("a", 1.0, 1, false),
            rule("b", 2.0, 1, false),
            rule("a", 5.0, 2, false),
        ]);
        assert_eq!(bad, 0);
        let (g1, rules) = view.snapshot();
        assert!(g1 > g0);
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].id.as_str(), rules[0].spec.threshold), ("a", 5.0));
        assert_eq!(rules[0].spec.description.as_deref(), Some("too warm"));
        // An older revision, read again, changes nothing, not even the generation.
        view.apply(&[rule("a", 1.0, 1, false), rule("b", 2.0, 1, false)]);
        assert_eq!(view.generation(), g1);
        // A deletion is a newer revision; the id is gone from the rules in force.
        view.apply(&[rule("b", 2.0, 2, true)]);
        let (g2, rules) = view.snapshot();
        assert!(g2 > g1);
        assert_eq!(rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
        // The deleted record at revision 2 outranks a late revision 1.
        view.apply(&[rule("b", 2.0, 1, false)]);
        assert_eq!(view.snapshot().1.len(), 1);
        assert_eq!(TopicView::len(&view), 1);
    }

    #[test]
    fn unreadable_or_invalid_records_are_skipped_and_counted() {
        let view = RuleView::new();
        let (_, a) = rule("a", 1.0, 1, false);
        let (_, nan) = rule("n", 1.0, 1, false);
        let nan = String::from_utf8(nan)
            .expect("json")
            .replace("\"threshold\":1.0", "\"threshold\":1e999");
        let bad = view.apply(&[
            (b"k".to_vec(), b"not json".to_vec()),
            (b"other".to_vec(), a),
            (b"n".to_vec(), nan.into_bytes()),
            rule("ok", 3.0, 1, false),
        ]);
        assert_eq!(bad, 3);
        assert_eq!(view.snapshot().1.len(), 1);
    }
}
