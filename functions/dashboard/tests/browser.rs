//! The dashboard in a real browser (Debian's Chromium driven by
//! playwright-core), fed by the real pipeline from Kafka on: aggregates and an
//! alert are published to a Kafka-protocol broker, the `tributary-process`
//! binary writes them to PostgreSQL and Redis and notifies, the
//! `tributary-dashboard` binary serves the page. Checks that charts render
//! with data, that a live alert appears without a reload and that
//! acknowledging it works; the fleet list at 10,000 devices (pages,
//! search, filter, order, a shared URL); and the charts as an analyst uses
//! them (hover, zoom, compare, overlay, CSV, a shared URL). Screenshots go to `$TRIBUTARY_ARTIFACTS_DIR/screenshots`
//! (default `artifacts/screenshots` at the workspace root).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sqlx::PgPool;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_shared::registry::{DeviceRegistry, NewDevice, PgRegistry};
use tributary_shared::results::{PgStore, ResultStore};
use tributary_testkit::free_port;
use tributary_testkit::{test_brokers, unique_topic};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the browser test finds its parts: the workspace root, Chromium and
/// the screenshot directory. Panics naming what is missing.
fn browser_env() -> (PathBuf, String, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run the tests with scripts/test (npm ci in tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: scripts/test installs Debian's chromium"
    );
    let shots = std::env::var("TRIBUTARY_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("artifacts"))
        .join("screenshots");
    (root, chromium, shots)
}

/// The URL of the test's own database (`#[sqlx::test]` made it).
async fn db_url(pool: &PgPool) -> String {
    let db: (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("db");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    format!("{}/{}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base), db.0)
}

/// A Redis of the test's own (nothing cached by other tests).
fn start_redis() -> (Proc, String) {
    let port = free_port();
    let redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    wait_port(port, "redis");
    (redis, format!("redis://127.0.0.1:{port}"))
}

/// The dashboard binary on `db_url` and `redis_url`, listening, readable by anyone.
fn start_dashboard(db_url: &str, redis_url: &str) -> (Proc, u16) {
    start_dashboard_with(db_url, redis_url, &[("TRIBUTARY_PUBLIC_READ", "true")], None)
}

/// The dashboard binary on `db_url` and `redis_url` with `env` (which may
/// override `RUST_LOG=warn`), its log to `log` if given, listening.
fn start_dashboard_with(
    db_url: &str,
    redis_url: &str,
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> (Proc, u16) {
    let port = free_port();
    let stdout = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
        None => Stdio::null(),
    };
    let dashboard = Proc(
        Command::new(env!("CARGO_BIN_EXE_tributary-dashboard"))
            .env("PORT", port.to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("DATABASE_URL", db_url)
            .env("REDIS_URL", redis_url)
            .env("TRIBUTARY_OPERATOR_TOKEN", "ui-operator-token")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(stdout)
            .spawn()
            .expect("dashboard"),
    );
    wait_port(port, "dashboard");
    (dashboard, port)
}

/// Runs `tests/browser/<script>` with `args` after the dashboard's URL and
/// the screenshot directory, and returns its transcript; fails the test
/// with the transcript unless it printed "DONE" and exited 0.
fn run_browser_script(script: &str, port: u16, args: &[&str]) -> String {
    let (root, chromium, shots) = browser_env();
    let out = Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&shots)
        .args(args)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && transcript.lines().any(|l| l == "DONE"),
        "{script} failed:\n{transcript}\n{} (screenshots in {})",
        String::from_utf8_lossy(&out.stderr),
        shots.display()
    );
    for line in transcript.lines().filter_map(|l| l.strip_prefix("SCREENSHOT ")) {
        assert!(shots.join(line).exists(), "screenshot {line} missing");
    }
    transcript
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn live_alert_chart_and_acknowledge_in_chromium(pool: PgPool) {
    let (root, chromium, shots) = browser_env();
    let script = root.join("tests/browser/dashboard.mjs");
    let process_bin = PathBuf::from(env!("CARGO_BIN_EXE_tributary-dashboard")).with_file_name("tributary-process");
    assert!(
        process_bin.exists(),
        "{} not built: run the whole workspace's tests (scripts/test)",
        process_bin.display()
    );
    let db_url = db_url(&pool).await;
    let (_redis, redis_url) = start_redis();

    let brokers = test_brokers();
    let (aggs_topic, alerts_topic, dead_topic) = (
        unique_topic("ui-aggs"),
        unique_topic("ui-alerts"),
        unique_topic("ui-dead"),
    );
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "browser-test",
    )
    .expect("kafka");
    log.ensure_topics(&[aggs_topic.clone(), alerts_topic.clone(), dead_topic.clone()], 3)
        .await
        .expect("topics");
    let process_port = free_port();
    let _process = Proc(
        Command::new(&process_bin)
            .env("PORT", process_port.to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("DATABASE_URL", &db_url)
            .env("REDIS_URL", &redis_url)
            .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
            .env("TRIBUTARY_AGGREGATES_TOPIC", &aggs_topic)
            .env("TRIBUTARY_ALERTS_TOPIC", &alerts_topic)
            .env("TRIBUTARY_DEADLETTER_TOPIC", &dead_topic)
            .env("TRIBUTARY_CONSUMER_GROUP", unique_topic("ui-group"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("process"),
    );

    // Ten minutes of 10 s windows for two metrics of one truck, one window anomalous,
    // the first minute scored while the models warmed up.
    let now = Utc::now().timestamp() / 10 * 10;
    let mut recs = Vec::new();
    for i in 0..60i64 {
        for (metric, base_v) in [("speed", 80.0), ("engine_temp", 90.0)] {
            let start = Utc.timestamp_opt(now - 600 + i * 10, 0).single().expect("t");
            let wave = (i as f64 / 6.0).sin() * 5.0;
            let a = Aggregate {
                device_id: "truck-ui".into(),
                metric: metric.into(),
                window_seconds: 10,
                window_start: start,
                window_end: start + chrono::Duration::seconds(10),
                count: 10,
                min: base_v + wave - 3.0,
                max: base_v + wave + 3.0 + if i == 40 { 25.0 } else { 0.0 },
                mean: base_v + wave,
                stddev: 1.5,
                p50: base_v + wave,
                p95: base_v + wave + 2.5,
                p99: base_v + wave + 3.0,
                anomaly_score: if i == 40 { 0.97 } else { 0.05 },
                model: "spike".into(),
                // The models warm up over the first minute, then expect the wave +- 8.
                expected_low: (i >= 6).then_some(base_v + wave - 8.0),
                expected_high: (i >= 6).then_some(base_v + wave + 8.0),
                warming: i < 6,
                sketch: None,
            };
            recs.push(Record::new("truck-ui", serde_json::to_vec(&a).expect("json")));
        }
    }
    for r in log.publisher().publish(&aggs_topic, recs).await {
        r.expect("published");
    }
    let start = Instant::now();
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM aggregates")
            .fetch_one(&pool)
            .await
            .expect("count");
        if n == 120 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "process wrote {n} of 120 aggregates"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (_dashboard, dash_port) = start_dashboard(&db_url, &redis_url);

    let mut node = Command::new("node")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{dash_port}/"))
        .arg(&shots)
        .arg("ui-operator-token")
        .arg("truck-ui")
        .env("CHROMIUM", &chromium)
        .env("EXPECT_BAND", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut out = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut stdin = node.stdin.take().expect("stdin");
    let mut transcript = Vec::new();
    loop {
        let line = out
            .next()
            .expect("the browser script ended before the overview loaded")
            .expect("line");
        transcript.push(line.clone());
        if line == "OVERVIEW-OK" {
            break;
        }
    }

    // A live alert, through Kafka and the process function.
    let alert = Alert {
        id: "ui-alert-1".into(),
        device_id: "truck-ui".into(),
        metric: "engine_temp".into(),
        model: "threshold".into(),
        score: 0.99,
        value: 121.0,
        reason: "engine_temp > 110 for 30s".into(),
        severity: Default::default(),
        state: AlertState::Opened,
        opened_at: Utc::now() - chrono::Duration::seconds(30),
        updated_at: Utc::now(),
    };
    log.publisher()
        .publish(
            &alerts_topic,
            vec![Record::new("truck-ui", serde_json::to_vec(&alert).expect("json"))],
        )
        .await
        .remove(0)
        .expect("published");
    writeln!(stdin, "ALERT-SENT").expect("signal the browser");
    for line in out.by_ref() {
        let line = line.expect("line");
        transcript.push(line);
    }
    let status = node.wait().expect("node exit");
    assert!(
        status.success(),
        "browser script failed: {transcript:?} (screenshots in {})",
        shots.display()
    );
    assert!(transcript.iter().any(|l| l == "DONE"), "{transcript:?}");
    let (state, by): (String, Option<String>) =
        sqlx::query_as("SELECT state, acknowledged_by FROM alerts WHERE id = 'ui-alert-1'")
            .fetch_one(&pool)
            .await
            .expect("alert");
    assert_eq!((state.as_str(), by.as_deref()), ("acknowledged", Some("operator")));
    for f in [
        "overview.png",
        "live-alert.png",
        "acknowledged.png",
        "device.png",
        "phone.png",
    ] {
        assert!(shots.join(f).exists(), "screenshot {f} missing");
    }
    println!("{}", transcript.join("\n"));
}

/// The fleet list at 10,000 devices in Chromium: pages, a server-side search,
/// the status filter, both orders of the alert count, the view in a shared
/// URL and restored on the way back from a device, a group of the device
/// registry, and a phone's width.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn fleet_list_of_ten_thousand_devices_in_chromium(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    // dev-00000 is the most recently seen, dev-09999 the least.
    let now = Utc::now() - chrono::Duration::seconds(60);
    let windows: Vec<Aggregate> = (0..10_000i64)
        .map(|i| {
            chart_window(
                &format!("dev-{i:05}"),
                "temp",
                10,
                now - chrono::Duration::seconds(i),
                i,
                false,
            )
        })
        .collect();
    for chunk in windows.chunks(2000) {
        store.write_batch(chunk, &[]).await.expect("devices");
    }
    let alerts: Vec<Alert> = [("dev-00007", 3), ("dev-00070", 2), ("dev-00700", 1)]
        .into_iter()
        .flat_map(|(device, n)| {
            (0..n).map(move |k| {
                tributary_testkit::results::alert(&format!("{device}-alert-{k}"), device, AlertState::Opened, 5)
            })
        })
        .collect();
    store.write_batch(&[], &alerts).await.expect("alerts");
    let trucks: Vec<NewDevice> = (0..10_000)
        .step_by(5)
        .map(|i| NewDevice {
            group: Some("trucks".into()),
            ..NewDevice::new(format!("dev-{i:05}"))
        })
        .collect();
    PgRegistry::new(pool.clone())
        .import(&trucks, Utc::now())
        .await
        .expect("register the trucks");

    let (_redis, redis_url) = start_redis();
    let (_dashboard, port) = start_dashboard(&db_url(&pool).await, &redis_url);
    println!("{}", run_browser_script("fleet.mjs", port, &[]));
}

/// A window of `metric` for the charts test: a slow wave, `hot` scored as an anomaly.
fn chart_window(device: &str, metric: &str, size: i64, start: chrono::DateTime<Utc>, i: i64, hot: bool) -> Aggregate {
    let mean = 60.0 + (i as f64 / 40.0).sin() * 8.0;
    Aggregate {
        device_id: device.into(),
        metric: metric.into(),
        window_seconds: size as u32,
        window_start: start,
        window_end: start + chrono::Duration::seconds(size),
        count: 10,
        min: mean - 3.0,
        max: mean + 3.0 + if hot { 20.0 } else { 0.0 },
        mean,
        stddev: 1.2,
        p50: mean,
        p95: mean + 2.0,
        p99: mean + 2.8,
        anomaly_score: if hot { 0.95 } else { 0.05 },
        model: "spike".into(),
        expected_low: Some(mean - 6.0),
        expected_high: Some(mean + 6.0),
        warming: false,
        sketch: None,
    }
}

/// A device page's charts as an analyst uses them, in Chromium: hover values
/// (count, extremes, quantiles, anomaly score), drag to zoom with the
/// resolution following, the zoom in a shared URL and undone by the back
/// button, another device compared on the same chart, every metric on one
/// chart, CSV of what is shown, and a phone's width.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn charts_hover_zoom_compare_overlay_and_export_in_chromium(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let now = Utc::now().timestamp() / 60 * 60;
    let at = |t: i64| Utc.timestamp_opt(t, 0).single().expect("time");
    let mut windows = Vec::new();
    for i in 0..1440 {
        let start = at(now - 86_400 + i * 60);
        for metric in ["speed", "engine_temp"] {
            windows.push(chart_window(
                "truck-a",
                metric,
                60,
                start,
                i,
                metric == "speed" && i == 1000,
            ));
        }
        windows.push(chart_window("truck-b", "speed", 60, start, i + 50, false));
    }
    for i in 0..720 {
        let start = at(now - 7200 + i * 10);
        for metric in ["speed", "engine_temp"] {
            windows.push(chart_window("truck-a", metric, 10, start, i, false));
        }
    }
    for chunk in windows.chunks(2000) {
        store.write_batch(chunk, &[]).await.expect("windows");
    }
    while store.roll_up(5000).await.expect("roll up") > 0 {}

    let (_redis, redis_url) = start_redis();
    let (_dashboard, port) = start_dashboard(&db_url(&pool).await, &redis_url);
    println!("{}", run_browser_script("charts.mjs", port, &["truck-a", "truck-b"]));
}

/// Signing in as a viewer (a wrong token refused; an HttpOnly, SameSite
/// cookie without the token; the live stream with it), then the device
/// registry page in Chromium: hidden from viewers; for the
/// operator, pages through 251 registered devices, filters by group, search
/// and state (in a shared URL too), disables a device, rotates a key and
/// registers a device (a bad id refused by name); the database then holds
/// what the page did.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn device_registry_page_in_chromium(pool: PgPool) {
    use tributary_shared::registry::{DeviceRegistry, DeviceStatus, Enrollment, NewDevice, PgRegistry};
    let registry = PgRegistry::new(pool.clone());
    let fleet: Vec<NewDevice> = (0..150)
        .map(|i| NewDevice {
            group: Some("trucks".into()),
            ..NewDevice::new(format!("veh-{i:03}"))
        })
        .chain((0..100).map(|i| NewDevice {
            group: Some("freezers".into()),
            ..NewDevice::new(format!("frz-{i:03}"))
        }))
        .collect();
    registry.import(&fleet, Utc::now()).await.expect("import");
    // One device that enrolled itself: its first window was stored.
    PgStore::new(pool.clone())
        .write_batch(
            &[chart_window(
                "pump-1",
                "temp",
                10,
                Utc::now() - chrono::Duration::seconds(30),
                0,
                false,
            )],
            &[],
        )
        .await
        .expect("first contact");

    let (_redis, redis_url) = start_redis();
    let log = std::env::temp_dir().join(format!("tributary-registry-page-{}.log", std::process::id()));
    let (dashboard, port) = start_dashboard_with(
        &db_url(&pool).await,
        &redis_url,
        &[("TRIBUTARY_VIEWER_TOKEN", "ui-viewer-token"), ("RUST_LOG", "info")],
        Some(&log),
    );
    println!(
        "{}",
        run_browser_script("registry.mjs", port, &["ui-operator-token", "ui-viewer-token"])
    );
    drop(dashboard);
    // What was done is in the log; no token, nor a session made from one, is.
    let logged = std::fs::read_to_string(&log).expect("the dashboard's log");
    let _ = std::fs::remove_file(&log);
    for done in [
        "signed in with a session",
        "device changed by an operator",
        "device registered by an operator",
    ] {
        assert!(logged.contains(done), "{done:?} not logged:\n{logged}");
    }
    for secret in [
        "ui-viewer-token",
        "ui-operator-token",
        "a-guess",
        "tributary_session",
        "v1.viewer.",
    ] {
        assert!(!logged.contains(secret), "{secret:?} reached the log:\n{logged}");
    }

    let get = |id: &'static str| {
        let registry = registry.clone();
        async move { registry.get(id).await.expect("get").expect(id) }
    };
    assert_eq!(get("frz-007").await.status, DeviceStatus::Disabled);
    assert_eq!(get("frz-008").await.key_version, 1);
    let van = get("van-new").await;
    assert_eq!(
        (van.group.as_str(), van.name.as_deref(), van.enrolled_by),
        ("vans", Some("New van"), Enrollment::Operator)
    );
    assert_eq!(
        registry.count().await.expect("count"),
        252,
        "the bad id was not registered"
    );
}

/// The alert rules page in Chromium: a reader sees the rules and no editing
/// control; the operator adds a rule, edits one from its row, and a bad one
/// is refused naming the field. The rules are then checked in the database.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn alert_rules_page_in_chromium(pool: PgPool) {
    use tributary_shared::rules::{Condition, PgRules, RuleSpec, RuleStore, Severity};
    let rules = PgRules::new(pool.clone());
    let speed = RuleSpec {
        metric: "speed".into(),
        condition: Condition::Above,
        threshold: 120.0,
        hold_seconds: 30,
        severity: Severity::Warning,
        group: Some("trucks".into()),
        device: None,
        description: None,
    };
    rules.put("truck-speed", &speed, Utc::now()).await.expect("a rule");
    let (_redis, redis_url) = start_redis();
    let (dashboard, port) = start_dashboard(&db_url(&pool).await, &redis_url);
    println!("{}", run_browser_script("rules.mjs", port, &["ui-operator-token"]));
    drop(dashboard);
    let listed = rules.list().await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["freezer-warm", "truck-speed"],
        "the bad rule was not written"
    );
    let warm = &listed[0].spec;
    assert_eq!(
        (
            warm.metric.as_str(),
            warm.condition,
            warm.threshold,
            warm.hold_seconds,
            warm.severity,
            warm.group.as_deref()
        ),
        (
            "temperature",
            Condition::Above,
            -10.0,
            300,
            Severity::Critical,
            Some("freezers")
        )
    );
    assert_eq!(warm.description.as_deref(), Some("Freezer too warm"));
    assert_eq!(
        (listed[1].revision, listed[1].spec.severity, listed[1].spec.threshold),
        (2, Severity::Critical, 120.0),
        "edited in place"
    );
}

