//! The analyze handler driven by the shared consumer runner on the in-process
//! event log: every emitted window equals the ground truth computed from the
//! input, also when the consumer stops mid-stream and a fresh one (empty
//! state) takes over from the committed offsets and checkpoint.

mod common;

use std::time::Duration;

use tributary_analyze::engine::{Analyzer, AnalyzerConfig};
use tributary_analyze::handler::{AnalyzeHandler, Outputs};
use tributary_analyze::metrics::Metrics;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::records::Aggregate;

fn handler(log: &MemoryLog) -> AnalyzeHandler {
    let outputs = Outputs {
        aggregates: "aggs".into(),
        alerts: "alerts".into(),
        deadletter: "dead".into(),
    };
    AnalyzeHandler::new(
        Analyzer::new(AnalyzerConfig::default()),
        log.publisher(),
        outputs,
        None,
        Metrics::default(),
    )
}

fn emitted(log: &MemoryLog) -> Vec<Aggregate> {
    log.snapshot("aggs")
        .iter()
        .map(|m| serde_json::from_slice(&m.value).expect("aggregate"))
        .collect()
}

async fn run_until(log: &MemoryLog, h: &AnalyzeHandler, stop: impl std::future::Future<Output = ()>) {
    let sub = log
        .subscribe("tributary-analyze", &["raw".to_owned()])
        .await
        .expect("subscribe");
    let cfg = RunnerConfig {
        max_batch: 97,
        max_wait: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    run_consumer(sub, h, &cfg, stop).await.expect("runner");
}

async fn publish(log: &MemoryLog, input: &[tributary_shared::model::Reading]) {
    let recs: Vec<Record> = input
        .iter()
        .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json")))
        .collect();
    for r in log.publisher().publish("raw", recs).await {
        r.expect("published");
    }
}

async fn wait_quiet(log: &MemoryLog) {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = log.len("aggs");
        if n == last && n > 0 {
            return;
        }
        last = n;
    }
}

#[tokio::test]
async fn every_window_matches_the_ground_truth() {
    let log = MemoryLog::new(4, 1_000_000);
    log.ensure_topics(&["raw".to_owned()], 4).await.expect("topics");
    let input = common::input(8, 300);
    publish(&log, &input).await;
    let h = handler(&log);
    run_until(&log, &h, wait_quiet(&log)).await;
    let truth = common::truth(&input, common::BASE_MS + 300_000 + 10_000);
    assert!(truth.len() > 500, "{}", truth.len());
    common::check(&emitted(&log), &truth);
    // Bad records are dead-lettered, not fatal.
    assert!(log.snapshot("dead").is_empty());
}

#[tokio::test]
async fn a_fresh_consumer_takes_over_mid_stream_without_loss_or_double_counting() {
    let log = MemoryLog::new(4, 1_000_000);
    log.ensure_topics(&["raw".to_owned()], 4).await.expect("topics");
    let input = common::input(6, 240);
    let (first, second) = input.split_at(input.len() / 2);
    publish(&log, first).await;
    let a = handler(&log);
    run_until(&log, &a, wait_quiet(&log)).await;
    let before = log.len("aggs");
    assert!(before > 0);

    // A new instance with empty state (a restart, or the partitions moving to another pod).
    publish(&log, second).await;
    log.publisher()
        .publish("raw", vec![Record::new("dev-0", b"not a reading".to_vec())])
        .await
        .remove(0)
        .expect("published");
    let b = handler(&log);
    run_until(&log, &b, wait_quiet(&log)).await;
    common::check(
        &emitted(&log),
        &common::truth(&input, common::BASE_MS + 240_000 + 10_000),
    );
    assert_eq!(
        log.snapshot("dead").len(),
        1,
        "the garbage record is dead-lettered once"
    );
}

