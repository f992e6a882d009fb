//! The behaviour every [`RuleStore`] backend must show, written once and
//! run against PostgreSQL and SQLite by `shared/tests/rules_*.rs`. Each
//! check takes a freshly migrated, empty database and panics naming what
//! broke.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::follow::TopicView;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::rules::relay::RulesRelay;
use tributary_shared::rules::view::RuleView;
use tributary_shared::rules::{Condition, MAX_RULES, RuleError, RuleSpec, RuleStore, Severity, Written};

use crate::results::now;

/// A group rule on `metric`.
pub fn spec(metric: &str, threshold: f64, group: &str) -> RuleSpec {
    RuleSpec {
        metric: metric.into(),
        condition: Condition::Above,
        threshold,
        hold_seconds: 300,
        severity: Severity::Critical,
        group: Some(group.into()),
        device: None,
        description: Some("Freezer too warm: check the door".into()),
    }
}

/// Create, read, replace (and not replace when unchanged), refuse an
/// invalid rule, delete, and create again with revisions that continue.
pub async fn rules_are_written_read_and_deleted(store: &dyn RuleStore) {
    let (created, w) = store
        .put("freezer-warm", &spec("temperature", -10.0, "freezers"), now())
        .await
        .expect("create");
    assert_eq!(w, Written::Created);
    assert_eq!(
        (created.id.as_str(), created.revision, created.deleted),
        ("freezer-warm", 1, false)
    );
    assert_eq!(created.spec, spec("temperature", -10.0, "freezers"));
    assert_eq!((created.created_at, created.updated_at), (now(), now()));
    assert_eq!(store.get("freezer-warm").await.expect("get"), Some(created.clone()));

    let later = now() + Duration::minutes(1);
    let (same, w) = store
        .put("freezer-warm", &spec("temperature", -10.0, "freezers"), later)
        .await
        .expect("same again");
    assert_eq!(w, Written::Unchanged);
    assert_eq!(same, created, "nothing written, not even the time");

    let device_rule = RuleSpec {
        group: None,
        device: Some("f-7".into()),
        condition: Condition::AtMost,
        hold_seconds: 0,
        severity: Severity::Info,
        description: None,
        ..spec("door", 0.5, "x")
    };
    let (d, w) = store.put("f7-door", &device_rule, now()).await.expect("device rule");
    assert_eq!((w, d.spec.clone()), (Written::Created, device_rule.clone()));

    let (changed, w) = store
        .put("freezer-warm", &spec("temperature", -5.0, "freezers"), later)
        .await
        .expect("change");
    assert_eq!(w, Written::Updated);
    assert_eq!((changed.revision, changed.spec.threshold), (2, -5.0));
    assert_eq!((changed.created_at, changed.updated_at), (now(), later));

    let bad = RuleSpec {
        hold_seconds: 8 * 86_400,
        ..spec("temperature", 1.0, "freezers")
    };
    assert!(
        matches!(store.put("freezer-warm", &bad, later).await, Err(RuleError::Invalid(e)) if e.field == "holdSeconds"),
        "an invalid rule is refused naming the field"
    );
    assert!(matches!(
        store.put("bad id", &spec("t", 1.0, "g"), later).await,
        Err(RuleError::Invalid(e)) if e.field == "id"
    ));
    assert_eq!(
        store.get("freezer-warm").await.expect("get").map(|r| r.revision),
        Some(2),
        "nothing written"
    );

    let listed = store.list().await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["f7-door", "freezer-warm"],
        "by id"
    );

    let deleted = store.delete("freezer-warm", later).await.expect("delete");
    assert_eq!((deleted.revision, deleted.deleted), (3, true));
    assert_eq!(store.get("freezer-warm").await.expect("get"), None);
    assert_eq!(store.list().await.expect("list").len(), 1);
    assert!(matches!(store.delete("freezer-warm", later).await, Err(RuleError::NotFound(id)) if id == "freezer-warm"));
    assert!(matches!(store.delete("nope", later).await, Err(RuleError::NotFound(_))));
    let records = store.records().await.expect("records");
    assert_eq!(records.len(), 2, "the deleted rule is still a record");
    assert!(
        records
            .iter()
            .any(|r| r.id == "freezer-warm" && r.deleted && r.revision == 3)
    );

    // The id again: a new rule, its revisions continuing past the deletion.
    let (again, w) = store
        .put("freezer-warm", &spec("temperature", -10.0, "freezers"), later)
        .await
        .expect("again");
    assert_eq!((w, again.revision, again.deleted), (Written::Created, 4, false));
    assert_eq!(again.created_at, later);
}

/// At most [`MAX_RULES`] rules exist: one more is refused, a change of one
/// is not, and a deletion makes room.
pub async fn the_number_of_rules_is_bounded(store: &dyn RuleStore) {
    for i in 0..MAX_RULES {
        store
            .put(&format!("r-{i:04}"), &spec("t", i as f64, "g"), now())
            .await
            .expect("within the limit");
    }
    assert!(matches!(
        store.put("one-more", &spec("t", 1.0, "g"), now()).await,
        Err(RuleError::TooMany)
    ));
    assert_eq!(store.list().await.expect("list").len(), MAX_RULES);
    let (_, w) = store
        .put("r-0000", &spec("t", 99.0, "g"), now())
        .await
        .expect("a change");
    assert_eq!(w, Written::Updated);
    store.delete("r-0001", now()).await.expect("delete");
    let (_, w) = store
        .put("one-more", &spec("t", 1.0, "g"), now())
        .await
        .expect("room now");
    assert_eq!(w, Written::Created);
}

/// The relay publishes every rule once, then only what changed (a deletion
/// too), and a view following the topic holds the rules in force.
pub async fn the_relay_publishes_every_change(store: Arc<dyn RuleStore>) {
    store.put("a", &spec("t", 1.0, "g"), now()).await.expect("a");
    store.put("b", &spec("t", 2.0, "g"), now()).await.expect("b");
    let log = MemoryLog::new(1, 100_000);
    log.ensure_compacted_topic("rules", 1).await.expect("topic");
    let mut relay = RulesRelay::new(store.clone(), log.publisher(), "rules", StdDuration::from_millis(10));
    assert_eq!(relay.step().await.expect("first step"), 2);
    assert_eq!(relay.step().await.expect("nothing new"), 0);
    let view = RuleView::new();
    let mut tail = log.tail("rules").await.expect("tail");
    let read = tail.next(1000, StdDuration::from_millis(100)).await.expect("read");
    assert_eq!(view.apply(&read), 0);
    let (g1, rules) = view.snapshot();
    assert_eq!(rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);

    store.put("a", &spec("t", 5.0, "g"), now()).await.expect("change a");
    store.delete("b", now()).await.expect("delete b");
    store.put("c", &spec("t", 3.0, "h"), now()).await.expect("c");
    assert_eq!(relay.step().await.expect("step"), 3);
    view.apply(&tail.next(1000, StdDuration::from_millis(100)).await.expect("read"));
    let (g2, rules) = view.snapshot();
    assert!(g2 > g1);
    assert_eq!(
        rules
            .iter()
            .map(|r| (r.id.as_str(), r.spec.threshold))
            .collect::<Vec<_>>(),
        [("a", 5.0), ("c", 3.0)]
    );
    assert_eq!(TopicView::len(&view), 2);
}
