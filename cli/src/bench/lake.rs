//! `tributary bench lake`: the lake function end to end through a
//! Kafka-protocol broker into a local Delta table, per core.
//!
//! Each run has two phases, both with the real `tributary-lake` binary pinned
//! to one CPU (`taskset -c`) and a fresh table directory:
//! - **throughput**: `telemetry.raw`-shaped records (serialized readings,
//!   keyed by device, as ingest writes them) are preloaded into a fresh topic;
//!   the lake runs with its production roll settings, gets SIGTERM once every
//!   record is committed or buffered (so the tail is committed by the clean
//!   stop, as in production), and is timed from its start to its exit. The
//!   table is then read back: it must hold every reading exactly once. The
//!   peer figure from the same run: the same readings, decoded and built into
//!   the same Arrow batches, written to one Parquet file with the same library
//!   and settings (zstd 3), in a child process pinned to the same CPU; it
//!   reads no broker and writes no log. A second peer is the Kafka ceiling:
//!   a bare librdkafka consumer reading the same topic on the same core;
//! - **freshness**: readings produced at a steady rate while the lake runs
//!   with `--roll-secs`; each reading's delay runs from its producer
//!   acknowledgement (what a device's 2xx means) to the moment the table's log
//!   first shows a commit holding it (polled every 50 ms), and the files the
//!   table gained are counted per hour.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parquet::arrow::ArrowWriter;
use rdkafka::producer::FutureRecord;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use tokio::process::Child;
use tributary_lake::delta::Table;
use tributary_lake::rows::{PARTITION_COLUMNS, SourcedRow, TableKind};
use tributary_lake::writer::writer_properties;

use super::common::{
    analyze_input_range, bare_consumer, bench_producer, counter, free_port, median, pinned_figures, pinned_function,
    preload, rss_peak_mb, terminate,
};

/// Arguments of `bench lake`.
#[derive(clap::Args)]
pub struct LakeArgs {
    /// Broker to benchmark against (scripts/bench starts one).
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Readings per throughput run (4 metrics each); a million is about
    /// 150 MB of records, more than one 128 MB roll.
    #[arg(long, default_value_t = 1_000_000)]
    readings: usize,
    /// Active (device, metric) series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The CPU the lake (and the direct writer) are pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Readings per second produced in the freshness phase.
    #[arg(long, default_value_t = 2000)]
    rate: usize,
    /// Seconds of the freshness phase.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// The lake's roll age in the freshness phase (production default: 300).
    #[arg(long, default_value_t = 15)]
    roll_secs: u64,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The lake binary (default: next to this one).
    #[arg(long)]
    lake_bin: Option<PathBuf>,
    /// Internal: write the first `--readings` readings to a Parquet file in
    /// DIR directly and print the figures (the peer's child process).
    #[arg(long, hide = true)]
    direct_only: Option<PathBuf>,
}

