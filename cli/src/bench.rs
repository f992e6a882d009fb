//! Benchmarks. Filled in below.

/// Benchmark subcommands.
#[derive(clap::Subcommand)]
pub enum Bench {}

/// Run one.
pub async fn run(b: Bench) -> anyhow::Result<()> {
    match b {}
}
