//! `tributary bench process`: aggregates/s into PostgreSQL through the process
//! function's handler (decode, validate, one transaction per batch, cache
//! refresh) by batch size, the cache update latency, and COPY of the same rows
//! into the same server in the same run as the ceiling.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use tributary_process::cache::Cache;
use tributary_process::handler::ProcessHandler;
use tributary_process::metrics::Metrics;
use tributary_process::store::{PgStore, ResultStore};
use tributary_shared::eventlog::runner::Handler;
use tributary_shared::eventlog::{EventLog, Message};
use tributary_shared::records::Aggregate;

use super::common::median;

/// Arguments of `bench process`.
#[derive(clap::Args)]
pub struct ProcessArgs {
    /// Server to benchmark on; a scratch database `tributary_bench` is (re)created there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Redis for the cache (database 15 by default, to keep clear of real data).
    #[arg(long, default_value = "redis://127.0.0.1:6379/15")]
    redis_url: String,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    batches: Vec<usize>,
    /// Aggregates written per batch size and run.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Runs; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn aggregates(n: usize, offset: usize) -> Vec<Aggregate> {
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    (0..n)
        .map(|i| {
            let i = i + offset;
            let start = base + chrono::Duration::seconds(((i / 200) * 10) as i64);
            Aggregate {
                device_id: format!("bench-{}", i % 200),
                metric: "temperature".into(),
                window_seconds: 10,
                window_start: start,
                window_end: start + chrono::Duration::seconds(10),
                count: 10,
                min: 20.0,
                max: 25.0,
                mean: 22.5,
                stddev: 1.2,
                p50: 22.4,
                p95: 24.8,
                p99: 25.0,
                anomaly_score: 0.05,
                model: "spike".into(),
                expected_low: None,
                expected_high: None,
                warming: false,
                sketch: None,
            }
        })
        .collect()
}

/// Run the benchmark.
pub async fn run(a: ProcessArgs) -> anyhow::Result<()> {
    let (server, _) = a
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL needs a database name")?;
    let bench_url = format!("{server}/tributary_bench");
    println!(
        "bench process: {server}/tributary_bench, batches {:?}, {} aggregates per batch size, {} runs",
        a.batches, a.records, a.runs
    );
    let mut rows: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); a.batches.len()];
    let mut copy = Vec::new();
    for run in 0..a.runs {
        let mut admin = PgConnection::connect(&a.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query("DROP DATABASE IF EXISTS tributary_bench WITH (FORCE)")
            .execute(&mut admin)
            .await?;
        sqlx::query("CREATE DATABASE tributary_bench")
            .execute(&mut admin)
            .await?;
        let pool = PgPoolOptions::new().max_connections(4).connect(&bench_url).await?;
        let store: Arc<dyn ResultStore> = Arc::new(PgStore::new(pool.clone()));
        store.migrate().await?;
        let cache = Arc::new(Cache::redis(&a.redis_url, 600, 100)?);
        let log = tributary_shared::eventlog::memory::MemoryLog::new(1, 1000);
        let mut registry = prometheus_client::registry::Registry::default();
        let cfg = tributary_process::Config::default();
        let handler = ProcessHandler::new(
            &cfg,
            store.clone(),
            cache.clone(),
            log.publisher(),
            Metrics::new(&mut registry),
        );
        cache.rebuild(store.as_ref()).await.context("Redis for the cache")?;

        print!("run {}:", run + 1);
        for (bi, &b) in a.batches.iter().enumerate() {
            let n = if b == 1 { a.records / 10 } else { a.records };
            let aggs = aggregates(n, bi * a.records);
            let msgs: Vec<Message> = aggs
                .iter()
                .enumerate()
                .map(|(i, x)| Message {
                    topic: cfg.topics.aggregates.clone(),
                    partition: 0,
                    offset: i as i64,
                    key: Some(x.device_id.clone().into_bytes()),
                    value: serde_json::to_vec(x).unwrap_or_default(),
                    headers: vec![],
                    timestamp_ms: None,
                })
                .collect();
            let t0 = Instant::now();
            for chunk in msgs.chunks(b) {
                handler.handle(chunk).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let per_s = n as f64 / t0.elapsed().as_secs_f64();
            // Cache update latency: refresh of one batch's devices after a commit.
            let devices: Vec<String> = aggs
                .iter()
                .take(b)
                .map(|x| x.device_id.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut lat = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                cache.after_commit(store.as_ref(), &devices, &[]).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(f64::total_cmp);
            let p50 = lat[lat.len() / 2];
            let p99 = lat[lat.len() - 1];
            print!("  batch {b}: {per_s:.0}/s (cache {p50:.2} ms)");
            rows[bi].push((per_s, p50, p99));
        }

        // Ceiling: COPY the same rows into a table of the same shape on the same server.
        let aggs = aggregates(a.records, 99 * a.records);
        let mut csv = String::with_capacity(a.records * 200);
        for x in &aggs {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                x.device_id,
                x.metric,
                x.window_seconds,
                x.window_start.to_rfc3339(),
                x.window_end.to_rfc3339(),
                x.count,
                x.min,
                x.max,
                x.mean,
                x.stddev,
                x.p50,
                x.p95,
                x.p99,
                x.anomaly_score,
                x.model
            ));
        }
        let mut conn = pool.acquire().await?;
        sqlx::query("CREATE TABLE copy_target (LIKE aggregates INCLUDING ALL)")
            .execute(&mut *conn)
            .await?;
        let t0 = Instant::now();
        let mut copy_in = conn
            .copy_in_raw("COPY copy_target (device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model) FROM STDIN (FORMAT csv)")
            .await?;
        copy_in.send(csv.as_bytes()).await?;
        copy_in.finish().await?;
        let copy_per_s = a.records as f64 / t0.elapsed().as_secs_f64();
        println!("  COPY: {copy_per_s:.0}/s");
        copy.push(copy_per_s);
        drop(conn);
        pool.close().await;
    }
    let c = median(copy.clone());
    println!(
        "\nmedians over {} runs (one transaction per batch; same server, same run):",
        a.runs
    );
    println!("  COPY into the same table shape: {c:.0} rows/s");
    for (bi, b) in a.batches.iter().enumerate() {
        let r = median(rows[bi].iter().map(|x| x.0).collect());
        let p50 = median(rows[bi].iter().map(|x| x.1).collect());
        let p99 = median(rows[bi].iter().map(|x| x.2).collect());
        println!(
            "  batch {b:>5}: {r:>9.0} aggregates/s ({:>5.1}% of COPY); cache update p50 {p50:.2} ms, max of 20 {p99:.2} ms",
            100.0 * r / c
        );
    }
    let mut admin = PgConnection::connect(&a.database_url).await?;
    sqlx::query("DROP DATABASE IF EXISTS tributary_bench WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    Ok(())
}
