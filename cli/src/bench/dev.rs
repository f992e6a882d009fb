//! `tributary bench dev`: the all-in-one process end to end on this machine.
//!
//! Starts `tributary dev` (this very binary) as a child process with no
//! simulated devices of its own and a fresh data directory, times command to
//! dashboard ready (`/readyz` 200), drives it with the simulator over loopback
//! HTTP for a fixed time, then measures how long the pipeline needs to have
//! every acknowledged reading in the raw archive, how much of it the closed
//! windows already count, the peak RSS, and the time a clean stop takes.
//! The simulator runs in this process, so it shares the 2 cores with the
//! pipeline: the figures are for the whole machine doing both.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tributary_shared::raw::LocalRawStore;

use super::common::{free_port, median, rss_peak_mb};

/// Arguments of `bench dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Readings per second per device (offered load = devices x rate).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Readings per request.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

struct Figures {
    ready_ms: f64,
    offered_per_s: f64,
    accepted_per_s: f64,
    drain_s: f64,
    end_to_end_per_s: f64,
    windowed_fraction: f64,
    rss_mb: f64,
    stop_s: f64,
}

async fn one_run(a: &DevArgs, run: usize) -> anyhow::Result<Figures> {
    let exe = std::env::current_exe()?;
    let data = std::env::temp_dir().join(format!("tributary-bench-dev-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let (ingest_port, dash_port) = (free_port()?, free_port()?);
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "dev",
            "--devices",
            "0",
            "--status-secs",
            "0",
            "--listen",
            &format!("127.0.0.1:{ingest_port}"),
            "--dashboard",
            &format!("127.0.0.1:{dash_port}"),
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TRIBUTARY_KAFKA_BROKERS")
        .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting tributary dev")?;
    let pid = child.id().context("child pid")?;
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{dash_port}/readyz");
    loop {
        if http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(60), "dev mode not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;

    let sim = crate::simulate::Args {
        url: format!("http://127.0.0.1:{ingest_port}/v1/telemetry"),
        fleet_key: tributary_ingest::config::DEV_FLEET_KEY.into(),
        devices: a.devices,
        rate: a.rate,
        batch: a.batch,
        duration: a.seconds,
        anomaly_rate: 0.002,
        // Exact reconciliation: every acknowledged reading is distinct and on time.
        late_fraction: 0.0,
        duplicate_fraction: 0.0,
        prefix: format!("bench{run}"),
        seed: 11 + run as u64,
        record: None,
        progress_secs: 0,
    };
    let load_start = Instant::now();
    let totals = crate::simulate::run(sim, std::future::pending()).await?;
    let load_s = load_start.elapsed().as_secs_f64();

    let raw = LocalRawStore::open(&format!("sqlite://{}", data.join("raw.db").display())).await?;
    let drain_start = Instant::now();
    loop {
        let n = raw.count().await?;
        if n as u64 >= totals.accepted {
            break;
        }
        anyhow::ensure!(
            drain_start.elapsed() < Duration::from_secs(300),
            "archive stuck at {n} of {} readings",
            totals.accepted
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    // Each reading carries several metrics and each metric value joins one 10 s window.
    let results = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("results.db").display())).await?;
    let (windowed,): (Option<i64>,) = sqlx::query_as("SELECT sum(count) FROM aggregates WHERE window_seconds = 10")
        .fetch_one(&results)
        .await?;
    let archive = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("raw.db").display())).await?;
    let (metric_values,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM raw_readings, json_each(raw_readings.doc, '$.metrics')")
            .fetch_one(&archive)
            .await?;
    let metric_values = metric_values as f64;
    let rss_mb = rss_peak_mb(pid);

    let stop_start = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .context("clean stop took over 120 s")??;
    anyhow::ensure!(status.success(), "dev mode exited with {status}");
    let stop_s = stop_start.elapsed().as_secs_f64();
    results.close().await;
    archive.close().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(Figures {
        ready_ms,
        offered_per_s: (a.devices as f64 * a.rate).min(totals.sent as f64 / load_s.max(1e-9)),
        accepted_per_s: totals.accepted as f64 / load_s,
        drain_s,
        end_to_end_per_s: totals.accepted as f64 / (load_s + drain_s),
        windowed_fraction: if metric_values > 0.0 {
            windowed.unwrap_or(0) as f64 / metric_values
        } else {
            f64::NAN
        },
        rss_mb,
        stop_s,
    })
}

/// Run the benchmark.
pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    println!(
        "bench dev: {} devices x {}/s in batches of {}, {} s per run, {} runs (simulator and pipeline share this machine)",
        a.devices, a.rate, a.batch, a.seconds, a.runs
    );
    let mut runs = Vec::new();
    for run in 0..a.runs {
        let f = one_run(&a, run).await?;
        println!(
            "run {}: ready {:.0} ms · accepted {:.0}/s · archive drained {:.2} s after load · end to end {:.0}/s · windows counted {:.1}% · peak RSS {:.1} MB · clean stop {:.2} s",
            run + 1,
            f.ready_ms,
            f.accepted_per_s,
            f.drain_s,
            f.end_to_end_per_s,
            100.0 * f.windowed_fraction,
            f.rss_mb,
            f.stop_s
        );
        runs.push(f);
    }
    let m = |g: fn(&Figures) -> f64| median(runs.iter().map(g).collect());
    println!("\nmedians over {} runs:", runs.len());
    println!("  command -> dashboard ready:   {:.0} ms", m(|f| f.ready_ms));
    println!(
        "  offered / accepted:           {:.0} / {:.0} readings/s",
        m(|f| f.offered_per_s),
        m(|f| f.accepted_per_s)
    );
    println!(
        "  end to end (into the archive): {:.0} readings/s (archive drained {:.2} s after the load stopped)",
        m(|f| f.end_to_end_per_s),
        m(|f| f.drain_s)
    );
    println!(
        "  metric values in closed 10 s windows when drained: {:.1}%",
        100.0 * m(|f| f.windowed_fraction)
    );
    println!("  peak RSS:                     {:.1} MB", m(|f| f.rss_mb));
    println!("  clean stop (SIGTERM -> exit): {:.2} s", m(|f| f.stop_s));
    Ok(())
}
