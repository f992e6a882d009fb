//! `tributary-lake`: parse the settings, start logging, connect, run.

use clap::Parser;
use tributary_lake::{Config, Deps, run};
use tributary_shared::service::Shutdown;

/// mimalloc, as the bench's direct Parquet writer runs with: the lake
/// allocates every buffered reading's strings and maps, hundreds of
/// thousands per roll, and frees them together.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Not #[tokio::main]: its runtime waits at exit for abandoned blocking calls.
    tributary_shared::service::runtime::block_on(async {
        let config = Config::parse();
        let _telemetry = config.log.init()?;
        let deps = Deps::connect(&config).await?;
        run(config, deps, Shutdown::on_signal()).await?;
        anyhow::Ok(())
    })?
}
