//! A new owner of a partition resumes with the previous owner's watermark,
//! through a real Kafka-protocol broker (`TRIBUTARY_TEST_KAFKA_BROKERS`).
//!
//! The committed offset of a partition is the first reading of its oldest
//! open window, so a reading that arrived out of order for a window that has
//! closed since can sit after it. Re-read by a new owner that does not know
//! the watermark, that reading reopens the closed window, which is emitted
//! again holding that reading alone and overwrites the complete window
//! downstream (found by `cli/tests/faults.rs`: tansu 0.6 drops the commit
//! metadata the watermark travels in; the Kafka backend keeps it in a mirror
//! topic for such brokers). This test builds exactly that situation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use tributary_analyze::engine::{Analyzer, AnalyzerConfig};
use tributary_analyze::handler::{AnalyzeHandler, Outputs};
use tributary_analyze::metrics::Metrics;
use tributary_analyze::window::WindowConfig;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::eventlog::{Event, EventLog, Record};
use tributary_shared::model::Reading;
use tributary_shared::records::Aggregate;
use tributary_testkit::{test_brokers, unique_topic};

const BASE_MS: i64 = 1_795_000_000_000;

fn reading(ms: i64) -> Reading {
    let t = Utc.timestamp_millis_opt(BASE_MS + ms).single().expect("time");
    Reading {
        schema_version: 1,
        id: format!("r-{ms}"),
        device_id: "dev-0".into(),
        event_time: t,
        received_time: t,
        metrics: BTreeMap::from([("x".to_owned(), 1.0)]),
        tags: BTreeMap::new(),
        location: None,
    }
}

struct Topics {
    raw: String,
    aggs: String,
    group: String,
}

fn handler(log: &KafkaLog, t: &Topics) -> AnalyzeHandler {
    let config = AnalyzerConfig {
        windows: WindowConfig {
            sizes_seconds: vec![10],
            allowed_lateness: chrono::Duration::seconds(5),
        },
        idle_timeout: None,
        ..AnalyzerConfig::default()
    };
    let outputs = Outputs {
        aggregates: t.aggs.clone(),
        alerts: unique_topic("ck-alerts"),
        deadletter: unique_topic("ck-dead"),
    };
    AnalyzeHandler::new(
        Analyzer::new(config),
        log.publisher(),
        outputs,
        None,
        Metrics::default(),
    )
}

async fn publish(log: &KafkaLog, topic: &str, ms: &[i64]) {
    let recs: Vec<Record> = ms
        .iter()
        .map(|&m| Record::new("dev-0", serde_json::to_vec(&reading(m)).expect("json")))
        .collect();
    for r in log.publisher().publish(topic, recs).await {
        r.expect("published");
    }
}

/// Every aggregate in `topic`, oldest first, once at least `min` arrived and none came for a second.
async fn aggregates(log: &KafkaLog, topic: &str, min: usize) -> Vec<Aggregate> {
    let mut sub = log
        .subscribe(&unique_topic("ck-reader"), &[topic.to_owned()])
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while got.len() < min || quiet < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of at least {min} aggregates arrived: {got:?}",
            got.len()
        );
        match sub.next(100, Duration::from_millis(200)).await.expect("poll") {
            Event::Messages(b) if !b.is_empty() => {
                quiet = 0;
                got.extend(
                    b.iter()
                        .map(|m| serde_json::from_slice::<Aggregate>(&m.value).expect("aggregate")),
                );
            }
            _ => quiet += 1,
        }
    }
    sub.close().await;
    got
}

/// Run a fresh analyze consumer of the group until `topic` holds `until` aggregates.
async fn run_owner(log: &KafkaLog, t: &Topics, until: usize) {
    let h = handler(log, t);
    let sub = log
        .subscribe(&t.group, std::slice::from_ref(&t.raw))
        .await
        .expect("subscribe");
    let cfg = RunnerConfig {
        max_batch: 500,
        max_wait: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let stop = async {
        aggregates(log, &t.aggs, until).await;
    };
    run_consumer(sub, &h, &cfg, stop).await.expect("runner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_closed_before_a_handover_is_not_emitted_again_with_part_of_its_readings() {
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: test_brokers(),
            ..KafkaArgs::default()
        },
        "analyze-checkpoint-test",
    )
    .expect("connect");
    let t = Topics {
        raw: unique_topic("ck-raw"),
        aggs: unique_topic("ck-aggs"),
        group: unique_topic("ck-group"),
    };
    log.ensure_topics(&[t.raw.clone(), t.aggs.clone()], 1)
        .await
        .expect("topics");

    // Windows of 10 s, lateness 5 s. Window [0, 10) gets a reading each second, then
    // window [10, 20) starts, then a reading for [0, 10) arrives late but allowed
    // (event clock 13 s, watermark 8 s), then at 15 s the watermark passes 10 s and
    // [0, 10) closes with 11 readings. [10, 20) is open and began before that late
    // reading, so the committed offset is before it.
    let mut first: Vec<i64> = (0..=13).map(|s| s * 1000).collect();
    first.push(9_500);
    first.extend([14_000, 15_000, 16_000]);
    publish(&log, &t.raw, &first).await;
    run_owner(&log, &t, 1).await;

    // A new owner (a restart, a rebalance) takes over; more readings close [10, 20) and [20, 30).
    publish(&log, &t.raw, &(17..=36).map(|s| s * 1000).collect::<Vec<_>>()).await;
    run_owner(&log, &t, 3).await;

    // What an upserting store keeps: the last aggregate per window.
    let all = aggregates(&log, &t.aggs, 3).await;
    let last: HashMap<i64, u64> = all
        .iter()
        .map(|a| ((a.window_start.timestamp_millis() - BASE_MS) / 1000, a.count))
        .collect();
    assert_eq!(last.get(&0), Some(&11), "window [0, 10) as stored downstream: {all:?}");
    assert_eq!(last.get(&10), Some(&10), "window [10, 20): {all:?}");
    assert_eq!(last.get(&20), Some(&10), "window [20, 30): {all:?}");
    assert_eq!(
        all.iter()
            .filter(|a| a.window_start.timestamp_millis() == BASE_MS)
            .count(),
        1,
        "[0, 10) was emitted once: {all:?}"
    );
}
