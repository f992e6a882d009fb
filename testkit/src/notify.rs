//! The behaviour every [`ChannelStore`] backend must show, written once and
//! run against PostgreSQL and SQLite by `shared/tests/notify_*.rs`.

use chrono::Duration;
use tributary_shared::notify::queue::{KEEP_DONE, Queued, Resent, Retry};
use tributary_shared::notify::store::{ChannelError, ChannelStore, DeadLetter, MAX_CHANNELS};
use tributary_shared::notify::{ChannelSpec, Format, idempotency_key};
use tributary_shared::records::{Alert, AlertState};
use tributary_shared::rules::{Severity, Written};

use crate::results::now;

/// A generic channel to `url`.
pub fn spec(url: &str) -> ChannelSpec {
    ChannelSpec {
        url: url.into(),
        format: Format::Generic,
        secret: Some("contract-secret-0123456789".into()),
        groups: vec!["freezers".into(), "trucks".into()],
        min_severity: Severity::Warning,
        enabled: true,
    }
}

fn letter(channel: &str, key: &str, attempts: u32) -> DeadLetter {
    DeadLetter {
        channel_id: channel.into(),
        key: key.into(),
        alert_id: "a1".into(),
        device_id: "freezer-7".into(),
        severity: Severity::Critical,
        state: "opened".into(),
        attempts,
        status: Some(503),
        error: "503: down for maintenance".into(),
        body: r#"{"alert":{}}"#.into(),
        failed_at: now(),
        alert: None,
        group: None,
    }
}

/// Create, read, replace (not when unchanged), refuse invalid ones and one
/// too many, keep dead letters per channel, delete with them.
pub async fn channels_and_dead_letters(store: &dyn ChannelStore) {
    let (c, w) = store
        .put("ops", &spec("https://hooks.example.com/a"), now())
        .await
        .expect("create");
    assert_eq!((w, c.id.as_str()), (Written::Created, "ops"));
    assert_eq!(
        store.get("ops").await.expect("get").map(|c| c.spec),
        Some(spec("https://hooks.example.com/a"))
    );
    let (_, w) = store
        .put("ops", &spec("https://hooks.example.com/a"), now())
        .await
        .expect("same");
    assert_eq!(w, Written::Unchanged);
    let slack = ChannelSpec {
        format: Format::Slack,
        secret: None,
        groups: vec![],
        min_severity: Severity::Critical,
        enabled: false,
        ..spec("https://hooks.slack.example/T/B/X")
    };
    let (_, w) = store
        .put("ops", &slack, now() + Duration::minutes(1))
        .await
        .expect("replace");
    assert_eq!(w, Written::Updated);
    assert_eq!(store.get("ops").await.expect("get").map(|c| c.spec), Some(slack));
    assert!(matches!(
        store.put("bad", &spec("ftp://x"), now()).await,
        Err(ChannelError::Invalid(e)) if e.field == "url"
    ));
    assert_eq!(store.get("bad").await.expect("get"), None, "nothing written");

    store
        .dead_letter(&letter("ops", "a1.opened.1", 5))
        .await
        .expect("letter");
    store
        .dead_letter(&letter("ops", "a1.opened.1", 3))
        .await
        .expect("again");
    store
        .dead_letter(&letter("ops", "a1.resolved.2", 1))
        .await
        .expect("another");
    let (letters, total) = store.dead_letters("ops", 10).await.expect("letters");
    assert_eq!(total, 2, "one letter per record");
    let first = letters.iter().find(|l| l.key == "a1.opened.1").expect("kept");
    assert_eq!(
        (first.attempts, first.status, first.severity),
        (8, Some(503), Severity::Critical)
    );
    assert_eq!(store.dead_letters("ops", 1).await.expect("letters").0.len(), 1);

    for i in 1..MAX_CHANNELS {
        store
            .put(&format!("c-{i:03}"), &spec("https://hooks.example.com/x"), now())
            .await
            .expect("within the limit");
    }
    assert!(matches!(
        store.put("one-more", &spec("https://hooks.example.com/x"), now()).await,
        Err(ChannelError::TooMany)
    ));
    assert_eq!(store.list().await.expect("list").len(), MAX_CHANNELS);

    store.delete("ops").await.expect("delete");
    assert!(matches!(store.delete("ops").await, Err(ChannelError::NotFound(_))));
    assert_eq!(
        store.dead_letters("ops", 10).await.expect("letters").1,
        0,
        "its letters went with it"
    );
}

