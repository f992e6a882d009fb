//! The idle rule end to end: a partition whose devices stop sending still gets
//! its last windows emitted (each exactly once) and its offsets committed,
//! without any further record arriving on it.
//!
//! - on the in-process event log, with the handler and the consumer runner
//!   (which ticks the handler between polls): windows close after the quiet time, the
//!   offsets are committed between batches, a reading that arrives afterwards
//!   for a closed window is counted late, and a fresh consumer re-emits nothing;
//! - through a real Kafka-protocol broker (tansu, `TRIBUTARY_TEST_KAFKA_BROKERS`)
//!   with the `tributary-analyze` binary: one partition goes quiet while the
//!   other keeps sending, then both; every window is emitted exactly once,
//!   within the idle timeout plus a few seconds, and a restarted instance
//!   re-emits nothing (the quiet partitions' offsets were committed).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tributary_analyze::engine::{Analyzer, AnalyzerConfig};
use tributary_analyze::handler::{AnalyzeHandler, Outputs};
use tributary_analyze::metrics::Metrics;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::eventlog::{Event, EventLog, Record};
use tributary_shared::model::Reading;
use tributary_shared::records::Aggregate;
use tributary_testkit::{test_brokers, unique_topic};

type Key = (String, String, u32, i64);

fn reading(device: &str, t: DateTime<Utc>, x: f64) -> Reading {
    Reading {
        schema_version: 1,
        id: format!("{device}-{}", t.timestamp_millis()),
        device_id: device.to_owned(),
        event_time: t,
        received_time: t,
        metrics: BTreeMap::from([("a".to_owned(), x), ("b".to_owned(), -x)]),
        tags: BTreeMap::new(),
        location: None,
    }
}

/// (device, metric, size s, start ms) -> (count, min, max) for `sizes`.
fn truth(readings: &[Reading], sizes: &[u32]) -> HashMap<Key, (u64, f64, f64)> {
    let mut m = HashMap::new();
    for r in readings {
        let t = r.event_time.timestamp_millis();
        for &size in sizes {
            let start = t - t.rem_euclid(i64::from(size) * 1000);
            for (metric, &x) in &r.metrics {
                let e = m.entry((r.device_id.clone(), metric.clone(), size, start)).or_insert((
                    0u64,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                ));
                e.0 += 1;
                e.1 = e.1.min(x);
                e.2 = e.2.max(x);
            }
        }
    }
    m
}

fn key(a: &Aggregate) -> Key {
    (
        a.device_id.clone(),
        a.metric.clone(),
        a.window_seconds,
        a.window_start.timestamp_millis(),
    )
}

/// Every window of `truth` emitted exactly once, with its values.
fn check_exactly_once(emitted: &[Aggregate], truth: &HashMap<Key, (u64, f64, f64)>) -> Result<(), String> {
    let mut seen: HashMap<Key, &Aggregate> = HashMap::new();
    for a in emitted {
        if seen.insert(key(a), a).is_some() {
            return Err(format!("{:?} emitted twice", key(a)));
        }
    }
    for (k, &(count, min, max)) in truth {
        let Some(a) = seen.get(k) else {
            return Err(format!(
                "{k:?} never emitted ({} of {} emitted)",
                seen.len(),
                truth.len()
            ));
        };
        if (a.count, a.min, a.max) != (count, min, max) {
            return Err(format!(
                "{k:?}: {:?} vs truth {:?}",
                (a.count, a.min, a.max),
                (count, min, max)
            ));
        }
    }
    if seen.len() != truth.len() {
        return Err(format!("{} windows emitted, {} expected", seen.len(), truth.len()));
    }
    Ok(())
}

fn aggregates(log: &MemoryLog) -> Vec<Aggregate> {
    log.snapshot("aggs")
        .iter()
        .map(|m| serde_json::from_slice(&m.value).expect("aggregate"))
        .collect()
}