/// Run the benchmark (or, with `--direct-only`, the pinned peer).
pub async fn run(a: LakeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.direct_only {
        let (secs, bytes) = write_direct(dir, a.readings, a.series)?;
        println!("DIRECT {secs} {bytes}");
        return Ok(());
    }
    let bin = match &a.lake_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("tributary-lake"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p tributary-lake`",
        bin.display()
    );
    println!(
        "bench lake: {} readings (4 metrics each) over {} series, {} partitions, lake pinned to CPU {}; freshness at {} readings/s for {} s with {} s rolls; {} runs",
        a.readings, a.series, a.partitions, a.cpu, a.rate, a.steady_secs, a.roll_secs, a.runs
    );
    let mut figures: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 0..a.runs {
        let stamp = format!("{}-{run}", std::process::id());
        let dir = std::env::temp_dir().join(format!("tributary-bench-lake-{stamp}"));
        let result = one_run(&a, &bin, &stamp, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let f = result?;
        println!(
            "run {}: lake {:.0} readings/s ({:.0}/s after its first row, {:.1} s to it), {:.1} MB/s of records in, {:.1} MB/s of Parquet out, RSS {:.0} MB · direct Parquet {:.0} readings/s, {:.1} MB/s out ({:.0}%) · bare librdkafka consumer {:.0} records/s ({:.0}%) · freshness p50 {:.1} s, p99 {:.1} s, max {:.1} s, {:.0} files/h",
            run + 1,
            f.rate,
            f.sustained,
            f.join_s,
            f.in_mb_s,
            f.out_mb_s,
            f.rss_mb,
            f.direct_rate,
            f.direct_mb_s,
            100.0 * f.rate / f.direct_rate,
            f.consumer_rate,
            100.0 * f.rate / f.consumer_rate,
            f.delay_p50,
            f.delay_p99,
            f.delay_max,
            f.files_per_hour
        );
        for (k, v) in [
            ("rate", f.rate),
            ("sustained", f.sustained),
            ("join", f.join_s),
            ("sustained_share", f.sustained / f.direct_rate),
            ("in", f.in_mb_s),
            ("out", f.out_mb_s),
            ("rss", f.rss_mb),
            ("direct", f.direct_rate),
            ("direct_out", f.direct_mb_s),
            ("share", f.rate / f.direct_rate),
            ("consumer", f.consumer_rate),
            ("consumer_share", f.rate / f.consumer_rate),
            ("p50", f.delay_p50),
            ("p99", f.delay_p99),
            ("max", f.delay_max),
            ("files", f.files_per_hour),
        ] {
            figures.entry(k).or_default().push(v);
        }
    }
    let m = |k: &str| median(figures.get(k).cloned().unwrap_or_default());
    println!(
        "\nmedians: lake {:.0} readings/s per core from its start ({:.0}/s after its first row, which came {:.1} s after the start; {:.1} MB/s in, {:.1} MB/s of Parquet out, RSS {:.0} MB); direct Parquet with the same library {:.0} readings/s ({:.1} MB/s out); lake/direct {:.0}% ({:.0}% after the first row); a bare librdkafka consumer reads the topic at {:.0} records/s on the same core (lake/consumer {:.0}%)",
        m("rate"),
        m("sustained"),
        m("join"),
        m("in"),
        m("out"),
        m("rss"),
        m("direct"),
        m("direct_out"),
        100.0 * m("share"),
        100.0 * m("sustained_share"),
        m("consumer"),
        100.0 * m("consumer_share")
    );
    println!(
        "freshness with {} s rolls at {} readings/s: acknowledged to queryable p50 {:.1} s, p99 {:.1} s, max {:.1} s; {:.0} files/h into the raw table ({} partitions)",
        a.roll_secs,
        a.rate,
        m("p50"),
        m("p99"),
        m("max"),
        m("files"),
        a.partitions
    );
    Ok(())
}

struct Figures {
    /// Readings over the time from the process's start to its exit.
    rate: f64,
    /// Readings over the time from the first row seen to the exit.
    sustained: f64,
    /// From the process's start to its first row: start, group join, first fetch.
    join_s: f64,
    in_mb_s: f64,
    out_mb_s: f64,
    rss_mb: f64,
    direct_rate: f64,
    direct_mb_s: f64,
    /// A bare librdkafka consumer reading the same topic on the same core.
    consumer_rate: f64,
    delay_p50: f64,
    delay_p99: f64,
    delay_max: f64,
    files_per_hour: f64,
}

async fn one_run(a: &LakeArgs, bin: &FsPath, stamp: &str, dir: &FsPath) -> anyhow::Result<Figures> {
    // Throughput.
    let raw = format!("bench.lake.raw.{stamp}");
    let in_bytes = preload(&a.brokers, &raw, a.readings, a.series, a.partitions).await?;
    let table = dir.join("throughput");
    let port = free_port()?;
    let t0 = Instant::now();
    let mut lake = start_lake(a, bin, &raw, &format!("{stamp}-t"), &table, 300, port)?;
    let pid = lake.id().context("lake pid")?;
    let first = wait_until_seen(&mut lake, port, a.readings).await?;
    let rss_mb = rss_peak_mb(pid);
    // SIGTERM: the clean stop commits what is buffered.
    terminate(&mut lake, pid, Duration::from_secs(120)).await?;
    let secs = t0.elapsed().as_secs_f64();
    let join_secs = first.duration_since(t0).as_secs_f64();
    let (rows, out_bytes) = table_state(&table).await?;
    anyhow::ensure!(
        rows == a.readings as u64,
        "the table holds {rows} rows, not the {} readings sent",
        a.readings
    );
    let (direct_secs, direct_bytes) = direct(a, dir).await?;
    let consumer_rate = bare_consumer(&a.brokers, &raw, a.readings, a.cpu).await?;
    // Freshness.
    let fresh_topic = format!("bench.lake.fresh.{stamp}");
    let (p50, p99, max, files_per_hour) = freshness(a, bin, &fresh_topic, stamp, &dir.join("freshness")).await?;
    Ok(Figures {
        rate: a.readings as f64 / secs,
        sustained: a.readings as f64 / (secs - join_secs),
        join_s: join_secs,
        in_mb_s: in_bytes as f64 / 1e6 / secs,
        out_mb_s: out_bytes as f64 / 1e6 / secs,
        rss_mb,
        direct_rate: a.readings as f64 / direct_secs,
        consumer_rate,
        direct_mb_s: direct_bytes as f64 / 1e6 / direct_secs,
        delay_p50: p50,
        delay_p99: p99,
        delay_max: max,
        files_per_hour,
    })
}

/// The lake binary, pinned, reading `raw` into the tables under `table`.
fn start_lake(
    a: &LakeArgs,
    bin: &FsPath,
    raw: &str,
    stamp: &str,
    table: &FsPath,
    roll_secs: u64,
    port: u16,
) -> anyhow::Result<Child> {
    pinned_function(
        bin,
        a.cpu,
        port,
        &a.brokers,
        a.partitions,
        raw,
        &format!("lake-{stamp}"),
    )
    .env("TRIBUTARY_LAKE_URL", table)
    .env("TRIBUTARY_LAKE_ROLL_SECS", roll_secs.to_string())
    .env("TRIBUTARY_LAKE_COMPACT_SECS", "0")
    .spawn()
    .context("starting taskset (util-linux) with tributary-lake")
}

/// Wait until the lake has committed or buffered `n` raw rows; returns when
/// it had its first (the end of its start and group join).
async fn wait_until_seen(lake: &mut Child, port: u16, n: usize) -> anyhow::Result<Instant> {
    let mut first = None;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = lake.try_wait()? {
            bail!("tributary-lake exited early: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the lake did not see every reading within 10 minutes"
        );
        if let Ok(r) = client.get(&url).send().await {
            let text = r.text().await.unwrap_or_default();
            let committed = counter(&text, "tributary_lake_rows_total{table=\"raw\"}").unwrap_or(0);
            // Over both tables; the aggregates topic is empty here.
            let buffered = counter(&text, "tributary_lake_buffered_rows").unwrap_or(0);
            if first.is_none() && committed + buffered > 0 {
                first = Some(Instant::now());
            }
            if (committed + buffered) as usize >= n {
                return Ok(first.unwrap_or_else(Instant::now));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The raw table under `dir` as its log says now: rows and bytes of its data files.
async fn table_state(dir: &FsPath) -> anyhow::Result<(u64, u64)> {
    let table = raw_table(dir).await?;
    Ok(table.files().fold((0, 0), |(r, b), f| (r + f.rows, b + f.size)))
}

/// The raw table under `dir`, its log read.
async fn raw_table(dir: &FsPath) -> anyhow::Result<Table> {
    let (store, root) =
        tributary_lake::store::open(&dir.to_string_lossy()).map_err(|e| anyhow::anyhow!("opening the table: {e}"))?;
    let mut table = Table::new(
        store,
        root.join(TableKind::Raw.dir()),
        TableKind::Raw.table_schema(),
        PARTITION_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
    );
    table.refresh().await.context("reading the table's log")?;
    Ok(table)
}

/// The `txn` appId the lake commits `topic`'s `partition` under (epoch 0).
fn app_id(topic: &str, partition: i32) -> String {
    format!("tributary-lake/{topic}/0/{partition}")
}

/// The peer, in a child process pinned to the lake's CPU: (seconds, bytes out).
async fn direct(a: &LakeArgs, dir: &FsPath) -> anyhow::Result<(f64, u64)> {
    let (n, series, dir) = (a.readings.to_string(), a.series.to_string(), dir.to_string_lossy());
    let args = [
        "bench",
        "lake",
        "--readings",
        &n,
        "--series",
        &series,
        "--direct-only",
        &dir,
    ];
    match pinned_figures(a.cpu, &args, "DIRECT").await?[..] {
        [secs, bytes] => Ok((secs, bytes as u64)),
        _ => bail!("the direct writer printed no seconds and bytes"),
    }
}

/// The same records the lake reads, from their serialized form to one
/// Parquet file in `dir` with the lake's writer settings: (seconds, bytes).
fn write_direct(dir: &FsPath, n: usize, series: usize) -> anyhow::Result<(f64, u64)> {
    const CHUNK: usize = 100_000;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("direct.zstd.parquet");
    // Serialized up front, untimed: the lake gets them from the broker serialized.
    let mut payloads = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        for r in analyze_input_range(start..n.min(start + CHUNK), series) {
            payloads.push(serde_json::to_vec(&r)?);
        }
    }
    let t0 = Instant::now();
    let file = std::fs::File::create(&path)?;
    let mut writer = ArrowWriter::try_new(file, Arc::new(TableKind::Raw.file_schema()), Some(writer_properties()?))?;
    for (c, chunk) in payloads.chunks(CHUNK).enumerate() {
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let row = TableKind::Raw.decode(p).map_err(|e| anyhow::anyhow!(e))?;
                Ok(SourcedRow {
                    partition: 0,
                    offset: (c * CHUNK + i) as i64,
                    row,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let refs: Vec<&SourcedRow> = rows.iter().collect();
        writer.write(&tributary_lake::rows::to_batch(TableKind::Raw, &refs)?)?;
    }
    writer.close()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((secs, std::fs::metadata(&path)?.len()))
}

/// The freshness phase: (delay p50, p99, max in seconds, files per hour).
async fn freshness(
    a: &LakeArgs,
    bin: &FsPath,
    topic: &str,
    stamp: &str,
    table: &FsPath,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    // A few readings first, and their commit awaited, so the clock starts
    // with the lake in its group and reading (not joining).
    preload(&a.brokers, topic, 100, a.series, a.partitions).await?;
    let port = free_port()?;
    let mut lake = start_lake(a, bin, topic, &format!("{stamp}-f"), table, a.roll_secs, port)?;
    let pid = lake.id().context("lake pid")?;
    let mut log = first_commit(&mut lake, table, Duration::from_secs(a.roll_secs + 60)).await?;
    let acks = Arc::new(std::sync::Mutex::new(Vec::<(i32, i64, Instant)>::new()));
    let producer = bench_producer(&a.brokers)?;
    let files_before = log.files().count();
    let t0 = Instant::now();
    let sender = {
        let acks = acks.clone();
        let (rate, secs, series) = (a.rate, a.steady_secs, a.series);
        let topic = topic.to_owned();
        tokio::spawn(async move { produce_steadily(&producer, &topic, rate, secs, series, &acks).await })
    };
    // Poll the log until every acknowledged reading is in the table.
    let mut delays = Vec::new();
    let mut pending: Vec<(i32, i64, Instant)> = Vec::new();
    let deadline = t0 + Duration::from_secs(a.steady_secs + 3 * a.roll_secs + 60);
    loop {
        if let Some(status) = lake.try_wait()? {
            bail!("tributary-lake exited early: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "readings were not queryable in time");
        pending.extend(acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.drain(..));
        log.refresh().await.context("reading the table's log")?;
        let now = Instant::now();
        pending.retain(|(p, o, acked)| {
            if log
                .written_through(&app_id(topic, *p))
                .is_some_and(|through| through >= *o)
            {
                delays.push(now.duration_since(*acked).as_secs_f64());
                false
            } else {
                true
            }
        });
        if sender.is_finished() && pending.is_empty() && acks.lock().is_ok_and(|v| v.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = sender.await??;
    let elapsed = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        delays.len() == sent,
        "{} of {sent} readings became queryable",
        delays.len()
    );
    let files = log.files().count() - files_before;
    // SIGTERM: the clean stop commits what is buffered.
    terminate(&mut lake, pid, Duration::from_secs(120)).await?;
    delays.sort_by(f64::total_cmp);
    let q = |f: f64| {
        delays
            .get(((delays.len() as f64 * f) as usize).min(delays.len().saturating_sub(1)))
            .copied()
    };
    Ok((
        q(0.5).unwrap_or(f64::NAN),
        q(0.99).unwrap_or(f64::NAN),
        delays.last().copied().unwrap_or(f64::NAN),
        files as f64 * 3600.0 / elapsed,
    ))
}

/// The raw table under `table` once the lake has made its first commit.
async fn first_commit(lake: &mut Child, table: &FsPath, within: Duration) -> anyhow::Result<Table> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = lake.try_wait()? {
            bail!("tributary-lake exited early: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "the lake made no commit within {within:?}");
        if let Ok(t) = raw_table(table).await
            && t.version().is_some()
        {
            return Ok(t);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produce `rate` readings per second for `secs` seconds (in 10 ms slices),
/// recording each one's partition, offset and acknowledgement time; returns
/// how many were sent.
async fn produce_steadily(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    rate: usize,
    secs: u64,
    series: usize,
    acks: &std::sync::Mutex<Vec<(i32, i64, Instant)>>,
) -> anyhow::Result<usize> {
    let slices = secs * 100;
    let per_slice = rate.div_ceil(100);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    let mut deliveries = futures::stream::FuturesUnordered::new();
    for _ in 0..slices {
        tick.tick().await;
        for r in analyze_input_range(sent..sent + per_slice, series) {
            let payload = serde_json::to_vec(&r)?;
            let delivery = producer
                .send_result(FutureRecord::to(topic).key(&r.device_id).payload(&payload))
                .map_err(|(e, _)| e)?;
            deliveries.push(async move { (delivery.await, Instant::now()) });
        }
        sent += per_slice;
        // Record what was acknowledged so far, without waiting.
        while let Some(Some((result, at))) = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut deliveries))
        {
            record(result, at, acks)?;
        }
    }
    while let Some((result, at)) = futures::StreamExt::next(&mut deliveries).await {
        record(result, at, acks)?;
    }
    Ok(sent)
}

type Delivery = Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

fn record(result: Delivery, at: Instant, acks: &std::sync::Mutex<Vec<(i32, i64, Instant)>>) -> anyhow::Result<()> {
    let delivery = result
        .map_err(|_| anyhow::anyhow!("the producer went away"))?
        .map_err(|(e, _)| e)?;
    acks.lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push((delivery.partition, delivery.offset, at));
    Ok(())
}
