//! The process function against the real PostgreSQL (`DATABASE_URL`; each
//! test gets its own database from `#[sqlx::test]`) and real Redis servers
//! (`redis-server` instances of the test's own, so a test can stop one).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tributary_process::Config;
use tributary_process::cache::{self, Cache};
use tributary_process::handler::ProcessHandler;
use tributary_process::metrics::Metrics;
use tributary_process::store::{PgStore, ResultStore};
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{Handler, HandlerError, RunnerConfig, run_consumer};
use tributary_shared::eventlog::{Event, EventLog, Message, Record};
use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_shared::sketch::QuantileSketch;

/// A redis-server of the test's own on a free port.
struct TestRedis {
    port: u16,
    child: Option<Child>,
}

impl TestRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let mut r = Self { port, child: None };
        r.restart();
        r
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the machine's Redis package); these tests need a real Redis");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    // Recent, so "devices online" counts them.
    let base = Utc::now().timestamp() / 60 * 60 - 600;
    Utc.timestamp_opt(base + secs, 0).single().expect("time")
}

fn agg(device: &str, metric: &str, start: i64, mean: f64) -> Aggregate {
    Aggregate {
        device_id: device.into(),
        metric: metric.into(),
        window_seconds: 10,
        window_start: t(start),
        window_end: t(start + 10),
        count: 5,
        min: mean - 1.0,
        max: mean + 1.0,
        mean,
        stddev: 0.5,
        p50: mean,
        p95: mean + 0.9,
        p99: mean + 1.0,
        anomaly_score: 0.1,
        model: "spike".into(),
        expected_low: None,
        expected_high: None,
        warming: false,
        sketch: None,
    }
}

fn alert(id: &str, device: &str, state: AlertState, updated: i64) -> Alert {
    Alert {
        id: id.into(),
        device_id: device.into(),
        metric: "temp".into(),
        model: "threshold".into(),
        score: 0.9,
        value: 95.0,
        reason: "temp > 90 for 30s".into(),
        severity: Default::default(),
        state,
        opened_at: t(0),
        updated_at: t(updated),
    }
}

fn msg(topic: &str, offset: i64, key: &str, value: Vec<u8>) -> Message {
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

fn batch(aggs: &[Aggregate], alerts: &[Alert]) -> Vec<Message> {
    let mut v = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        v.push(msg(
            "telemetry.aggregates",
            i as i64,
            &a.device_id,
            serde_json::to_vec(a).expect("json"),
        ));
    }
    for (i, a) in alerts.iter().enumerate() {
        v.push(msg(
            "telemetry.alerts",
            i as i64,
            &a.device_id,
            serde_json::to_vec(a).expect("json"),
        ));
    }
    v
}

struct Setup {
    handler: ProcessHandler,
    cache: Arc<Cache>,
    log: MemoryLog,
}

fn setup(pool: &PgPool, redis_url: &str) -> Setup {
    let cfg = Config::default();
    let cache = Arc::new(Cache::redis(redis_url, 3600, 100).expect("redis url"));
    let log = MemoryLog::new(1, 10_000);
    let mut registry = prometheus_client::registry::Registry::default();
    let handler = ProcessHandler::new(
        &cfg,
        Arc::new(PgStore::new(pool.clone())),
        cache.clone(),
        log.publisher(),
        Metrics::new(&mut registry),
    );
    Setup { handler, cache, log }
}

async fn snapshot(pool: &PgPool) -> (Vec<String>, Vec<String>, Vec<String>) {
    let aggs: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws('|', device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model) FROM aggregates ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("aggregates");
    let alerts: Vec<(String,)> =
        sqlx::query_as("SELECT concat_ws('|', id, state, score, updated_at, resolved_at) FROM alerts ORDER BY 1")
            .fetch_all(pool)
            .await
            .expect("alerts");
    let devices: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws('|', device_id, first_seen, last_seen, last_values::text) FROM devices ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("devices");
    (
        aggs.into_iter().map(|r| r.0).collect(),
        alerts.into_iter().map(|r| r.0).collect(),
        devices.into_iter().map(|r| r.0).collect(),
    )
}

