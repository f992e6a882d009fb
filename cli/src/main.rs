//! `tributary`: the operator's command line. Thin: each subcommand lives in
//! its own module, and every pipeline function it runs is the function
//! crate's own `run`.
//!
//! # Layout
//!
//! - `token.rs`: mint a device token (and show the key to provision);
//! - `device.rs`: the device registry (add, import, list, disable, rotate a key);
//! - `channel.rs`: alert notification channels (list, put, test, dead letters, resend);
//! - `table.rs`: tables for people;
//! - `simulate.rs`: simulated devices, also the load generator;
//! - `dev/`: the whole pipeline in one process on embedded backends;
//! - `verify.rs`: reconcile what devices were told with the archive and the aggregates;
//! - `eval.rs`: the anomaly detectors on NAB;
//! - `bench/`: the benchmarks, one file each, helpers in `common.rs`.

use clap::{Parser, Subcommand};

mod bench;
mod channel;
mod dev;
mod device;
mod eval;
mod simulate;
mod table;
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
    /// The device registry: add, import, list, show, disable, enable, rotate-key.
    Device(device::Args),
    /// Alert notification channels: list, put, delete, test, dead-letters, resend.
    Channel(channel::Args),
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
        Command::Device(a) => device::run(a).await,
        Command::Channel(a) => channel::run(a).await,
        Command::Dev(a) => dev::run(a).await,
        Command::Simulate(a) => {
            let _telemetry = tributary_shared::telemetry::init(
                "warn",
                tributary_shared::telemetry::LogFormat::Text,
                "tributary-simulate",
            )?;
            let totals = simulate::run(a, tributary_shared::service::shutdown::signal()).await?;
            println!("{}", serde_json::to_string(&totals)?);
            Ok(())
        }
        Command::Eval(e) => eval::run(e),
        Command::Bench(b) => bench::run(b).await,
        Command::Verify(a) => verify::run(a).await,
    }
}
