//! Analyze under KEDA-like scaling through a real Kafka-protocol broker:
//! `tributary-analyze` processes are added mid-stream (scale-out), one is
//! killed with SIGKILL (crash), one stopped with SIGTERM (scale-in); every
//! window in the aggregates topic (last record per identity, as the upserting
//! store keeps it) equals the ground truth computed from the input: no reading
//! lost, none counted twice. Needs `TRIBUTARY_TEST_KAFKA_BROKERS`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{Event, EventLog, Record};
use tributary_shared::records::Aggregate;
use tributary_testkit::{test_brokers, unique_topic};

struct Instance(Child);
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_crash_and_scale_in_lose_and_double_nothing() {
    let brokers = test_brokers();
    let (raw, aggs, alerts, dead, group) = (
        unique_topic("an-raw"),
        unique_topic("an-aggs"),
        unique_topic("an-alerts"),
        unique_topic("an-dead"),
        unique_topic("an-group"),
    );
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "analyze-scale-test",
    )
    .expect("kafka");
    log.ensure_topics(std::slice::from_ref(&raw), 4).await.expect("raw");
    log.ensure_topics(&[aggs.clone(), alerts.clone(), dead.clone()], 2)
        .await
        .expect("outputs");
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
                .env("TRIBUTARY_BATCH_MAX", "50")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start tributary-analyze"),
        )
    };

    let input = common::input(8, 240);
    let chunks: Vec<&[tributary_shared::model::Reading]> = input.chunks(input.len() / 12 + 1).collect();
    let mut a = Some(spawn());
    let mut b = None;
    let mut c = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let recs: Vec<Record> = chunk
            .iter()
            .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("json")))
            .collect();
        for r in log.publisher().publish(&raw, recs).await {
            r.expect("published");
        }
        match i {
            3 => b = Some(spawn()),
            6 => {
                // Crash: no clean shutdown, no final commit.
                if let Some(mut x) = a.take() {
                    let _ = x.0.kill();
                    let _ = x.0.wait();
                }
                c = Some(spawn());
            }
            9 => {
                if let Some(mut x) = b.take() {
                    let _ = Command::new("kill").args(["-TERM", &x.0.id().to_string()]).status();
                    let _ = x.0.wait();
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let truth = common::truth(&input, common::BASE_MS + 240_000 + 10_000);
    let mut sub = log
        .subscribe(&unique_topic("an-reader"), std::slice::from_ref(&aggs))
        .await
        .expect("reader");
    let mut emitted: Vec<Aggregate> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        if let Ok(Event::Messages(m)) = sub.next(5000, Duration::from_millis(500)).await {
            emitted.extend(
                m.iter()
                    .map(|m| serde_json::from_slice::<Aggregate>(&m.value).expect("aggregate")),
            );
        }
        match common::compare(&emitted, &truth) {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => {}
        }
    };
    drop(c);
    sub.close().await;
    if let Err(e) = result {
        panic!(
            "after scale-out, a crash and scale-in: {e} ({} aggregates read)",
            emitted.len()
        );
    }
}
