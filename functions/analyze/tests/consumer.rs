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
    let outputs = Outputs { aggregates: "aggs".into(), alerts: "alerts".into(), deadletter: "dead".into() };
    AnalyzeHandler::new(Analyzer::new(AnalyzerConfig::default()), log.publisher(), outputs, None, Metrics::default())
}

fn emitted(log: &MemoryLog) -> Vec<Aggregate> {
    log.snapshot("aggs").iter().map(|m| serde_json::from_slice(&m.value).expect("aggregate")).collect()
}

async fn run_until(log: &MemoryLog, h: &AnalyzeHandler, stop: impl std::future::Future<Output = ()>) {
    let sub = log.subscribe("tributary-analyze", &["raw".to_owned()]).await.expect("subscribe");
    let cfg = RunnerConfig { max_batch: 97, max_wait: Duration::from_millis(50), ..RunnerConfig::default() };
    run_consumer(sub, h, &cfg, stop).await.expect("runner");
}

async fn publish(log: &MemoryLog, input: &[tributary_shared::model::Reading]) {
    let recs: Vec<Record> = input.iter().map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json"))).collect();
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
    log.publisher().publish("raw", vec![Record::new("dev-0", b"not a reading".to_vec())]).await.remove(0).expect("published");
    let b = handler(&log);
    run_until(&log, &b, wait_quiet(&log)).await;
    common::check(&emitted(&log), &common::truth(&input, common::BASE_MS + 240_000 + 10_000));
    assert_eq!(log.snapshot("dead").len(), 1, "the garbage record is dead-lettered once");
}
