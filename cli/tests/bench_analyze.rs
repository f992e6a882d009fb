//! `tributary bench analyze` as an operator runs it: every run is its own
//! process, so each reports its own memory growth (a second run in the same
//! process reused the first run's freed pages and read 0 KiB per series).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

#[test]
fn every_run_reports_its_own_memory_per_series_and_a_median() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "analyze",
            "--readings",
            "20000",
            "--series",
            "4000",
            "--runs",
            "3",
        ])
        .output()
        .expect("run tributary bench analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let per_run: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("run "))
        .map(|l| {
            let (l, snapshot) = l
                .split_once("; snapshot of every series ")
                .unwrap_or_else(|| panic!("no snapshot figure in {l:?}"));
            // A series' state as a warm takeover writes it: its models, about 1.5 KB.
            let bytes: f64 = snapshot
                .split_once(" B each")
                .and_then(|(b, _)| b.parse().ok())
                .unwrap_or_else(|| panic!("no snapshot size in {snapshot:?}"));
            assert!((500.0..4096.0).contains(&bytes), "{bytes} B per series in a snapshot");
            let kib = l
                .rsplit_once(", ")
                .and_then(|(_, tail)| tail.strip_suffix(" KiB per series"))
                .unwrap_or_else(|| panic!("no KiB figure in {l:?}"));
            kib.parse().expect("a number")
        })
        .collect();
    assert_eq!(per_run.len(), 3, "{stdout}");
    // Windows, keys and models of a series take a few KiB; each run grows
    // its own process by that much, not the first run only.
    for kib in &per_run {
        assert!((0.5..64.0).contains(kib), "{kib} KiB per series in a run:\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("medians: ") && l.contains(" KiB per active series")),
        "{stdout}"
    );
}
