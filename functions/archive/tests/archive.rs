//! The raw archive against a real Cosmos DB NoSQL endpoint: the local stand-in
//! (`scripts/cosmos/start.js`, @vercel/cosmosdb-server with our fixes) that
//! `scripts/test` starts and exports as `TRIBUTARY_TEST_COSMOS_ENDPOINT`.
//!
//! Covers: batch write, replay without duplicates, point read, paged range
//! queries, TTL settings, dead-lettering, a server outage (paused, then
//! killed and restarted) without loss, and the `tributary-archive` binary end
//! to end through Kafka (`TRIBUTARY_TEST_KAFKA_BROKERS`). Missing services make
//! the tests fail; none skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tributary_archive::{ArchiveHandler, ArchiveMetrics};
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{Handler, RunnerConfig, run_consumer};
use tributary_shared::eventlog::{EventLog, Message, Publisher, Record};
use tributary_shared::model::{Reading, SCHEMA_VERSION};
use tributary_shared::raw::cosmos::{CosmosSettings, CosmosStore};
use tributary_shared::raw::{LocalRawStore, Page, RawStore, StoreError};
use tributary_testkit::free_port;
use tributary_testkit::{test_brokers, test_cosmos, unique_topic};

const DEADLETTER: &str = "deadletter";

fn endpoint() -> String {
    test_cosmos().0
}