/// A dead letter of `channel` for `alert`, of a device in `group`, given up
/// on after 9 attempts answered 503; `resendable`: it holds its record (as
/// the dispatcher writes them), or not (as letters from before the queue).
pub fn dead_letter(channel: &str, alert: &Alert, group: &str, resendable: bool) -> DeadLetter {
    DeadLetter {
        channel_id: channel.into(),
        key: idempotency_key(alert),
        alert_id: alert.id.clone(),
        device_id: alert.device_id.clone(),
        severity: alert.severity,
        state: alert.state.as_str().into(),
        attempts: 9,
        status: Some(503),
        error: "503: maintenance".into(),
        body: "{}".into(),
        failed_at: now(),
        alert: resendable.then(|| alert.clone()),
        group: resendable.then(|| group.to_owned()),
    }
}

/// A critical alert record `id` in `state`, updated `at_s` after [`now`].
pub fn alert(id: &str, state: AlertState, at_s: i64) -> Alert {
    Alert {
        id: id.into(),
        device_id: format!("dev-{id}"),
        metric: "temperature".into(),
        model: "threshold".into(),
        score: 1.0,
        value: -4.5,
        reason: "rule 'freezer-warm' holds".into(),
        severity: Severity::Critical,
        state,
        opened_at: now(),
        updated_at: now() + Duration::seconds(at_s),
    }
}

