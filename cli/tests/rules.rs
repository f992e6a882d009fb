//! Alert rules per device group at run time, end to end (issue 19, item 3),
//! through the real processes on tansu: ingest, analyze, process (which
//! relays the rule store to `tributary.rules` and the registry to
//! `tributary.devices`) and the dashboard, whose API an operator edits the
//! rules with; the results in an SQLite file all of them share.
//!
//! Analyze runs with the default rule `temperature > 1000`. A rule for
//! group `freezers` (`temperature > -10`, critical) written through the API
//! must make a freezer's -5 °C an alert within seconds, with no restart,
//! while a truck at -5 °C stays quiet and a truck at 2000 °C still meets the
//! default. Then the rule is replaced by one per device; the freezers group
//! has no rule left, so the defaults apply to it again.
//! Needs `TRIBUTARY_TEST_KAFKA_BROKERS` (tansu) and Redis.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_testkit::process::{Proc, sibling, tail, wait_healthy};
use tributary_testkit::{free_port, test_brokers, unique_topic};

const TRIBUTARY: &str = env!("CARGO_BIN_EXE_tributary");
const FLEET_KEY: &str = "rules-test-fleet-key-0123456789abcdef";
const OPERATOR: &str = "rules-test-operator-token";
/// The longest a rule change may take to show as an alert: the relay's
/// poll (500 ms), analyze's follower, a batch, process's write, the API.
const WITHIN: Duration = Duration::from_secs(15);

struct Pipeline {
    dir: PathBuf,
    ingest: u16,
    dashboard: u16,
    procs: Vec<Proc>,
    client: reqwest::Client,
}

impl Pipeline {
    async fn send(&self, device: &str, id: &str, temperature: f64) {
        let key = FleetKey::new(FLEET_KEY).device_key(device);
        let body = json!({"id": id, "timestamp": chrono::Utc::now().timestamp_millis(), "metrics": {"temperature": temperature}});
        let r = self
            .client
            .post(format!("http://127.0.0.1:{}/v1/telemetry", self.ingest))
            .header(
                "authorization",
                format!("SharedAccessSignature {}", key.token(device, now_unix() + 600)),
            )
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(r.status().as_u16(), 202, "reading {id} accepted");
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.dashboard))
            .bearer_auth(OPERATOR);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("dashboard answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The device's alerts in the results, any state.
    async fn alerts(&self, device: &str) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/alerts?device={device}&state=all"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Send `temperature` from `device` every 250 ms until an alert of it
    /// whose reason contains `reason` is in the results; how long it took.
    async fn until_alert(&self, device: &str, temperature: f64, reason: &str) -> (Duration, Value) {
        let start = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let id = format!("{device}-{}-{n}", chrono::Utc::now().timestamp_micros());
            self.send(device, &id, temperature).await;
            if let Some(a) = self
                .alerts(device)
                .await
                .into_iter()
                .find(|a| a["reason"].as_str().is_some_and(|r| r.contains(reason)))
            {
                return (start.elapsed(), a);
            }
            assert!(
                start.elapsed() < WITHIN,
                "no alert of {device} with {reason:?} within {WITHIN:?}; analyze's log:\n{}",
                tail(&self.dir, "analyze")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill9();
        }
    }
}

