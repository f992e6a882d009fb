//! `tributary bench archive` as an operator runs it, against the Cosmos DB
//! stand-in `scripts/test` starts: every concurrency asked for gets a median
//! over the runs, and a run counts only when every upsert succeeded.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

#[test]
fn the_archive_benchmark_reports_a_median_per_concurrency() {
    let (endpoint, key) = tributary_testkit::test_cosmos();
    let out = Command::new(BIN)
        .args([
            "bench",
            "archive",
            "--concurrency",
            "1,4",
            "--docs",
            "100",
            "--runs",
            "3",
        ])
        .env("TRIBUTARY_COSMOS_ENDPOINT", &endpoint)
        .env("TRIBUTARY_COSMOS_KEY", &key)
        .output()
        .expect("run tributary bench archive");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.contains("100 documents per run, 3 runs per concurrency"),
        "{stdout}"
    );
    for c in ["  1", "  4"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("concurrency {c}: median")))
            .unwrap_or_else(|| panic!("no line for concurrency {c}:\n{stdout}"));
        let runs = line
            .split("(runs: ")
            .nth(1)
            .expect("per-run figures")
            .trim_end_matches(')');
        assert_eq!(runs.split(", ").count(), 3, "three runs: {line}");
        assert!(
            runs.split(", ").all(|r| r.parse::<f64>().is_ok_and(|x| x > 0.0)),
            "{line}"
        );
    }
}

#[test]
fn an_unreachable_endpoint_fails_the_benchmark_instead_of_reporting() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(BIN)
        .args(["bench", "archive", "--concurrency", "1", "--docs", "10", "--runs", "1"])
        .env("TRIBUTARY_COSMOS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env(
            "TRIBUTARY_COSMOS_KEY",
            "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
        )
        .output()
        .expect("run tributary bench archive");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "no figures without a store:\n{stdout}");
    assert!(!stdout.contains("median"), "{stdout}");
}
