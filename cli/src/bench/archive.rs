//! `bench archive`: the archive's write path, documents/s upserted into a
//! Cosmos DB endpoint (normally the local stand-in) at several concurrencies.
//!
//! Guarantees: every run writes fresh documents (new ids) into a throw-away
//! container of database `tributary-bench`; a run counts only when every
//! upsert succeeded (otherwise the benchmark fails); the figure reported per
//! concurrency is the median of the runs.

use std::fmt::Write as _;
use std::time::Instant;

use chrono::Utc;
use tributary_shared::model::{Reading, SCHEMA_VERSION};
use tributary_shared::raw::RawStore;
use tributary_shared::raw::cosmos::{CosmosSettings, CosmosStore};

use super::common::median;

/// Arguments of `bench archive`.
#[derive(clap::Args)]
pub struct ArchiveArgs {
    /// Cosmos DB endpoint (scripts/bench starts the local stand-in).
    #[arg(long, env = "TRIBUTARY_COSMOS_ENDPOINT")]
    endpoint: String,
    /// Account key.
    #[arg(long, env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    key: String,
    /// Concurrent requests to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Documents per run.
    #[arg(long, default_value_t = 5000)]
    docs: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Run the benchmark and print the report.
pub async fn run(a: ArchiveArgs) -> anyhow::Result<()> {
    println!("{}", report(&a.endpoint, &a.key, &a.concurrency, a.docs, a.runs).await?);
    Ok(())
}

/// Upsert `docs` readings `runs` times at each concurrency in `concurrencies`
/// against `endpoint` (key auth) and return a plain-text report with every
/// run's documents/s and the median per concurrency.
pub async fn report(
    endpoint: &str,
    key: &str,
    concurrencies: &[usize],
    docs: usize,
    runs: usize,
) -> anyhow::Result<String> {
    let tag = format!("bench-{}", Utc::now().timestamp_millis());
    let mut report = String::new();
    writeln!(
        report,
        "archive upsert benchmark: {docs} documents per run, {runs} runs per concurrency, endpoint {endpoint}"
    )?;
    for &c in concurrencies {
        let mut settings = CosmosSettings::with_key(endpoint, key, "tributary-bench", format!("{tag}-c{c}"));
        settings.concurrency = c.max(1);
        let store = CosmosStore::connect(settings, true)
            .await
            .map_err(|e| anyhow::anyhow!("connecting: {e}"))?;
        let mut rates = Vec::with_capacity(runs);
        for run in 0..runs {
            let readings = readings(&format!("{tag}-c{c}-r{run}"), docs);
            let started = Instant::now();
            let results = store.upsert_batch(&readings).await;
            let secs = started.elapsed().as_secs_f64();
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                anyhow::bail!("upsert failed at concurrency {c}: {e}");
            }
            rates.push(docs as f64 / secs);
        }
        let runs_text: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        writeln!(
            report,
            "concurrency {c:>3}: median {:>7.0} docs/s (runs: {})",
            median(rates.clone()),
            runs_text.join(", ")
        )?;
    }
    Ok(report)
}

/// `n` realistic readings over 16 devices with ids prefixed by `prefix`.
fn readings(prefix: &str, n: usize) -> Vec<Reading> {
    let now = Utc::now();
    (0..n)
        .map(|i| Reading {
            schema_version: SCHEMA_VERSION,
            id: format!("{prefix}-{i}"),
            device_id: format!("bench-device-{}", i % 16),
            event_time: now,
            received_time: now,
            metrics: [
                ("temperature".to_owned(), 20.0 + (i % 100) as f64 / 10.0),
                ("humidity".to_owned(), 40.0),
            ]
            .into_iter()
            .collect(),
            tags: [("site".to_owned(), "bench".to_owned())].into_iter().collect(),
            location: None,
        })
        .collect()
}
