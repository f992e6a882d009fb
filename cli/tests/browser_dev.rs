//! The dashboard in a real browser (Debian's Chromium driven by
//! playwright-core, `tests/browser/dashboard.mjs`), fed end to end by the
//! all-in-one process: simulated devices send through ingest, analyze and
//! process while the page is open; a probe device's readings make the chart
//! and, once the page is loaded, a threshold alert that must appear live and
//! be acknowledged. Screenshots go to `$TRIBUTARY_ARTIFACTS_DIR/screenshots/dev`
//! (default `artifacts/screenshots/dev` at the workspace root).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::eventlog::partition_for;
use tributary_testkit::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const TOKEN: &str = "browser-operator-token";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn send(ingest: &str, device: &str, points: &[(i64, f64)]) {
    let token = FleetKey::new(tributary_ingest::config::DEV_FLEET_KEY)
        .device_key(device)
        .token(device, now_unix() + 600);
    let body: Vec<Value> = points
        .iter()
        .map(|(t, v)| json!({"id": format!("{device}-{t}"), "timestamp": t, "metrics": {"probe": v}}))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{ingest}/v1/telemetry"))
        .header("Authorization", format!("SharedAccessSignature {token}"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_alert_chart_and_acknowledge_with_simulated_devices() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/browser/dashboard.mjs");
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
        .join("screenshots/dev");

    // The probe gets a partition of its own, so its event times alone drive its watermark.
    let sims = ["sim-vehicle-000", "sim-sensor-001", "sim-machine-002"];
    let taken: Vec<i32> = sims.iter().map(|d| partition_for(d.as_bytes(), 4)).collect();
    let probe = (0..100)
        .map(|i| format!("probe-{i}"))
        .find(|p| !taken.contains(&partition_for(p.as_bytes(), 4)))
        .expect("a free partition");

    let (ingest_port, dash_port) = (free_port(), free_port());
    let data = std::env::temp_dir().join(format!("tributary-browser-dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let _dev = Proc(
        Command::new(BIN)
            .args([
                "dev",
                "--listen",
                &format!("127.0.0.1:{ingest_port}"),
                "--dashboard",
                &format!("127.0.0.1:{dash_port}"),
            ])
            .args([
                "--devices",
                "3",
                "--rate",
                "5",
                "--windows",
                "2",
                "--allowed-lateness-secs",
                "1",
                "--status-secs",
                "0",
            ])
            .args([
                "--rules",
                "probe > 100",
                "--operator-token",
                TOKEN,
                "--anomaly-rate",
                "0.02",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("TRIBUTARY_KAFKA_BROKERS")
            .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("tributary dev"),
    );
    let (ingest, dashboard) = (
        format!("http://127.0.0.1:{ingest_port}"),
        format!("http://127.0.0.1:{dash_port}"),
    );
    let start = Instant::now();
    while !reqwest::get(format!("{dashboard}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(start.elapsed() < Duration::from_secs(30), "dev mode not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two minutes of the probe's history, one reading every 2 s.
    let now = Utc::now().timestamp_millis();
    let history: Vec<(i64, f64)> = (0..60)
        .map(|i| (now - 125_000 + i * 2000, 50.0 + (i as f64 / 5.0).sin() * 5.0))
        .collect();
    send(&ingest, &probe, &history).await;
    let start = Instant::now();
    loop {
        let v: Value = reqwest::get(format!(
            "{dashboard}/api/devices/{probe}/series?metric=probe&window=2&from=1h&maxPoints=10000"
        ))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
        if v["points"].as_array().is_some_and(|p| p.len() >= 40) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the probe's windows did not arrive: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut node = Command::new("node")
        .arg(&script)
        .arg(format!("{dashboard}/"))
        .arg(&shots)
        .arg(TOKEN)
        .arg(&probe)
        .env("CHROMIUM", &chromium)
        // The all-in-one mode archives raw readings locally: the chart must draw them.
        .env("EXPECT_RAW", "1")
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

    // The incident: above the rule's threshold, then a later reading that closes its window.
    let now = Utc::now().timestamp_millis();
    send(&ingest, &probe, &[(now - 3000, 150.0), (now + 3000, 50.0)]).await;
    writeln!(stdin, "ALERT-SENT").expect("signal the browser");
    for line in out.by_ref() {
        transcript.push(line.expect("line"));
    }
    let status = node.wait().expect("node exit");
    assert!(
        status.success(),
        "browser script failed: {transcript:?} (screenshots in {})",
        shots.display()
    );
    assert!(transcript.iter().any(|l| l == "DONE"), "{transcript:?}");

    let alerts: Value = reqwest::get(format!("{dashboard}/api/alerts?state=all&device={probe}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let alert = &alerts["alerts"][0];
    assert_eq!(
        (alert["state"].as_str(), alert["acknowledgedBy"].as_str()),
        (Some("acknowledged"), Some("operator")),
        "{alerts}"
    );
    // A simulated device counts once one of its windows has closed: under load that can take a while.
    let start = Instant::now();
    loop {
        let fleet: Value = reqwest::get(format!("{dashboard}/api/fleet"))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        if fleet["devices"].as_i64() >= Some(4) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the simulated devices and the probe: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let _ = std::fs::remove_dir_all(&data);
}
