//! What several benchmarks share: medians, free ports, the CPU time and
//! memory of a process, a producer with ingest's settings, analyze's input
//! and a topic preloaded with it, metrics read off an exposition.

use rdkafka::ClientConfig;
use std::time::Duration;

use anyhow::Context;

use rdkafka::producer::{FutureProducer, FutureRecord};

/// Median (upper middle for even counts); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// CPU time (user + system) process `pid` has used so far, in seconds; 0 when unknown.
pub fn cpu_seconds(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/PID/stat, after the parenthesised command name.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        let rest = s.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    });
    // USER_HZ is 100 on every Linux this runs on.
    ticks.map_or(0.0, |t| t as f64 / 100.0)
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Peak resident memory of process `pid` (VmHWM), in MB.
pub fn rss_peak_mb(pid: u32) -> f64 {
    status_mb(&pid.to_string(), "VmHWM:")
}

/// Resident memory of process `pid` now (VmRSS), in MB.
pub fn rss_now_mb(pid: u32) -> f64 {
    status_mb(&pid.to_string(), "VmRSS:")
}

/// Resident memory of this process now, in MB.
pub fn rss_self_mb() -> f64 {
    status_mb("self", "VmRSS:")
}

/// A memory field of `/proc/<process>/status` in MB; NaN when unknown.
fn status_mb(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A producer with the settings of the pipeline's producers (idempotent,
/// acks=all, lz4) and a 5 ms linger: the bare producer's best throughput,
/// the ceiling `bench ingest` compares with (ingest itself lingers 0 ms).
pub fn bench_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000")
        .create()?)
}

/// Readings `range` of analyze's input: `series` series (devices with 4
/// metrics each), one second apart per device; the same readings at the same
/// positions whatever the range, so a long run can be built in bounded chunks.
pub fn analyze_input_range(range: std::ops::Range<usize>, series: usize) -> Vec<tributary_shared::model::Reading> {
    use chrono::TimeZone;
    let devices = (series / 4).max(1);
    let base = 1_795_000_000_000i64;
    range
        .map(|i| {
            let d = i % devices;
            let step = (i / devices) as i64;
            let t = chrono::Utc
                .timestamp_millis_opt(base + step * 1000 + d as i64 % 1000)
                .single()
                .unwrap_or_default();
            let x = ((i * 7919) % 1000) as f64 / 10.0;
            tributary_shared::model::Reading {
                schema_version: 1,
                id: format!("r{i}"),
                device_id: format!("dev-{d}"),
                event_time: t,
                received_time: t,
                metrics: [("a", x), ("b", x * 0.5), ("c", 100.0 - x), ("d", x.sqrt())]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                tags: Default::default(),
                location: None,
            }
        })
        .collect()
}

