//! `bench ingest`: starts the real `tributary-ingest` binary as a child
//! process against a broker, times process start to the first 202, drives it
//! over loopback HTTP at batch sizes 1/100/1000 (readings/s, p50/p99
//! latency), reads its RSS and CPU time, and then produces the same messages
//! with librdkafka alone to the same broker (the ceiling ingest is compared with).
//!
//! The load comes from the bench's own client ([`super::load`], a few µs per
//! request) or from `wrk` ([`super::wrk`]); devices keep their connection
//! open or open one per request (`--connection`). `--fleet N` adds a phase
//! with N keep-alive devices sending at a modest rate each, and reports
//! ingest's memory per open connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use tributary_shared::auth::{FleetKey, now_unix};

use super::common::{bench_producer, cpu_seconds, free_port, median, rss_now_mb, rss_peak_mb};
use super::{load, wrk};

/// The endpoint every request goes to.
const PATH: &str = "/v1/telemetry";

/// Which client drives the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadTool {
    /// The bench's own HTTP/1.1 client (one thread, requests built in advance).
    Own,
    /// `wrk` (Debian's package) with a Lua script holding the same requests.
    Wrk,
}

/// Arguments of `bench ingest`.
#[derive(clap::Args, Clone)]
pub struct IngestArgs {
    /// Broker to benchmark against (start one with scripts/bench).
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Batch sizes (readings per request).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    batches: Vec<usize>,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of load per batch size and run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Records the librdkafka baseline produces per run.
    #[arg(long, default_value_t = 300_000)]
    baseline_records: usize,
    /// The ingest binary (default: next to this one).
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// The broker's process id, to report its CPU time per reading too
    /// (scripts/bench passes it).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// The client that drives the load.
    #[arg(long, value_enum, default_value_t = LoadTool::Own)]
    load: LoadTool,
    /// Whether devices keep their connection open or open one per request.
    #[arg(long, value_enum, default_value_t = load::Connection::KeepAlive)]
    connection: load::Connection,
    /// Also hold this many keep-alive connections (one device each) sending
    /// single readings at a modest rate, and report memory per connection
    /// (raise the open-files limit to more than this first).
    #[arg(long, default_value_t = 0)]
    fleet: usize,
    /// Milliseconds between two readings of one device in the fleet phase.
    #[arg(long, default_value_t = 1000)]
    fleet_interval_ms: u64,
    /// Extra environment for ingest, `KEY=VALUE`, repeatable (for example
    /// `TRIBUTARY_KAFKA_OPTIONS=linger.ms=1` to compare producer settings).
    #[arg(long = "ingest-env")]
    ingest_env: Vec<String>,
    /// Register this many devices (`bench-0`, `bench-1`, …, and the fleet
    /// phase's) in a registry topic of the run's own, and run ingest in
    /// `registered` enrollment, so every request is admitted by a view of
    /// this size; the RSS after start then includes the view. Each run then
    /// also measures its peer, an ingest in open enrollment with an empty
    /// view (before it in even runs, after it in odd ones), and the medians
    /// compare the two (throughput ratio per batch, view memory per device).
    #[arg(long, default_value_t = 0)]
    registered: usize,
}

/// What the fleet phase measured.
struct FleetFigures {
    offered_per_s: f64,
    accepted_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    refused: u64,
    errors: u64,
    first_error: Option<String>,
    rss_before_mb: f64,
    rss_open_mb: f64,
    kb_per_connection: f64,
    kb_per_added_connection: f64,
    ingest_us: f64,
}

impl FleetFigures {
    /// The phase's figures on one line.
    fn line(&self, a: &IngestArgs) -> String {
        format!(
            "fleet of {} keep-alive connections, one reading each every {} ms: {:.0} of {:.0} readings/s, p50 {:.2} ms, p99 {:.2} ms, {} answers not 2xx, {} errors{}; ingest RSS {:.1} -> {:.1} MB with all open: {:.1} KB per open connection ({:.1} KB per connection added to the first half), {:.2} us CPU per reading",
            a.fleet,
            a.fleet_interval_ms,
            self.accepted_per_s,
            self.offered_per_s,
            self.p50_ms,
            self.p99_ms,
            self.refused,
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.rss_before_mb,
            self.rss_open_mb,
            self.kb_per_connection,
            self.kb_per_added_connection,
            self.ingest_us
        )
    }
}

