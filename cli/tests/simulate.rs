//! `tributary dev`, `tributary simulate` and `tributary verify` as a person
//! runs them: the dev mode's ingest takes what the simulator sends, every
//! acknowledged reading is in the simulator's record, Ctrl-C (SIGINT) stops
//! cleanly, and the reconciliation finds every acknowledged reading archived
//! and counted exactly once (and fails on one that is not).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

#[test]
fn simulator_readings_reach_the_dev_ingest_and_are_recorded() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let data_dir = std::env::temp_dir().join(format!("tributary-sim-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    // 1 s windows and 3 s of allowed lateness (a loaded CI machine delays a send by
    // more than 1 s now and then, and a late reading is rightly not counted), so
    // most of an 8 s run's windows close before the stop.
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dashboard",
            "127.0.0.1:0",
            "--devices",
            "0",
            "--status-secs",
            "0",
        ])
        .args(["--windows", "1", "--allowed-lateness-secs", "3", "--data-dir"])
        .arg(&data_dir)
        // The embedded backends, whatever the test environment points at.
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TRIBUTARY_KAFKA_BROKERS")
        .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
        .env_remove("TRIBUTARY_DATA_DIR")
        .stdout(Stdio::piped())
        .spawn()
        .expect("tributary dev");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "dev mode did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = std::env::temp_dir().join(format!("tributary-sim-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--url",
            &format!("http://127.0.0.1:{port}/v1/telemetry"),
            "--devices",
            "6",
            "--rate",
            "20",
            "--batch",
            "5",
        ])
        .args([
            "--duration",
            "8",
            "--anomaly-rate",
            "0.05",
            "--duplicate-fraction",
            "0.2",
            "--late-fraction",
            "0",
            "--progress-secs",
            "0",
            "--record",
        ])
        .arg(&record)
        .output()
        .expect("tributary simulate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let totals: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().expect("totals"))
            .expect("totals JSON");
    let accepted = totals["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 100, "{totals}");
    assert_eq!(totals["rejected"], 0, "simulated readings are valid: {totals}");
    assert!(totals["anomalies"].as_u64() > Some(0), "{totals}");
    assert!(totals["duplicates"].as_u64() > Some(0), "{totals}");
    let lines = std::fs::read_to_string(&record).expect("record");
    let ids: std::collections::BTreeSet<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len() as u64,
        accepted,
        "every acknowledged reading is recorded once"
    );

    assert!(
        Command::new("kill")
            .args(["-INT", &dev.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while dev.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "dev mode did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = BufReader::new(dev.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>();
    let last = stdout.last().cloned().unwrap_or_default();
    let stored: u64 = last
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected last line: {last}"));
    // Duplicate sends are stored again (same ids, deduplicated downstream).
    assert!(stored >= accepted, "{stored} stored < {accepted} acknowledged");

    // The reconciliation: every acknowledged reading archived, and none counted twice
    // in the closed windows although a fifth of the requests were sent twice.
    let out = Command::new(BIN)
        .args(["verify", "--window", "1", "--record"])
        .arg(&record)
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
        .output()
        .expect("tributary verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).unwrap_or_else(|e| {
            panic!(
                "summary JSON ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(summary["acknowledged"].as_u64(), Some(accepted), "{summary}");
    assert_eq!(
        summary["raw"]["missing"], 0,
        "every acknowledged reading is archived: {stdout}"
    );
    assert_eq!(
        summary["aggregates"]["countedTwice"], 0,
        "no reading counted twice: {stdout}"
    );
    // Late values are not counted, by design. The shortfall of one value in several
    // hundred seen here before was late data: the simulator held a device's buffered
    // readings through a dropout (`bench soak` showed the missing values equal to
    // analyze's late count); it now sends them first. A send delayed past the allowed
    // lateness on a loaded machine is still late, so up to 1% is tolerated, and
    // verify, which cannot tell late from lost, then exits non-zero.
    let lost = summary["aggregates"]["lost"].as_i64().expect("lost");
    let checked = summary["aggregates"]["valuesChecked"].as_i64().expect("checked");
    assert!(
        lost * 100 <= checked,
        "more than 1% of the checked values missing from the aggregates: {stdout}"
    );
    assert_eq!(
        out.status.success(),
        lost == 0,
        "verify's exit status says whether anything is missing: {stdout}"
    );
    assert!(
        summary["aggregates"]["valuesChecked"].as_i64() > Some(accepted as i64 / 2),
        "most windows closed and were checked: {summary}"
    );

    // And it does catch a loss: a reading the record claims but no store has.
    let mut extra = std::fs::OpenOptions::new().append(true).open(&record).expect("record");
    std::io::Write::write_all(&mut extra, b"{\"id\":\"never-sent\",\"deviceId\":\"sim-vehicle-000\",\"timestamp\":1795608000000,\"metrics\":[\"speed\"]}\n").expect("append");
    let out = Command::new(BIN)
        .args(["verify", "--window", "1", "--record"])
        .arg(&record)
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
        .output()
        .expect("tributary verify");
    assert!(!out.status.success(), "a missing reading must fail the check");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("never-sent"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_file(&record);
    let _ = std::fs::remove_dir_all(&data_dir);
}