/// Create `topic` with `partitions` partitions on `brokers` if it is missing
/// (tansu does not create topics on first use).
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = tributary_shared::eventlog::kafka::KafkaLog::connect(
        &tributary_shared::config::KafkaArgs {
            brokers: brokers.to_owned(),
            ..Default::default()
        },
        "tributary-bench",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tributary_shared::eventlog::EventLog::ensure_topics(&admin, &[topic.to_owned()], partitions)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// SIGTERM to `child` (process `pid`), then its exit within `within`, which must be clean.
pub async fn terminate(child: &mut tokio::process::Child, pid: u32, within: Duration) -> anyhow::Result<()> {
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    anyhow::ensure!(term.success(), "kill -TERM {pid} failed");
    let status = tokio::time::timeout(within, child.wait())
        .await
        .with_context(|| format!("no exit within {within:?} of SIGTERM"))??;
    anyhow::ensure!(status.success(), "the exit after SIGTERM was {status}");
    Ok(())
}

/// Serialized readings for `series` series (devices of 4 metrics), one second
/// apart per device ([`analyze_input_range`]), produced keyed by device and
/// flushed into a topic of `partitions` partitions; returns the payload bytes.
pub async fn preload(brokers: &str, topic: &str, n: usize, series: usize, partitions: i32) -> anyhow::Result<u64> {
    ensure_topic(brokers, topic, partitions).await?;
    let producer = bench_producer(brokers)?;
    let mut futs = Vec::with_capacity(10_000);
    let mut bytes = 0u64;
    // In chunks: a million readings as structs would be gigabytes.
    for start in (0..n).step_by(100_000) {
        for r in &analyze_input_range(start..n.min(start + 100_000), series) {
            let payload = serde_json::to_vec(r)?;
            bytes += payload.len() as u64;
            loop {
                match producer.send_result(FutureRecord::to(topic).key(&r.device_id).payload(&payload)) {
                    Ok(f) => {
                        futs.push(f);
                        break;
                    }
                    Err(_) => {
                        for f in futs.drain(..) {
                            f.await?.map_err(|(e, _)| e)?;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            if futs.len() >= 10_000 {
                for f in futs.drain(..) {
                    f.await?.map_err(|(e, _)| e)?;
                }
            }
        }
    }
    for f in futs.drain(..) {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(bytes)
}

/// The value of metric `name` (with its labels, as exposed) in a Prometheus
/// text exposition.
pub fn counter(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Records/s of a bare librdkafka consumer reading `topic` (`n` records) from
/// the start, in a child process pinned to `cpu`: the Kafka ceiling of a
/// function pinned there (`bench analyze-kafka --consume-only`).
pub async fn bare_consumer(brokers: &str, topic: &str, n: usize, cpu: usize) -> anyhow::Result<f64> {
    let n = n.to_string();
    let args = [
        "bench",
        "analyze-kafka",
        "--brokers",
        brokers,
        "--readings",
        &n,
        "--consume-only",
        topic,
    ];
    match pinned_figures(cpu, &args, "CONSUMED").await?[..] {
        [count, secs] => Ok(count / secs),
        _ => anyhow::bail!("the baseline consumer printed no count and seconds"),
    }
}

/// This binary with `args`, pinned to `cpu`: the numbers on the line it
/// prints after `tag` (how a benchmark's peer in a child process reports).
pub async fn pinned_figures(cpu: usize, args: &[&str], tag: &str) -> anyhow::Result<Vec<f64>> {
    let out = tokio::process::Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(std::env::current_exe()?)
        .args(args)
        .output()
        .await
        .with_context(|| format!("starting taskset (util-linux) with {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag).filter(|rest| rest.starts_with(' ')))
        .with_context(|| format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))?;
    line.split_whitespace()
        .map(|v| {
            v.parse::<f64>()
                .with_context(|| format!("{tag} {line}: {v} is not a number"))
        })
        .collect()
}

/// A function binary `bin` pinned to `cpu`, serving its ops endpoints on
/// `port`, reading `raw` on `brokers` (topics of `partitions` partitions) in
/// group `bench-<tag>`, its other topics `bench.<tag>.*`, logging warnings
/// only; add the function's own settings, then spawn.
pub fn pinned_function(
    bin: &std::path::Path,
    cpu: usize,
    port: u16,
    brokers: &str,
    partitions: i32,
    raw: &str,
    tag: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg(bin)
        .env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("TRIBUTARY_KAFKA_BROKERS", brokers)
        .env("TRIBUTARY_KAFKA_PARTITIONS", partitions.to_string())
        .env("TRIBUTARY_RAW_TOPIC", raw)
        .env("TRIBUTARY_AGGREGATES_TOPIC", format!("bench.{tag}.aggregates"))
        .env("TRIBUTARY_ALERTS_TOPIC", format!("bench.{tag}.alerts"))
        .env("TRIBUTARY_DEADLETTER_TOPIC", format!("bench.{tag}.deadletter"))
        .env("TRIBUTARY_CONSUMER_GROUP", format!("bench-{tag}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}
