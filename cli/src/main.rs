//! `tributary`: the operator's command line. Thin: each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod bench;
mod bench_process;
mod dev;
mod token;

#[derive(Parser)]
#[command(name = "tributary", version, about = "Tributary telemetry pipeline: operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a device token (and show the device key to provision).
    Token(token::Args),
    /// Run the pipeline on this machine with embedded defaults (today: ingest).
    Dev(dev::Args),
    /// Benchmarks (figures from real runs, medians of several).
    #[command(subcommand)]
    Bench(bench::Bench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token(a) => token::run(a),
        Command::Dev(a) => dev::run(a).await,
        Command::Bench(b) => bench::run(b).await,
    }
}
