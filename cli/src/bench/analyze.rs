//! `bench analyze`: analyze's engine in-process on one core: readings/s
//! through windows and every model, and memory per 10k active series.

use std::time::Instant;

use super::common::{analyze_input, median, rss_self_mb};

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
}

/// Run the benchmark and print every run and the medians.
pub fn run(a: AnalyzeArgs) -> anyhow::Result<()> {
    use tributary_analyze::engine::{Analyzer, AnalyzerConfig};
    println!(
        "bench analyze: {} readings (4 metrics each) over {} series, windows 10 s and 60 s, all models, {} runs, one core",
        a.readings, a.series, a.runs
    );
    let mut rates = Vec::new();
    let mut mem = Vec::new();
    for run in 0..a.runs {
        let input = analyze_input(a.readings, a.series);
        let before = rss_self_mb();
        let mut an = Analyzer::new(AnalyzerConfig::default());
        let t0 = Instant::now();
        let mut emitted = 0usize;
        for (i, r) in input.iter().enumerate() {
            let out = an.process((i % 12) as i32, i as i64, r);
            emitted += out.aggregates.len() + out.alerts.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        let after = rss_self_mb();
        let per_10k = (after - before) / an.series_count().max(1) as f64 * 10_000.0;
        println!(
            "run {}: {:.0} readings/s ({:.0} metric values/s), {} outputs, {} series, RSS +{:.1} MB = {:.1} MB per 10k series",
            run + 1,
            a.readings as f64 / secs,
            4.0 * a.readings as f64 / secs,
            emitted,
            an.series_count(),
            after - before,
            per_10k
        );
        rates.push(a.readings as f64 / secs);
        mem.push(per_10k);
        drop(an);
    }
    println!(
        "\nmedians: {:.0} readings/s per core; {:.1} MB per 10k active series (windows + models)",
        median(rates),
        median(mem)
    );
    Ok(())
}
