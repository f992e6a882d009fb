//! `tributary-dashboard`: config, telemetry, serve. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tributary_dashboard::{Config, Dashboard, StoreReadiness, app, live::Live};
use tributary_shared::cache::{KvCache, RedisCache};
use tributary_shared::ops::Ops;
use tributary_shared::raw::RawStore;
use tributary_shared::raw::cosmos::LazyCosmosStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);
    let store = tributary_shared::results::open(&cfg.database_url, 8)
        .await
        .context("DATABASE_URL")?;
    let cache: Arc<dyn KvCache> = Arc::new(RedisCache::new(&cfg.redis_url).context("REDIS_URL")?);
    let live = Live::new();
    tokio::spawn(live.clone().follow(cache.clone()));
    if cfg.operator_token.is_none() {
        tracing::info!("no operator token configured: the dashboard is read-only");
    }
    // Connected on first use, so a Cosmos DB outage only costs the raw points.
    let raw: Option<Arc<dyn RawStore>> = match cfg.cosmos_settings().context("Cosmos DB settings")? {
        Some(settings) => Some(Arc::new(LazyCosmosStore::new(settings))),
        None => {
            tracing::info!("no Cosmos DB endpoint configured: charts show window aggregates only");
            None
        }
    };
    let state = Arc::new(Dashboard {
        store: store.clone(),
        cache: Some(cache),
        raw,
        live,
        operator_token: cfg.operator_token.clone(),
        offline_after_secs: cfg.offline_after_secs,
    });
    let ops = Ops::new(
        Arc::new(prometheus_client::registry::Registry::default()),
        Arc::new(StoreReadiness(store)),
    );
    let router = app(state, &ops);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // The API works under Lambda; /api/events cannot stream there (responses are buffered).
        tracing::info!("serving through the Lambda runtime API");
        lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
    } else {
        let listener = tokio::net::TcpListener::bind((cfg.bind, cfg.port))
            .await
            .with_context(|| format!("binding port {}", cfg.port))?;
        tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
        let draining = ops.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                tributary_shared::shutdown::signal().await;
                draining.start_draining();
            })
            .await
            .context("serving")?;
        tracing::info!("dashboard stopped");
        Ok(())
    }
}
