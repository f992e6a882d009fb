//! Tributary's archive function: every reading of `telemetry.raw` kept in
//! Azure Cosmos DB (NoSQL API), one document per reading, partitioned by
//! `/deviceId`; in the all-in-one mode, in a local SQLite file, behind the
//! same [`RawStore`] trait.
//!
//! Guarantees:
//! - the document id is the reading id and the partition key its device, and
//!   every write is an upsert, so a replayed batch never duplicates anything;
//! - [`handler::ArchiveHandler`] returns `Ok` (and so lets the runner commit
//!   offsets) only once every reading of the batch is acknowledged by the
//!   store or published to the dead-letter topic with its reason;
//! - throttling (429), timeouts, 5xx and connection failures are retried by the
//!   runner on the whole (idempotent) batch, never skipped; only a record that
//!   is not a valid [`Reading`](tributary_shared::model::Reading) or fails on
//!   its own [`Config::max_attempts`] times goes to the dead-letter topic
//!   (throttling and outages never count as a record's fault);
//! - a store that cannot be reached at start is waited for with back-off (the
//!   ops endpoints answer meanwhile, `/readyz` with 503): an outage at start is
//!   not a crash loop; settings the store refuses end [`run`] with an error.
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point;
//! - [`config`]: the settings, with their defaults;
//! - [`handler`]: the batch handler and its metrics;
//! - [`error`]: why [`run`] could not start or stopped.

use std::sync::Arc;
use std::time::Duration;

use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::raw::RawStore;
use tributary_shared::raw::cosmos::LazyCosmosStore;
use tributary_shared::service::readiness::RawStoreReady;
use tributary_shared::service::{ConsumerSettings, Endpoint, Host, Readiness, Service, Shutdown};

pub mod config;
pub mod error;
pub mod handler;

pub use config::Config;
pub use error::Error;
pub use handler::{ArchiveHandler, ArchiveMetrics};

/// What archive runs on: the event log it reads, the store it writes, its host.
pub struct Deps {
    /// The event log (Kafka in production).
    pub log: Arc<dyn EventLog>,
    /// Where readings are archived (Cosmos DB in production).
    pub raw: Arc<dyn RawStore>,
    /// Where the ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: Kafka, Cosmos DB
    /// (connected, and the container created if asked, on first use), `$PORT`.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let mut settings = config
            .cosmos
            .settings(Duration::from_millis(config.cosmos_timeout_ms.max(1)))
            .map_err(Error::Cosmos)?
            .ok_or(Error::NoCosmosEndpoint)?;
        if config.cosmos_create && config.cosmos.auth == tributary_shared::raw::CosmosAuth::Identity {
            // The SDK's control-plane calls (create database and container) need key auth.
            return Err(Error::IdentityCannotCreate);
        }
        settings.ttl_secs = config.cosmos_ttl_secs;
        settings.concurrency = config.cosmos_concurrency.max(1);
        let raw = Arc::new(LazyCosmosStore::new(settings, config.cosmos_create));
        let log = KafkaLog::connect(&config.kafka, "tributary-archive").map_err(Error::EventLog)?;
        let host = Host::new(Endpoint::bind(config.listen.addr()).await?);
        Ok(Self {
            log: Arc::new(log),
            raw,
            host,
        })
    }
}

/// Archive `telemetry.raw` until `shutdown`, then commit the last batch and leave the group.
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    let metrics = deps.host.metrics.register(ArchiveMetrics::new);
    let handler = ArchiveHandler::new(
        deps.raw.clone(),
        deps.log.publisher(),
        config.topics.deadletter.clone(),
        config.max_attempts,
        metrics,
    );
    let ready: Arc<dyn Readiness> = Arc::new(RawStoreReady(deps.raw));
    let consumer = ConsumerSettings::new(&config.group, &[&config.topics.raw], config.batch_max)
        .committing(&config.kafka)
        .creating(&config.kafka, &[&config.topics.raw, &config.topics.deadletter])
        .after(ready.clone());
    let service = Service::new("archive", deps.host, ready);
    service
        .consume(deps.log.as_ref(), &consumer, &handler, &shutdown)
        .await?;
    Ok(())
}
