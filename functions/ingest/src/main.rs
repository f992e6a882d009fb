//! `tributary-ingest`: parse the settings, start logging, connect, run.

use clap::Parser;
use tributary_ingest::{Config, Deps, run};
use tributary_shared::service::Shutdown;

/// mimalloc instead of the C library's allocator: ingest allocates a few
/// small buffers per reading on the request threads and frees some of them on
/// librdkafka's, which glibc's arenas serve with locks (`scripts/bench ingest`).
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
