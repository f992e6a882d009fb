//! `tributary-analyze`: parse the settings, start logging, connect, run.

use clap::Parser;
use tributary_analyze::{Config, Deps, run};
use tributary_shared::service::Shutdown;

/// mimalloc, as `tributary bench analyze` measures with: every series is a
/// few fixed-size blocks, which its size classes pack with little waste.
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
