//! The `tributary-lake` binary end to end: Kafka (tansu, `TRIBUTARY_TEST_KAFKA_BROKERS`)
//! into Delta tables in Azure Blob storage (Azurite, a process of the test's
//! own), read back with delta-rs. A process killed with SIGKILL mid-stream
//! and a successor that re-reads the whole topic leave every reading in the
//! table exactly once; SIGTERM commits what is buffered before the process
//! exits. Missing services fail the test; none skips.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::Value;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::model::{Reading, SCHEMA_VERSION};
use tributary_testkit::azurite::{ACCOUNT, Azurite, KEY};
use tributary_testkit::{free_port, test_brokers, unique_topic};

fn reading(i: usize) -> Reading {
    let t = Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).single().expect("a time") + chrono::Duration::seconds(i as i64);
    Reading {
        schema_version: SCHEMA_VERSION,
        id: format!("az-{i:04}"),
        device_id: format!("truck-{}", i % 7),
        event_time: t,
        received_time: t,
        metrics: [("speed".to_owned(), i as f64)].into(),
        tags: Default::default(),
        location: None,
    }
}

async fn publish(kafka: &KafkaLog, topic: &str, range: std::ops::Range<usize>) {
    let records = range
        .map(|i| {
            let r = reading(i);
            Record::new(r.device_id.clone(), serde_json::to_vec(&r).expect("encodes"))
        })
        .collect();
    for r in kafka.publisher().publish(topic, records).await {
        r.expect("published");
    }
}

struct Lake {
    child: Child,
    port: u16,
}

impl Lake {
    fn start(azurite: &Azurite, container: &str, topics: &[(&str, &str)], group: &str, roll_secs: u64) -> Self {
        let port = free_port();
        // Its log, for a look after a failure.
        let log = std::env::temp_dir().join(format!("tributary-lake-{group}.log"));
        let log = std::fs::File::create(log).expect("a log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary-lake"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("TRIBUTARY_KAFKA_BROKERS", test_brokers())
            .env("TRIBUTARY_KAFKA_PARTITIONS", "3")
            .env("TRIBUTARY_CONSUMER_GROUP", group)
            .env("TRIBUTARY_LAKE_URL", format!("az://{container}/tributary"))
            .env("TRIBUTARY_LAKE_ROLL_SECS", roll_secs.to_string())
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", azurite.url())
            .env("RUST_LOG", "info")
            .stdout(log)
            .stderr(Stdio::inherit());
        for (k, v) in topics {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start tributary-lake");
        Self { child, port }
    }

    async fn metric(&self, name: &str) -> f64 {
        let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await else {
            return -1.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    fn signal(&self, sig: &str) {
        let sent = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tributary-lake did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The raw table as delta-rs reads it from Azurite (`None` while it does not exist).
fn read_raw(azurite: &Azurite, container: &str) -> Option<Value> {
    let options = serde_json::json!({"account_name": ACCOUNT, "account_key": KEY, "use_emulator": "true"});
    let env = [("AZURITE_BLOB_STORAGE_URL", azurite.url())];
    tributary_testkit::delta::read(&format!("az://{container}/tributary/raw"), Some(&options), &env, &[]).ok()
}

fn row_count(v: &Option<Value>) -> usize {
    v.as_ref().and_then(|v| v["rows"].as_array()).map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_kafka_to_azure_blob_exactly_once_through_a_kill_and_a_clean_stop() {
    let azurite = Azurite::start();
    let container = format!("lake-{}", free_port());
    azurite.create_container(&container);
    let (raw, aggregates, deadletter) = (
        unique_topic("raw"),
        unique_topic("aggregates"),
        unique_topic("deadletter"),
    );
    let kafka = KafkaLog::connect(
        &KafkaArgs {
            brokers: test_brokers(),
            ..Default::default()
        },
        "lake-test",
    )
    .expect("kafka");
    kafka
        .ensure_topics(&[raw.clone(), aggregates.clone(), deadletter.clone()], 3)
        .await
        .expect("topics");
    let topics = [
        ("TRIBUTARY_RAW_TOPIC", raw.as_str()),
        ("TRIBUTARY_AGGREGATES_TOPIC", aggregates.as_str()),
        ("TRIBUTARY_DEADLETTER_TOPIC", deadletter.as_str()),
    ];

    // 1. Rolled every second: the first readings become queryable.
    publish(&kafka, &raw, 0..150).await;
    let mut first = Lake::start(&azurite, &container, &topics, &format!("{container}-a"), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while row_count(&read_raw(&azurite, &container)) < 150 {
        assert!(Instant::now() < deadline, "150 readings not in the table within 60 s");
        assert!(
            first.child.try_wait().expect("try_wait").is_none(),
            "tributary-lake exited early"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", first.port))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "ready while the store answers");

    // 2. Killed while more arrive (ten records every 150 ms), with some of
    // them buffered: whatever it committed, nothing is lost or doubled.
    for chunk in 0..10 {
        publish(&kafka, &raw, 150 + chunk * 10..160 + chunk * 10).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if chunk == 6 {
            first.signal("-KILL");
        }
    }
    first.wait_exit(Duration::from_secs(10));
    publish(&kafka, &raw, 250..300).await;
    let before = row_count(&read_raw(&azurite, &container));

    // 3. A successor in a new group re-reads the topic from the start (not
    // tansu's stale membership): it skips what the table holds and buffers the
    // rest, which only its clean stop commits (rolls every hour).
    let mut second = Lake::start(&azurite, &container, &topics, &format!("{container}-b"), 3600);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let skipped = second.metric("tributary_lake_skipped_records_total").await;
        let buffered = second.metric("tributary_lake_buffered_rows").await;
        if skipped + buffered >= 300.0 {
            assert_eq!(skipped as usize, before, "every record the table holds is skipped");
            assert_eq!(buffered as usize, 300 - before, "and the rest buffered");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the successor did not read the topic: skipped {skipped}, buffered {buffered}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        row_count(&read_raw(&azurite, &container)),
        before,
        "nothing committed before the stop"
    );
    second.signal("-TERM");
    let status = second.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "a clean exit after SIGTERM: {status}");

    let table = read_raw(&azurite, &container).expect("the table");
    let rows = table["rows"].as_array().expect("rows");
    let ids: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(rows.len(), 300, "every reading once (before the stop: {before})");
    assert_eq!(ids.len(), 300);
    assert_eq!(
        rows.iter().filter_map(|r| r["metrics"]["speed"].as_f64()).sum::<f64>(),
        (0..300).sum::<usize>() as f64
    );
}
