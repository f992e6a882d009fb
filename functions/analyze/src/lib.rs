//! Tributary's analyze function: event-time tumbling windows with mergeable
//! statistics, online anomaly models, alerts, published to
//! `telemetry.aggregates` and `telemetry.alerts`.
//!
//! Guarantees (no reading lost, none counted twice in an emitted aggregate,
//! across crash, restart, scale-out and scale-in): offsets are committed only
//! up to the earliest reading still inside an open window, with the
//! partition's event clock as commit metadata, and outputs are published
//! before their offsets are committed (see [`handler`]). Everything but the
//! I/O is deterministic: the same input gives the same output.
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point;
//! - [`config`]: the settings, with their defaults;
//! - [`handler`]: the batch handler the consumer runner drives (apply,
//!   publish, what is safe to commit, the tick between batches);
//! - [`engine`]: windows and models per consumer, series eviction;
//! - [`window`], [`sketch`]: tumbling windows and mergeable statistics;
//! - [`detect`]: the anomaly models, the combiner, threshold rules (and
//!   which apply to which series) and the alert state machine;
//! - [`idle`]: the rule that closes the windows of quiet partitions;
//! - [`outbox`]: outputs not yet published, with the trace context they continue;
//! - [`state`]: snapshots of model and alert state, for a warm takeover;
//! - [`records`]: the published records (the contract lives in the shared crate);
//! - [`metrics`]: the Prometheus counters;
//! - [`nab`]: an evaluation on the Numenta Anomaly Benchmark (reads CSV files);
//! - [`error`]: why [`run`] could not start or stopped.

use std::sync::Arc;

use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::follow::{self, TopicView, ViewsCaughtUp};
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::registry::view::GroupView;
use tributary_shared::rules::view::RuleView;
use tributary_shared::service::readiness::PublisherReady;
use tributary_shared::service::{ConsumerSettings, Endpoint, Host, Service, Shutdown};
use tributary_shared::splunk::{HecClient, HecConfig};

pub mod config;
pub mod detect;
pub mod engine;
pub mod error;
pub mod handler;
pub mod idle;
pub mod metrics;
pub mod nab;
pub mod outbox;
/// The records analyze publishes: the contract lives in the shared crate.
pub mod records {
    pub use tributary_shared::records::{Aggregate, Alert, AlertState};
}
pub use tributary_shared::sketch;
pub mod state;
pub mod window;

pub use config::Config;
pub use error::Error;

/// What analyze runs on: the event log it reads and publishes to, and its host.
pub struct Deps {
    /// The event log (Kafka in production).
    pub log: Arc<dyn EventLog>,
    /// Where the ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: Kafka and `$PORT`.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let log = KafkaLog::connect(&config.kafka, "tributary-analyze").map_err(Error::EventLog)?;
        let host = Host::new(Endpoint::bind(config.listen.addr()).await?);
        Ok(Self {
            log: Arc::new(log),
            host,
        })
    }
}

/// Analyze `telemetry.raw` until `shutdown`, then publish and commit what is
/// due and leave the group (open windows are rebuilt by the next owner).
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    let analyzer = engine::Analyzer::new(config.analyzer()?);
    let splunk = match &config.splunk_url {
        Some(url) => {
            let mut hec = HecConfig::new(url.clone(), config.splunk_token.clone());
            hec.ack_channel.clone_from(&config.splunk_channel);
            if let Some(path) = &config.splunk_ca_file {
                hec.ca_pem = Some(std::fs::read(path).map_err(|source| Error::SplunkCaFile {
                    path: path.clone(),
                    source,
                })?);
            }
            tracing::info!("forwarding aggregates and alerts to Splunk HEC");
            Some(HecClient::new(hec).map_err(Error::Splunk)?)
        }
        None => None,
    };
    let outputs = handler::Outputs {
        aggregates: config.topics.aggregates.clone(),
        alerts: config.topics.alerts.clone(),
        deadletter: config.topics.deadletter.clone(),
    };
    let metrics = deps.host.metrics.register(metrics::Metrics::new);
    let publisher = deps.log.publisher();
    let mut handler = handler::AnalyzeHandler::new(analyzer, publisher.clone(), outputs, splunk, metrics);
    if let Some(topic) = config.state_topic() {
        handler = handler.with_snapshots(handler::Snapshots {
            log: Arc::clone(&deps.log),
            topic,
            partitions: config.kafka.partitions,
            every: std::time::Duration::from_secs(config.snapshot_every_secs.max(1)),
        });
    }
    tracing::info!(
        windows = ?config.windows,
        idle_timeout_secs = config.idle_timeout_secs,
        series_idle_secs = config.series_idle_secs,
        max_series = config.max_series,
        state_topic = config.state_topic().unwrap_or_default(),
        snapshot_every_secs = config.snapshot_every_secs,
        "analyze settings"
    );
    let outputs_and_input = [
        &config.topics.raw,
        &config.topics.aggregates,
        &config.topics.alerts,
        &config.topics.deadletter,
    ]
    .map(String::as_str);
    let mut consumer = ConsumerSettings::new(&config.group, &[&config.topics.raw], config.batch_max)
        .committing(&config.kafka)
        .creating(&config.kafka, &outputs_and_input);
    let followers = Shutdown::new();
    let mut following = Vec::new();
    if config.follow_rules {
        let source = handler::RuleSource {
            rules: Arc::new(RuleView::new()),
            groups: Arc::new(GroupView::new()),
        };
        let views: [(&String, Arc<dyn TopicView>); 2] = [
            (&config.topics.rules, source.rules.clone()),
            (&config.topics.devices, source.groups.clone()),
        ];
        for (topic, view) in &views {
            // Compacted, before a publisher could create them otherwise.
            if config.kafka.create_topics
                && let Err(e) = deps.log.ensure_compacted_topic(topic, 1).await
            {
                tracing::warn!(topic = %topic, error = %tributary_shared::telemetry::ErrorChain(&e), "could not create the topic");
            }
            following.push(tokio::spawn(follow::follow(
                Arc::clone(&deps.log),
                (*topic).clone(),
                Arc::clone(view),
                followers.clone(),
            )));
        }
        // Readings are scored under the rules in force: not before they are read.
        consumer = consumer.after(Arc::new(ViewsCaughtUp(
            views.map(|(topic, view)| (topic.clone(), view)).into(),
        )));
        handler = handler.with_rules(source);
    }
    let service = Service::new("analyze", deps.host, Arc::new(PublisherReady(publisher)));
    let consumed = service.consume(deps.log.as_ref(), &consumer, &handler, &shutdown).await;
    followers.trigger();
    for f in following {
        let _ = f.await;
    }
    consumed?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    //! The seeded PRNG property tests use, and the readings the unit tests feed.

    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};
    use tributary_shared::model::Reading;

    /// A reading of `device` at 1,800,000,000 + `s` seconds with `metrics`.
    pub fn reading_of(device: &str, s: i64, metrics: &[(&str, f64)]) -> Reading {
        let t = Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("valid");
        Reading {
            schema_version: 1,
            id: format!("{device}-{s}"),
            device_id: device.to_owned(),
            event_time: t,
            received_time: t,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            tags: BTreeMap::new(),
            location: None,
        }
    }

    pub use tributary_testkit::rng::Rng;
}
