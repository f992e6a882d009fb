//! `tributary bench start`: start-to-ready time, memory and stop time of each
//! function binary, medians of several runs.
//!
//! Each run starts the release binary as a child process against the
//! benchmark's own services (broker, PostgreSQL, Redis, Cosmos DB stand-in),
//! polls `/healthz` and `/readyz` every 2 ms from the moment of spawning, reads
//! the process's RSS one second after it became ready (idle, connections
//! open), then sends SIGTERM and times the exit. Every run uses its own
//! consumer group, so no run waits on a previous run's rebalance.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::common::{free_port, median, rss_now_mb, terminate};

/// Arguments of `bench start`.
#[derive(clap::Args)]
pub struct StartArgs {
    /// Broker (scripts/bench starts one).
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// PostgreSQL for process and the dashboard.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Redis for process and the dashboard.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Cosmos DB endpoint for archive (scripts/bench starts the stand-in); unset: archive is skipped.
    #[arg(long)]
    cosmos_endpoint: Option<String>,
    /// Cosmos DB key.
    #[arg(
        long,
        default_value = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
        hide_default_value = true
    )]
    cosmos_key: String,
    /// Runs per function; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory of the function binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Run {
    healthz_ms: f64,
    readyz_ms: f64,
    rss_mb: f64,
    stop_ms: f64,
}

/// Run the benchmark.
pub async fn run(a: StartArgs) -> anyhow::Result<()> {
    let dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let mut functions = vec!["ingest", "analyze", "process", "dashboard"];
    if a.cosmos_endpoint.is_some() {
        functions.insert(1, "archive");
    } else {
        println!("(archive skipped: no --cosmos-endpoint)");
    }
    println!(
        "bench start: each function's release binary, {} runs, medians; ready = /readyz 200 (its backing services reachable)",
        a.runs
    );
    println!(
        "{:<10} {:>8} {:>14} {:>13} {:>14} {:>10}",
        "function", "binary", "start→healthz", "start→readyz", "RSS when idle", "SIGTERM→exit"
    );
    for f in functions {
        let bin = dir.join(format!("tributary-{f}"));
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build the functions with `cargo build --release`",
            bin.display()
        );
        let size_mb = std::fs::metadata(&bin)?.len() as f64 / 1e6;
        let mut runs = Vec::new();
        for i in 0..a.runs {
            runs.push(
                one(&a, f, &bin, i)
                    .await
                    .with_context(|| format!("{f}, run {}", i + 1))?,
            );
        }
        let m = |g: fn(&Run) -> f64| median(runs.iter().map(g).collect());
        println!(
            "{:<10} {:>6.1} MB {:>11.1} ms {:>10.1} ms {:>11.1} MB {:>7.1} ms",
            f,
            size_mb,
            m(|r| r.healthz_ms),
            m(|r| r.readyz_ms),
            m(|r| r.rss_mb),
            m(|r| r.stop_ms)
        );
    }
    Ok(())
}

async fn one(a: &StartArgs, f: &str, bin: &PathBuf, run: usize) -> anyhow::Result<Run> {
    let port = free_port()?;
    let stamp = format!("{}-{run}", std::process::id());
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("TRIBUTARY_KAFKA_BROKERS", &a.brokers)
        .env("DATABASE_URL", &a.database_url)
        .env("REDIS_URL", &a.redis_url)
        .env("TRIBUTARY_CONSUMER_GROUP", format!("bench-start-{f}-{stamp}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if f == "archive" {
        cmd.env(
            "TRIBUTARY_COSMOS_ENDPOINT",
            a.cosmos_endpoint.as_deref().unwrap_or_default(),
        )
        .env("TRIBUTARY_COSMOS_KEY", &a.cosmos_key)
        .env("TRIBUTARY_COSMOS_DATABASE", "bench-start");
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id().context("pid")?;
    let (mut healthz, mut readyz) = (None, None);
    while readyz.is_none() {
        if let Some(status) = child.try_wait()? {
            bail!("exited before it was ready: {status}");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("not ready within 30 s");
        }
        let path = if healthz.is_none() { "healthz" } else { "readyz" };
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/{path}")).send().await
            && r.status().is_success()
        {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if healthz.is_none() {
                healthz = Some(ms);
            } else {
                readyz = Some(ms);
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_mb = rss_now_mb(pid);
    let t1 = Instant::now();
    terminate(&mut child, pid, Duration::from_secs(30)).await?;
    Ok(Run {
        healthz_ms: healthz.unwrap_or(f64::NAN),
        readyz_ms: readyz.unwrap_or(f64::NAN),
        rss_mb,
        stop_ms: t1.elapsed().as_secs_f64() * 1000.0,
    })
}
