//! `tributary-lake`: parse the settings, start logging, connect, run.

use clap::Parser;
use tributary_lake::{Config, Deps, run};
use tributary_shared::service::Shutdown;

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
