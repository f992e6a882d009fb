//! The device registry end to end (issue 19): `tributary device` changes the
//! registry (SQLite here) and publishes each change to the devices topic;
//! two ingest replicas, real processes on tansu in `registered` enrollment,
//! follow that topic. While both serve a steady load from ten devices, one
//! device is disabled: from 2 s after the command started, no replica may
//! accept its readings, and every reading either replica accepted from the
//! others must be in `telemetry.raw`. Then a key rotation (the old key's
//! tokens get 401, the new key's are accepted) and re-enabling.
//! Needs `TRIBUTARY_TEST_KAFKA_BROKERS` (tansu).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{Event, EventLog};
use tributary_testkit::process::{Proc, http_get, sibling, tail};
use tributary_testkit::{free_port, test_brokers, unique_topic};

const TRIBUTARY: &str = env!("CARGO_BIN_EXE_tributary");
const FLEET_KEY: &str = "registry-test-fleet-key-0123456789abcdef";
const DEVICES: usize = 10;
/// The device disabled mid-load.
const VICTIM: &str = "veh-3";
/// The longest a change may take to reach every replica.
const PROPAGATION: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Env {
    dir: PathBuf,
    database_url: String,
    raw: String,
    devices: String,
}

impl Env {
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("TRIBUTARY_KAFKA_BROKERS", test_brokers()),
            ("TRIBUTARY_DEVICES_TOPIC", self.devices.clone()),
            ("TRIBUTARY_RAW_TOPIC", self.raw.clone()),
            ("TRIBUTARY_FLEET_KEY", FLEET_KEY.into()),
            ("RUST_LOG", "info".into()),
        ]
    }

    /// `tributary device <args>`: (stdout, stderr), failing the test unless it succeeded.
    fn device(&self, args: &[&str]) -> (String, String) {
        let (ok, out, err) = self.device_status(args);
        assert!(ok, "tributary device {args:?} failed:\n{err}");
        (out, err)
    }

    fn device_status(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(TRIBUTARY)
            .arg("device")
            .args(args)
            .env_clear()
            .envs(self.vars())
            .current_dir(&self.dir)
            .output()
            .expect("run tributary device");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn token(device: &str, key_version: u32) -> String {
    let key = FleetKey::new(FLEET_KEY).device_key_at(device, key_version);
    format!("SharedAccessSignature {}", key.token(device, now_unix() + 600))
}

/// One POST of one reading: (status, error code if any).
async fn post(client: &reqwest::Client, port: u16, device: &str, key_version: u32, id: &str) -> (u16, String) {
    let body = json!({"id": id, "timestamp": chrono::Utc::now().timestamp_millis(), "metrics": {"speed": 42.0}});
    let resp = client
        .post(format!("http://127.0.0.1:{port}/v1/telemetry"))
        .header("authorization", token(device, key_version))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().unwrap_or_default().to_owned();
            (status, code)
        }
        Err(e) => panic!("ingest on {port} did not answer: {e}"),
    }
}