fn key() -> String {
    test_cosmos().1
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

fn settings(endpoint: &str, container: &str, ttl_secs: u32) -> CosmosSettings {
    let mut s = CosmosSettings::with_key(endpoint, key(), "tributary-test", container);
    s.ttl_secs = ttl_secs;
    s.concurrency = 8;
    s.timeout = Duration::from_secs(2);
    s
}

async fn store(container: &str, ttl_secs: u32) -> Arc<CosmosStore> {
    Arc::new(
        CosmosStore::connect(settings(&endpoint(), container, ttl_secs), true)
            .await
            .expect("connect to the Cosmos DB stand-in"),
    )
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn reading(device: &str, id: &str, minute: i64) -> Reading {
    let at = t0() + chrono::Duration::minutes(minute);
    Reading {
        schema_version: SCHEMA_VERSION,
        id: id.to_owned(),
        device_id: device.to_owned(),
        event_time: at,
        received_time: at + chrono::Duration::milliseconds(250),
        metrics: [
            ("temperature".to_owned(), 20.5 + minute as f64),
            ("humidity".to_owned(), 41.0),
        ]
        .into_iter()
        .collect(),
        tags: [("site".to_owned(), "lab".to_owned())].into_iter().collect(),
        location: None,
    }
}

fn message(topic: &str, offset: i64, key: &str, value: Vec<u8>) -> Message {
    Message {
        topic: topic.into(),
        partition: 0,
        offset,
        key: Some(key.as_bytes().to_vec()),
        value,
        headers: vec![],
        timestamp_ms: None,
    }
}

fn messages(readings: &[Reading]) -> Vec<Message> {
    readings
        .iter()
        .enumerate()
        .map(|(i, r)| message("raw", i as i64, &r.device_id, serde_json::to_vec(r).expect("encode")))
        .collect()
}

fn handler(store: Arc<dyn RawStore>, dl: &MemoryLog, max_attempts: u32) -> ArchiveHandler {
    ArchiveHandler::new(
        store,
        Arc::new(dl.clone()),
        DEADLETTER,
        max_attempts,
        ArchiveMetrics::default(),
    )
}

/// Every reading of `device` in `[from, to)`, following continuations; also the number of pages.
async fn all_in_range(
    store: &dyn RawStore,
    device: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    page_size: u32,
) -> (Vec<Reading>, usize) {
    let mut out = Vec::new();
    let mut continuation = None;
    let mut pages = 0;
    loop {
        let page = store
            .query_device_range(device, from, to, page_size, continuation)
            .await
            .expect("range query");
        pages += 1;
        assert!(
            page.items.len() <= page_size as usize,
            "page larger than asked: {}",
            page.items.len()
        );
        out.extend(page.items);
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => break,
        }
        assert!(pages < 1000, "continuations never end");
    }
    (out, pages)
}

fn whole_range() -> (DateTime<Utc>, DateTime<Utc>) {
    (t0() - chrono::Duration::days(1), t0() + chrono::Duration::days(30))
}

fn ids(readings: &[Reading]) -> Vec<String> {
    let mut v: Vec<String> = readings.iter().map(|r| r.id.clone()).collect();
    v.sort();
    v
}

/// The local stand-in for Cosmos DB of the all-in-one mode (a fresh SQLite file).
async fn local_store(name: &str) -> Arc<LocalRawStore> {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    Arc::new(
        LocalRawStore::open(&format!("sqlite://{}", dir.join("raw.db").display()))
            .await
            .expect("open the local raw store"),
    )
}

/// The replay contract, run per backend: returns the readings written.
async fn replay_adds_nothing(store: Arc<dyn RawStore>) -> Vec<Reading> {
    let dl = MemoryLog::new(1, 1000);
    let h = handler(store.clone(), &dl, 3);
    let devices = ["dev-a", "dev-b", "dev-c"];
    let readings: Vec<Reading> = (0..60)
        .map(|i| reading(devices[i % 3], &format!("r-{i}"), i as i64))
        .collect();
    let batch = messages(&readings);

    h.handle(&batch).await.expect("first write");
    h.handle(&batch).await.expect("replay");
    h.handle(&batch[10..30]).await.expect("partial replay");

    let (from, to) = whole_range();
    for d in devices {
        let (got, _) = all_in_range(store.as_ref(), d, from, to, 100).await;
        let want: Vec<Reading> = readings.iter().filter(|r| r.device_id == d).cloned().collect();
        assert_eq!(got.len(), want.len(), "{d}: documents after replays");
        assert_eq!(ids(&got), ids(&want), "{d}: each reading exactly once");
        assert_eq!(
            got, want,
            "{d}: documents round-trip as the same readings, oldest first"
        );
    }
    assert!(dl.is_empty(DEADLETTER), "nothing dead-lettered");
    readings
}

#[tokio::test]
async fn batch_is_stored_replay_adds_nothing_and_point_read_returns_it() {
    let store = store(&unique("raw"), 0).await;
    let readings = replay_adds_nothing(store.clone()).await;
    let doc = store
        .read_document("dev-b", "r-1")
        .await
        .expect("point read")
        .expect("r-1 exists");
    assert_eq!(doc["id"], "r-1");
    assert_eq!(doc["deviceId"], "dev-b");
    let back: Reading = serde_json::from_value(doc).expect("stored document is a Reading");
    assert_eq!(back, readings[1]);
    assert!(
        store
            .read_document("dev-a", "r-1")
            .await
            .expect("read in another partition")
            .is_none(),
        "the partition key is part of the identity"
    );
    assert!(
        store
            .read_document("dev-b", "missing")
            .await
            .expect("read of a missing document")
            .is_none()
    );
}

#[tokio::test]
async fn local_store_batch_is_stored_and_replay_adds_nothing() {
    let store = local_store("local-replay").await;
    let readings = replay_adds_nothing(store.clone()).await;
    assert_eq!(store.count().await.expect("count"), readings.len() as i64);
}

#[tokio::test]
async fn range_query_pages_through_continuations_exactly_once() {
    range_query_pages(store(&unique("raw"), 0).await).await;
}

#[tokio::test]
async fn local_store_range_query_pages_through_continuations_exactly_once() {
    range_query_pages(local_store("local-pages").await).await;
}

/// The paging contract, run per backend.
async fn range_query_pages(store: Arc<dyn RawStore>) {
    let dl = MemoryLog::new(1, 1000);
    let h = handler(store.clone(), &dl, 3);
    // 40 readings one minute apart for dev-q, and noise on another device.
    let mut readings: Vec<Reading> = (0..40).map(|i| reading("dev-q", &format!("q-{i}"), i)).collect();
    readings.extend((0..10).map(|i| reading("dev-other", &format!("o-{i}"), i)));
    h.handle(&messages(&readings)).await.expect("write");

    let from = t0() + chrono::Duration::minutes(5);
    let to = t0() + chrono::Duration::minutes(30);
    let (got, pages) = all_in_range(store.as_ref(), "dev-q", from, to, 4).await;
    let want: BTreeSet<String> = (5..30).map(|i| format!("q-{i}")).collect();
    let got_ids: Vec<String> = ids(&got);
    let got_set: BTreeSet<String> = got_ids.iter().cloned().collect();
    assert_eq!(got_ids.len(), got_set.len(), "an item came twice: {got_ids:?}");
    assert_eq!(got_set, want, "exactly the readings in [from, to)");
    assert!(pages >= 7, "25 items at 4 a page need at least 7 pages, got {pages}");
    assert!(
        got.windows(2).all(|w| w[0].event_time <= w[1].event_time),
        "pages come in eventTime order"
    );
    for r in &got {
        assert_eq!(r.device_id, "dev-q");
        assert!(
            r.event_time >= from && r.event_time < to,
            "{} out of range",
            r.event_time
        );
    }
    // A range with nothing in it is one empty page.
    let (none, _) = all_in_range(
        store.as_ref(),
        "dev-q",
        t0() + chrono::Duration::days(2),
        t0() + chrono::Duration::days(3),
        4,
    )
    .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn ttl_is_set_on_the_container_and_each_document() {
    let with_ttl = store(&unique("raw-ttl"), 7 * 86_400).await;
    assert_eq!(with_ttl.default_ttl().await.expect("read container"), Some(7 * 86_400));
    let dl = MemoryLog::new(1, 1000);
    handler(with_ttl.clone(), &dl, 3)
        .handle(&messages(&[reading("dev-t", "t-1", 0)]))
        .await
        .expect("write");
    let doc = with_ttl
        .read_document("dev-t", "t-1")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(doc["ttl"], 7 * 86_400, "per-document ttl");

    let forever = store(&unique("raw-forever"), 0).await;
    assert_eq!(
        forever.default_ttl().await.expect("read container"),
        None,
        "TTL 0 = off"
    );
    handler(forever.clone(), &dl, 3)
        .handle(&messages(&[reading("dev-t", "t-2", 0)]))
        .await
        .expect("write");
    let doc = forever
        .read_document("dev-t", "t-2")
        .await
        .expect("read")
        .expect("exists");
    assert!(doc.get("ttl").is_none(), "no per-document ttl when TTL is off: {doc}");
}

#[tokio::test]
async fn bad_records_are_dead_lettered_with_headers_and_the_rest_stored() {
    let store = store(&unique("raw"), 0).await;
    let dl = MemoryLog::new(1, 1000);
    let h = handler(store.clone(), &dl, 2);
    let good = [reading("dev-d", "d-1", 0), reading("dev-d", "d-2", 1)];
    let mut bad_id = reading("dev-d", "x", 2);
    bad_id.id = "has/slash".into();
    let batch = vec![
        message("raw", 0, "dev-d", serde_json::to_vec(&good[0]).expect("encode")),
        message("raw", 1, "dev-d", b"{not json".to_vec()),
        message("raw", 2, "dev-d", br#"{"id":"z","deviceId":"dev-d"}"#.to_vec()),
        message("raw", 3, "dev-d", serde_json::to_vec(&bad_id).expect("encode")),
        message("raw", 4, "dev-d", serde_json::to_vec(&good[1]).expect("encode")),
    ];
    h.handle(&batch).await.expect("a batch with poison still succeeds");

    let dead = dl.snapshot(DEADLETTER);
    assert_eq!(dead.len(), 3, "three poison records");
    let offsets: BTreeSet<String> = dead.iter().map(|m| header(m, "source-offset")).collect();
    assert_eq!(offsets, ["1", "2", "3"].into_iter().map(String::from).collect());
    for m in &dead {
        assert_eq!(header(m, "source-topic"), "raw");
        assert_eq!(header(m, "source-partition"), "0");
        assert_eq!(header(m, "function"), "archive");
        assert!(
            header(m, "error").contains("not a valid Reading"),
            "{}",
            header(m, "error")
        );
        assert_eq!(m.key.as_deref(), Some(&b"dev-d"[..]));
        let original = &batch[header(m, "source-offset").parse::<usize>().expect("offset")];
        assert_eq!(m.value, original.value, "original bytes kept");
    }
    let (got, _) = all_in_range(store.as_ref(), "dev-d", whole_range().0, whole_range().1, 10).await;
    assert_eq!(ids(&got), vec!["d-1".to_owned(), "d-2".to_owned()]);
}

fn header(m: &Message, name: &str) -> String {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no header {name}"))
}

/// A Cosmos DB stand-in of this test's own, to stop and restart.
struct OwnServer {
    port: u16,
    child: Child,
    stopped: bool,
}

fn start_js() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cosmos/start.js")
}

impl OwnServer {
    fn start(port: u16) -> Self {
        let child = Command::new("node")
            .arg(start_js())
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node scripts/cosmos/start.js");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the stand-in did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            child,
            stopped: false,
        }
    }
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
    }
    fn stop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stopped = true;
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// Wait until the handler has returned `Err` more than `n` times; the new count.
async fn failures_beyond(metrics: &ArchiveMetrics, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.failed_batches() <= n {
        assert!(
            Instant::now() < deadline,
            "the handler did not return Err while the server was unusable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    metrics.failed_batches()
}

#[tokio::test]
async fn an_outage_makes_the_runner_retry_and_nothing_is_lost() {
    let _ = endpoint(); // the suite's stand-in must be there too
    let mut server = OwnServer::start(free_port());
    let container = unique("raw-outage");
    let store = Arc::new(
        CosmosStore::connect(settings(&server.endpoint(), &container, 0), true)
            .await
            .expect("connect"),
    );
    let log = MemoryLog::new(1, 100_000);
    let metrics = ArchiveMetrics::default();
    let h = Arc::new(ArchiveHandler::new(
        store.clone(),
        Arc::new(log.clone()),
        DEADLETTER,
        3,
        metrics.clone(),
    ));
    let sub = log.subscribe("archive", &["raw".to_owned()]).await.expect("subscribe");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner_cfg = RunnerConfig {
        max_batch: 20,
        max_wait: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..RunnerConfig::default()
    };
    let runner = {
        let h = h.clone();
        tokio::spawn(async move {
            run_consumer(sub, h.as_ref(), &runner_cfg, async move {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let publish = |from: i64, to: i64| {
        let log = log.clone();
        async move {
            let records: Vec<Record> = (from..to)
                .map(|i| {
                    let r = reading("dev-o", &format!("o-{i}"), i);
                    Record::new(r.device_id.clone(), serde_json::to_vec(&r).expect("encode"))
                })
                .collect();
            for r in log.publish("raw", records).await {
                r.expect("publish");
            }
        }
    };
    let count = |store: Arc<CosmosStore>| async move {
        let (got, _) = all_in_range(store.as_ref(), "dev-o", whole_range().0, whole_range().1, 1000).await;
        let set: BTreeSet<String> = got.iter().map(|r| r.id.clone()).collect();
        assert_eq!(set.len(), got.len(), "duplicates");
        set
    };
    let wait_for = |store: Arc<CosmosStore>, n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Ok(page)) = tokio::time::timeout(
                Duration::from_secs(5),
                store.query_device_range("dev-o", whole_range().0, whole_range().1, 10_000, None),
            )
            .await
                && page.items.len() >= n
            {
                return;
            }
            assert!(Instant::now() < deadline, "the runner did not catch up to {n} readings");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    publish(0, 50).await;
    wait_for(store.clone(), 50).await;

    // 1. The server hangs (paused): requests time out, the runner retries.
    assert_eq!(metrics.failed_batches(), 0, "no failure while the server is up");
    server.signal("-STOP");
    publish(50, 100).await;
    let failed_while_paused = failures_beyond(&metrics, 0).await;
    server.signal("-CONT");
    wait_for(store.clone(), 100).await;
    assert_eq!(count(store.clone()).await.len(), 100);

    // 2. The server dies: connections are refused, the runner keeps retrying.
    server.stop();
    publish(100, 150).await;
    failures_beyond(&metrics, failed_while_paused).await;
    // It comes back empty (the stand-in keeps data in memory); provisioning re-creates the container.
    let port = server.port;
    let _restarted = OwnServer::start(port);
    let fresh = Arc::new(
        CosmosStore::connect(settings(&format!("http://127.0.0.1:{port}"), &container, 0), true)
            .await
            .expect("re-provision"),
    );
    wait_for(fresh.clone(), 50).await;
    let after = count(fresh.clone()).await;
    let want: BTreeSet<String> = (100..150).map(|i| format!("o-{i}")).collect();
    assert_eq!(
        after, want,
        "every reading published during the outage is stored once after it"
    );
    assert!(log.is_empty(DEADLETTER), "an outage dead-letters nothing");
    assert_eq!(metrics.deadlettered(), 0);

    let _ = stop_tx.send(());
    runner.await.expect("runner task").expect("runner");
}

#[tokio::test]
async fn the_binary_archives_a_kafka_topic_exactly_once_and_stops_on_sigterm() {
    let brokers = test_brokers();
    let endpoint = endpoint();
    let topic = unique_topic("raw");
    let dl_topic = unique_topic("deadletter");
    let container = unique("raw-e2e");
    let kafka = KafkaLog::connect(
        &tributary_shared::config::KafkaArgs {
            brokers: brokers.clone(),
            ..Default::default()
        },
        "archive-test",
    )
    .expect("kafka");
    kafka
        .ensure_topics(&[topic.clone(), dl_topic.clone()], 3)
        .await
        .expect("topics");
    let devices = ["e2e-1", "e2e-2", "e2e-3", "e2e-4"];
    let readings: Vec<Reading> = (0..200)
        .map(|i| reading(devices[i % 4], &format!("e-{i}"), i as i64))
        .collect();
    let mut records: Vec<Record> = readings
        .iter()
        .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("encode")))
        .collect();
    // The same readings again (a producer retry): still one document each.
    records.extend(
        readings[..50]
            .iter()
            .map(|r| Record::new(r.device_id.clone(), serde_json::to_vec(r).expect("encode"))),
    );
    records.push(Record::new("e2e-1", b"garbage".to_vec()));
    for r in kafka.publisher().publish(&topic, records).await {
        r.expect("publish");
    }

    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("{}.log", unique("tributary-archive")));
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary-archive"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
        .env("TRIBUTARY_KAFKA_PARTITIONS", "3")
        .env("TRIBUTARY_RAW_TOPIC", &topic)
        .env("TRIBUTARY_DEADLETTER_TOPIC", &dl_topic)
        .env("TRIBUTARY_CONSUMER_GROUP", unique("archive-e2e"))
        .env("TRIBUTARY_COSMOS_ENDPOINT", &endpoint)
        .env("TRIBUTARY_COSMOS_KEY", key())
        .env("TRIBUTARY_COSMOS_DATABASE", "tributary-test")
        .env("TRIBUTARY_COSMOS_CONTAINER", &container)
        .env("TRIBUTARY_COSMOS_TTL_SECS", "86400")
        .env("TRIBUTARY_COSMOS_CONCURRENCY", "8")
        .env("RUST_LOG", "info")
        .stdout(log_file)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tributary-archive");

    let store = Arc::new(
        CosmosStore::connect(settings(&endpoint, &container, 86_400), true)
            .await
            .expect("connect"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut per_device: BTreeMap<&str, Vec<Reading>> = BTreeMap::new();
    loop {
        per_device.clear();
        for d in devices {
            if let Ok(page) = store
                .query_device_range(d, whole_range().0, whole_range().1, 10_000, None)
                .await
            {
                per_device.insert(d, page.items);
            }
        }
        if per_device.values().map(Vec::len).sum::<usize>() >= readings.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every reading archived within 90 s: {:?}",
            per_device.iter().map(|(d, v)| (d, v.len())).collect::<Vec<_>>()
        );
        assert!(child.try_wait().expect("try_wait").is_none(), "the binary exited early");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let a possible straggler (a duplicate) land before counting exactly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for d in devices {
        let (got, _) = all_in_range(store.as_ref(), d, whole_range().0, whole_range().1, 50).await;
        let want: Vec<Reading> = readings.iter().filter(|r| r.device_id == d).cloned().collect();
        assert_eq!(ids(&got), ids(&want), "{d}: every reading exactly once");
    }

    // The garbage record is in the dead-letter topic, with its reason.
    let mut dl_sub = kafka
        .subscribe(&unique("dl-check"), std::slice::from_ref(&dl_topic))
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        if let Ok(tributary_shared::eventlog::Event::Messages(m)) = dl_sub.next(10, Duration::from_millis(500)).await
            && !m.is_empty()
        {
            break m;
        }
        assert!(Instant::now() < deadline, "nothing in the dead-letter topic");
    };
    dl_sub.close().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, b"garbage");
    assert!(
        dead[0]
            .headers
            .iter()
            .any(|(k, v)| k == "error" && String::from_utf8_lossy(v).contains("not a valid Reading"))
    );

    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "ready while Cosmos DB is reachable");

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let out = std::fs::read_to_string(&log_path).expect("read the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(out.contains("archive stopped"), "logged its stop: {out}");
    assert!(
        out.contains("dead-lettering"),
        "the garbage record was dead-lettered: {out}"
    );
}

/// A store whose failures the test scripts: `bad` ids always fail with a
/// record-specific error; `down` makes every upsert find the store unavailable.
struct ScriptedStore {
    bad: BTreeSet<String>,
    down: std::sync::atomic::AtomicBool,
    stored: std::sync::Mutex<BTreeMap<String, usize>>,
}

#[async_trait::async_trait]
impl RawStore for ScriptedStore {
    async fn upsert_batch(&self, readings: &[Reading]) -> Vec<Result<(), StoreError>> {
        readings
            .iter()
            .map(|r| {
                if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                    Err(StoreError::Unavailable("429: throttled".into()))
                } else if self.bad.contains(&r.id) {
                    Err(StoreError::Retryable("500: internal error for this document".into()))
                } else {
                    *self.stored.lock().expect("lock").entry(r.id.clone()).or_default() += 1;
                    Ok(())
                }
            })
            .collect()
    }
    async fn query_device_range(
        &self,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
        _: u32,
        _: Option<String>,
    ) -> Result<Page, StoreError> {
        Ok(Default::default())
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_record_failing_on_its_own_is_dead_lettered_after_n_tries_but_an_outage_never_is() {
    let store = Arc::new(ScriptedStore {
        bad: ["s-2".to_owned()].into_iter().collect(),
        down: true.into(),
        stored: Default::default(),
    });
    let dl = MemoryLog::new(1, 1000);
    let metrics = ArchiveMetrics::default();
    let h = ArchiveHandler::new(store.clone(), Arc::new(dl.clone()), DEADLETTER, 3, metrics.clone());
    let readings: Vec<Reading> = (0..5).map(|i| reading("dev-s", &format!("s-{i}"), i)).collect();
    let batch = messages(&readings);

    // Throttled / down: Err every time, however often, and nothing dead-lettered.
    for _ in 0..10 {
        assert!(h.handle(&batch).await.is_err(), "an unavailable store fails the batch");
    }
    assert!(dl.is_empty(DEADLETTER), "an outage dead-letters nothing");

    // Back up: s-2 keeps failing on its own; the batch is retried until its third try.
    store.down.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(h.handle(&batch).await.is_err(), "try 1 of s-2");
    assert!(h.handle(&batch).await.is_err(), "try 2 of s-2");
    h.handle(&batch).await.expect("try 3 of s-2: dead-lettered, batch done");
    let dead = dl.snapshot(DEADLETTER);
    assert_eq!(dead.len(), 1, "s-2 dead-lettered exactly once");
    assert_eq!(header(&dead[0], "source-offset"), "2");
    assert!(
        header(&dead[0], "error").contains("not stored after 3 tries"),
        "{}",
        header(&dead[0], "error")
    );
    let stored = store.stored.lock().expect("lock").clone();
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        vec!["s-0", "s-1", "s-3", "s-4"]
    );
    assert_eq!(metrics.deadlettered(), 1);
    assert_eq!(metrics.failed_batches(), 12);
}
