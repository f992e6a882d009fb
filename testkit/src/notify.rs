//! The behaviour every [`ChannelStore`] backend must show, written once and
//! run against PostgreSQL and SQLite by `shared/tests/notify_*.rs`.

use chrono::Duration;
use tributary_shared::notify::store::{ChannelError, ChannelStore, DeadLetter, MAX_CHANNELS};
use tributary_shared::notify::{ChannelSpec, Format};
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
