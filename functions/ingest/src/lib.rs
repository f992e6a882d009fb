//! Tributary's ingest function: the HTTP edge devices talk to.
//!
//! `POST /v1/telemetry` takes one reading, a JSON array or NDJSON (optionally
//! gzip), authenticates the device with a signed token (no database lookup,
//! see [`tributary_shared::auth`]), admits it by the device registry as this
//! replica holds it in memory (disabled devices, rotated keys and, in
//! `registered` enrollment, unknown devices are refused; see
//! [`tributary_shared::registry::view`]), validates each item, and publishes
//! the valid ones to `telemetry.raw` keyed by device id.
//!
//! Guarantees:
//! - a reading reported `accepted` (and the 202 that carries it) is durably in
//!   the event log: the answer is written only after the broker acknowledged;
//! - a rejected item is named by index, field and reason; bad input never panics;
//! - when the log cannot take records (broker down, queue full) the answer is
//!   503 with `Retry-After`, nothing is buffered without bound, and a retry of
//!   the same reading carries the same id (device-supplied or content-derived),
//!   so it is never counted twice downstream;
//! - `/readyz` is 503 until the registry topic, as it was at start, has been
//!   read, so a replica never admits a device the registry has disabled;
//!   later changes reach it as they are published (within about a second);
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

use async_trait::async_trait;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::registry::view::{self, DeviceView};
use tributary_shared::service::readiness::{NotReady, PublisherReady, Readiness};
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

/// What ingest runs on: the event log (it publishes readings and follows
/// the registry topic; it never joins a consumer group), and its host.
pub struct Deps {
    /// Where readings are published and the registry is read (Kafka in production).
    pub log: Arc<dyn EventLog>,
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
            log: Arc::new(log),
            host: Host::new(endpoint),
        })
    }
}

/// Serve devices until `shutdown`, then answer what is in flight and flush the producer.
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    let publisher = deps.log.publisher();
    let state = Arc::new(Ingest::new(&config, publisher.clone(), &deps.host.metrics)?);
    if config.effective_fleet_key()? == config::DEV_FLEET_KEY {
        tracing::warn!("using the built-in development fleet key; set TRIBUTARY_FLEET_KEY in production");
    }
    // Created here when missing, as the other topics are (a compacted topic
    // is not made by publishing to it); production creates it in the deployment.
    if config.kafka.create_topics
        && let Err(e) = deps.log.ensure_compacted_topic(&config.topics.devices, 1).await
    {
        tracing::warn!(topic = %config.topics.devices, error = %ErrorChain(&e), "could not create the registry topic; following it anyway");
    }
    // On a thread of its own: nothing the follower does (librdkafka calls,
    // its log lines) runs on the threads that serve requests.
    let gauges = deps.host.metrics.register(metrics::ViewGauges::new);
    let follower = {
        let (log, topic, devices, stop) = (
            deps.log.clone(),
            config.topics.devices.clone(),
            state.devices().clone(),
            shutdown.clone(),
        );
        std::thread::Builder::new()
            .name("registry-view".into())
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => {
                        rt.block_on(async {
                            let observed = devices.clone();
                            let gauges = async move {
                                loop {
                                    gauges.observe(&observed);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            };
                            tokio::select! {
                                () = view::follow(log, topic, devices, stop) => {}
                                () = gauges => {}
                            }
                        });
                        // A tail still opening against an unreachable broker
                        // is a blocking call of up to its metadata timeout:
                        // dropping the runtime would wait for it and hold
                        // the stop for seconds.
                        rt.shutdown_background();
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the device registry's follower"),
                },
            )
            .map_err(Error::Follower)?
    };
    let readiness = Arc::new(IngestReady {
        publisher: PublisherReady(publisher.clone()),
        devices: state.devices().clone(),
    });
    Service::new("ingest", deps.host, readiness)
        .serve(app(state), &shutdown)
        .await?;
    // The follower sees the same shutdown and stops within one poll (0.5 s).
    let _ = tokio::task::spawn_blocking(move || follower.join()).await;
    if let Err(e) = publisher.flush(Duration::from_secs(config.shutdown_grace_secs)).await {
        tracing::error!(error = %ErrorChain(&e), "flushing the producer at shutdown failed");
    }
    Ok(())
}

/// Ready when the event log answers and the registry has been read.
struct IngestReady {
    publisher: PublisherReady,
    devices: Arc<DeviceView>,
}

/// The registry is not read yet.
#[derive(Debug, thiserror::Error)]
#[error("the devices topic has not been read to its end yet")]
struct RegistryBehind;

#[async_trait]
impl Readiness for IngestReady {
    async fn check(&self) -> Result<(), NotReady> {
        self.publisher.check().await?;
        if self.devices.is_caught_up() {
            Ok(())
        } else {
            Err(NotReady::unavailable("device registry", RegistryBehind))
        }
    }
}
