//! Tributary's ingest function: the HTTP edge devices talk to.
//!
//! `POST /v1/telemetry` takes one reading, a JSON array or NDJSON (optionally
//! gzip), authenticates the device with a signed token (no database lookup,
//! see [`tributary_shared::auth`]), validates each item, and publishes the
//! valid ones to `telemetry.raw` keyed by device id.
//!
//! Guarantees:
//! - a reading reported `accepted` (and the 202 that carries it) is durably in
//!   the event log: the answer is written only after the broker acknowledged;
//! - a rejected item is named by index, field and reason; bad input never panics;
//! - when the log cannot take records (broker down, queue full) the answer is
//!   503 with `Retry-After`, nothing is buffered without bound, and a retry of
//!   the same reading carries the same id (device-supplied or content-derived),
//!   so it is never counted twice downstream;
//! - on shutdown `/readyz` turns 503, requests in flight are answered, and the
//!   producer is flushed before [`run`] returns.
//!
//! The same router is served by hyper under KEDA and by the Lambda runtime
//! when `AWS_LAMBDA_RUNTIME_API` is set (see [`tributary_shared::service`]).
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point;
//! - [`api`]: the request handler and the state requests share;
//! - [`body`]: content types, gzip and splitting a body into items;
//! - [`config`]: the settings, with their defaults;
//! - [`error`]: request refusals ([`error::ApiError`]) and run errors ([`Error`]);
//! - [`metrics`]: the Prometheus counters;
//! - [`oversize`]: reading a body within its limit, and a 413 every client can read;
//! - [`ratelimit`]: the per-device token bucket.

use std::sync::Arc;
use std::time::Duration;

use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Publisher};
use tributary_shared::service::readiness::PublisherReady;
use tributary_shared::service::{self, Endpoint, Host, Service, Shutdown};
use tributary_shared::telemetry::ErrorChain;

pub mod api;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod oversize;
pub mod ratelimit;

pub use api::{Ingest, app};
pub use config::Config;
pub use error::Error;

/// What ingest runs on: the publisher of the event log (it never consumes),
/// and its host.
pub struct Deps {
    /// Where readings are published (Kafka in production).
    pub publisher: Arc<dyn Publisher>,
    /// Where the API and ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: Kafka (with the raw topic
    /// created when the settings ask for it), and `$PORT` (or the Lambda runtime).
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        // Ingest's own linger first, so an operator's `linger.ms` option still wins.
        let mut kafka = config.kafka.clone();
        kafka.options.insert(0, format!("linger.ms={}", config.linger_ms));
        let log = KafkaLog::connect(&kafka, "tributary-ingest").map_err(Error::EventLog)?;
        service::ensure_topics(&log, &config.kafka, std::slice::from_ref(&config.topics.raw)).await;
        let endpoint = Endpoint::lambda_or_bind(config.listen.addr()).await?;
        Ok(Self {
            publisher: log.publisher(),
            host: Host::new(endpoint),
        })
    }
}

/// Serve devices until `shutdown`, then answer what is in flight and flush the producer.
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    if config.fleet_key == config::DEV_FLEET_KEY {
        tracing::warn!("using the built-in development fleet key; set TRIBUTARY_FLEET_KEY in production");
    }
    let publisher = deps.publisher;
    let state = Arc::new(Ingest::new(&config, publisher.clone(), &deps.host.metrics));
    let readiness = Arc::new(PublisherReady(publisher.clone()));
    Service::new("ingest", deps.host, readiness)
        .serve(app(state), &shutdown)
        .await?;
    if let Err(e) = publisher.flush(Duration::from_secs(config.shutdown_grace_secs)).await {
        tracing::error!(error = %ErrorChain(&e), "flushing the producer at shutdown failed");
    }
    Ok(())
}