fn metric(registry: &prometheus_client::registry::Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A consumer task (the runner ticks the handler between polls), stopped by `stop`.
fn spawn_ticking(
    log: &MemoryLog,
    handler: Arc<AnalyzeHandler>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let log = log.clone();
    tokio::spawn(async move {
        let sub = log.subscribe("analyze", &["raw".to_owned()]).await.expect("subscribe");
        let cfg = RunnerConfig {
            max_batch: 50,
            max_wait: Duration::from_millis(100),
            ..RunnerConfig::default()
        };
        run_consumer(sub, &*handler, &cfg, async move {
            let _ = stop.await;
        })
        .await
        .expect("runner");
    })
}

#[tokio::test]
async fn a_quiet_partition_closes_commits_and_later_values_are_late_on_the_in_process_log() {
    let log = MemoryLog::new(2, 1_000_000);
    log.ensure_topics(&["raw".to_owned()], 2).await.expect("topics");
    // Event times a week before the wall clock: the rule counts quiet time from
    // the partition's own newest event, not from the server clock.
    // A multiple of 3 s, so the windows (aligned to the epoch) start at base.
    let base = Utc.timestamp_millis_opt(1_795_000_002_000).single().expect("time");
    let input: Vec<Reading> = (0..50)
        .flat_map(|i| {
            ["dev-a", "dev-b", "dev-c"]
                .map(|d| reading(d, base + chrono::Duration::milliseconds(i * 100), (i % 7) as f64))
        })
        .collect();
    let recs: Vec<Record> = input
        .iter()
        .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json")))
        .collect();
    for r in log.publisher().publish("raw", recs).await {
        r.expect("published");
    }
    let sizes = [1, 3];
    let mut cfg = AnalyzerConfig::default();
    cfg.windows.sizes_seconds = sizes.to_vec();
    cfg.windows.allowed_lateness = chrono::Duration::seconds(1);
    cfg.idle_timeout = Some(Duration::from_secs(1));
    let mut registry = prometheus_client::registry::Registry::default();
    let outputs = Outputs {
        aggregates: "aggs".into(),
        alerts: "alerts".into(),
        deadletter: "dead".into(),
    };
    let handler = Arc::new(AnalyzeHandler::new(
        Analyzer::new(cfg.clone()),
        log.publisher(),
        outputs.clone(),
        None,
        Metrics::new(&mut registry),
    ));
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let task = spawn_ticking(&log, handler.clone(), stop_rx);

    // Newest event at base + 4.9 s; the last 3 s window ends at base + 6 s, so it
    // needs 2.1 s of quiet; the data alone never closes it.
    let truth = truth(&input, &sizes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let got = aggregates(&log);
        match check_exactly_once(&got, &truth) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("quiet windows not emitted: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2000),
        "closed after {took:?}: before the quiet time the data allowed"
    );
    assert!(metric(&registry, "tributary_analyze_idle_closed_windows_total") > 0.0);
    // The offsets were committed between batches: nothing of the topic is left uncommitted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.uncommitted(&["analyze"], "raw").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} records still uncommitted",
            log.uncommitted(&["analyze"], "raw").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A reading for a window the idle rule closed is counted late (2 metrics x 2 sizes), not added.
    let late = reading("dev-a", base + chrono::Duration::milliseconds(4_000), 100.0);
    log.publisher()
        .publish(
            "raw",
            vec![Record::new("dev-a", serde_json::to_vec(&late).expect("json"))],
        )
        .await
        .remove(0)
        .expect("published");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&registry, "tributary_analyze_late_values") < 4.0 {
        assert!(Instant::now() < deadline, "the late reading was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_exactly_once(&aggregates(&log), &truth).expect("nothing re-emitted for the late reading");
    let _ = stop.send(());
    task.await.expect("consumer");

    // A fresh consumer (restart) finds everything committed and re-emits nothing.
    let fresh = Arc::new(AnalyzeHandler::new(
        Analyzer::new(cfg),
        log.publisher(),
        outputs,
        None,
        Metrics::default(),
    ));
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let task = spawn_ticking(&log, fresh, stop_rx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    task.await.expect("consumer");
    check_exactly_once(&aggregates(&log), &truth).expect("a restart re-emits nothing");
}

struct Instance(Child);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_goes_quiet_gets_its_windows_emitted_exactly_once_through_kafka() {
    let brokers = test_brokers();
    let (raw, aggs, alerts, dead, group) = (
        unique_topic("idle-raw"),
        unique_topic("idle-aggs"),
        unique_topic("idle-alerts"),
        unique_topic("idle-dead"),
        unique_topic("idle-group"),
    );
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "analyze-idle-test",
    )
    .expect("kafka");
    log.ensure_topics(std::slice::from_ref(&raw), 2).await.expect("raw");
    log.ensure_topics(&[aggs.clone(), alerts.clone(), dead.clone()], 1)
        .await
        .expect("outputs");
    const IDLE_S: u64 = 3;
    const SIZES: [u32; 2] = [2, 5];
    const LATENESS_S: u64 = 1;
    let spawn = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
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
                .env("TRIBUTARY_WINDOWS", "2,5")
                .env("TRIBUTARY_ALLOWED_LATENESS_SECS", LATENESS_S.to_string())
                .env("TRIBUTARY_IDLE_TIMEOUT_SECS", IDLE_S.to_string())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start tributary-analyze"),
        )
    };

    // Everything the reader sees on the aggregates topic, with when it saw it.
    let seen: Arc<std::sync::Mutex<Vec<(Instant, Aggregate)>>> = Arc::default();
    let (reader_stop, mut reader_stop_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let (seen, aggs) = (seen.clone(), aggs.clone());
        let mut sub = log
            .subscribe(&unique_topic("idle-reader"), std::slice::from_ref(&aggs))
            .await
            .expect("reader");
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = reader_stop_rx.wait_for(|s| *s) => break,
                    ev = sub.next(5000, Duration::from_millis(200)) => {
                        if let Ok(Event::Messages(m)) = ev {
                            let now = Instant::now();
                            seen.lock().expect("lock").extend(m.iter().map(|m| (now, serde_json::from_slice::<Aggregate>(&m.value).expect("aggregate"))));
                        }
                    }
                }
            }
            sub.close().await;
        })
    };

    let mut first = Some(spawn());
    let mut input: Vec<Reading> = Vec::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let devices: Vec<String> = (0..6).map(|d| format!("dev-{d}")).collect();
    // Phase 1 (6 s): every device sends every 200 ms, event time = now.
    // Phase 2 (14 s): only the devices of one partition keep sending; the other partition is quiet.
    // Then everything is quiet.
    let mut quiet_partition = None;
    let mut quiet_since = None;
    let t0 = Instant::now();
    let mut i = 0i64;
    while t0.elapsed() < Duration::from_secs(20) {
        if quiet_partition.is_none() && t0.elapsed() >= Duration::from_secs(6) {
            let parts: std::collections::BTreeSet<i32> = partition_of.values().copied().collect();
            assert_eq!(
                parts.len(),
                2,
                "the devices should cover both partitions: {partition_of:?}"
            );
            quiet_partition = parts.iter().next().copied();
            quiet_since = Some(Instant::now());
        }
        let batch: Vec<Reading> = devices
            .iter()
            .filter(|d| quiet_partition.is_none() || partition_of.get(*d) != quiet_partition.as_ref())
            .map(|d| reading(d, Utc::now(), (i % 11) as f64))
            .collect();
        let recs: Vec<Record> = batch
            .iter()
            .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json")))
            .collect();
        for (r, d) in log.publisher().publish(&raw, recs).await.into_iter().zip(&batch) {
            let delivered = r.expect("published");
            partition_of.insert(d.device_id.clone(), delivered.partition);
        }
        input.extend(batch);
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_quiet_since = Instant::now();
    let quiet_partition = quiet_partition.expect("phase 2 ran");
    let quiet_since = quiet_since.expect("phase 2 ran");

    // The quiet partition's windows: all emitted while the other partition was still busy,
    // each within the idle timeout (and its window's end plus lateness) plus a few seconds.
    let in_quiet = |r: &Reading| partition_of[&r.device_id] == quiet_partition;
    let quiet_truth = truth(
        &input.iter().filter(|r| in_quiet(r)).cloned().collect::<Vec<_>>(),
        &SIZES,
    );
    let busy_truth = truth(
        &input.iter().filter(|r| !in_quiet(r)).cloned().collect::<Vec<_>>(),
        &SIZES,
    );
    let slack = Duration::from_secs(4);
    let bound = Duration::from_secs(IDLE_S.max(5 + LATENESS_S)) + slack;
    let quiet_emitted = |seen: &[(Instant, Aggregate)]| -> Vec<(Instant, Aggregate)> {
        seen.iter()
            .filter(|(_, a)| quiet_truth.contains_key(&key(a)))
            .cloned()
            .collect()
    };
    {
        let seen = seen.lock().expect("lock");
        let q = quiet_emitted(&seen);
        let aggs: Vec<Aggregate> = q.iter().map(|(_, a)| a.clone()).collect();
        check_exactly_once(&aggs, &quiet_truth)
            .unwrap_or_else(|e| panic!("quiet partition {quiet_partition}, while the other was busy: {e}"));
        let latest = q.iter().map(|(t, _)| *t).max().expect("some");
        let after = latest.saturating_duration_since(quiet_since);
        assert!(
            after <= bound,
            "the quiet partition's last window came {after:?} after it went quiet (bound {bound:?})"
        );
        println!(
            "quiet partition {quiet_partition}: {} windows, the last {after:?} after it went quiet (idle timeout {IDLE_S} s)",
            aggs.len()
        );
    }

    // Now every partition is quiet: the busy one's last windows close too.
    let deadline = all_quiet_since + bound;
    let all_truth: HashMap<Key, (u64, f64, f64)> = quiet_truth
        .iter()
        .chain(&busy_truth)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    loop {
        let aggs: Vec<Aggregate> = seen.lock().expect("lock").iter().map(|(_, a)| a.clone()).collect();
        match check_exactly_once(&aggs, &all_truth) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("with every partition quiet for {bound:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    println!(
        "all {} windows emitted exactly once, {:?} after everything went quiet",
        all_truth.len(),
        all_quiet_since.elapsed()
    );

    // Offsets were committed between batches: a restarted instance has nothing to replay.
    if let Some(mut x) = first.take() {
        let _ = Command::new("kill").args(["-TERM", &x.0.id().to_string()]).status();
        let _ = x.0.wait();
    }
    let second = spawn();
    tokio::time::sleep(Duration::from_secs(IDLE_S + 10)).await;
    drop(second);
    let _ = reader_stop.send(true);
    let _ = reader.await;
    let aggs: Vec<Aggregate> = seen.lock().expect("lock").iter().map(|(_, a)| a.clone()).collect();
    check_exactly_once(&aggs, &all_truth).unwrap_or_else(|e| panic!("after a restart: {e}"));
}
