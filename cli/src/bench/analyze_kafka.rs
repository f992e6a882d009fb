//! `tributary bench analyze-kafka`: the analyze function end to end through a
//! Kafka-protocol broker, per core.
//!
//! Each run preloads `telemetry.raw`-shaped records (serialized readings, keyed
//! by device, as ingest writes them) into fresh topics, then starts the real
//! `tributary-analyze` binary pinned to one CPU (`taskset -c`), and times it
//! from process start until its `tributary_analyze_readings_total` counter
//! has every reading (decoded, applied to the 10 s and 60 s windows and every
//! model, aggregates and alerts produced with acks=all, offsets committed
//! between batches). The peer figure from the same run: a bare librdkafka
//! consumer, pinned to the same CPU, reading the same records from the same
//! broker without doing anything with them (the ceiling analyze is compared
//! with). RSS is the analyze process's after it has seen every reading.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::common::{bare_consumer, counter, free_port, median, pinned_function, preload, rss_peak_mb};

/// Arguments of `bench analyze-kafka`.
#[derive(clap::Args)]
pub struct AnalyzeKafkaArgs {
    /// Broker to benchmark against (scripts/bench starts one).
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Readings per run (4 metrics each).
    #[arg(long, default_value_t = 200_000)]
    readings: usize,
    /// Active (device, metric) series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The CPU analyze (and the baseline consumer) are pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The analyze binary (default: next to this one).
    #[arg(long)]
    analyze_bin: Option<PathBuf>,
    /// Internal: consume TOPIC to its end and print the rate (the baseline's child process).
    #[arg(long, hide = true)]
    consume_only: Option<String>,
}

/// Run the benchmark (or, with `--consume-only`, the pinned baseline consumer).
pub async fn run(a: AnalyzeKafkaArgs) -> anyhow::Result<()> {
    if let Some(topic) = &a.consume_only {
        let (n, secs) = consume_all(&a.brokers, topic, a.readings)?;
        println!("CONSUMED {n} {secs}");
        return Ok(());
    }
    let bin = match &a.analyze_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("tributary-analyze"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p tributary-analyze`",
        bin.display()
    );
    println!(
        "bench analyze-kafka: {} readings (4 metrics each) over {} series, {} partitions, windows 10 s and 60 s, all models; analyze pinned to CPU {}; {} runs",
        a.readings, a.series, a.partitions, a.cpu, a.runs
    );
    let (mut rates, mut baselines, mut rss, mut ready) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let stamp = format!("{}-{run}", std::process::id());
        let raw = format!("bench.raw.{stamp}");
        preload(&a.brokers, &raw, a.readings, a.series, a.partitions).await?;
        let f = one_run(&a, &bin, &raw, &stamp).await?;
        let base = bare_consumer(&a.brokers, &raw, a.readings, a.cpu).await?;
        println!(
            "run {}: analyze {:.0} readings/s ({:.0} values/s, start to ready {:.0} ms, RSS {:.1} MB, {} aggregates) · bare librdkafka consumer {:.0} records/s ({:.0}%)",
            run + 1,
            f.rate,
            4.0 * f.rate,
            f.ready_ms,
            f.rss_mb,
            f.aggregates,
            base,
            100.0 * f.rate / base
        );
        rates.push(f.rate);
        baselines.push(base);
        rss.push(f.rss_mb);
        ready.push(f.ready_ms);
    }
    let (r, b) = (median(rates), median(baselines));
    println!(
        "\nmedians: analyze through Kafka {r:.0} readings/s per core ({:.0} metric values/s); bare librdkafka consumer {b:.0} records/s on the same core ({:.0}%); RSS {:.1} MB; start to ready {:.0} ms",
        4.0 * r,
        100.0 * r / b,
        median(rss),
        median(ready)
    );
    Ok(())
}

struct Figures {
    rate: f64,
    ready_ms: f64,
    rss_mb: f64,
    aggregates: u64,
}

async fn one_run(a: &AnalyzeKafkaArgs, bin: &std::path::Path, raw: &str, stamp: &str) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let t0 = Instant::now();
    let mut child = pinned_function(
        bin,
        a.cpu,
        port,
        &a.brokers,
        a.partitions,
        raw,
        &format!("analyze-{stamp}"),
    )
    .spawn()
    .context("starting taskset (util-linux) with tributary-analyze")?;
    let pid = child.id().context("analyze pid")?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut ready_ms = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("tributary-analyze exited early: {status}");
        }
        if Instant::now() > deadline {
            bail!("analyze did not see every reading within 10 minutes");
        }
        if ready_ms.is_none()
            && let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status().is_success()
        {
            ready_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if let Ok(r) = client.get(&url).send().await {
            let text = r.text().await.unwrap_or_default();
            if counter(&text, "tributary_analyze_readings_total").is_some_and(|n| n as usize >= a.readings) {
                let secs = t0.elapsed().as_secs_f64();
                let rss_mb = rss_peak_mb(pid);
                let aggregates = counter(&text, "tributary_analyze_aggregates_total").unwrap_or(0);
                let _ = child.kill().await;
                return Ok(Figures {
                    rate: a.readings as f64 / secs,
                    ready_ms: ready_ms.unwrap_or(f64::NAN),
                    rss_mb,
                    aggregates,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Consume `topic` from the beginning until `n` records were read (timed from
/// the consumer's creation, as analyze's run is timed from its start).
fn consume_all(brokers: &str, topic: &str, n: usize) -> anyhow::Result<(usize, f64)> {
    let t0 = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-baseline-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the baseline consumer read {seen} of {n} records in 10 minutes"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Touch the payload so it is really read.
                std::hint::black_box(rdkafka::Message::payload(&m).map(<[u8]>::len));
                seen += 1;
            }
            Some(Err(e)) => bail!("baseline consumer: {e}"),
            None => {}
        }
    }
    Ok((seen, t0.elapsed().as_secs_f64()))
}
