//! `tributary channel` on a SQLite results file (issue 19, item 4): put a
//! channel (the secret from the environment, never printed), list it, send
//! it a test notification that a local receiver checks the signature of, a
//! test to a receiver that refuses exits non-zero naming the status, dead
//! letters are listed and sent again (to the queue: the listing shows them
//! queued), a bad channel is refused naming the field, delete.
//! Needs nothing but the binary.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde_json::Value;
use tributary_shared::notify::queue::DeliveryQueue;
use tributary_shared::notify::sign::{HEADER, REPLAY_WINDOW_SECS, verify};
use tributary_shared::notify::sqlite::SqliteChannels;
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::records::AlertState;

const TRIBUTARY: &str = env!("CARGO_BIN_EXE_tributary");
const SECRET: &str = "channel-cli-secret-0123456789";

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn receive(State(seen): State<Seen>, Path(path): Path<String>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if path == "refuse" {
        return StatusCode::FORBIDDEN;
    }
    let signed = headers.get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if verify(SECRET, signed, &body, Utc::now().timestamp(), REPLAY_WINDOW_SECS).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path, serde_json::from_slice(&body).unwrap_or_default()));
    StatusCode::NO_CONTENT
}

fn channel(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(TRIBUTARY)
        .arg("channel")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("TRIBUTARY_CHANNEL_SECRET", SECRET)
        .output()
        .expect("run tributary channel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_test_and_resend_channels_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("tributary-channel-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite://{}", dir.join("results.db").display());
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/ops");

    // Put: created, the secret never printed.
    let run = |args: Vec<String>| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || channel(&db, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ok, out, err) = run(args(&[
        "put",
        "ops",
        "--url",
        &url,
        "--group",
        "freezers",
        "--min-severity",
        "critical",
    ]))
    .await
    .expect("join");
    assert!(ok, "{err}");
    let put: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (&put["id"], &put["written"], &put["hasSecret"], &put["minSeverity"]),
        (
            &Value::from("ops"),
            &Value::from("created"),
            &Value::from(true),
            &Value::from("critical")
        )
    );
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "the secret is never printed"
    );

    // A bad channel: refused, the field named, nothing written.
    let (ok, _, err) = run(args(&["put", "bad", "--url", "ftp://x"])).await.expect("join");
    assert!(!ok && err.contains("url"), "{err}");

    // Test: the receiver gets one signed test notification.
    let (ok, out, err) = run(args(&["test", "ops"])).await.expect("join");
    assert!(ok, "{out}{err}");
    let outcome: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(outcome["delivered"], true, "{outcome}");
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].1["alert"]["deviceId"], "tributary-test");
        assert_eq!(
            seen[0].1["alert"]["severity"], "critical",
            "at the channel's least severity"
        );
        assert!(
            seen[0].1["alert"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("test notification")),
            "{:?}",
            seen[0].1
        );
    }

    // A test to a receiver that refuses: non-zero, with the status.
    let refusing = format!("http://{addr}/refuse");
    let (ok, _, err) = run(args(&["put", "wall", "--url", &refusing])).await.expect("join");
    assert!(ok, "{err}");
    let (ok, out, err) = run(args(&["test", "wall"])).await.expect("join");
    assert!(!ok, "a refused test fails: {out}");
    assert!(err.contains("403"), "{err}");

    // Dead letters: listed, then sent again to the end of the queue.
    let store = SqliteChannels::open(&db).await.expect("store");
    let alert = tributary_testkit::notify::alert("a1", AlertState::Opened, 0);
    let key = tributary_shared::notify::idempotency_key(&alert);
    store
        .dead_letter(&tributary_testkit::notify::dead_letter("ops", &alert, "freezers", true))
        .await
        .expect("letter");
    let (ok, out, err) = run(args(&["dead-letters", "ops"])).await.expect("join");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("FAILED AT") && lines[1].contains(&key) && lines[1].contains("yes"));
    let (ok, out, err) = run(args(&["resend", "ops", "--key", &key])).await.expect("join");
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        serde_json::json!({"resent": 1, "notResendable": 0})
    );
    assert!(store.dead_letters("ops", 10).await.expect("letters").0.is_empty());
    let head = store.head("ops").await.expect("head").expect("queued again");
    assert_eq!((head.queued.alert, head.queued.group.as_str()), (alert, "freezers"));

    // The listing: both channels, the queued delivery counted.
    let (ok, out, err) = run(args(&["list"])).await.expect("join");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let ops: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        ops[..7],
        ["ops", "generic", "enabled", "critical", "freezers", "1", "0"],
        "{out}"
    );
    let (ok, out, _) = run(args(&["list", "--json"])).await.expect("join");
    assert!(ok);
    let first: Value = serde_json::from_str(out.lines().next().unwrap_or("")).expect("ndjson");
    assert_eq!(first["backlog"]["queued"], 1, "{first}");
    assert!(!out.contains(SECRET));

    // Delete: gone, with its queue; a second delete fails naming it.
    let (ok, _, err) = run(args(&["delete", "ops"])).await.expect("join");
    assert!(ok, "{err}");
    assert_eq!(store.head("ops").await.expect("head"), None);
    let (ok, _, err) = run(args(&["delete", "ops"])).await.expect("join");
    assert!(!ok && err.contains("\"ops\""), "{err}");
}
