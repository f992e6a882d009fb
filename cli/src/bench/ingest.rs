//! `bench ingest`: starts the real `tributary-ingest` binary as a child
//! process against a broker, times process start to the first 202, drives it
//! over loopback HTTP at batch sizes 1/100/1000 (readings/s, p50/p99
//! latency), reads its RSS and CPU time, and then produces the same messages
//! with librdkafka alone to the same broker (the ceiling ingest is compared with).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use tributary_shared::auth::{FleetKey, now_unix};

use super::common::{bench_producer, cpu_seconds, free_port, median, rss_peak_mb};

/// Arguments of `bench ingest`.
#[derive(clap::Args)]
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
    per_batch: Vec<(usize, f64, f64, f64)>,
    cpu: Vec<CpuPerReading>,
    /// CPU µs per record of the broker and the producer in the baseline.
    baseline_cpu: (f64, f64),
    rss_peak_mb: f64,
    baseline_per_s: f64,
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
    println!(
        "bench ingest: broker {}, batches {:?}, {} runs x {} s, {} connections, ingest {}",
        a.brokers,
        a.batches,
        a.runs,
        a.seconds,
        a.concurrency,
        bin.display()
    );
    let mut runs = Vec::new();
    for run in 0..a.runs {
        let f = one_run(&a, &bin, run).await?;
        println!(
            "run {}: start->first 202 {:.1} ms, peak RSS {:.1} MB, librdkafka alone {:.0} msgs/s (CPU per record: producer {:.2} us, broker {:.2} us)",
            run + 1,
            f.start_to_first_202_ms,
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
        runs.push(f);
    }
    println!("\nmedians over {} runs:", runs.len());
    println!(
        "  start -> first 202:      {:.1} ms",
        median(runs.iter().map(|r| r.start_to_first_202_ms).collect())
    );
    println!(
        "  peak RSS of ingest:      {:.1} MB",
        median(runs.iter().map(|r| r.rss_peak_mb).collect())
    );
    let base = median(runs.iter().map(|r| r.baseline_per_s).collect());
    println!("  librdkafka alone:        {base:.0} msgs/s (same broker, same messages, same producer settings)");
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
    Ok(())
}

async fn one_run(a: &IngestArgs, bin: &PathBuf, run: usize) -> anyhow::Result<RunFigures> {
    let port = free_port()?;
    let stamp = now_unix();
    let topic = format!("bench.raw.{stamp}.{run}");
    let fleet_key = "bench-fleet-key";
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("TRIBUTARY_KAFKA_BROKERS", &a.brokers)
        .env("TRIBUTARY_RAW_TOPIC", &topic)
        .env("TRIBUTARY_FLEET_KEY", fleet_key)
        .env("TRIBUTARY_DEVICE_RATE", "1000000000")
        .env("TRIBUTARY_DEVICE_BURST", "1000000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("child pid")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let url = format!("http://127.0.0.1:{port}/v1/telemetry");
    let fleet = FleetKey::new(fleet_key);
    let auth = |d: &str| {
        format!(
            "SharedAccessSignature {}",
            fleet.device_key(d).token(d, now_unix() + 3600)
        )
    };

    // Start-to-ready: the first reading acknowledged by the broker.
    let first = serde_json::to_vec(&reading(chrono::Utc::now().timestamp_millis(), 0))?;
    let start_to_first_202_ms = loop {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("ingest did not answer 202 within 30 s");
        }
        let r = client
            .post(&url)
            .header("authorization", auth("bench-0"))
            .header("content-type", "application/json")
            .body(first.clone())
            .send()
            .await;
        if matches!(&r, Ok(resp) if resp.status().as_u16() == 202) {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };

    let mut per_batch = Vec::new();
    let mut cpu = Vec::new();
    let me = std::process::id();
    for &batch in &a.batches {
        let accepted = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(a.seconds);
        let mut tasks = Vec::new();
        for w in 0..a.concurrency {
            let device = format!("bench-{w}");
            let header = auth(&device);
            let now = chrono::Utc::now().timestamp_millis();
            // A few distinct bodies per connection, built before the clock starts.
            let bodies: Vec<Vec<u8>> = (0..8)
                .map(|k| {
                    serde_json::to_vec(
                        &(0..batch)
                            .map(|i| reading(now - (k * batch + i) as i64, i))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect::<Result<_, _>>()?;
            let (client, url, accepted) = (client.clone(), url.clone(), accepted.clone());
            tasks.push(tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut k = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .header("authorization", &header)
                        .header("content-type", "application/json")
                        .body(bodies[k % bodies.len()].clone())
                        .send()
                        .await?;
                    let ok = resp.status().as_u16() == 202;
                    let _ = resp.bytes().await?;
                    if ok {
                        hist.record(t.elapsed().as_micros().max(1) as u64)?;
                        accepted.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    k += 1;
                }
                anyhow::Ok(hist)
            }));
        }
        let t0 = Instant::now();
        let cpu0 = (cpu_seconds(pid), a.broker_pid.map_or(0.0, cpu_seconds), cpu_seconds(me));
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
        for t in tasks {
            hist.add(t.await??).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = accepted.load(Ordering::Relaxed) as f64;
        let per = |before: f64, after: f64| if n > 0.0 { (after - before) * 1e6 / n } else { f64::NAN };
        cpu.push(CpuPerReading {
            ingest_us: per(cpu0.0, cpu_seconds(pid)),
            broker_us: if a.broker_pid.is_some() {
                per(cpu0.1, a.broker_pid.map_or(0.0, cpu_seconds))
            } else {
                f64::NAN
            },
            load_us: per(cpu0.2, cpu_seconds(me)),
        });
        let rps = n / secs;
        per_batch.push((
            batch,
            rps,
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
        ));
    }
    let rss = rss_peak_mb(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;

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
        start_to_first_202_ms,
        per_batch,
        cpu,
        baseline_cpu,
        rss_peak_mb: rss,
        baseline_per_s,
    })
}

/// librdkafka alone: the same serialized readings, keys and producer settings
/// as ingest, produced as fast as the producer takes them.
async fn baseline(brokers: &str, topic: &str, n: usize, devices: usize) -> anyhow::Result<f64> {
    let producer = bench_producer(brokers)?;
    // The topic must exist before producing, as ingest's does (tansu does not auto-create).
    let admin = tributary_shared::eventlog::kafka::KafkaLog::connect(
        &tributary_shared::config::KafkaArgs {
            brokers: brokers.to_owned(),
            ..Default::default()
        },
        "tributary-bench",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tributary_shared::eventlog::EventLog::ensure_topics(
        &admin,
        &[topic.to_owned()],
        tributary_shared::topics::DEFAULT_PARTITIONS,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
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