/// The delivery queue: once per record and channel (done rows included),
/// oldest first per channel, a head that waits for its retry holds only
/// its own channel, leases exclusive until they expire, giving up keeps a
/// dead letter that can be sent again (to the end of the queue), purging
/// forgets done rows, deleting a channel empties its queue.
pub async fn delivery_queue(store: &dyn ChannelStore) {
    let t = |s: i64| now() + Duration::seconds(s);
    for id in ["ops", "pager"] {
        store
            .put(id, &spec("https://hooks.example.com/a"), now())
            .await
            .expect("channel");
    }
    let (a1, a2, a1r) = (
        alert("a1", AlertState::Opened, 0),
        alert("a2", AlertState::Opened, 1),
        alert("a1", AlertState::Resolved, 2),
    );
    let items = [
        Queued::new("ops", &a1, "freezers"),
        Queued::new("ops", &a2, "trucks"),
        Queued::new("ops", &a1r, "freezers"),
        Queued::new("pager", &a1, "freezers"),
    ];
    assert_eq!(store.enqueue(&items, now()).await.expect("enqueue"), 4);
    assert_eq!(store.enqueue(&items, t(1)).await.expect("again"), 0, "queued once");
    assert_eq!(store.due(now()).await.expect("due"), ["ops", "pager"]);
    assert!(store.due(t(-1)).await.expect("due").is_empty(), "due from when queued");

    // Leases: exclusive until they expire; released only by their holder.
    assert!(store.lease("ops", "p1", now(), t(60)).await.expect("lease"));
    assert!(!store.lease("ops", "p2", t(1), t(61)).await.expect("held"));
    assert!(store.lease("ops", "p1", t(1), t(61)).await.expect("renewed"));
    assert!(store.lease("ops", "p2", t(61), t(121)).await.expect("expired"));
    store.release("ops", "p1").await.expect("not p1's");
    assert!(!store.lease("ops", "p1", t(62), t(122)).await.expect("p2's"));
    store.release("ops", "p2").await.expect("release");
    assert!(store.lease("ops", "p1", t(62), t(122)).await.expect("free"));

    // Oldest first; a failed head waits for its retry and holds only its channel.
    let head = store.head("ops").await.expect("head").expect("queued");
    assert_eq!((head.queued.alert.id.as_str(), head.attempts), ("a1", 0));
    assert_eq!((head.queued.group.as_str(), head.first_attempt_at), ("freezers", None));
    assert_eq!(head.queued.key, idempotency_key(&a1));
    let retry = Retry {
        attempts: 1,
        first_attempt_at: now(),
        next_attempt_at: t(10),
        status: Some(503),
        error: "503: down".into(),
    };
    store.retry(head.seq, &retry).await.expect("retry");
    let again = store.head("ops").await.expect("head").expect("queued");
    assert_eq!(
        (again.seq, again.attempts, again.next_attempt_at, again.last_status),
        (head.seq, 1, t(10), Some(503))
    );
    assert_eq!(again.first_attempt_at, Some(now()));
    assert_eq!(store.due(t(5)).await.expect("due"), ["pager"]);
    assert_eq!(store.due(t(10)).await.expect("due"), ["ops", "pager"]);
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(backlog.len(), 2);
    assert_eq!(
        (backlog[0].channel_id.as_str(), backlog[0].queued, backlog[0].attempts),
        ("ops", 3, 1)
    );
    assert_eq!(backlog[0].oldest_queued_at, Some(now()));
    assert_eq!(backlog[0].last_error.as_deref(), Some("503: down"));
    assert_eq!((backlog[1].channel_id.as_str(), backlog[1].queued), ("pager", 1));

    // Delivered: the next goes; the record queued again is not delivered twice.
    store.delivered(head.seq, t(11)).await.expect("delivered");
    let second = store.head("ops").await.expect("head").expect("queued");
    assert_eq!(second.queued.alert.id, "a2");
    assert_eq!(
        store.enqueue(&items[..1], t(12)).await.expect("again"),
        0,
        "a done row keeps its record from a second delivery"
    );

    // Given up: a dead letter with its record; the next goes.
    let gave_up = DeadLetter {
        alert: Some(a2.clone()),
        group: Some("trucks".into()),
        key: second.queued.key.clone(),
        ..letter("ops", "", 4)
    };
    store.give_up(second.seq, &gave_up, t(13)).await.expect("give up");
    assert_eq!(
        store.head("ops").await.expect("head").map(|h| h.queued.alert.state),
        Some(AlertState::Resolved)
    );
    let (letters, _) = store.dead_letters("ops", 10).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].alert.as_ref(), Some(&a2), "the letter keeps its record");
    assert_eq!(letters[0].group.as_deref(), Some("trucks"));

    // Sent again: to the end of the queue, from the first attempt.
    let old = letter("ops", "old.opened.1", 2);
    store.dead_letter(&old).await.expect("a letter from before the queue");
    assert_eq!(
        store
            .resend("ops", Some(std::slice::from_ref(&old.key)), t(14))
            .await
            .expect("resend"),
        Resent {
            resent: 0,
            not_resendable: 1
        }
    );
    assert_eq!(
        store.resend("ops", None, t(14)).await.expect("resend"),
        Resent {
            resent: 1,
            not_resendable: 1
        }
    );
    let (letters, total) = store.dead_letters("ops", 10).await.expect("letters");
    assert_eq!(
        (total, letters[0].key.as_str()),
        (1, "old.opened.1"),
        "only the old one is left"
    );
    let head = store.head("ops").await.expect("head").expect("queued");
    assert_eq!(head.queued.alert.state, AlertState::Resolved, "resent goes to the end");
    store.delivered(head.seq, t(15)).await.expect("delivered");
    let resent = store.head("ops").await.expect("head").expect("resent");
    assert_eq!(
        (
            resent.queued.alert.id.as_str(),
            resent.queued.group.as_str(),
            resent.attempts
        ),
        ("a2", "trucks", 0)
    );
    assert_eq!(resent.next_attempt_at, t(14));
    assert!(matches!(
        store.resend("nope", None, t(14)).await,
        Err(ChannelError::NotFound(_))
    ));

    // Purged: done rows older than the cut are forgotten (and could be queued again).
    assert_eq!(store.purge(t(12)).await.expect("purge"), 1, "a1 (done at 11 s)");
    assert_eq!(store.purge(t(16) + KEEP_DONE).await.expect("purge"), 1, "a1 resolved");
    assert_eq!(store.enqueue(&items[..1], t(20)).await.expect("again"), 1);

    store.delete("ops").await.expect("delete");
    assert_eq!(store.head("ops").await.expect("head"), None, "the queue went with it");
    assert_eq!(
        store
            .backlog()
            .await
            .expect("backlog")
            .iter()
            .map(|b| b.channel_id.as_str())
            .collect::<Vec<_>>(),
        ["pager"]
    );
}
