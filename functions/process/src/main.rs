//! `tributary-process`: config, telemetry, consume. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tributary_process::{
    Config, StoreReadiness, cache::Cache, handler::ProcessHandler, metrics::Metrics, store, upkeep,
};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::ops::Ops;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);

    let store = store::open(&cfg.database_url, cfg.database_max_connections)
        .await
        .context("DATABASE_URL")?;
    if cfg.migrate {
        store.migrate().await.context("running migrations")?;
    }
    let cache = Arc::new(Cache::redis(&cfg.redis_url, cfg.cache_ttl_secs, cfg.recent_alerts).context("REDIS_URL")?);
    // No warm-up here: the cache starts stale and the upkeep task rebuilds it at
    // once, so a database that is down at start never delays /healthz.

    let log = KafkaLog::connect(&cfg.kafka, "tributary-process").context("connecting to Kafka")?;
    let topics = vec![cfg.aggregates_topic.clone(), cfg.alerts_topic.clone()];
    if cfg.kafka.create_topics {
        let mut all = topics.clone();
        all.push(cfg.deadletter_topic.clone());
        if let Err(e) = log.ensure_topics(&all, cfg.kafka.partitions).await {
            tracing::warn!(error = %e, "could not create topics");
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let handler = ProcessHandler::new(
        &cfg,
        store.clone(),
        cache.clone(),
        log.publisher(),
        Metrics::new(&mut registry),
    );
    let ops = Ops::new(Arc::new(registry), Arc::new(StoreReadiness(store.clone())));
    let listener = tokio::net::TcpListener::bind((cfg.bind, cfg.port))
        .await
        .with_context(|| format!("binding port {}", cfg.port))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(
        axum::serve(listener, ops.router())
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let upkeep_task = tokio::spawn(upkeep(
        store.clone(),
        cache.clone(),
        cfg.retention_days,
        stopped(stop_rx.clone()),
    ));

    let sub = log
        .subscribe(&cfg.group, &topics)
        .await
        .context("joining the consumer group")?;
    tracing::info!(group = %cfg.group, topics = ?topics, "process consuming");
    let runner_cfg = RunnerConfig {
        max_batch: cfg.batch_max,
        ..RunnerConfig::default()
    };
    let draining = ops.clone();
    run_consumer(sub, &handler, &runner_cfg, async move {
        tributary_shared::shutdown::signal().await;
        draining.start_draining();
    })
    .await?;
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = upkeep_task.await;
    tracing::info!("process stopped");
    Ok(())
}
