//! `tributary bench soak`: the pipeline's function binaries at a fixed load
//! for a bounded time, reporting throughput, latency end to end and memory
//! over time, then reconciling what was acknowledged with the sinks.
//!
//! The release binaries of ingest, archive (when a Cosmos DB endpoint is
//! given), analyze and process run as child processes against the given
//! broker, PostgreSQL, Redis and Cosmos DB, on topics, consumer groups and
//! device ids of their own (so a soak never mixes with earlier data). The
//! simulator (`tributary simulate`, in this process) sends at a fixed rate.
//!
//! Measured:
//! - **throughput**: readings acknowledged per second;
//! - **device POST latency**: p50/p99 of the requests that got the 2xx;
//! - **end to end**: for every device, each time its latest window in
//!   PostgreSQL (`devices.last_seen`) or in Redis (the device's cached state)
//!   moves on, the time from that window's end to the moment it was seen
//!   (polled every 100 ms). The simulator stamps readings with the time it
//!   sends them, so a window's end is when its last reading could have been
//!   posted: this is "device POST to aggregate visible", and its floor is the
//!   allowed lateness, by design;
//! - **RSS** of each function every `--sample-secs`, and its growth from the
//!   first to the last third of the run (after the first minute's warm-up);
//! - **reconciliation** (with Cosmos DB): `tributary verify` over the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tributary_shared::cache::{KvCache, RedisCache, device_key};

use super::common::{free_port, rss_now_mb as rss_mb};

const EMULATOR_KEY: &str = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// Arguments of `bench soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Minutes of load.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Simulated devices.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Readings per second per device.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Readings per request.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Window size of the aggregates, seconds.
    #[arg(long, default_value_t = 10)]
    window: u32,
    /// Allowed lateness, seconds (the floor of the end-to-end latency).
    #[arg(long, default_value_t = 2)]
    lateness: u32,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 30)]
    sample_secs: u64,
    /// Broker (scripts/bench starts one).
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// PostgreSQL for process.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    database_url: String,
    /// Redis for process.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Cosmos DB endpoint for archive and the reconciliation (scripts/bench starts the stand-in); unset: no archive.
    #[arg(long)]
    cosmos_endpoint: Option<String>,
    /// Cosmos DB key.
    #[arg(long, default_value = EMULATOR_KEY, hide_default_value = true)]
    cosmos_key: String,
    /// Directory of the function binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Function {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds")
}

fn q(h: &Histogram<u64>, quantile: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        format!("{} ms", h.value_at_quantile(quantile))
    }
}

/// Each time a device's latest window moves on, the time since that window ended.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, DateTime<Utc>>,
}

impl Seen {
    /// Record `now - last_seen` when `last_seen` is new for `device` (the first sighting only sets the mark).
    fn observe(&mut self, device: &str, last_seen: DateTime<Utc>, now: DateTime<Utc>, h: &mut Histogram<u64>) {
        match self.last.get(device) {
            Some(prev) if *prev >= last_seen => {}
            Some(_) => {
                let _ = h.record((now - last_seen).num_milliseconds().clamp(1, 3_600_000) as u64);
                self.last.insert(device.to_owned(), last_seen);
            }
            None => {
                self.last.insert(device.to_owned(), last_seen);
            }
        }
    }
}

