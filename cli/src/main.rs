//! `tributary`: the operator's command line. Thin: each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod bench;
mod bench_analyze_kafka;
mod bench_dashboard;
mod bench_dev;
mod bench_process;
mod bench_soak;
mod bench_start;
mod dev;
mod eval;
mod simulate;
mod token;
mod verify;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Tributary telemetry pipeline: operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a device token (and show the device key to provision).
    Token(token::Args),
    /// Simulated devices sending to an ingest URL (also the load generator).
    Simulate(simulate::Args),
    /// Run the whole pipeline in one process: embedded stores, simulated devices, dashboard on localhost.
    Dev(dev::Args),
    /// Evaluate the anomaly detectors on a labelled benchmark.
    #[command(subcommand)]
    Eval(eval::Eval),
    /// Benchmarks (figures from real runs, medians of several).
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Reconcile a simulator's record of acknowledged readings with the raw archive and the aggregates.
    Verify(verify::Args),
}

/// The allocator ingest ships with (see `functions/ingest/src/main.rs`): the
/// all-in-one mode runs ingest in this process, and `bench ingest` measures
/// its librdkafka baseline with the same allocator ingest has.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token(a) => token::run(a),
        Command::Dev(a) => dev::run(a).await,
        Command::Simulate(a) => {
            tributary_shared::telemetry::init("warn", tributary_shared::telemetry::LogFormat::Text);
            let totals = simulate::run(a, tributary_shared::shutdown::signal()).await?;
            println!("{}", serde_json::to_string(&totals)?);
            Ok(())
        }
        Command::Eval(e) => eval::run(e),
        Command::Bench(b) => bench::run(b).await,
        Command::Verify(a) => verify::run(a).await,
    }
}