/// The notification channels page in Chromium: a reader is told it is for
/// operators; the operator sees a channel's waiting delivery, tests the
/// channel (a local receiver accepts the signed test), sends its dead
/// letter again, adds a Slack channel, and a PagerDuty channel without a
/// routing key is refused naming the field. The database is checked after.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn notification_channels_page_in_chromium(pool: PgPool) {
    use std::sync::{Arc, Mutex};
    use tributary_shared::notify::postgres::PgChannels;
    use tributary_shared::notify::queue::{DeliveryQueue, Queued};
    use tributary_shared::notify::store::ChannelStore;
    use tributary_shared::notify::{ChannelSpec, Format};
    use tributary_shared::rules::Severity;
    const SECRET: &str = "browser-channel-secret-0123";

    let tests: Arc<Mutex<usize>> = Arc::default();
    let receiver = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(tests): axum::extract::State<Arc<Mutex<usize>>>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let signed = headers
                        .get(tributary_shared::notify::sign::HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if tributary_shared::notify::sign::verify(SECRET, signed, &body, Utc::now().timestamp(), 300)
                        .is_err()
                    {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    *tests.lock().expect("lock") += 1;
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(tests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let channels = PgChannels::new(pool.clone());
    let spec = ChannelSpec {
        url: format!("http://{addr}/hook"),
        format: Format::Generic,
        secret: Some(SECRET.into()),
        groups: vec![],
        min_severity: Severity::Warning,
        enabled: true,
    };
    channels.put("ops", &spec, Utc::now()).await.expect("channel");
    let alert = |id: &str| tributary_testkit::notify::alert(id, AlertState::Opened, 0);
    channels
        .enqueue(&[Queued::new("ops", &alert("waiting"), "freezers")], Utc::now())
        .await
        .expect("queued");
    channels
        .dead_letter(&tributary_testkit::notify::dead_letter(
            "ops",
            &alert("dead"),
            "freezers",
            true,
        ))
        .await
        .expect("letter");

    let (_redis, redis_url) = start_redis();
    let (dashboard, port) = start_dashboard(&db_url(&pool).await, &redis_url);
    let transcript =
        tokio::task::spawn_blocking(move || run_browser_script("channels.mjs", port, &["ui-operator-token"]))
            .await
            .expect("browser");
    println!("{transcript}");
    drop(dashboard);

    assert_eq!(*tests.lock().expect("lock"), 1, "one signed test reached the receiver");
    assert!(channels.dead_letters("ops", 10).await.expect("letters").0.is_empty());
    let backlog = channels.backlog().await.expect("backlog");
    assert_eq!(
        backlog
            .iter()
            .map(|b| (b.channel_id.as_str(), b.queued))
            .collect::<Vec<_>>(),
        [("ops", 2)],
        "the letter waits behind the delivery that was waiting"
    );
    let slack = channels.get("team-slack").await.expect("get").expect("added");
    assert_eq!(
        (
            slack.spec.format,
            slack.spec.groups.clone(),
            slack.spec.min_severity,
            slack.spec.secret.clone()
        ),
        (
            Format::Slack,
            vec!["freezers".to_owned(), "trucks".to_owned()],
            Severity::Critical,
            None
        )
    );
    assert_eq!(channels.get("pager").await.expect("get"), None, "refused");
}
