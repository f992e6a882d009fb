//! `tributary-archive`: parse the settings, start logging, connect, run.

use clap::Parser;
use tributary_archive::{Config, Deps, run};
use tributary_shared::service::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = config.log.init()?;
    let deps = Deps::connect(&config).await?;
    run(config, deps, Shutdown::on_signal()).await?;
    Ok(())
}
