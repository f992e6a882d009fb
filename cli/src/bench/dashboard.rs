//! `tributary bench dashboard`: the dashboard API's latency under concurrent
//! load, for the fleet overview and a device's series over 24 h, 7 d, 30 d
//! and a year.
//!
//! Seeds a results store (SQLite in a temporary directory, or the PostgreSQL
//! `--database-url` names) with 24 h of 10 s and 60 s windows for one device's
//! three metrics and a year of 60 s windows of one of them, runs the rollup
//! job over them and applies the default retention to the windows (30 days) and
//! to each tier (as process would), adds a fleet of 10,000 devices and alerts, a
//! tenth of them in one registry group (the fleet list's pages, a search, a
//! filtered order, a group and the groups are measured on it); starts `tributary dev` (this
//! binary) on it with no simulated devices; then `--concurrency` keep-alive
//! clients request each endpoint for `--seconds` over loopback and the
//! latencies go into an HDR histogram. The clients run in this process and
//! share the machine's 2 cores with the server.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_shared::registry::NewDevice;
use tributary_shared::sketch::QuantileSketch;

use super::common::{free_port, median};

/// Devices in the seeded fleet.
const FLEET: usize = 10_000;

/// Arguments of `bench dashboard`.
#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Results store to seed and serve from (`postgres://…`; the database is emptied). Unset: SQLite in a temporary directory.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per endpoint per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed windows without quantile sketches, as analyze versions before
    /// them wrote (the rollup job then merges approximate quantiles).
    #[arg(long)]
    no_sketches: bool,
}

/// A window of ten values around a slow sine, with their sketch unless `bare`.
fn window(device: &str, metric: &str, size: u32, start: DateTime<Utc>, i: usize, bare: bool) -> Aggregate {
    let mean = 50.0 + (i as f64 / 30.0).sin() * 10.0;
    let sketch = (!bare).then(|| {
        let mut sk = QuantileSketch::default();
        (0..10).for_each(|k| sk.insert(mean - 2.0 + f64::from(k) * 0.4 + (i % 7) as f64 * 0.01));
        sk
    });
    Aggregate {
        device_id: device.into(),
        metric: metric.into(),
        window_seconds: size,
        window_start: start,
        window_end: start + chrono::Duration::seconds(i64::from(size)),
        count: 10,
        min: mean - 2.0,
        max: mean + 2.0,
        mean,
        stddev: 1.0,
        p50: mean,
        p95: mean + 1.5,
        p99: mean + 1.9,
        anomaly_score: if i.is_multiple_of(500) { 0.9 } else { 0.05 },
        model: "spike".into(),
        expected_low: None,
        expected_high: None,
        warming: false,
        sketch,
    }
}

async fn seed(url: &str, bare: bool) -> anyhow::Result<()> {
    let store = tributary_shared::results::open(url, 4).await?;
    store.migrate().await?;
    let now = Utc::now().timestamp() / 60 * 60;
    let mut batch = Vec::new();
    for metric in ["speed", "rpm", "engine_temp"] {
        for i in 0..8640usize {
            let start = DateTime::from_timestamp(now - 86_400 + i as i64 * 10, 0).context("time")?;
            batch.push(window("bench-truck-0", metric, 10, start, i, bare));
        }
        // A year of minutes for the speed chart's long ranges.
        let minutes: usize = if metric == "speed" { 366 * 1440 } else { 1440 };
        for i in 0..minutes {
            let start = DateTime::from_timestamp(now - minutes as i64 * 60 + i as i64 * 60, 0).context("time")?;
            batch.push(window("bench-truck-0", metric, 60, start, i, bare));
        }
    }
    // A fleet of 10,000, last seen over the past three hours (the newest online).
    for d in 1..FLEET {
        let start = DateTime::from_timestamp(now - 60 - d as i64, 0).context("time")?;
        batch.push(window(&format!("bench-truck-{d}"), "speed", 10, start, d, bare));
    }
    for chunk in batch.chunks(5000) {
        store.write_batch(chunk, &[]).await?;
    }
    let t0 = Instant::now();
    while store.roll_up(5000).await? > 0 {}
    let rolled_up = t0.elapsed();
    let retention = DateTime::from_timestamp(now - 30 * 86_400, 0).context("time")?;
    store.delete_aggregates_before(retention).await?;
    // And each tier's default retention (the minutes 90 days), as process's
    // upkeep would have long before: otherwise it deletes them during the run.
    for (tier, days) in tributary_shared::results::RollupRetention::default().0 {
        if let Some(days) = days {
            let cutoff = DateTime::from_timestamp(now - i64::from(days) * 86_400, 0).context("time")?;
            while store.delete_rollups_before(tier, cutoff).await? > 0 {}
        }
    }
    println!(
        "bench dashboard: seeded {} windows ({}), rolled up in {:.1} s, retention applied in {:.1} s",
        batch.len(),
        if bare { "without sketches" } else { "with sketches" },
        rolled_up.as_secs_f64(),
        (t0.elapsed() - rolled_up).as_secs_f64()
    );
    let alerts: Vec<Alert> = (0..50)
        .map(|i| {
            let at = DateTime::from_timestamp(now - 3600 + i * 60, 0).unwrap_or_default();
            Alert {
                id: format!("bench-alert-{i}"),
                device_id: format!("bench-truck-{}", i * 97 % FLEET as i64),
                metric: "speed".into(),
                model: "threshold".into(),
                score: 0.9,
                value: 130.0,
                reason: "speed > 120 for 30s".into(),
                severity: Default::default(),
                state: if i % 3 == 0 {
                    AlertState::Resolved
                } else {
                    AlertState::Opened
                },
                opened_at: at,
                updated_at: at + chrono::Duration::seconds(30),
            }
        })
        .collect();
    store.write_batch(&[], &alerts).await?;
    // Every tenth device in one group of the registry (the others stay in
    // the default group they were enrolled in on first contact).
    let reefers: Vec<NewDevice> = (0..FLEET)
        .step_by(10)
        .map(|d| NewDevice {
            group: Some("reefer".into()),
            ..NewDevice::new(format!("bench-truck-{d}"))
        })
        .collect();
    tributary_shared::registry::open(url, 4)
        .await?
        .import(&reefers, Utc::now())
        .await?;
    Ok(())
}

