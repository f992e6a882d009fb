//! `tributary-analyze`: config, telemetry, consume. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tributary_analyze::config::Config;
use tributary_analyze::engine::Analyzer;
use tributary_analyze::handler::{AnalyzeHandler, Outputs, Ticking};
use tributary_analyze::metrics::Metrics;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::runner::{RunnerConfig, run_consumer};
use tributary_shared::ops::{Ops, Readiness};

struct KafkaReady(Arc<dyn tributary_shared::eventlog::Publisher>);

#[async_trait::async_trait]
impl Readiness for KafkaReady {
    async fn check(&self) -> Result<(), String> {
        self.0.check_ready().await.map_err(|e| e.to_string())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    tributary_shared::telemetry::init(&cfg.log.filter, cfg.log.format);
    let analyzer = Analyzer::new(cfg.analyzer().map_err(anyhow::Error::msg)?);
    let log = KafkaLog::connect(&cfg.kafka, "tributary-analyze").context("connecting to Kafka")?;
    if cfg.kafka.create_topics {
        let all = [
            cfg.raw_topic.clone(),
            cfg.aggregates_topic.clone(),
            cfg.alerts_topic.clone(),
            cfg.deadletter_topic.clone(),
        ];
        if let Err(e) = log.ensure_topics(&all, cfg.kafka.partitions).await {
            tracing::warn!(error = %e, "could not create topics");
        }
    }
    let splunk = match &cfg.splunk_url {
        Some(url) => {
            let mut hec = tributary_shared::splunk::HecConfig::new(url.clone(), cfg.splunk_token.clone());
            hec.ack_channel = cfg.splunk_channel.clone();
            tracing::info!("forwarding aggregates and alerts to Splunk HEC");
            Some(tributary_shared::splunk::HecClient::new(hec).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => None,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let outputs = Outputs {
        aggregates: cfg.aggregates_topic.clone(),
        alerts: cfg.alerts_topic.clone(),
        deadletter: cfg.deadletter_topic.clone(),
    };
    let handler = Arc::new(AnalyzeHandler::new(
        analyzer,
        log.publisher(),
        outputs,
        splunk,
        Metrics::new(&mut registry),
    ));
    let ops = Ops::new(Arc::new(registry), Arc::new(KafkaReady(log.publisher())));
    let listener = tokio::net::TcpListener::bind((cfg.bind, cfg.port))
        .await
        .with_context(|| format!("binding port {}", cfg.port))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        axum::serve(listener, ops.router())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    let sub = log
        .subscribe(&cfg.group, std::slice::from_ref(&cfg.raw_topic))
        .await
        .context("joining the consumer group")?;
    // Ticks between polls: closes the windows of quiet partitions and evicts idle series.
    let sub = Ticking::wrap(sub, handler.clone());
    tracing::info!(
        group = %cfg.group,
        topic = %cfg.raw_topic,
        windows = ?cfg.windows,
        idle_timeout_secs = cfg.idle_timeout_secs,
        series_idle_secs = cfg.series_idle_secs,
        max_series = cfg.max_series,
        "analyze consuming"
    );
    let runner_cfg = RunnerConfig {
        max_batch: cfg.batch_max,
        ..RunnerConfig::default()
    };
    let draining = ops.clone();
    run_consumer(sub, &*handler, &runner_cfg, async move {
        tributary_shared::shutdown::signal().await;
        draining.start_draining();
    })
    .await?;
    let _ = stop_tx.send(true);
    let _ = server.await;
    log.publisher().flush(std::time::Duration::from_secs(10)).await.ok();
    tracing::info!("analyze stopped");
    Ok(())
}
