//! `tributary-dashboard`: config, telemetry, serve. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;
use tributary_dashboard::{Config, Dashboard, DbReadiness, app, live::Live};
use tributary_shared::ops::Ops;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);
    let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(std::time::Duration::from_secs(3)).connect_lazy(&cfg.database_url).context("DATABASE_URL")?;
    let redis = redis::Client::open(cfg.redis_url.as_str()).context("REDIS_URL")?;
    let live = Live::new();
    tokio::spawn(live.clone().follow_redis(redis.clone()));
    if cfg.operator_token.is_none() {
        tracing::info!("no operator token configured: the dashboard is read-only");
    }
    let state = Arc::new(Dashboard { pool: pool.clone(), redis: Some(redis), live, operator_token: cfg.operator_token.clone(), offline_after_secs: cfg.offline_after_secs });
    let ops = Ops::new(Arc::new(prometheus_client::registry::Registry::default()), Arc::new(DbReadiness(pool)));
    let router = app(state, &ops);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // The API works under Lambda; /api/events cannot stream there (responses are buffered).
        tracing::info!("serving through the Lambda runtime API");
        lambda_http::run(router).await.map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
    } else {
        let listener = tokio::net::TcpListener::bind((cfg.bind, cfg.port)).await.with_context(|| format!("binding port {}", cfg.port))?;
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