/// Requests/s, p50 and p99 (ms) of `url` under `concurrency` clients for `seconds`.
async fn load(url: &str, concurrency: usize, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, hist) = (client.clone(), url.to_owned(), hist.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while Instant::now() < deadline {
                let t = Instant::now();
                let resp = client.get(&url).send().await?;
                anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
                resp.bytes().await?;
                local.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.add(&local)?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((
        h.len() as f64 / seconds as f64,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// Run the benchmark.
pub async fn run(a: DashboardArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tributary-bench-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let url = match &a.database_url {
        Some(u) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(u)
                .await
                .context("connecting to PostgreSQL")?;
            sqlx::query("DROP TABLE IF EXISTS aggregates, alerts, devices, rollups, rollup_dirty, device_registry, device_registry_changes, _sqlx_migrations")
                .execute(&mut conn)
                .await?;
            u.clone()
        }
        None => format!("sqlite://{}", dir.join("results.db").display()),
    };
    seed(&url, a.no_sketches).await.context("seeding the results store")?;
    if a.database_url.is_some() {
        // What autovacuum does soon after the retention delete of the seed: without it
        // every index scan steps over half a million dead windows, and the planner
        // works from the statistics of empty tables.
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
    }
    let port = free_port()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "dev",
            "--devices",
            "0",
            "--status-secs",
            "0",
            "--listen",
            &format!("127.0.0.1:{}", free_port()?),
            "--dashboard",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database-url", &url])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("REDIS_URL")
        .env_remove("TRIBUTARY_KAFKA_BROKERS")
        .env_remove("TRIBUTARY_COSMOS_ENDPOINT")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while !reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(60), "dashboard not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let series: serde_json::Value = reqwest::get(format!(
        "{base}/api/devices/bench-truck-0/series?metric=speed&window=10&from=24h&maxPoints=10000"
    ))
    .await?
    .json()
    .await?;
    let points = series["points"].as_array().map(Vec::len).unwrap_or(0);
    anyhow::ensure!(points >= 8000, "the 24 h series has {points} points; seeding failed");
    let backend = if a.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "bench dashboard: {backend}, {} clients, {} s per endpoint, {} runs; the 24 h series is {points} windows",
        a.concurrency, a.seconds, a.runs
    );
    let endpoints = [
        ("fleet overview       /api/fleet", format!("{base}/api/fleet")),
        (
            "24 h series (page)   .../series?from=24h",
            format!("{base}/api/devices/bench-truck-0/series?metric=speed&from=24h&maxPoints=800"),
        ),
        (
            "7 d series (page)    .../series?from=7d",
            format!("{base}/api/devices/bench-truck-0/series?metric=speed&from=7d&maxPoints=800"),
        ),
        (
            "30 d series (page)   .../series?from=30d",
            format!("{base}/api/devices/bench-truck-0/series?metric=speed&from=30d&maxPoints=800"),
        ),
        (
            "1 y series (page)    .../series?from=365d",
            format!("{base}/api/devices/bench-truck-0/series?metric=speed&from=365d&maxPoints=800"),
        ),
        (
            "24 h series, full    ...&maxPoints=10000",
            format!("{base}/api/devices/bench-truck-0/series?metric=speed&window=10&from=24h&maxPoints=10000"),
        ),
        (
            "fleet list, 200 rows /api/devices?limit=200",
            format!("{base}/api/devices?limit=200"),
        ),
        ("fleet list (page)    /api/devices", format!("{base}/api/devices")),
        (
            "fleet list, last pg  ...&offset=9950",
            format!("{base}/api/devices?offset=9950"),
        ),
        (
            "fleet list, search   ...?q=truck-42",
            format!("{base}/api/devices?q=truck-42"),
        ),
        (
            "fleet list, alerting ...&sort=openAlerts",
            format!("{base}/api/devices?status=alerting&sort=openAlerts"),
        ),
        (
            "fleet list, group    ...?group=reefer",
            format!("{base}/api/devices?group=reefer"),
        ),
        ("fleet groups         /api/groups", format!("{base}/api/groups")),
    ];
    let mut figures: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); endpoints.len()];
    for run in 0..a.runs {
        for (i, (name, url)) in endpoints.iter().enumerate() {
            let f = load(url, a.concurrency, a.seconds).await?;
            println!(
                "run {}: {name}: {:>7.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                run + 1,
                f.0,
                f.1,
                f.2
            );
            figures[i].push(f);
        }
    }
    println!("\nmedians over {} runs:", a.runs);
    for (i, (name, _)) in endpoints.iter().enumerate() {
        let f = &figures[i];
        println!(
            "  {name}: {:>7.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            median(f.iter().map(|x| x.0).collect()),
            median(f.iter().map(|x| x.1).collect()),
            median(f.iter().map(|x| x.2).collect())
        );
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
