//! The all-in-one mode as a person runs it (`tributary dev`, a real process):
//! from a clean data directory, simulated devices' readings reach the raw
//! archive, the windows, the results store and the dashboard API within
//! seconds; SIGTERM stops cleanly; a restart on the same data directory keeps
//! the history and finishes the windows that were open at the stop, with
//! every reading counted exactly once. A device disabled in the registry of
//! a running instance (by `tributary device` on its SQLite file) is refused
//! within 2 s, through the relay in its process function; a rule written
//! through its dashboard applies, and its alert reaches the `dev-console`
//! notification channel, which prints it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::raw::{LocalRawStore, RawStore};
use tributary_testkit::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// A running `tributary dev` and the lines it printed so far.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    ingest: String,
    dashboard: String,
}

impl Dev {
    fn start(data_dir: &std::path::Path, devices: usize) -> Self {
        let (ingest_port, dashboard_port) = (free_port(), free_port());
        let mut child = Command::new(BIN)
            .args([
                "dev",
                "--listen",
                &format!("127.0.0.1:{ingest_port}"),
                "--dashboard",
                &format!("127.0.0.1:{dashboard_port}"),
            ])
            .args([
                "--devices",
                &devices.to_string(),
                "--rate",
                "5",
                "--windows",
                "2",
                "--allowed-lateness-secs",
                "1",
                "--status-secs",
                "1",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            // The embedded backends, whatever the test environment points at.
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("TRIBUTARY_KAFKA_BROKERS")
            .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("tributary dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut dev = Self {
            child,
            lines: rx,
            seen: Vec::new(),
            ingest: format!("http://127.0.0.1:{ingest_port}"),
            dashboard: format!("http://127.0.0.1:{dashboard_port}"),
        };
        dev.wait_line("Tributary dev mode: ready", Duration::from_secs(60));
        dev
    }

    /// Wait for a printed line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with '{needle}' within {within:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Take what was printed for up to `wait`.
    fn drain_lines(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
    }

    /// SIGTERM, then wait for a clean exit; returns everything printed.
    fn stop(mut self) -> Vec<String> {
        assert!(
            Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "dev mode did not stop within a minute of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        assert!(
            status.success(),
            "dev mode exited with {status}:\n{}",
            self.seen.join("\n")
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> Value {
    let resp = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// Poll `f` until it returns `Some`, or panic naming `what` after `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const PROBE: &str = "probe-1";

/// POST readings of the probe device: `(event time, value)`.
async fn send_probe(dev: &Dev, points: &[(DateTime<Utc>, f64)]) {
    let token = FleetKey::new(tributary_ingest::config::DEV_FLEET_KEY)
        .device_key(PROBE)
        .token(PROBE, now_unix() + 600);
    let body: Vec<Value> = points
        .iter()
        .map(|(t, v)| json!({"id": format!("probe-{}", t.timestamp_millis()), "timestamp": t.timestamp_millis(), "metrics": {"probe": v}}))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", dev.ingest))
        .header("Authorization", format!("SharedAccessSignature {token}"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
}

/// The probe's 2 s windows in the dashboard API: window start (ms) to (count, mean).
async fn probe_windows(dev: &Dev, from: DateTime<Utc>) -> Vec<(i64, i64, f64)> {
    let to = from + chrono::Duration::minutes(5);
    let url = format!(
        "{}/api/devices/{PROBE}/series?metric=probe&window=2&from={}&to={}",
        dev.dashboard,
        from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace('+', "%2B"),
        to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace('+', "%2B")
    );
    let v = get(&url).await;
    v["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let start = DateTime::parse_from_rfc3339(p["windowStart"].as_str().expect("start"))
                .expect("time")
                .timestamp_millis();
            (
                start,
                p["count"].as_i64().expect("count"),
                p["mean"].as_f64().expect("mean"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_from_clean_data_dir_through_restart() {
    let data = std::env::temp_dir().join(format!("tributary-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");

    // --- 1. simulated devices reach every store and the API --------------------
    let mut dev = Dev::start(&data, 3);
    let devices: Vec<Value> = eventually(
        "three simulated devices listed by /api/devices with their latest values",
        Duration::from_secs(30),
        || async {
            let v = get(&format!("{}/api/devices", dev.dashboard)).await;
            let list = v["devices"].as_array().cloned().unwrap_or_default();
            (list.len() >= 3
                && list
                    .iter()
                    .all(|d| d["lastValues"].as_object().is_some_and(|m| !m.is_empty())))
            .then_some(list)
        },
    )
    .await;
    let first = &devices[0];
    let id = first["deviceId"].as_str().expect("id").to_owned();
    assert!(id.starts_with("sim-"), "{first}");
    assert_eq!(first["online"], true, "{first}");
    let metric = first["lastValues"]
        .as_object()
        .expect("values")
        .keys()
        .next()
        .expect("a metric")
        .clone();
    let series = get(&format!(
        "{}/api/devices/{id}/series?metric={metric}&window=2&from=5m",
        dev.dashboard
    ))
    .await;
    assert!(
        !series["points"].as_array().expect("points").is_empty(),
        "windows of {id}/{metric}: {series}"
    );
    let fleet = get(&format!("{}/api/fleet", dev.dashboard)).await;
    assert!(fleet["devices"].as_i64() >= Some(3), "{fleet}");
    assert_eq!(fleet["source"], "memory", "hot data from the in-process cache: {fleet}");
    get(&format!("{}/api/alerts?state=all", dev.dashboard)).await;
    dev.wait_line("accepted", Duration::from_secs(10));

    // The raw archive (the local stand-in for Cosmos DB) has the device's readings.
    let raw = LocalRawStore::open(&format!("sqlite://{}", data.join("raw.db").display()))
        .await
        .expect("raw archive");
    let page = raw
        .query_device_range(
            &id,
            Utc::now() - chrono::Duration::minutes(5),
            Utc::now() + chrono::Duration::minutes(11),
            1000,
            None,
        )
        .await
        .expect("range");
    assert!(!page.items.is_empty(), "{id} has readings in the raw archive");

    let out = dev.stop();
    let text = out.join("\n");
    assert!(
        text.contains(" acknowledged, 0 rejected"),
        "the simulator's totals are printed:\n{text}"
    );
    assert!(
        text.contains("saved ") || text.contains("replays"),
        "readings in open windows are kept for the next start:\n{text}"
    );

    // --- 2. restart: history kept; open windows finish exactly once --------------------
    let mut dev = Dev::start(&data, 0);
    dev.wait_line("replayed", Duration::from_secs(5));
    let v = get(&format!("{}/api/devices/{id}", dev.dashboard)).await;
    assert_eq!(v["deviceId"], id.as_str(), "the results survive a restart");

    // Probe readings ahead of everything else (no other device shares their watermark's past).
    let base = Utc::now() + chrono::Duration::seconds(60);
    let t0 = DateTime::from_timestamp_millis(base.timestamp_millis() / 2000 * 2000).expect("time");
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    send_probe(
        &dev,
        &[
            (at(0), 1.0),
            (at(300), 2.0),
            (at(700), 3.0),
            (at(1100), 4.0),
            (at(1900), 5.0),
        ],
    )
    .await;
    send_probe(&dev, &[(at(10_000), 0.0)]).await; // closes the first window
    let w = eventually("the probe's first window", Duration::from_secs(20), || async {
        let w = probe_windows(&dev, t0).await;
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert_eq!(w[0], (t0.timestamp_millis(), 5, 3.0), "five readings, mean 3");

    // Two readings in a window that is still open at the stop.
    send_probe(&dev, &[(at(20_000), 10.0), (at(20_500), 20.0)]).await;
    eventually("the probe's readings archived", Duration::from_secs(20), || async {
        let n = raw
            .query_device_range(PROBE, t0, t0 + chrono::Duration::minutes(1), 1000, None)
            .await
            .expect("range")
            .items
            .len();
        (n == 8).then_some(())
    })
    .await;
    let out = dev.stop().join("\n");
    assert!(out.contains("saved "), "the open window's readings are saved:\n{out}");

    let dev = Dev::start(&data, 0);
    send_probe(&dev, &[(at(40_000), 0.0)]).await; // closes the window open at the stop
    let w = eventually(
        "the window that was open at the stop",
        Duration::from_secs(20),
        || async {
            let w = probe_windows(&dev, t0).await;
            w.iter().any(|x| x.0 == at(20_000).timestamp_millis()).then_some(w)
        },
    )
    .await;
    let find = |start: DateTime<Utc>| w.iter().find(|x| x.0 == start.timestamp_millis()).copied();
    assert_eq!(
        find(at(20_000)),
        Some((at(20_000).timestamp_millis(), 2, 15.0)),
        "both readings, once each: {w:?}"
    );
    assert_eq!(
        find(t0),
        Some((t0.timestamp_millis(), 5, 3.0)),
        "the earlier window is unchanged: {w:?}"
    );
    let n = raw
        .query_device_range(PROBE, t0, t0 + chrono::Duration::minutes(1), 1000, None)
        .await
        .expect("range")
        .items
        .len();
    assert_eq!(n, 9, "every probe reading archived once");
    dev.stop();

    // --- 3. the lake: each clean stop committed what it held; the readings
    // replayed after a stop kept their offsets, so none is in it twice ----------
    let raw = read_lake(&data.join("lake/raw"));
    let rows = raw["rows"].as_array().expect("rows");
    let sources: std::collections::BTreeSet<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["source_partition"].as_i64().unwrap_or(-1),
                r["source_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        sources.len(),
        rows.len(),
        "no record of telemetry.raw twice in the lake"
    );
    let probe: Vec<f64> = rows
        .iter()
        .filter(|r| r["device_id"] == PROBE)
        .filter_map(|r| r["metrics"]["probe"].as_f64())
        .collect();
    assert_eq!(probe.len(), 9, "every probe reading in the lake once: {probe:?}");
    assert!(
        rows.iter().any(|r| r["device_id"] == id.as_str()),
        "the simulated devices' readings too"
    );
    let aggs = read_lake(&data.join("lake/aggregates"));
    let window = aggs["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|a| {
            a["device_id"] == PROBE
                && a["window_start"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&t0.format("%Y-%m-%dT%H:%M:%S").to_string()))
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (window["count"].as_i64(), window["mean"].as_f64()),
        (Some(5), Some(3.0)),
        "the probe's first window: {window}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// The Delta table at `dir` as delta-rs reads it.
fn read_lake(dir: &std::path::Path) -> Value {
    let uri = dir.display().to_string();
    tributary_testkit::delta::read(&uri, None, &[], &[])
        .unwrap_or_else(|e| panic!("delta-rs could not read {uri}: {e}"))
}

/// One reading from `device` with a token of the development fleet key: the status.
async fn post_reading(dev: &Dev, device: &str) -> u16 {
    let token = FleetKey::new(tributary_ingest::config::DEV_FLEET_KEY)
        .device_key(device)
        .token(device, now_unix() + 600);
    reqwest::Client::new()
        .post(format!("{}/v1/telemetry", dev.ingest))
        .header("authorization", format!("SharedAccessSignature {token}"))
        .header("content-type", "application/json")
        .body(json!({"timestamp": Utc::now().timestamp_millis(), "metrics": {"t": 1.0}}).to_string())
        .send()
        .await
        .expect("ingest answers")
        .status()
        .as_u16()
}

fn device_command(data_dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["device", "--no-publish"])
        .args(args)
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data_dir.join("results.db").display()),
        )
        .output()
        .expect("tributary device");
    assert!(
        out.status.success(),
        "tributary device {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll until `device`'s readings get `status`, at most 2 s after `since`.
async fn within_two_seconds(dev: &Dev, device: &str, status: u16, since: Instant) {
    loop {
        if post_reading(dev, device).await == status {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "{device} did not get {status} within 2 s of the registry change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_disabled_in_the_registry_is_refused_by_the_running_instance() {
    let dir = std::env::temp_dir().join(format!("tributary-dev-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut dev = Dev::start(&dir, 1);
    assert_eq!(
        post_reading(&dev, "pump-9").await,
        202,
        "open enrollment: an unregistered device sends"
    );

    let added = device_command(&dir, &["add", "pump-9", "--group", "pumps"]);
    assert!(added.contains("\"group\": \"pumps\""), "{added}");
    let disabled = Instant::now();
    device_command(&dir, &["disable", "pump-9"]);
    within_two_seconds(&dev, "pump-9", 403, disabled).await;
    assert_eq!(post_reading(&dev, "pump-8").await, 202, "other devices still send");

    let enabled = Instant::now();
    device_command(&dir, &["enable", "pump-9"]);
    within_two_seconds(&dev, "pump-9", 202, enabled).await;
    let listed = device_command(&dir, &["list"]);
    assert!(
        listed.lines().any(|l| l.starts_with("pump-9") && l.contains("active")),
        "{listed}"
    );
    // Open enrollment: pump-8, never registered, appears once its first window is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = device_command(&dir, &["list", "--json"]);
        let pump8 = listed
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|d| d["id"] == "pump-8");
        if let Some(d) = pump8 {
            assert_eq!(
                (d["enrolledBy"].as_str(), d["status"].as_str()),
                (Some("first-contact"), Some("active")),
                "{d}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pump-8 was not enrolled on first contact within 30 s:\n{listed}"
        );
        let _ = post_reading(&dev, "pump-8").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A rule for the pumps, written through the dashboard's API, reaches
    // the running analyze; its alert reaches the dev-console channel, whose
    // receiver prints it.
    let banner = dev.wait_line("operator token for acknowledging alerts: ", Duration::from_secs(1));
    let operator = banner
        .rsplit("operator token for acknowledging alerts: ")
        .next()
        .and_then(|t| t.split(')').next())
        .expect("the operator token in the banner")
        .to_owned();
    dev.wait_line("notify:    channel dev-console", Duration::from_secs(1));
    let put = reqwest::Client::new()
        .put(format!("{}/api/rules/pumps-running", dev.dashboard))
        .bearer_auth(&operator)
        .json(&json!({"metric": "t", "condition": ">=", "threshold": 1, "severity": "critical", "group": "pumps"}))
        .send()
        .await
        .expect("dashboard answers");
    assert_eq!(put.status().as_u16(), 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(post_reading(&dev, "pump-9").await, 202);
        if dev.seen.iter().any(|l| l.contains("notified: [CRITICAL] pump-9")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no notification printed:\n{}",
            dev.seen.join("\n")
        );
        dev.drain_lines(Duration::from_millis(500));
    }

    // The operator acknowledges it on the dashboard: the channel is told.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert_id = loop {
        let listed: serde_json::Value = client
            .get(format!("{}/api/alerts?device=pump-9", dev.dashboard))
            .bearer_auth(&operator)
            .send()
            .await
            .expect("dashboard answers")
            .json()
            .await
            .expect("json");
        if let Some(id) = listed["alerts"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "pump-9's alert is not listed: {listed}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let acked = client
        .post(format!("{}/api/alerts/{alert_id}/ack", dev.dashboard))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("dashboard answers");
    assert_eq!(acked.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dev
        .seen
        .iter()
        .any(|l| l.contains("notified: [CRITICAL] pump-9") && l.contains("(acknowledged): acknowledged by operator"))
    {
        assert!(
            Instant::now() < deadline,
            "the acknowledgement was not notified:\n{}",
            dev.seen.join("\n")
        );
        dev.drain_lines(Duration::from_millis(500));
    }
    dev.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
