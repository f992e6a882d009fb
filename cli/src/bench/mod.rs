//! `tributary bench …`: benchmarks that print the figure and the peer's
//! figure from the same run, as medians over several runs.
//!
//! # Layout
//!
//! - this file: the subcommands and their dispatch (nothing imports it back);
//! - `common.rs`: what several benchmarks share (medians, ports, CPU time
//!   and memory of a process, a producer with ingest's settings, analyze's input);
//! - `load.rs`: the bench's own HTTP/1.1 load generator (`bench ingest`);
//! - `wrk.rs`: driving `wrk` with the same requests (`bench ingest --load wrk`);
//! - one file per benchmark: `ingest.rs`, `process.rs`, `analyze.rs`,
//!   `analyze_kafka.rs`, `archive.rs`, `dashboard.rs`, `dev.rs`, `lake.rs`,
//!   `start.rs`, `soak.rs`.

mod analyze;
mod analyze_kafka;
mod archive;
mod common;
mod dashboard;
mod dev;
mod ingest;
mod lake;
mod load;
mod process;
mod soak;
mod start;
mod wrk;

/// Benchmark subcommands.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Ingest throughput, latency, start time and memory vs. librdkafka alone.
    Ingest(ingest::IngestArgs),
    /// Process: aggregates/s into PostgreSQL by batch size and cache update latency, vs. COPY.
    Process(process::ProcessArgs),
    /// Analyze in-process: readings/s through windows and models, memory per 10k series.
    Analyze(analyze::AnalyzeArgs),
    /// Archive: documents/s into the Cosmos DB endpoint at several concurrencies.
    Archive(archive::ArchiveArgs),
    /// Dashboard API latency under concurrent load: fleet overview and a 24 h series.
    Dashboard(dashboard::DashboardArgs),
    /// The all-in-one process end to end: ready time, readings/s, drain time, RSS, clean stop.
    Dev(dev::DevArgs),
    /// Analyze through a Kafka broker, pinned to one CPU, vs. a bare librdkafka consumer on it.
    AnalyzeKafka(analyze_kafka::AnalyzeKafkaArgs),
    /// The lake through a Kafka broker into a Delta table, per core, vs. writing Parquet directly; freshness.
    Lake(lake::LakeArgs),
    /// Each function binary: start to /healthz and /readyz, RSS when idle, SIGTERM to exit.
    Start(start::StartArgs),
    /// The function binaries at a fixed load for minutes: throughput, POST and end-to-end latency, RSS over time, reconciliation.
    Soak(soak::SoakArgs),
}

/// Run one benchmark.
pub async fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Ingest(a) => ingest::run(a).await,
        Bench::Process(a) => process::run(a).await,
        Bench::Analyze(a) => analyze::run(a),
        Bench::Archive(a) => archive::run(a).await,
        Bench::Dashboard(a) => dashboard::run(a).await,
        Bench::Dev(a) => dev::run(a).await,
        Bench::AnalyzeKafka(a) => analyze_kafka::run(a).await,
        Bench::Lake(a) => lake::run(a).await,
        Bench::Start(a) => start::run(a).await,
        Bench::Soak(a) => soak::run(a).await,
    }
}