async fn redis_json(cache: &Cache, key: &str) -> Value {
    serde_json::from_str(
        &cache
            .get(key)
            .await
            .expect("redis get")
            .unwrap_or_else(|| panic!("{key} missing from the cache")),
    )
    .expect("json")
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn a_batch_is_written_cached_and_a_replay_changes_nothing(pool: PgPool) {
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    let aggs: Vec<Aggregate> = ["truck-1", "truck-2"]
        .iter()
        .flat_map(|d| {
            ["temp", "speed"]
                .iter()
                .flat_map(move |m| (0..3).map(move |w| agg(d, m, w * 10, 20.0 + w as f64)))
        })
        .collect();
    let alerts = vec![
        alert("a-1", "truck-1", AlertState::Opened, 5),
        alert("a-1", "truck-1", AlertState::Updated, 25),
    ];
    s.handler.handle(&batch(&aggs, &alerts)).await.expect("written");
    let first = snapshot(&pool).await;
    assert_eq!(first.0.len(), 12, "one row per (device, metric, size, start)");
    assert_eq!(first.1.len(), 1, "one row per alert id");
    assert!(first.1[0].contains("|open|"), "{:?}", first.1);
    assert_eq!(first.2.len(), 2);

    // Replay the same batch (a crash before the offset commit): nothing changes.
    s.handler.handle(&batch(&aggs, &alerts)).await.expect("replayed");
    assert_eq!(snapshot(&pool).await, first);

    let dev = redis_json(&s.cache, &cache::device_key("truck-1")).await;
    assert_eq!(dev["lastValues"]["temp"]["value"], 22.0, "latest window's mean: {dev}");
    let summary = redis_json(&s.cache, cache::FLEET_SUMMARY).await;
    assert_eq!(
        (summary["devices"].as_i64(), summary["alertsOpen"].as_i64()),
        (Some(2), Some(1)),
        "{summary}"
    );
    let a = redis_json(&s.cache, &cache::alert_key("a-1")).await;
    assert_eq!(a["state"], "open");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");
    let recent: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(cache::RECENT_ALERTS)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("zrange");
    assert_eq!(recent, vec!["a-1".to_owned()]);
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn alerts_move_forward_and_keep_acknowledgement(pool: PgPool) {
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    s.handler
        .handle(&batch(&[], &[alert("a-2", "d", AlertState::Opened, 5)]))
        .await
        .expect("open");
    sqlx::query(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = 'op' WHERE id = 'a-2'",
    )
    .execute(&pool)
    .await
    .expect("ack");
    s.handler
        .handle(&batch(&[], &[alert("a-2", "d", AlertState::Updated, 15)]))
        .await
        .expect("update");
    let state: (String, String) = sqlx::query_as("SELECT state, acknowledged_by FROM alerts WHERE id = 'a-2'")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(
        state,
        ("acknowledged".into(), "op".into()),
        "an update keeps the operator's acknowledgement"
    );
    s.handler
        .handle(&batch(&[], &[alert("a-2", "d", AlertState::Resolved, 30)]))
        .await
        .expect("resolve");
    // An older record replayed afterwards does not reopen it.
    s.handler
        .handle(&batch(&[], &[alert("a-2", "d", AlertState::Updated, 15)]))
        .await
        .expect("replay");
    let (state, resolved): (String, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT state, resolved_at FROM alerts WHERE id = 'a-2'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(state, "resolved");
    assert_eq!(resolved, Some(t(30)));
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn bad_records_go_to_the_deadletter_topic_and_the_rest_is_written(pool: PgPool) {
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    let mut bad_score = agg("d", "temp", 0, 1.0);
    bad_score.anomaly_score = 2.0;
    // A window with the sketch of its 5 values, and one whose sketch holds 2.
    let sketch_of = |xs: &[f64]| {
        let mut sk = QuantileSketch::default();
        xs.iter().for_each(|&x| sk.insert(x));
        sk
    };
    let mut sketched = agg("d", "temp", 20, 1.0);
    sketched.sketch = Some(sketch_of(&[0.0, 0.5, 1.0, 1.5, 2.0]));
    let mut miscounted = agg("d", "temp", 30, 1.0);
    miscounted.sketch = Some(sketch_of(&[0.0, 2.0]));
    let mut b = batch(
        &[agg("d", "temp", 10, 1.0), bad_score, sketched.clone(), miscounted],
        &[
            alert("", "d", AlertState::Opened, 1),
            alert("ok", "d", AlertState::Opened, 1),
        ],
    );
    b.push(msg("telemetry.aggregates", 99, "d", b"{not json".to_vec()));
    let mut damaged = serde_json::to_value(agg("d", "temp", 40, 1.0)).expect("json");
    damaged["sketch"] = Value::from("AQ==");
    b.push(msg("telemetry.aggregates", 98, "d", damaged.to_string().into_bytes()));
    s.handler.handle(&b).await.expect("batch handled");
    let (aggs, alerts, _) = snapshot(&pool).await;
    assert_eq!((aggs.len(), alerts.len()), (2, 1));
    let stored: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT sketch FROM aggregates ORDER BY window_start")
        .fetch_all(&pool)
        .await
        .expect("sketches");
    assert_eq!(
        stored,
        vec![None, sketched.sketch.as_ref().map(QuantileSketch::to_bytes)]
    );
    let dead = s.log.snapshot("telemetry.deadletter");
    assert_eq!(dead.len(), 5, "{dead:?}");
    let header = |m: &Message, k: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let offsets: BTreeSet<String> = dead.iter().map(|m| header(m, "source-offset")).collect();
    assert!(offsets.contains("99"));
    for m in &dead {
        assert_eq!(header(m, "function"), "process");
        assert!(!header(m, "error").is_empty());
        assert!(header(m, "source-topic").starts_with("telemetry."));
    }
    assert_eq!(
        dead.iter()
            .find(|m| header(m, "source-offset") == "99")
            .map(|m| m.value.clone()),
        Some(b"{not json".to_vec()),
        "original bytes kept"
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn redis_outage_never_stops_writes_and_the_cache_catches_up(pool: PgPool) {
    let mut redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    s.handler
        .handle(&batch(&[agg("before", "temp", 0, 1.0)], &[]))
        .await
        .expect("first");
    assert!(!s.cache.is_stale());

    redis.stop();
    s.handler
        .handle(&batch(
            &[agg("during", "temp", 0, 2.0)],
            &[alert("a-3", "during", AlertState::Opened, 1)],
        ))
        .await
        .expect("Redis down must not fail the batch");
    assert!(s.cache.is_stale(), "the cache knows it missed data");
    let (aggs, _, _) = snapshot(&pool).await;
    assert_eq!(aggs.len(), 2, "PostgreSQL writes went on");

    // Redis comes back empty (it keeps nothing on disk); the next batch rebuilds everything from PostgreSQL.
    redis.restart();
    let start = Instant::now();
    loop {
        let r = s.handler.handle(&batch(&[agg("after", "temp", 0, 3.0)], &[])).await;
        assert!(r.is_ok());
        if !s.cache.is_stale() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "cache did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for d in ["before", "during", "after"] {
        let v = redis_json(&s.cache, &cache::device_key(d)).await;
        assert_eq!(v["deviceId"], d);
    }
    assert_eq!(redis_json(&s.cache, &cache::alert_key("a-3")).await["state"], "open");
}

/// Writes, then fails as if the process died before committing offsets.
struct CrashAfterWrite<'a> {
    inner: &'a ProcessHandler,
    calls: AtomicUsize,
}

#[async_trait]
impl Handler for CrashAfterWrite<'_> {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        self.inner.handle(batch).await?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::msg("simulated crash after the database commit"))
    }
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn crash_between_db_commit_and_offset_commit_loses_and_duplicates_nothing(pool: PgPool) {
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    let log = MemoryLog::new(2, 10_000);
    let topics = vec!["telemetry.aggregates".to_owned(), "telemetry.alerts".to_owned()];
    log.ensure_topics(&topics, 2).await.expect("topics");
    let aggs: Vec<Aggregate> = (0..40)
        .map(|i| agg(&format!("dev-{}", i % 4), "temp", (i / 4) * 10, i as f64))
        .collect();
    let recs: Vec<Record> = aggs
        .iter()
        .map(|a| Record::new(a.device_id.clone(), serde_json::to_vec(a).expect("json")))
        .collect();
    for r in log.publisher().publish("telemetry.aggregates", recs).await {
        r.expect("published");
    }
    let cfg = RunnerConfig {
        max_batch: 15,
        max_wait: Duration::from_millis(100),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        ..RunnerConfig::default()
    };

    // First instance: writes, then "crashes" every time before committing.
    let crashing = CrashAfterWrite {
        inner: &s.handler,
        calls: AtomicUsize::new(0),
    };
    let sub = log.subscribe("tributary-process", &topics).await.expect("subscribe");
    run_consumer(sub, &crashing, &cfg, async {
        while crashing.calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("runner");
    // The rollup job runs between the crash and the replay.
    let store = PgStore::new(pool.clone());
    assert!(store.roll_up(100).await.expect("roll up") > 0);

    // Second instance: everything is delivered again (nothing was committed) and written once.
    let sub = log.subscribe("tributary-process", &topics).await.expect("subscribe");
    let seen = AtomicUsize::new(0);
    struct Counting<'a>(&'a ProcessHandler, &'a AtomicUsize);
    #[async_trait]
    impl Handler for Counting<'_> {
        async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
            self.0.handle(batch).await?;
            self.1.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }
    let counting = Counting(&s.handler, &seen);
    run_consumer(sub, &counting, &cfg, async {
        while seen.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await
    .expect("runner");
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM aggregates")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n.0, 40, "each window exactly once");
    store.roll_up(100).await.expect("roll up");
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT a.device_id, a.n, r.n FROM
           (SELECT device_id, sum(count)::bigint AS n FROM aggregates GROUP BY device_id) a
           JOIN (SELECT device_id, sum(count)::bigint AS n FROM rollups WHERE window_seconds = 86400 GROUP BY device_id) r
           USING (device_id) ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("counts");
    assert_eq!(counts.len(), 4, "every device rolled up: {counts:?}");
    for (device, windows, day) in counts {
        assert_eq!(
            windows, day,
            "{device}: the replayed windows counted once in the day tier"
        );
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        40,
        "the uncommitted records were redelivered, all of them"
    );

    // And now the offsets are committed: a third instance gets nothing.
    let mut sub = log.subscribe("tributary-process", &topics).await.expect("subscribe");
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        if let Ok(Event::Messages(m)) = sub.next(100, Duration::from_millis(100)).await {
            assert!(m.is_empty(), "records past the committed offsets came back");
        }
    }
}

#[tokio::test]
async fn postgres_down_means_an_error_and_no_commit() {
    use sqlx::postgres::PgPoolOptions;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .expect("lazy pool");
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    let err = s
        .handler
        .handle(&batch(&[agg("d", "temp", 0, 1.0)], &[]))
        .await
        .expect_err("must fail while PostgreSQL is down");
    let err = tributary_shared::telemetry::ErrorChain(&err).to_string();
    assert!(err.contains("writing the batch: database unavailable"), "{err}");
    assert!(
        s.log.snapshot("telemetry.deadletter").is_empty(),
        "an outage is not poison"
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn retention_deletes_only_old_windows(pool: PgPool) {
    let redis = TestRedis::start();
    let s = setup(&pool, &redis.url());
    let mut old = agg("d", "temp", 0, 1.0);
    old.window_start = Utc::now() - chrono::Duration::days(40);
    old.window_end = old.window_start + chrono::Duration::seconds(10);
    s.handler
        .handle(&batch(&[old, agg("d", "temp", 0, 2.0)], &[]))
        .await
        .expect("written");
    let deleted = PgStore::new(pool.clone())
        .delete_aggregates_before(Utc::now() - chrono::Duration::days(30))
        .await
        .expect("retention");
    assert_eq!(deleted, 1);
    let (aggs, _, _) = snapshot(&pool).await;
    assert_eq!(aggs.len(), 1);
}
