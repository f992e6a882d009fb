//! `tributary-archive`: config, telemetry, Cosmos DB, consume. Everything else
//! is in [`tributary_ingest::archive`].
//!
//! Never crash-loops on a Cosmos outage: connecting (and creating the database
//! and container) is retried with back-off until it works or SIGTERM arrives.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Parser;
use tokio::sync::OnceCell;
use tributary_ingest::archive::cosmos::CosmosStore;
use tributary_ingest::archive::handler::ArchiveMetrics;
use tributary_ingest::archive::{ArchiveConfig, ArchiveHandler, RawStore, StoreError};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::ops::{Ops, Readiness};

/// `/readyz`: Cosmos DB reachable (and connected at all).
struct CosmosReadiness(Arc<OnceCell<Arc<CosmosStore>>>);

#[async_trait]
impl Readiness for CosmosReadiness {
    async fn check(&self) -> Result<(), String> {
        match self.0.get() {
            Some(store) => store.check_ready().await.map_err(|e| e.to_string()),
            None => Err("not connected to Cosmos DB yet".into()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ArchiveConfig::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);
    let settings = cfg.cosmos_settings().context("Cosmos DB settings")?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ArchiveMetrics::new(&mut registry);
    let store_cell: Arc<OnceCell<Arc<CosmosStore>>> = Arc::new(OnceCell::new());
    let ops = Ops::new(Arc::new(registry), Arc::new(CosmosReadiness(store_cell.clone())));
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

    // SIGTERM from here on: drain and stop wherever we are.
    let (term_tx, term_rx) = tokio::sync::watch::channel(false);
    let draining = ops.clone();
    tokio::spawn(async move {
        tributary_shared::shutdown::signal().await;
        draining.start_draining();
        let _ = term_tx.send(true);
    });

    // Connect (and create) with back-off: an outage at start is not a crash.
    let mut delay = Duration::from_millis(200);
    let store = loop {
        let attempt = tokio::select! {
            r = CosmosStore::connect(settings.clone(), cfg.cosmos_create) => r,
            _ = stopped(term_rx.clone()) => Err(StoreError::Retryable("stopping".into())),
        };
        if *term_rx.borrow() {
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
        match attempt {
            Ok(s) => break Arc::new(s),
            Err(e) if !e.is_retryable() => return Err(anyhow::anyhow!("Cosmos DB: {e}")),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot reach Cosmos DB; retrying");
                tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stopped(term_rx.clone()) => {} }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let _ = store_cell.set(store.clone());
    tracing::info!(endpoint = %cfg.cosmos_endpoint, database = %cfg.cosmos_database, container = %cfg.cosmos_container, "connected to Cosmos DB");

    let log = KafkaLog::connect(&cfg.kafka, "tributary-archive").context("connecting to Kafka")?;
    if cfg.kafka.create_topics {
        let all = vec![cfg.raw_topic.clone(), cfg.deadletter_topic.clone()];
        if let Err(e) = log.ensure_topics(&all, cfg.kafka.partitions).await {
            tracing::warn!(error = %e, "could not create topics");
        }
    }
    let handler = ArchiveHandler::new(
        store.clone() as Arc<dyn RawStore>,
        log.publisher(),
        cfg.deadletter_topic.clone(),
        cfg.max_attempts,
        metrics,
    );
    let sub = log
        .subscribe(&cfg.group, std::slice::from_ref(&cfg.raw_topic))
        .await
        .context("joining the consumer group")?;
    tracing::info!(group = %cfg.group, topic = %cfg.raw_topic, "archive consuming");
    let runner_cfg = RunnerConfig {
        max_batch: cfg.batch_max,
        ..RunnerConfig::default()
    };
    run_consumer(sub, &handler, &runner_cfg, stopped(term_rx.clone())).await?;
    let _ = log.publisher().flush(Duration::from_secs(5)).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("archive stopped");
    Ok(())
}
