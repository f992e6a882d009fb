//! A warm takeover through a real Kafka-protocol broker: a
//! `tributary-analyze` process is killed with SIGKILL mid-stream, while an
//! incident is open, and a new one takes its partition over from the state
//! topic. What reaches the output topics equals an uninterrupted run's
//! (computed in process from the same readings at the same offsets):
//! every window's aggregate, anomaly score and band included, and every
//! alert record, with no incident opened twice. Needs
//! `TRIBUTARY_TEST_KAFKA_BROKERS`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use tributary_analyze::engine::Analyzer;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{Event, EventLog, Record};
use tributary_shared::model::Reading;
use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_testkit::{test_brokers, unique_topic};

const BASE_S: i64 = 1_795_000_020;

struct Instance(Child);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three devices, two metrics, one reading a second for 1,500 s: noise, a
/// spike on truck-1 at 1,000 s whose incident is still open when the first
/// process dies (it needs 5 calm minutes to resolve), a level shift on
/// freezer-9 after the takeover; then one reading 10 min on per device that
/// closes every earlier window.
fn input() -> Vec<Reading> {
    let mut rng = 7u64;
    let mut noise = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((rng >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut out = Vec::new();
    let reading = |device: &str, s: i64, temp: f64, rpm: f64| {
        let t = Utc.timestamp_opt(BASE_S + s, 0).single().expect("time");
        Reading {
            schema_version: 1,
            id: format!("{device}-{s}"),
            device_id: device.to_owned(),
            event_time: t,
            received_time: t,
            metrics: BTreeMap::from([("temp".to_owned(), temp), ("rpm".to_owned(), rpm)]),
            tags: BTreeMap::new(),
            location: None,
        }
    };
    for s in 0..1500 {
        for device in ["truck-1", "truck-2", "freezer-9"] {
            let mut temp = 20.0 + 2.0 * noise();
            if device == "truck-1" && (1000..1008).contains(&s) {
                temp += 40.0;
            }
            if device == "freezer-9" && s >= 1300 {
                temp -= 15.0;
            }
            out.push(reading(device, s, temp, 1000.0 + 50.0 * noise()));
        }
    }
    for device in ["truck-1", "truck-2", "freezer-9"] {
        out.push(reading(device, 2100, 20.0, 1000.0));
    }
    out
}

fn config() -> tributary_analyze::Config {
    tributary_analyze::Config {
        // Quiet-time closes depend on wall-clock pauses: off, so the run is deterministic.
        idle_timeout_secs: 0,
        ..tributary_analyze::Config::default()
    }
}

/// Through JSON, as the processes publish them (so floats compare exactly).
fn json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_slice(&serde_json::to_vec(v).expect("json")).expect("json")
}

/// All records of `topic` once at least `min` arrived and none came for 2 s.
async fn read_all<T: serde::de::DeserializeOwned>(log: &KafkaLog, topic: &str, min: usize, within: Duration) -> Vec<T> {
    let mut sub = log
        .subscribe(&unique_topic("to-reader"), &[topic.to_owned()])
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut quiet = 0;
    while (got.len() < min || quiet < 4) && Instant::now() < deadline {
        match sub.next(5000, Duration::from_millis(500)).await.expect("poll") {
            Event::Messages(b) if !b.is_empty() => {
                quiet = 0;
                got.extend(b.iter().map(|m| serde_json::from_slice::<T>(&m.value).expect("record")));
            }
            _ => quiet += 1,
        }
    }
    sub.close().await;
    got
}

async fn publish(log: &KafkaLog, topic: &str, readings: &[Reading]) {
    let recs: Vec<Record> = readings
        .iter()
        .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json")))
        .collect();
    for r in log.publisher().publish(topic, recs).await {
        r.expect("published");
    }
}

type Key = (String, String, u32, i64);

fn key(a: &Aggregate) -> Key {
    (
        a.device_id.clone(),
        a.metric.clone(),
        a.window_seconds,
        a.window_start.timestamp(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_stream_is_taken_over_warm() {
    let brokers = test_brokers();
    let (raw, aggs, alerts, dead, state, group) = (
        unique_topic("to-raw"),
        unique_topic("to-aggs"),
        unique_topic("to-alerts"),
        unique_topic("to-dead"),
        unique_topic("to-state"),
        unique_topic("to-group"),
    );
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "analyze-takeover-test",
    )
    .expect("kafka");
    // One input partition: its offsets are the input's order, as in the reference run.
    log.ensure_topics(std::slice::from_ref(&raw), 1).await.expect("raw");
    log.ensure_topics(&[aggs.clone(), alerts.clone(), dead.clone()], 1)
        .await
        .expect("outputs");

    // The uninterrupted run, in process.
    let input = input();
    let mut reference = Analyzer::new(config().analyzer().expect("config"));
    let mut want_aggs: HashMap<Key, Aggregate> = HashMap::new();
    let mut want_alerts: Vec<Alert> = Vec::new();
    for (offset, r) in input.iter().enumerate() {
        let out = reference.process(0, offset as i64, r);
        for g in out.aggregates {
            want_aggs.insert(key(&g), json(&g));
        }
        want_alerts.extend(out.alerts.iter().map(json));
    }
    assert!(
        want_alerts
            .iter()
            .any(|a| a.device_id == "truck-1" && a.state == AlertState::Opened),
        "the spike opens an incident: {want_alerts:?}"
    );

    let log_dir = std::env::temp_dir().join(unique_topic("to-logs"));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let spawn = |name: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let out = std::fs::File::create(log_dir.join(name)).expect("log file");
        Instance(
            Command::new(env!("CARGO_BIN_EXE_tributary-analyze"))
                .env("PORT", port.to_string())
                .env("TRIBUTARY_BIND", "127.0.0.1")
                .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
                .env("TRIBUTARY_KAFKA_CREATE_TOPICS", "false")
                .env("TRIBUTARY_RAW_TOPIC", &raw)
                .env("TRIBUTARY_AGGREGATES_TOPIC", &aggs)
                .env("TRIBUTARY_ALERTS_TOPIC", &alerts)
                .env("TRIBUTARY_DEADLETTER_TOPIC", &dead)
                .env("TRIBUTARY_CONSUMER_GROUP", &group)
                .env("TRIBUTARY_ANALYZE_STATE_TOPIC", &state)
                .env("TRIBUTARY_SNAPSHOT_EVERY_SECS", "1")
                .env("TRIBUTARY_IDLE_TIMEOUT_SECS", "0")
                .env("TRIBUTARY_BATCH_MAX", "200")
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out)
                .spawn()
                .expect("start tributary-analyze"),
        )
    };

    // The first process gets past the spike (3 readings a second: 1,050 s in) and snapshots.
    let cut = 3 * 1050;
    let first = spawn("first.log");
    for chunk in input[..cut].chunks(300) {
        publish(&log, &raw, chunk).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before: Vec<Aggregate> = read_all(&log, &aggs, 1, Duration::from_secs(60)).await;
    assert!(
        before.iter().any(|g| g.device_id == "truck-1" && g.max > 50.0),
        "the first process got past the spike"
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // a snapshot and a commit
    // Crash: no clean shutdown, no final snapshot or commit.
    let mut first = first;
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    // Start the new owner once tansu has expired the dead member (session
    // timeout 10 s): tansu 0.6 gives a member that joins while the dead one
    // is still in the group an empty assignment, for good (seen in CI: the
    // second process was assigned no partition and never reassigned; Kafka
    // rebalances instead).
    tokio::time::sleep(Duration::from_secs(12)).await;

    let second = spawn("second.log");
    for chunk in input[cut..].chunks(300) {
        publish(&log, &raw, chunk).await;
    }
    let got_aggs: Vec<Aggregate> = read_all(&log, &aggs, want_aggs.len(), Duration::from_secs(180)).await;
    let got_alerts: Vec<Alert> = read_all(&log, &alerts, want_alerts.len(), Duration::from_secs(30)).await;
    drop(second);
    let second_log = std::fs::read_to_string(log_dir.join("second.log")).unwrap_or_default();

    // The new owner restored warm state, then replayed from the commit.
    let restored = second_log
        .lines()
        .find(|l| l.contains("restored the partition's model and alert state"))
        .unwrap_or_else(|| panic!("the second process restored nothing:\n{second_log}"));
    let line: serde_json::Value = serde_json::from_str(restored).expect("a JSON log line");
    let field = |name: &str| line.get(name).or_else(|| line.get("fields")?.get(name)).cloned();
    assert!(
        field("series").and_then(|v| v.as_u64()).is_some_and(|n| n >= 6),
        "all six series restored: {restored}"
    );
    // It re-read readings from before the snapshot (the windows open at the
    // crash, rebuilt with the snapshot's scores), and scored from the snapshot on.
    let offset = |name: &str| {
        let text = field(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        text.strip_prefix("Some(")
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{name} in {restored}"))
    };
    let (committed, snapshot_at) = (offset("committed"), offset("snapshot_at"));
    assert!(
        committed < snapshot_at && snapshot_at <= cut as i64,
        "replayed from {committed}, snapshot at {snapshot_at}"
    );

    // Windows: the last record per window (what the upserting store keeps) equals the reference.
    let mut last: HashMap<Key, &Aggregate> = HashMap::new();
    for g in &got_aggs {
        last.insert(key(g), g);
    }
    let mut wrong = Vec::new();
    for (k, want) in &want_aggs {
        match last.get(k) {
            Some(g) if *g == want => {}
            Some(g) => wrong.push(format!("{k:?}: got {g:?}, want {want:?}")),
            None => wrong.push(format!("{k:?}: missing")),
        }
    }
    for k in last.keys().filter(|k| !want_aggs.contains_key(*k)) {
        wrong.push(format!("{k:?}: not in the uninterrupted run"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} windows differ from an uninterrupted run, e.g. {:?}",
        wrong.len(),
        want_aggs.len(),
        &wrong[..wrong.len().min(3)]
    );

    // Alerts: the same records (a replayed one is published again, identical), so
    // every incident has one id and is opened once.
    let got: BTreeSet<String> = got_alerts
        .iter()
        .map(|a| serde_json::to_string(a).expect("json"))
        .collect();
    let want: BTreeSet<String> = want_alerts
        .iter()
        .map(|a| serde_json::to_string(a).expect("json"))
        .collect();
    assert_eq!(got, want, "alert records differ from an uninterrupted run");
    let opened: Vec<&Alert> = got_alerts.iter().filter(|a| a.state == AlertState::Opened).collect();
    let ids: BTreeSet<&str> = opened.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        want_alerts.iter().filter(|a| a.state == AlertState::Opened).count(),
        "no incident opened twice"
    );
    let _ = std::fs::remove_dir_all(&log_dir);
}