/// CPU time (user + system) per reading, in microseconds, of the three
/// processes sharing the machine during one batch size's load.
#[derive(Clone, Copy)]
struct CpuPerReading {
    ingest_us: f64,
    broker_us: f64,
    load_us: f64,
}

struct RunFigures {
    start_to_first_202_ms: f64,
    rss_start_mb: f64,
    view_bytes: f64,
    per_batch: Vec<(usize, f64, f64, f64)>,
    cpu: Vec<CpuPerReading>,
    /// CPU µs per record of the broker and the producer in the baseline.
    baseline_cpu: (f64, f64),
    rss_peak_mb: f64,
    baseline_per_s: f64,
    fleet: Option<FleetFigures>,
}

fn reading(ts: i64, i: usize) -> serde_json::Value {
    json!({"timestamp": ts, "metrics": {"speed": 40.0 + (i % 50) as f64, "rpm": 1500 + (i % 1000), "engine_temp": 88.5}, "tags": {"fw": "1.4.2"}})
}

/// Run the benchmark and print every run and the medians.
pub async fn run(a: IngestArgs) -> anyhow::Result<()> {
    let bin = match a.ingest_bin.clone() {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("tributary-ingest"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tributary-ingest) or pass --ingest-bin",
            bin.display()
        );
    }
    if a.load == LoadTool::Wrk && a.fleet > 0 {
        bail!("--fleet needs --load own (wrk cannot pace each connection)");
    }
    println!(
        "bench ingest: broker {}, batches {:?}, {} runs x {} s, {} connections ({:?}, load by {:?}), ingest {}",
        a.brokers,
        a.batches,
        a.runs,
        a.seconds,
        a.concurrency,
        a.connection,
        a.load,
        bin.display()
    );
    let mut runs = Vec::new();
    // The peer of a run with a registered fleet: the same run, an empty view.
    let open_args = (a.registered > 0).then(|| IngestArgs {
        registered: 0,
        fleet: 0,
        ..a.clone()
    });
    let mut peers: Vec<RunFigures> = Vec::new();
    for run in 0..a.runs {
        // The peer goes first in even runs and last in odd ones, so a broker
        // that slows as it fills weighs on both alike.
        let peer_first = run % 2 == 0;
        if let Some(open) = open_args.as_ref().filter(|_| peer_first) {
            peers.push(peer_run(open, &bin, run).await?);
        }
        let f = one_run(&a, &bin, run).await?;
        if let Some(open) = open_args.as_ref().filter(|_| !peer_first) {
            peers.push(peer_run(open, &bin, run).await?);
        }
        println!(
            "run {}: start->first 202 {:.1} ms, RSS at first 202 {:.1} MB, peak RSS {:.1} MB, librdkafka alone {:.0} msgs/s (CPU per record: producer {:.2} us, broker {:.2} us)",
            run + 1,
            f.start_to_first_202_ms,
            f.rss_start_mb,
            f.rss_peak_mb,
            f.baseline_per_s,
            f.baseline_cpu.1,
            f.baseline_cpu.0
        );
        for ((b, rps, p50, p99), c) in f.per_batch.iter().zip(&f.cpu) {
            println!(
                "  batch {b:>5}: {rps:>10.0} readings/s  p50 {p50:>8.2} ms  p99 {p99:>8.2} ms  CPU per reading: ingest {:.2} us, broker {:.2} us, load generator {:.2} us",
                c.ingest_us, c.broker_us, c.load_us
            );
        }
        if let Some(fl) = &f.fleet {
            println!("  {}", fl.line(&a));
        }
        runs.push(f);
    }
    println!("\nmedians over {} runs:", runs.len());
    println!(
        "  start -> first 202:      {:.1} ms",
        median(runs.iter().map(|r| r.start_to_first_202_ms).collect())
    );
    println!(
        "  RSS at first 202:        {:.1} MB{}",
        median(runs.iter().map(|r| r.rss_start_mb).collect()),
        if a.registered > 0 {
            format!(" ({} devices registered, in ingest's view)", a.registered + a.fleet)
        } else {
            String::new()
        }
    );
    println!(
        "  peak RSS of ingest:      {:.1} MB",
        median(runs.iter().map(|r| r.rss_peak_mb).collect())
    );
    let base = median(runs.iter().map(|r| r.baseline_per_s).collect());
    println!(
        "  librdkafka alone:        {base:.0} msgs/s (same broker, same messages, same producer settings but a 5 ms linger)"
    );
    for (i, b) in a.batches.iter().enumerate() {
        let rps = median(runs.iter().map(|r| r.per_batch[i].1).collect());
        let p50 = median(runs.iter().map(|r| r.per_batch[i].2).collect());
        let p99 = median(runs.iter().map(|r| r.per_batch[i].3).collect());
        println!(
            "  batch {b:>5}: {rps:>10.0} readings/s ({:>5.1}% of librdkafka)  p50 {p50:.2} ms  p99 {p99:.2} ms",
            100.0 * rps / base
        );
    }
    println!("  CPU per reading (user + system, us):");
    println!(
        "    librdkafka alone:      producer {:.2}, broker {:.2}",
        median(runs.iter().map(|r| r.baseline_cpu.1).collect()),
        median(runs.iter().map(|r| r.baseline_cpu.0).collect())
    );
    for (i, b) in a.batches.iter().enumerate() {
        println!(
            "    batch {b:>5}:           ingest {:.2}, broker {:.2}, load generator {:.2}",
            median(runs.iter().map(|r| r.cpu[i].ingest_us).collect()),
            median(runs.iter().map(|r| r.cpu[i].broker_us).collect()),
            median(runs.iter().map(|r| r.cpu[i].load_us).collect())
        );
    }
    let fleets: Vec<&FleetFigures> = runs.iter().filter_map(|r| r.fleet.as_ref()).collect();
    if !fleets.is_empty() {
        let m = |f: fn(&FleetFigures) -> f64| median(fleets.iter().map(|x| f(x)).collect());
        let medians = FleetFigures {
            offered_per_s: m(|f| f.offered_per_s),
            accepted_per_s: m(|f| f.accepted_per_s),
            p50_ms: m(|f| f.p50_ms),
            p99_ms: m(|f| f.p99_ms),
            refused: fleets.iter().map(|f| f.refused).sum(),
            errors: fleets.iter().map(|f| f.errors).sum(),
            first_error: fleets.iter().find_map(|f| f.first_error.clone()),
            rss_before_mb: m(|f| f.rss_before_mb),
            rss_open_mb: m(|f| f.rss_open_mb),
            kb_per_connection: m(|f| f.kb_per_connection),
            kb_per_added_connection: m(|f| f.kb_per_added_connection),
            ingest_us: m(|f| f.ingest_us),
        };
        println!("  {} (answers not 2xx and errors: over all runs)", medians.line(&a));
    }
    if !peers.is_empty() {
        let view_mb = median(runs.iter().map(|r| r.rss_start_mb).collect())
            - median(peers.iter().map(|r| r.rss_start_mb).collect());
        let devices = a.registered + a.fleet;
        let estimate = median(runs.iter().map(|r| r.view_bytes).collect());
        println!(
            "  against the peer (open enrollment, empty view, same runs): RSS at first 202 up {view_mb:.1} MB with {devices} devices, {:.0} bytes per device; the view's own estimate {:.1} MB, {:.0} bytes per device",
            view_mb * 1024.0 * 1024.0 / devices as f64,
            estimate / (1024.0 * 1024.0),
            estimate / devices as f64
        );
        for (i, b) in a.batches.iter().enumerate() {
            let with = median(runs.iter().map(|r| r.per_batch[i].1).collect());
            let without = median(peers.iter().map(|r| r.per_batch[i].1).collect());
            println!(
                "    batch {b:>5}: {with:.0} vs {without:.0} readings/s: {:.1}% of the peer",
                100.0 * with / without
            );
        }
    }
    Ok(())
}