/// Run the soak.
pub async fn run(a: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.minutes > 0.0 && a.devices > 0 && a.rate > 0.0 && a.batch > 0,
        "--minutes, --devices, --rate and --batch must be positive"
    );
    let dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let stamp = format!("{}{}", std::process::id(), Utc::now().timestamp() % 100_000);
    let work = std::env::temp_dir().join(format!("tributary-soak-{stamp}"));
    std::fs::create_dir_all(&work)?;
    let prefix = format!("soak{stamp}");
    let topic = |t: &str| format!("soak-{stamp}.{t}");
    let cosmos_db = format!("soak{stamp}");
    let fleet_key = format!("soak-fleet-key-{stamp}-0123456789abcdef");

    let mut names = vec!["ingest", "analyze", "process"];
    if a.cosmos_endpoint.is_some() {
        names.insert(1, "archive");
    }
    let mut functions = Vec::new();
    for name in names {
        let bin = dir.join(format!("tributary-{name}"));
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build the functions with `cargo build --release`",
            bin.display()
        );
        let port = free_port()?;
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("PORT", port.to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("TRIBUTARY_KAFKA_BROKERS", &a.brokers)
            .env("TRIBUTARY_RAW_TOPIC", topic("raw"))
            .env("TRIBUTARY_AGGREGATES_TOPIC", topic("aggregates"))
            .env("TRIBUTARY_ALERTS_TOPIC", topic("alerts"))
            .env("TRIBUTARY_DEADLETTER_TOPIC", topic("deadletter"))
            .env("TRIBUTARY_CONSUMER_GROUP", format!("soak-{stamp}-{name}"))
            .env("TRIBUTARY_FLEET_KEY", &fleet_key)
            .env("TRIBUTARY_WINDOWS", a.window.to_string())
            .env("TRIBUTARY_ALLOWED_LATENESS_SECS", a.lateness.to_string())
            .env("TRIBUTARY_IDLE_TIMEOUT_SECS", "2")
            .env("DATABASE_URL", &a.database_url)
            .env("REDIS_URL", &a.redis_url)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(endpoint) = &a.cosmos_endpoint {
            cmd.env("TRIBUTARY_COSMOS_ENDPOINT", endpoint)
                .env("TRIBUTARY_COSMOS_KEY", &a.cosmos_key)
                .env("TRIBUTARY_COSMOS_DATABASE", &cosmos_db);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("pid")?;
        functions.push(Function { name, child, pid, port });
        // In order: ingest creates the raw topic the consumers subscribe to.
        wait_ready(functions.last_mut().expect("just pushed")).await?;
    }

    let offered = a.devices as f64 * a.rate;
    println!(
        "bench soak: {:.1} min, {} devices × {} readings/s in requests of {} ({offered:.0} readings/s offered), windows of {} s, allowed lateness {} s; logs in {}",
        a.minutes,
        a.devices,
        a.rate,
        a.batch,
        a.window,
        a.lateness,
        work.display()
    );

    // End-to-end pollers: PostgreSQL (the results store) and Redis (the cache).
    let device_ids: Vec<String> = (0..a.devices)
        .map(|i| format!("{prefix}-{}-{i:03}", ["vehicle", "sensor", "machine"][i % 3]))
        .collect();
    let pg_hist = Arc::new(Mutex::new(histogram()));
    let redis_hist = Arc::new(Mutex::new(histogram()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let store = tributary_shared::results::open(&a.database_url, 2)
        .await
        .context("opening the results store")?;
    let pg_poll = {
        let (ids, h, mut stop) = (device_ids.clone(), pg_hist.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut errors = 0u64;
            loop {
                match store.devices(&ids).await {
                    Ok(states) => {
                        let now = Utc::now();
                        let mut h = h.lock().await;
                        for s in states {
                            seen.observe(&s.device_id, s.last_seen, now, &mut h);
                        }
                    }
                    Err(_) => errors += 1,
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return errors,
                }
            }
        })
    };
    let redis_poll = {
        let (ids, h, mut stop) = (device_ids.clone(), redis_hist.clone(), stop_rx.clone());
        let cache = RedisCache::new(&a.redis_url).context("Redis URL")?;
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut errors = 0u64;
            loop {
                for id in &ids {
                    match cache.get(&device_key(id)).await {
                        Ok(Some(json)) => {
                            let now = Utc::now();
                            let state: Option<tributary_shared::results::DeviceState> =
                                serde_json::from_str(&json).ok();
                            if let Some(s) = state {
                                seen.observe(id, s.last_seen, now, &mut *h.lock().await);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => errors += 1,
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return errors,
                }
            }
        })
    };

    // RSS over time.
    let pids: Vec<(&'static str, u32)> = functions.iter().map(|f| (f.name, f.pid)).collect();
    let sampler = {
        let (pids, every, mut stop) = (pids.clone(), a.sample_secs.max(1), stop_rx.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut samples: Vec<(f64, Vec<f64>)> = Vec::new();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(every)) => {}
                    _ = stop.changed() => return samples,
                }
                samples.push((
                    t0.elapsed().as_secs_f64(),
                    pids.iter().map(|(_, pid)| rss_mb(*pid)).collect(),
                ));
            }
        })
    };

    // The load.
    let record = work.join("acknowledged.jsonl");
    let sim = crate::simulate::Args {
        url: format!("http://127.0.0.1:{}/v1/telemetry", functions[0].port),
        fleet_key: fleet_key.clone(),
        devices: a.devices,
        rate: a.rate,
        batch: a.batch,
        duration: (a.minutes * 60.0).round() as u64,
        anomaly_rate: 0.002,
        late_fraction: 0.0,
        duplicate_fraction: 0.01,
        prefix: prefix.clone(),
        seed: 7,
        record: Some(record.clone()),
        progress_secs: 0,
    };
    let t0 = Instant::now();
    let totals = crate::simulate::run(sim, std::future::pending::<()>()).await?;
    let load_secs = t0.elapsed().as_secs_f64();

    // Let the last windows close (idle rule + lateness) and reach the stores.
    tokio::time::sleep(Duration::from_secs(u64::from(a.window + a.lateness) + 8)).await;
    // Values analyze dropped as late (their window had closed): by design, and
    // what the reconciliation below reports as missing from the aggregates.
    let analyze_port = functions.iter().find(|f| f.name == "analyze").map_or(0, |f| f.port);
    let metrics = match reqwest::get(format!("http://127.0.0.1:{analyze_port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let late_values: Option<i64> = metrics
        .lines()
        .find(|l| l.starts_with("tributary_analyze_late_values "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let _ = stop_tx.send(true);
    let (pg_errors, redis_errors) = (pg_poll.await?, redis_poll.await?);
    let samples = sampler.await?;
    for f in &mut functions {
        if let Some(status) = f.child.try_wait()? {
            bail!(
                "{} exited during the soak ({status}); see {}",
                f.name,
                work.join(format!("{}.log", f.name)).display()
            );
        }
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &f.pid.to_string()])
            .status()
            .await;
    }
    for f in &mut functions {
        let _ = tokio::time::timeout(Duration::from_secs(30), f.child.wait()).await;
    }

    println!(
        "throughput: {:.0} readings/s acknowledged ({} readings in {:.0} s; {} retries, {} rejected)",
        totals.accepted as f64 / load_secs,
        totals.accepted,
        load_secs,
        totals.retries,
        totals.rejected
    );
    println!(
        "device POST latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        totals.post_p50_ms, totals.post_p99_ms, totals.post_max_ms
    );
    let late_values = late_values.context("reading tributary_analyze_late_values from analyze's /metrics")?;
    println!(
        "late values dropped by analyze (behind their partition by more than the allowed lateness): {late_values}"
    );
    let (pg, redis) = (pg_hist.lock().await, redis_hist.lock().await);
    println!(
        "end to end, window end (last possible POST) -> visible: PostgreSQL p50 {}, p99 {}, max {} ({} windows; {} poll errors); Redis p50 {}, p99 {}, max {} ({} windows; {} poll errors); floor: allowed lateness {} s",
        q(&pg, 0.5),
        q(&pg, 0.99),
        if pg.is_empty() {
            "-".into()
        } else {
            format!("{} ms", pg.max())
        },
        pg.len(),
        pg_errors,
        q(&redis, 0.5),
        q(&redis, 0.99),
        if redis.is_empty() {
            "-".into()
        } else {
            format!("{} ms", redis.max())
        },
        redis.len(),
        redis_errors,
        a.lateness
    );
    println!("RSS (MB):");
    println!(
        "{:>7} {}",
        "t (s)",
        pids.iter().map(|(n, _)| format!("{n:>9}")).collect::<String>()
    );
    for (t, v) in &samples {
        println!("{t:>7.0} {}", v.iter().map(|x| format!("{x:>9.1}")).collect::<String>());
    }
    // Growth: mean of the last third against the first third, after a minute's warm-up.
    let steady: Vec<&(f64, Vec<f64>)> = samples.iter().filter(|(t, _)| *t >= 60.0).collect();
    if steady.len() >= 3 {
        let third = steady.len() / 3;
        let mean =
            |part: &[&(f64, Vec<f64>)], i: usize| part.iter().map(|(_, v)| v[i]).sum::<f64>() / part.len() as f64;
        let growth: Vec<String> = pids
            .iter()
            .enumerate()
            .map(|(i, (n, _))| {
                let (first, last) = (mean(&steady[..third], i), mean(&steady[steady.len() - third..], i));
                format!("{n} {:+.1}%", (last - first) / first * 100.0)
            })
            .collect();
        println!(
            "RSS growth, last third vs first third after 60 s: {}",
            growth.join(", ")
        );
    } else {
        println!("RSS growth: too few samples after the first minute (run longer or lower --sample-secs)");
    }

    if let Some(endpoint) = &a.cosmos_endpoint {
        let out = tokio::process::Command::new(std::env::current_exe()?)
            .args(["verify", "--window", &a.window.to_string(), "--record"])
            .arg(&record)
            .args([
                "--database-url",
                &a.database_url,
                "--cosmos-endpoint",
                endpoint,
                "--cosmos-key",
                &a.cosmos_key,
                "--cosmos-database",
                &cosmos_db,
            ])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "reconciliation (tributary verify): {}",
            text.lines().last().unwrap_or("(no output)")
        );
        let summary: serde_json::Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let explained = summary["raw"]["missing"] == 0
            && summary["aggregates"]["countedTwice"] == 0
            && summary["aggregates"]["lost"].as_i64() == Some(late_values);
        if !out.status.success() && explained {
            println!(
                "reconciliation: every acknowledged reading archived, none counted twice; the {late_values} values missing from the aggregates are exactly the late values analyze dropped"
            );
        } else if !out.status.success() {
            print!("{text}{}", String::from_utf8_lossy(&out.stderr));
            bail!("the reconciliation failed");
        }
    } else {
        println!("reconciliation: skipped (no --cosmos-endpoint, so no raw archive to check)");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

async fn wait_ready(f: &mut Function) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let t0 = Instant::now();
    loop {
        if let Some(status) = f.child.try_wait()? {
            bail!("{} exited before it was ready: {status}", f.name);
        }
        if client
            .get(format!("http://127.0.0.1:{}/readyz", f.port))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{} was not ready within 60 s", f.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