fn device_add(dir: &PathBuf, database_url: &str, id: &str, group: &str) {
    let out = std::process::Command::new(TRIBUTARY)
        // The relay in process publishes it (process starts later).
        .args(["device", "--no-publish", "add", id, "--group", group])
        .env_clear()
        .env("DATABASE_URL", database_url)
        .current_dir(dir)
        .output()
        .expect("run tributary device add");
    assert!(
        out.status.success(),
        "tributary device add {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_written_through_the_api_applies_per_group_within_seconds() {
    let dir = std::env::temp_dir().join(format!("tributary-rules-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let database_url = format!("sqlite://{}", dir.join("results.db").display());
    device_add(&dir, &database_url, "freezer-1", "freezers");
    device_add(&dir, &database_url, "freezer-2", "freezers");
    device_add(&dir, &database_url, "truck-1", "trucks");

    let topics = [
        ("TRIBUTARY_RAW_TOPIC", unique_topic("rules-raw")),
        ("TRIBUTARY_AGGREGATES_TOPIC", unique_topic("rules-aggregates")),
        ("TRIBUTARY_ALERTS_TOPIC", unique_topic("rules-alerts")),
        ("TRIBUTARY_DEADLETTER_TOPIC", unique_topic("rules-dead")),
        ("TRIBUTARY_DEVICES_TOPIC", unique_topic("rules-devices")),
        ("TRIBUTARY_RULES_TOPIC", unique_topic("rules-rules")),
    ];
    let common = |port: u16| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PORT", port.to_string()),
            ("TRIBUTARY_BIND", "127.0.0.1".into()),
            ("TRIBUTARY_KAFKA_BROKERS", test_brokers()),
            ("TRIBUTARY_KAFKA_PARTITIONS", "2".into()),
            ("DATABASE_URL", database_url.clone()),
            ("RUST_LOG", "info".into()),
        ];
        v.extend(topics.iter().map(|(k, t)| (*k, t.clone())));
        v
    };
    let group = unique_topic("group");
    let spawn = |name: &str, port: u16, more: &[(&'static str, String)]| {
        let mut vars = common(port);
        vars.extend_from_slice(more);
        let mut p = Proc::new(name, sibling(TRIBUTARY, &format!("tributary-{name}")), &[], &vars, &dir);
        p.start();
        wait_healthy(port, 30, name);
        p
    };
    // A Redis of the test's own: process keeps its cache there.
    let redis_port = free_port();
    let mut redis = Proc::new(
        "redis",
        tributary_testkit::process::on_path("redis-server"),
        &[
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
        &dir,
    );
    redis.start();
    tributary_testkit::process::wait_port(redis_port, 10, "redis");
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let (ingest, analyze, process, dashboard) = (free_port(), free_port(), free_port(), free_port());
    let mut procs = vec![
        redis,
        spawn("ingest", ingest, &[("TRIBUTARY_FLEET_KEY", FLEET_KEY.into())]),
    ];
    procs.push(spawn(
        "process",
        process,
        &[
            ("REDIS_URL", redis_url.clone()),
            ("TRIBUTARY_CONSUMER_GROUP", format!("{group}-process")),
        ],
    ));
    procs.push(spawn(
        "analyze",
        analyze,
        &[
            ("TRIBUTARY_RULES", "temperature > 1000".into()),
            ("TRIBUTARY_CONSUMER_GROUP", format!("{group}-analyze")),
            ("TRIBUTARY_SNAPSHOT_EVERY_SECS", "0".into()),
        ],
    ));
    procs.push(spawn(
        "dashboard",
        dashboard,
        &[
            ("TRIBUTARY_OPERATOR_TOKEN", OPERATOR.into()),
            ("TRIBUTARY_PUBLIC_READ", "true".into()),
            ("REDIS_URL", redis_url.clone()),
        ],
    ));
    let p = Pipeline {
        dir: dir.clone(),
        ingest,
        dashboard,
        procs,
        client: reqwest::Client::new(),
    };

    // Before any rule: the default holds for everyone, a freezer at -5 is calm.
    let (_, default_alert) = p.until_alert("truck-1", 2000.0, "temperature > 1000").await;
    assert_eq!(default_alert["severity"], "warning");
    assert!(p.alerts("freezer-1").await.is_empty());

    // Bad rules are refused, naming the field; nothing is written.
    let (status, body) = p
        .api(
            reqwest::Method::PUT,
            "/api/rules/bad",
            Some(json!({"metric": "temperature", "condition": ">", "threshold": 1, "group": "freezers", "device": "freezer-1"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("group")),
        "{body}"
    );
    let (status, body) = p
        .api(
            reqwest::Method::PUT,
            "/api/rules/bad",
            Some(json!({"metric": "temperature", "condition": "~", "threshold": 1, "group": "freezers"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = p
        .api(
            reqwest::Method::PUT,
            "/api/rules/bad",
            Some(json!({"metric": "temperature", "condition": ">", "threshold": 1, "holdSeconds": 999999, "group": "freezers"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("holdSeconds")),
        "{body}"
    );
    // Only operators write.
    let anonymous = p
        .client
        .put(format!("http://127.0.0.1:{dashboard}/api/rules/x"))
        .json(&json!({"metric": "t", "condition": ">", "threshold": 1, "group": "g"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, body) = p.api(reqwest::Method::GET, "/api/rules", None).await;
    assert_eq!(
        (status, body["rules"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );

    // The freezers get their own rule, at run time.
    let written = Instant::now();
    let (status, rule) = p
        .api(
            reqwest::Method::PUT,
            "/api/rules/freezer-warm",
            Some(
                json!({"metric": "temperature", "condition": ">", "threshold": -10, "severity": "critical",
                        "group": "freezers", "description": "Freezer too warm: check the door"}),
            ),
        )
        .await;
    assert_eq!((status, rule["revision"].as_i64()), (201, Some(1)), "{rule}");
    let (took, alert) = p.until_alert("freezer-1", -5.0, "'freezer-warm'").await;
    eprintln!(
        "a freezer's alert under the new rule {took:?} after its first reading, {:?} after the PUT",
        written.elapsed()
    );
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["model"], "threshold");
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("rule 'freezer-warm' (temperature > -10) holds (value -5")),
        "{alert}"
    );
    // A truck at -5 is not a freezer; a truck at 2000 still meets the default.
    for n in 0..3 {
        p.send("truck-1", &format!("truck-cold-{n}"), -5.0).await;
    }
    let truck_reasons: Vec<String> = p
        .alerts("truck-1")
        .await
        .iter()
        .filter_map(|a| a["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        truck_reasons.iter().all(|r| !r.contains("freezer-warm")),
        "{truck_reasons:?}"
    );

    // The group's rule gives way to one for a single device: freezer-2 at 0
    // meets it; the group has no rule left, so freezer-2's group falls back
    // to the default (not met at 0).
    let (status, _) = p.api(reqwest::Method::DELETE, "/api/rules/freezer-warm", None).await;
    assert_eq!(status, 204);
    let (status, _) = p.api(reqwest::Method::DELETE, "/api/rules/freezer-warm", None).await;
    assert_eq!(status, 404, "deleted already");
    let (status, rule) = p
        .api(
            reqwest::Method::PUT,
            "/api/rules/freezer-2-door",
            Some(json!({"metric": "temperature", "condition": ">=", "threshold": 0, "severity": "info", "device": "freezer-2"})),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let (_, alert) = p.until_alert("freezer-2", 0.0, "'freezer-2-door'").await;
    assert_eq!(alert["severity"], "info", "{alert}");
    assert!(
        p.alerts("freezer-2")
            .await
            .iter()
            .all(|a| !a["reason"].as_str().unwrap_or_default().contains("freezer-warm")),
        "the deleted group rule no longer applies"
    );
    let (status, body) = p.api(reqwest::Method::GET, "/api/rules", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["freezer-2-door"]);
    let log = std::fs::read_to_string(dir.join("analyze.log")).unwrap_or_default();
    assert!(log.contains("alert rules applied"), "analyze logs each change");
    assert_eq!(log.matches("--- start ---").count(), 1, "analyze was never restarted");
}