fn wait_ready(port: u16, what: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/readyz").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{what} was not ready on port {port} within 60 s:\n{}",
            tail(dir, what)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answered request of the load.
#[derive(Clone, Debug)]
struct Sent {
    device: String,
    id: String,
    replica: usize,
    started: Instant,
    status: u16,
    code: String,
}

/// Poll both replicas until `check` holds for each answer, at most `within`; returns how long it took.
async fn until_both(
    client: &reqwest::Client,
    ports: &[u16],
    device: &str,
    key_version: u32,
    within: Duration,
    check: impl Fn(u16, &str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let mut all = true;
        for &port in ports {
            n += 1;
            let (status, code) = post(client, port, device, key_version, &format!("{device}-probe-{n}")).await;
            all &= check(status, &code);
        }
        if all {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not on both replicas within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_refuse_a_disabled_device_within_two_seconds() {
    let dir = std::env::temp_dir().join(format!("tributary-registry-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let env = Env {
        database_url: format!("sqlite://{}", dir.join("registry.db").display()),
        dir: dir.clone(),
        raw: unique_topic("reg-raw"),
        devices: unique_topic("reg-devices"),
    };

    // The fleet, from a file.
    let mut csv = String::from("id,name,group\n");
    for i in 0..DEVICES {
        csv.push_str(&format!("veh-{i},Vehicle {i},trucks\n"));
    }
    std::fs::write(dir.join("fleet.csv"), csv).expect("write fleet");
    let (out, _) = env.device(&["import", "fleet.csv"]);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).expect("counts"),
        json!({"created": DEVICES, "updated": 0, "unchanged": 0})
    );

    // A bad file names the line and field and imports nothing.
    std::fs::write(dir.join("bad.csv"), "id,group\nnew-1,vans\nnew 2,vans\n").expect("write bad");
    let (ok, _, err) = env.device_status(&["import", "bad.csv"]);
    assert!(!ok, "a bad file is refused");
    assert!(err.contains("line 3, field id"), "{err}");
    let (out, _) = env.device(&["list", "--json"]);
    assert_eq!(out.lines().count(), DEVICES, "nothing half-imported:\n{out}");

    // Two replicas.
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut vars = env.vars();
            vars.extend([
                ("PORT", port.to_string()),
                ("TRIBUTARY_BIND", "127.0.0.1".into()),
                ("TRIBUTARY_ENROLLMENT", "registered".into()),
                ("TRIBUTARY_DEVICE_RATE", "100000".into()),
            ]);
            let mut p = Proc::new(
                &format!("ingest-{i}"),
                sibling(TRIBUTARY, "tributary-ingest"),
                &[],
                &vars,
                &dir,
            );
            p.start();
            p
        })
        .collect();
    for (i, port) in ports.iter().enumerate() {
        wait_ready(*port, &format!("ingest-{i}"), &dir);
    }

    let client = reqwest::Client::new();
    for port in ports {
        assert_eq!(
            post(&client, port, "stranger", 0, "s-1").await,
            (403, "device_unknown".into()),
            "an unregistered device is refused"
        );
        assert_eq!(post(&client, port, "veh-1", 0, "warm-1").await.0, 202);
        // Each replica reports its view: every device, and its memory.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let sample = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            };
            let (held, bytes) = (
                sample("tributary_registry_view_devices"),
                sample("tributary_registry_view_bytes"),
            );
            if held == Some(DEVICES as f64) {
                let bytes = bytes.expect("the view's bytes are reported with its devices");
                assert!(
                    bytes > 0.0 && bytes / (DEVICES as f64) < 200.0,
                    "{bytes} bytes for {DEVICES} devices"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the view's gauges did not report {DEVICES} devices:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A steady load: each device alternates replicas, one reading at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let mut load = Vec::new();
    for d in 0..DEVICES {
        let (stop, sent, client) = (stop.clone(), sent.clone(), client.clone());
        load.push(tokio::spawn(async move {
            let device = format!("veh-{d}");
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let replica = n % 2;
                let id = format!("{device}-{n}");
                let started = Instant::now();
                let (status, code) = post(&client, ports[replica], &device, 0, &id).await;
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(Sent {
                    device: device.clone(),
                    id,
                    replica,
                    started,
                    status,
                    code,
                });
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let changed = Instant::now();
    let env_for_cli = env.clone();
    let (out, _) = tokio::task::spawn_blocking(move || env_for_cli.device(&["disable", VICTIM]))
        .await
        .expect("cli");
    let returned = changed.elapsed();
    let shown: Value = serde_json::from_str(&out).expect("device JSON");
    assert_eq!(shown["status"], "disabled");
    tokio::time::sleep(PROPAGATION + Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // The victim: nothing accepted from 2 s after the change, refused on both replicas.
    let late_accepted: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.device == VICTIM && s.status == 202 && s.started >= changed + PROPAGATION)
        .collect();
    assert!(
        late_accepted.is_empty(),
        "{VICTIM} accepted {} readings later than {PROPAGATION:?} after the change: {:?}",
        late_accepted.len(),
        &late_accepted[..late_accepted.len().min(5)]
    );
    for replica in 0..2 {
        let first_refusal = sent
            .iter()
            .filter(|s| s.device == VICTIM && s.replica == replica && s.status == 403)
            .map(|s| s.started.saturating_duration_since(changed))
            .min()
            .unwrap_or_else(|| panic!("ingest-{replica} never refused {VICTIM}"));
        eprintln!(
            "ingest-{replica}: first refusal of {VICTIM} {first_refusal:?} after the disable command started (it returned after {returned:?})"
        );
        assert!(
            sent.iter()
                .filter(|s| s.device == VICTIM && s.replica == replica && s.status == 403)
                .all(|s| s.code == "device_disabled"),
            "refused as disabled"
        );
    }

    // The others: every request accepted, and every accepted reading in the topic.
    let others: Vec<&Sent> = sent.iter().filter(|s| s.device != VICTIM).collect();
    assert!(others.len() > 100, "the load ran: {} requests", others.len());
    let refused: Vec<&&Sent> = others.iter().filter(|s| s.status != 202).collect();
    assert!(
        refused.is_empty(),
        "other devices were refused: {:?}",
        &refused[..refused.len().min(5)]
    );
    let mut expected: HashSet<String> = sent.iter().filter(|s| s.status == 202).map(|s| s.id.clone()).collect();
    let total = expected.len();
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: test_brokers(),
            ..KafkaArgs::default()
        },
        "registry-test",
    )
    .expect("kafka");
    let mut sub = log
        .subscribe(&unique_topic("reg-check"), std::slice::from_ref(&env.raw))
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {total} accepted readings are not in {}: e.g. {:?}",
            expected.len(),
            env.raw,
            expected.iter().take(5).collect::<Vec<_>>()
        );
        if let Event::Messages(msgs) = sub.next(1000, Duration::from_millis(500)).await.expect("consume") {
            for m in msgs {
                let v: Value = serde_json::from_slice(&m.value).expect("reading JSON");
                if let Some(id) = v["id"].as_str() {
                    expected.remove(id);
                }
            }
        }
    }
    sub.close().await;

    // A rotated key: the old key's tokens get 401 on both replicas, the new one's are accepted.
    let (out, _) = env.device(&["rotate-key", "veh-5"]);
    let rotated: Value = serde_json::from_str(&out).expect("device JSON");
    assert_eq!(rotated["keyVersion"], 1);
    let took = until_both(&client, &ports, "veh-5", 0, PROPAGATION, |status, code| {
        status == 401 && code == "key_rotated"
    })
    .await;
    eprintln!("rotation reached both replicas in {took:?}");
    for port in ports {
        assert_eq!(post(&client, port, "veh-5", 1, "veh-5-new-key").await.0, 202);
    }

    // Enabled again: accepted on both.
    env.device(&["enable", VICTIM]);
    until_both(&client, &ports, VICTIM, 0, PROPAGATION, |status, _| status == 202).await;

    for r in &mut replicas {
        r.assert_alive();
    }
}
