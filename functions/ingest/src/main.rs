//! `tributary-ingest`: config, telemetry, serve. Everything else is in the library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tributary_ingest::{Config, Ingest, LogReadiness, app, config::DEV_FLEET_KEY, serve};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::ops::Ops;

/// mimalloc instead of the C library's allocator: ingest allocates a few
/// small buffers per reading on the request threads and frees some of them on
/// librdkafka's, which glibc's arenas serve with locks (`scripts/bench ingest`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);
    if cfg.fleet_key == DEV_FLEET_KEY {
        tracing::warn!("using the built-in development fleet key; set TRIBUTARY_FLEET_KEY in production");
    }

    let log = KafkaLog::connect(&cfg.kafka, "tributary-ingest").context("connecting to Kafka")?;
    if cfg.kafka.create_topics {
        // Not fatal: the broker may come up after us; /readyz stays 503 until it does.
        if let Err(e) = log
            .ensure_topics(std::slice::from_ref(&cfg.raw_topic), cfg.kafka.partitions)
            .await
        {
            tracing::warn!(error = %e, topic = %cfg.raw_topic, "could not create topic");
        }
    }
    let publisher = log.publisher();
    let mut registry = prometheus_client::registry::Registry::default();
    let state = Arc::new(Ingest::new(&cfg, publisher.clone(), &mut registry));
    let ops = Ops::new(Arc::new(registry), Arc::new(LogReadiness(publisher.clone())));
    let router = app(state, &ops);

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("serving through the Lambda runtime API");
        lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))?;
    } else {
        let addr = std::net::SocketAddr::new(cfg.bind, cfg.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, topic = %cfg.raw_topic, brokers = %cfg.kafka.brokers, "ingest listening");
        let draining = ops.clone();
        serve(listener, router, async move {
            tributary_shared::shutdown::signal().await;
            draining.start_draining();
        })
        .await
        .context("serving")?;
    }

    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    if let Err(e) = publisher.flush(grace).await {
        tracing::error!(error = %e, "flushing the producer at shutdown failed");
    }
    tracing::info!("ingest stopped");
    Ok(())
}