/// One run of the peer (open enrollment, empty view), printed.
async fn peer_run(open: &IngestArgs, bin: &PathBuf, run: usize) -> anyhow::Result<RunFigures> {
    let f = one_run(open, bin, run).await?;
    println!(
        "run {} peer (open enrollment, empty view): RSS at first 202 {:.1} MB, {}",
        run + 1,
        f.rss_start_mb,
        f.per_batch
            .iter()
            .map(|(b, rps, _, _)| format!("batch {b}: {rps:.0} readings/s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(f)
}

/// A running ingest child and where it listens.
struct Child {
    process: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    start_to_first_202_ms: f64,
    /// RSS right after the first 202 (with `--registered`, the view included).
    rss_start_mb: f64,
    /// The view's own memory as ingest estimates it (`tributary_registry_view_bytes`), once it holds every device.
    view_bytes: f64,
}

/// The bench's fleet key, and a device's `Authorization` header under it.
const FLEET_KEY: &str = "bench-fleet-key";

fn authorization(fleet: &FleetKey, device: &str) -> String {
    format!(
        "SharedAccessSignature {}",
        fleet.device_key(device).token(device, now_unix() + 3600)
    )
}

/// Publish `--registered` devices to a registry topic of this ingest's own;
/// the environment that makes ingest follow it in `registered` enrollment.
async fn register(a: &IngestArgs, topic: &str) -> anyhow::Result<Vec<(String, String)>> {
    use tributary_shared::eventlog::EventLog;
    use tributary_shared::registry::view::DeviceChange;
    let devices = format!("{topic}.devices");
    let log = tributary_shared::eventlog::kafka::KafkaLog::connect(
        &tributary_shared::config::KafkaArgs {
            brokers: a.brokers.clone(),
            ..Default::default()
        },
        "bench-registry",
    )?;
    log.ensure_compacted_topic(&devices, 1).await?;
    let ids = (0..a.registered)
        .map(|i| format!("bench-{i}"))
        .chain((0..a.fleet).map(|i| format!("fleet-{i}")));
    let records: Vec<_> = ids
        .map(|id| {
            DeviceChange {
                id,
                status: tributary_shared::registry::DeviceStatus::Active,
                key_version: 0,
                revision: 1,
                group: "bench".into(),
            }
            .to_record()
        })
        .collect();
    let publisher = log.publisher();
    for chunk in records.chunks(5_000) {
        for d in publisher.publish(&devices, chunk.to_vec()).await {
            d.context("registering the bench's devices")?;
        }
    }
    Ok(vec![
        ("TRIBUTARY_DEVICES_TOPIC".into(), devices),
        ("TRIBUTARY_ENROLLMENT".into(), "registered".into()),
    ])
}

/// Start the ingest binary on a free port and wait for its first 202.
async fn start_ingest(a: &IngestArgs, bin: &PathBuf, topic: &str) -> anyhow::Result<Child> {
    let port = free_port()?;
    let mut extra = a
        .ingest_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--ingest-env {kv}: not KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.registered > 0 {
        anyhow::ensure!(
            a.registered >= a.concurrency,
            "--registered must cover the {} connections' devices",
            a.concurrency
        );
        extra.extend(register(a, topic).await?);
    }
    let started = Instant::now();
    let process = tokio::process::Command::new(bin)
        .env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("TRIBUTARY_KAFKA_BROKERS", &a.brokers)
        .env("TRIBUTARY_RAW_TOPIC", topic)
        .env("TRIBUTARY_FLEET_KEY", FLEET_KEY)
        .env("TRIBUTARY_DEVICE_RATE", "1000000000")
        .env("TRIBUTARY_DEVICE_BURST", "1000000000")
        .env("RUST_LOG", "warn")
        .envs(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = process.id().context("child pid")?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/telemetry");
    let auth = authorization(&FleetKey::new(FLEET_KEY), "bench-0");
    // Start-to-ready: the first reading acknowledged by the broker.
    let first = serde_json::to_vec(&reading(chrono::Utc::now().timestamp_millis(), 0))?;
    let start_to_first_202_ms = loop {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("ingest did not answer 202 within 30 s");
        }
        let r = client
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(first.clone())
            .send()
            .await;
        if matches!(&r, Ok(resp) if resp.status().as_u16() == 202) {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let rss_start_mb = rss_now_mb(pid);
    let view_bytes = if a.registered > 0 {
        view_bytes(&client, port, a.registered + a.fleet).await?
    } else {
        0.0
    };
    Ok(Child {
        process,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        start_to_first_202_ms,
        rss_start_mb,
        view_bytes,
    })
}

/// `tributary_registry_view_bytes` of the ingest on `port` once its view
/// holds `devices` (its gauges are set every second).
async fn view_bytes(client: &reqwest::Client, port: u16, devices: usize) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        };
        if let (Some(held), Some(bytes)) = (
            sample("tributary_registry_view_devices"),
            sample("tributary_registry_view_bytes"),
        ) && held >= devices as f64
        {
            return Ok(bytes);
        }
        if Instant::now() > deadline {
            bail!("ingest's view did not report {devices} devices within 10 s of its first 202");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU seconds so far of ingest, the broker (when known) and this process.
fn cpu_now(ingest: u32, broker: Option<u32>) -> (f64, f64, f64) {
    (
        cpu_seconds(ingest),
        broker.map_or(f64::NAN, cpu_seconds),
        cpu_seconds(std::process::id()),
    )
}

/// What one batch size's load gave, whichever client drove it.
struct Load {
    /// Requests answered 2xx.
    accepted: u64,
    /// Requests answered with another status.
    refused: u64,
    /// Broken connections and malformed answers.
    errors: u64,
    first_error: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    secs: f64,
    /// CPU seconds of ingest, the broker and the load generator during the load.
    cpu: (f64, f64, f64),
}

async fn one_run(a: &IngestArgs, bin: &PathBuf, run: usize) -> anyhow::Result<RunFigures> {
    let stamp = now_unix();
    let topic = format!("bench.raw.{stamp}.{run}");
    let mut child = start_ingest(a, bin, &topic).await?;
    let fleet = FleetKey::new(FLEET_KEY);

    let mut per_batch = Vec::new();
    let mut cpu = Vec::new();
    for &batch in &a.batches {
        let now = chrono::Utc::now().timestamp_millis();
        // Per connection (one device each), a few distinct bodies, built before the clock starts.
        let devices: Vec<(String, Vec<Vec<u8>>)> = (0..a.concurrency)
            .map(|w| {
                let bodies = (0..8)
                    .map(|k| {
                        serde_json::to_vec(
                            &(0..batch)
                                .map(|i| reading(now - (k * batch + i) as i64, i))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect::<Result<_, _>>()?;
                Ok((authorization(&fleet, &format!("bench-{w}")), bodies))
            })
            .collect::<anyhow::Result<_>>()?;
        let l = match a.load {
            LoadTool::Own => own_load(a, &child, devices).await?,
            LoadTool::Wrk => wrk_load(a, &child, devices).await?,
        };
        if l.errors > 0 || l.refused > 0 {
            println!(
                "  batch {batch}: {} answers not 2xx, {} connection errors (first: {})",
                l.refused,
                l.errors,
                l.first_error.as_deref().unwrap_or("none")
            );
        }
        let n = (l.accepted * batch as u64) as f64;
        let per = |secs: f64| if n > 0.0 { secs * 1e6 / n } else { f64::NAN };
        cpu.push(CpuPerReading {
            ingest_us: per(l.cpu.0),
            broker_us: per(l.cpu.1),
            load_us: per(l.cpu.2),
        });
        per_batch.push((batch, n / l.secs, l.p50_ms, l.p99_ms));
    }
    let rss = rss_peak_mb(child.pid);
    let _ = child.process.start_kill();
    let _ = child.process.wait().await;

    let fleet_figures = if a.fleet > 0 {
        Some(fleet_run(a, bin, &format!("{topic}.fleet")).await?)
    } else {
        None
    };

    let me = std::process::id();
    let (b0, p0) = (a.broker_pid.map_or(f64::NAN, cpu_seconds), cpu_seconds(me));
    let baseline_per_s = baseline(
        &a.brokers,
        &format!("bench.baseline.{stamp}.{run}"),
        a.baseline_records,
        a.concurrency,
    )
    .await?;
    let n = a.baseline_records as f64;
    let baseline_cpu = (
        (a.broker_pid.map_or(f64::NAN, cpu_seconds) - b0) * 1e6 / n,
        (cpu_seconds(me) - p0) * 1e6 / n,
    );
    Ok(RunFigures {
        start_to_first_202_ms: child.start_to_first_202_ms,
        rss_start_mb: child.rss_start_mb,
        view_bytes: child.view_bytes,
        per_batch,
        cpu,
        baseline_cpu,
        rss_peak_mb: rss,
        baseline_per_s,
        fleet: fleet_figures,
    })
}

/// One batch size driven by the bench's own client, one device per connection.
async fn own_load(a: &IngestArgs, child: &Child, devices: Vec<(String, Vec<Vec<u8>>)>) -> anyhow::Result<Load> {
    let addr = child.addr;
    let plan = load::Plan {
        addr,
        requests: devices
            .iter()
            .map(|(auth, bodies)| {
                bodies
                    .iter()
                    .map(|b| load::post(addr, PATH, auth, b, a.connection))
                    .collect()
            })
            .collect(),
        connection: a.connection,
        interval: None,
        duration: Duration::from_secs(a.seconds),
    };
    let (o, marks) = drive_marked(plan, child.pid, a.broker_pid).await?;
    // CPU is counted from the moment every connection is open.
    let c0 = marks.last().map_or((0.0, 0.0, 0.0), |m| m.2);
    let c1 = cpu_now(child.pid, a.broker_pid);
    Ok(Load {
        accepted: o.accepted,
        refused: o.refused,
        errors: o.errors,
        first_error: o.first_error,
        p50_ms: o.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: o.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        secs: o.elapsed.as_secs_f64(),
        cpu: (c1.0 - c0.0, c1.1 - c0.1, c1.2 - c0.2),
    })
}

/// Drive `plan` with the bench's own client, marking (connections open,
/// ingest's RSS, CPU now) after each half of the devices connected.
async fn drive_marked(
    plan: load::Plan,
    pid: u32,
    broker: Option<u32>,
) -> anyhow::Result<(load::Outcome, Vec<(usize, f64, (f64, f64, f64))>)> {
    let marks = Arc::new(Mutex::new(Vec::new()));
    let mark = marks.clone();
    let o = tokio::task::spawn_blocking(move || {
        load::drive(plan, move |open| {
            if let Ok(mut m) = mark.lock() {
                m.push((open, rss_now_mb(pid), cpu_now(pid, broker)));
            }
        })
    })
    .await??;
    let marks = marks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    Ok((o, marks))
}

/// One batch size driven by wrk with the same devices' requests.
async fn wrk_load(a: &IngestArgs, child: &Child, devices: Vec<(String, Vec<Vec<u8>>)>) -> anyhow::Result<Load> {
    let requests: Vec<(String, Vec<u8>)> = devices
        .into_iter()
        .flat_map(|(auth, bodies)| bodies.into_iter().map(move |b| (auth.clone(), b)))
        .collect();
    let script = wrk::script(PATH, &requests, a.connection)?;
    let url = format!("http://{}{PATH}", child.addr);
    let (pid, broker, conns, secs) = (child.pid, a.broker_pid, a.concurrency, Duration::from_secs(a.seconds));
    let c0 = cpu_now(pid, broker);
    let o = tokio::task::spawn_blocking(move || wrk::drive(&url, conns, secs, &script)).await??;
    let c1 = cpu_now(pid, broker);
    Ok(Load {
        accepted: o.requests.saturating_sub(o.non_2xx),
        refused: o.non_2xx,
        errors: o.errors,
        first_error: None,
        p50_ms: o.p50_ms,
        p99_ms: o.p99_ms,
        secs: o.elapsed_s,
        // wrk is a child, not this process: its own CPU time, from bash.
        cpu: (c1.0 - c0.0, c1.1 - c0.1, o.cpu_s),
    })
}

/// Many devices at once: a fresh ingest, `--fleet` keep-alive connections
/// (one device each) sending a single reading every `--fleet-interval-ms`,
/// and ingest's memory before the connections opened and with all open.
async fn fleet_run(a: &IngestArgs, bin: &PathBuf, topic: &str) -> anyhow::Result<FleetFigures> {
    let mut child = start_ingest(a, bin, topic).await?;
    let fleet = FleetKey::new(FLEET_KEY);
    let now = chrono::Utc::now().timestamp_millis();
    let addr = child.addr;
    let requests: Vec<Vec<Vec<u8>>> = (0..a.fleet)
        .map(|w| {
            let auth = authorization(&fleet, &format!("fleet-{w}"));
            (0..2)
                .map(|k| {
                    Ok(load::post(
                        addr,
                        PATH,
                        &auth,
                        &serde_json::to_vec(&reading(now - k, w))?,
                        load::Connection::KeepAlive,
                    ))
                })
                .collect::<anyhow::Result<_>>()
        })
        .collect::<anyhow::Result<_>>()?;
    let rss_before_mb = rss_now_mb(child.pid);
    let plan = load::Plan {
        addr,
        requests,
        connection: load::Connection::KeepAlive,
        interval: Some(Duration::from_millis(a.fleet_interval_ms)),
        duration: Duration::from_secs(a.seconds),
    };
    let (o, marks) = drive_marked(plan, child.pid, a.broker_pid).await?;
    let c1 = cpu_now(child.pid, a.broker_pid);
    let [(half, rss_half_mb, _), (open, rss_open_mb, c0)] = marks[..] else {
        bail!("the load generator reported {} connection marks, not 2", marks.len());
    };
    let _ = child.process.start_kill();
    let _ = child.process.wait().await;
    let n = o.accepted as f64;
    Ok(FleetFigures {
        offered_per_s: a.fleet as f64 * 1000.0 / a.fleet_interval_ms as f64,
        // Over the schedule, not until the slowest answer came: every request
        // counted was due within `--seconds` (one slow answer at the end
        // would otherwise read as a lower rate).
        accepted_per_s: n / a.seconds as f64,
        p50_ms: o.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: o.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        refused: o.refused,
        errors: o.errors,
        first_error: o.first_error,
        rss_before_mb,
        rss_open_mb,
        kb_per_connection: (rss_open_mb - rss_before_mb) * 1024.0 / open.max(1) as f64,
        // The second half's cost alone: what one more connection adds, without
        // the memory the warm-up's concurrent requests left behind.
        kb_per_added_connection: (rss_open_mb - rss_half_mb) * 1024.0 / open.saturating_sub(half).max(1) as f64,
        ingest_us: if n > 0.0 { (c1.0 - c0.0) * 1e6 / n } else { f64::NAN },
    })
}

/// librdkafka alone: the same serialized readings, keys and producer settings
/// as ingest, produced as fast as the producer takes them.
async fn baseline(brokers: &str, topic: &str, n: usize, devices: usize) -> anyhow::Result<f64> {
    let producer = bench_producer(brokers)?;
    // The topic must exist before producing, as ingest's does (tansu does not auto-create).
    super::common::ensure_topic(brokers, topic, tributary_shared::topics::DEFAULT_PARTITIONS).await?;
    // Same record shape as ingest writes (a serialized Reading).
    let now = chrono::Utc::now();
    let payloads: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let dev = format!("bench-{}", i % devices.max(1));
            let r = tributary_shared::model::parse_reading(
                &reading(now.timestamp_millis() - i as i64, i),
                Some(&dev),
                now,
                &Default::default(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((dev, serde_json::to_vec(&r)?))
        })
        .collect::<anyhow::Result<_>>()?;
    // Warm up the connection and metadata.
    let _ = producer
        .send(
            FutureRecord::to(topic).key(&payloads[0].0).payload(&payloads[0].1),
            Duration::from_secs(10),
        )
        .await;
    let t0 = Instant::now();
    let mut futs = Vec::with_capacity(10_000);
    let mut done = 0usize;
    for i in 0..n {
        let (k, v) = &payloads[i % payloads.len()];
        loop {
            match producer.send_result(FutureRecord::to(topic).key(k).payload(v)) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                Err((_, _)) => {
                    // Queue full: wait for what is in flight, as a real producer would.
                    if futs.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for f in futs.drain(..) {
                        f.await?.map_err(|(e, _)| e)?;
                        done += 1;
                    }
                }
            }
        }
        if futs.len() >= 10_000 {
            for f in futs.drain(..) {
                f.await?.map_err(|(e, _)| e)?;
                done += 1;
            }
        }
    }
    for f in futs.drain(..) {
        f.await?.map_err(|(e, _)| e)?;
        done += 1;
    }
    Ok(done as f64 / t0.elapsed().as_secs_f64())
}