/// Splunk forwarding: aggregates and alerts reach a HEC receiver, and while
/// it fails the batch is retried (offsets not committed) rather than skipped.
#[tokio::test]
async fn aggregates_are_forwarded_to_splunk_hec_and_retried_while_it_fails() {
    use axum::routing::post;
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Hec {
        fail_first: usize,
        requests: usize,
        events: Vec<serde_json::Value>,
    }
    let hec = Arc::new(Mutex::new(Hec {
        fail_first: 2,
        ..Default::default()
    }));
    let st = hec.clone();
    let app = axum::Router::new().route(
        "/services/collector/event",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let st = st.clone();
            async move {
                let mut h = st.lock().expect("lock");
                h.requests += 1;
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some("Splunk hec-token")
                );
                if h.fail_first > 0 {
                    h.fail_first -= 1;
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned());
                }
                let mut raw = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut raw)
                    .expect("gzip");
                for v in serde_json::Deserializer::from_str(&raw).into_iter::<serde_json::Value>() {
                    h.events.push(v.expect("event"));
                }
                (axum::http::StatusCode::OK, r#"{"text":"Success","code":0}"#.to_owned())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });

    let log = MemoryLog::new(2, 1_000_000);
    log.ensure_topics(&["raw".to_owned()], 2).await.expect("topics");
    let input = common::input(3, 60);
    publish(&log, &input).await;
    let mut cfg = tributary_shared::splunk::HecConfig::new(url, "hec-token");
    cfg.initial_backoff = Duration::from_millis(10);
    cfg.max_attempts = 1;
    let client = tributary_shared::splunk::HecClient::new(cfg).expect("client");
    let outputs = Outputs {
        aggregates: "aggs".into(),
        alerts: "alerts".into(),
        deadletter: "dead".into(),
    };
    let h = AnalyzeHandler::new(
        Analyzer::new(AnalyzerConfig::default()),
        log.publisher(),
        outputs,
        Some(client),
        Metrics::default(),
    );
    run_until(&log, &h, wait_quiet(&log)).await;

    let hec = hec.lock().expect("lock");
    assert!(hec.requests >= 3, "the failed sends were retried");
    let aggregates: Vec<&serde_json::Value> = hec
        .events
        .iter()
        .filter(|e| e["sourcetype"] == "tributary:aggregate")
        .collect();
    let mut keys: Vec<String> = aggregates
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}|{}",
                e["event"]["deviceId"], e["event"]["metric"], e["event"]["windowSeconds"], e["event"]["windowStart"]
            )
        })
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "each window forwarded once");
    // Splunk gets the quantiles, not the sketch the results store merges (Kafka's records carry it).
    assert!(
        aggregates
            .iter()
            .all(|e| e["event"].get("sketch").is_none() && e["event"]["p95"].is_number())
    );
    assert!(
        emitted(&log)
            .iter()
            .all(|a| a.sketch.as_ref().is_some_and(|s| s.count() == a.count))
    );
    // Kafka may hold a window twice (re-published when Splunk failed after the Kafka write: an
    // overwrite downstream); Splunk got each once, and every window reached both.
    let mut in_kafka: Vec<String> = emitted(&log)
        .iter()
        .map(|a| {
            format!(
                "\"{}\"|\"{}\"|{}|\"{}\"",
                a.device_id,
                a.metric,
                a.window_seconds,
                tributary_shared::model::fmt_millis(&a.window_start)
            )
        })
        .collect();
    in_kafka.sort();
    in_kafka.dedup();
    assert!(!in_kafka.is_empty());
    assert_eq!(keys, in_kafka, "every window published to Kafka also reached Splunk");
    assert!(
        aggregates
            .iter()
            .all(|e| e["host"].as_str().is_some_and(|h| h.starts_with("dev-")) && e["time"].is_number())
    );
}

/// Two input partitions, a state topic of `state_partitions` snapshotted
/// every `every`: run the handler until every window of the input was
/// emitted (the runner then stops cleanly), and return the log.
async fn run_with_state_topic(state_partitions: i32, every: Duration) -> MemoryLog {
    use std::sync::Arc;
    use tributary_analyze::handler::Snapshots;
    let log = MemoryLog::new(2, 1_000_000);
    log.ensure_topics(&["raw".to_owned()], 2).await.expect("topics");
    log.ensure_compacted_topic("state", state_partitions)
        .await
        .expect("state topic");
    let h = handler(&log).with_snapshots(Snapshots {
        log: Arc::new(log.clone()),
        topic: "state".into(),
        partitions: state_partitions,
        every,
    });
    let input = common::input(8, 120);
    publish(&log, &input).await;
    let truth = common::truth(&input, common::BASE_MS + 120_000 + 10_000);
    run_until(&log, &h, async {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while common::compare(&emitted(&log), &truth).is_err() {
            assert!(std::time::Instant::now() < deadline, "the outputs stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    common::compare(&emitted(&log), &truth).expect("every window");
    log
}

#[tokio::test]
async fn a_state_topic_that_cannot_be_written_holds_commits_but_not_outputs() {
    // One state partition for two input partitions: partition 1's snapshots cannot be written.
    let log = run_with_state_topic(1, Duration::from_millis(100)).await;
    // Every window was emitted for both partitions; only partition 0 committed past its start.
    let state = log.read_partition("state", 0).await.expect("read");
    assert!(!state.is_empty(), "partition 0's snapshots were written");
    let lag = log.lag("tributary-analyze", "raw");
    let in_partition_1 = log.snapshot("raw").iter().filter(|m| m.partition == 1).count() as i64;
    assert!(in_partition_1 > 0, "the input spans both partitions");
    assert!(
        lag >= in_partition_1,
        "partition 1 committed nothing without a snapshot (lag {lag}, its records {in_partition_1})"
    );
    assert!(lag < log.snapshot("raw").len() as i64, "partition 0 committed");
}

#[tokio::test]
async fn a_clean_stop_snapshots_every_partition_at_what_it_applied() {
    use tributary_analyze::state;
    // An hour between scheduled snapshots: only each partition's first one
    // (it cannot commit before it has one) falls inside the run.
    let log = run_with_state_topic(2, Duration::from_secs(3600)).await;
    let raw = log.snapshot("raw");
    for p in 0..2 {
        let end = raw.iter().filter(|m| m.partition == p).map(|m| m.offset + 1).max();
        assert!(end.is_some_and(|e| e > 97), "partition {p} has more than one batch");
        let back = state::read_back(log.read_partition("state", p).await.expect("read"));
        assert_eq!(back.at, end, "partition {p}: the last snapshot is at its end");
        assert!(
            back.unconfirmed.is_empty(),
            "partition {p}: the final snapshot is whole"
        );
    }
    // And the commits went up to what the open windows allow, no further.
    let lag = log.lag("tributary-analyze", "raw");
    assert!(lag > 0 && lag < raw.len() as i64, "lag {lag} of {}", raw.len());
}
