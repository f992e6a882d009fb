//! `bench analyze`: analyze's engine in-process on one core: readings/s
//! through windows and every model, and memory per active series.
//!
//! Each run is a child process (this binary with `--single-run`), so its
//! RSS growth is its own: memory freed by an earlier run and kept by the
//! allocator would otherwise hide the next run's. The memory figure is RSS
//! growth over the run divided by the series held, so windows, keys and
//! models together. The input is built in bounded chunks outside the timed
//! part, so the RSS is the analyzer's and the rate is its own. After the
//! memory is read, every series' state is snapshotted once (as a warm
//! takeover needs it, see `tributary_analyze::state`): its size per series
//! and the time it takes, which a commit waits for when every series changed.

use std::time::Instant;

use anyhow::Context as _;

use super::common::{analyze_input_range, median, rss_self_mb};

/// Arguments of `bench analyze`.
#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Readings per run.
    #[arg(long, default_value_t = 200_000)]
    readings: usize,
    /// Active (device, metric) series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Do one run in this process and print its figures (what each run's child does).
    #[arg(long, hide = true)]
    single_run: bool,
}

/// One run's figures.
struct Figures {
    readings_per_s: f64,
    kib_per_series: f64,
    rss_mib: f64,
    snapshot_bytes_per_series: f64,
    snapshot_ms: f64,
}

const RESULT: &str = "bench-analyze-result";

/// Run the benchmark and print every run and the medians.
pub fn run(a: AnalyzeArgs) -> anyhow::Result<()> {
    if a.single_run {
        let f = single_run(&a);
        println!(
            "{RESULT} {} {} {} {} {}",
            f.readings_per_s, f.kib_per_series, f.rss_mib, f.snapshot_bytes_per_series, f.snapshot_ms
        );
        return Ok(());
    }
    println!(
        "bench analyze: {} readings (4 metrics each) over {} series, windows 10 s and 60 s, all models, {} runs, one core",
        a.readings, a.series, a.runs
    );
    let exe = std::env::current_exe().context("the path of this binary")?;
    let (mut rates, mut mem, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut snap_bytes, mut snap_ms) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        let mut child = std::process::Command::new(&exe);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            child.env("MIMALLOC_PURGE_DELAY", "0");
        }
        let out = child
            .args(["bench", "analyze", "--single-run", "--readings"])
            .arg(a.readings.to_string())
            .arg("--series")
            .arg(a.series.to_string())
            .output()
            .context("running one bench run")?;
        anyhow::ensure!(
            out.status.success(),
            "run {} failed: {}",
            run + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let figures: Vec<f64> = text
            .lines()
            .find_map(|l| l.strip_prefix(RESULT))
            .context("a run printed no figures")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("a run's figures")?;
        let [r, kib, mib, sb, sms] = figures[..] else {
            anyhow::bail!("a run printed {} figures, not 5", figures.len());
        };
        println!(
            "run {}: {r:.0} readings/s ({:.0} metric values/s), RSS {mib:.1} MiB, {kib:.2} KiB per series; snapshot of every series {sb:.0} B each, {sms:.1} ms",
            run + 1,
            4.0 * r
        );
        rates.push(r);
        mem.push(kib);
        rss.push(mib);
        snap_bytes.push(sb);
        snap_ms.push(sms);
    }
    println!(
        "\nmedians: {:.0} readings/s per core; {:.2} KiB per active series (windows + keys + models); RSS {:.1} MiB",
        median(rates),
        median(mem),
        median(rss)
    );
    println!(
        "snapshot of every series (warm takeover): {:.0} bytes per series, {:.1} ms to encode all {}",
        median(snap_bytes),
        median(snap_ms),
        a.series
    );
    Ok(())
}

fn single_run(a: &AnalyzeArgs) -> Figures {
    use tributary_analyze::engine::{Analyzer, AnalyzerConfig};
    // The input is built in chunks outside the timed part, each freed before
    // the next: held whole, a million series' input (about 1.5 GB) would
    // dwarf the analyzer in the process' RSS. Small (about 2 MB), so the
    // analyzer reusing a freed chunk's memory hides next to nothing.
    const CHUNK: usize = 1 << 12;
    let mut config = AnalyzerConfig::default();
    // Hold every series the input has, so the figure is per series held
    // rather than the cap's.
    config.series.max = config.series.max.max(a.series);
    let mut an = Analyzer::new(config);
    // A chunk's worth of input is allocated once before the baseline, so the
    // growth measured is the analyzer's.
    let mut chunk = analyze_input_range(0..CHUNK.min(a.readings), a.series);
    let before = rss_self_mb();
    let mut busy = std::time::Duration::ZERO;
    let mut emitted = 0usize;
    // A device's readings stay in one partition, as the Kafka key (the
    // device id) keeps them; 12 partitions, as the default topic.
    let devices = (a.series / 4).max(1);
    let mut start = 0;
    while start < a.readings {
        if start > 0 {
            drop(std::mem::take(&mut chunk));
            chunk = analyze_input_range(start..(start + CHUNK).min(a.readings), a.series);
        }
        let t0 = Instant::now();
        for (j, r) in chunk.iter().enumerate() {
            let i = start + j;
            let out = an.process(((i % devices) % 12) as i32, i as i64, r);
            emitted += out.aggregates.len() + out.alerts.len();
        }
        busy += t0.elapsed();
        start += chunk.len().max(1);
    }
    drop(chunk);
    // Where a purge delay is set (see the module docs), mimalloc returns
    // freed pages to the OS only after it: let it pass,
    // so the figure does not depend on when the run happened to end.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = rss_self_mb();
    std::hint::black_box(emitted);
    // Every series changed, so each partition's snapshot holds all of its series.
    an.keep_snapshots();
    let t0 = Instant::now();
    let mut snapshot_bytes = 0usize;
    for p in 0..12 {
        for (k, v) in an.snapshot(p, a.readings as i64).unwrap_or_default() {
            snapshot_bytes += k.len() + v.len();
        }
    }
    let snapshot_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Figures {
        readings_per_s: a.readings as f64 / busy.as_secs_f64(),
        kib_per_series: (after - before) * 1024.0 / an.series_count().max(1) as f64,
        rss_mib: after,
        snapshot_bytes_per_series: snapshot_bytes as f64 / an.series_count().max(1) as f64,
        snapshot_ms,
    }
}
