//! The harness every function runs in: what each of them would otherwise
//! wire again at start and stop.
//!
//! A function's `run(config, deps, shutdown)` builds its handler or router,
//! names its readiness and calls one of two entry points:
//! - [`Service::serve`] for HTTP functions (ingest, dashboard): the
//!   function's router merged with the ops endpoints, served on the host's
//!   [`Endpoint`] until shutdown, then the requests in flight are finished;
//! - [`Service::consume`] for Kafka-triggered functions (archive, analyze,
//!   process): the ops endpoints served while the consumer runner drives the
//!   handler; the group is joined only once the store the handler writes to
//!   is usable, and on shutdown the last batch is committed, the group left
//!   and the publisher flushed before the ops endpoints stop.
//!
//! In both, shutdown turns `/readyz` to 503 first ([`Ops::start_draining`]).
//!
//! # Layout
//!
//! - this file: [`Host`], [`Endpoint`], [`Service`], [`ServiceError`];
//! - [`http`]: serving a router over HTTP/1.1 with graceful shutdown;
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`readiness`]: the [`Readiness`](readiness::Readiness) trait, its error
//!   and one adapter per backend trait;
//! - [`runtime`]: the runtime a binary's `main` runs on, which exits without
//!   waiting for abandoned blocking calls;
//! - [`shutdown`]: the shutdown token and the signal listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::KafkaArgs;
use crate::eventlog::runner::{Handler, RunnerConfig, run_consumer};
use crate::eventlog::{EventLog, EventLogError};
use crate::telemetry::{ErrorChain, MetricsRegistry};

pub mod http;
pub mod ops;
pub mod readiness;
pub mod runtime;
pub mod shutdown;

pub use ops::Ops;
pub use readiness::{NotReady, Readiness};
pub use shutdown::Shutdown;

/// How long a consumer waits at stop for records still queued in its
/// publisher. Every publish a function acts on is awaited until the log has
/// it (see [`crate::eventlog::Publisher::publish`]), so what is still
/// queued when `run` ends is only what a caller stopped waiting for (the
/// registry and rules relays race each publish against the stop and send
/// everything again at the next start): not worth waiting out a delivery
/// timeout for when the broker is unreachable (process's stop took 5.1 s).
const FLUSH_AT_STOP: Duration = Duration::from_millis(500);
/// Longest wait between two readiness checks before a consumer joins its group.
const MAX_READY_BACKOFF: Duration = Duration::from_secs(30);

/// Errors of the harness. What failed, with the backend's error as the source.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Lambda runtime failed.
    #[error("the Lambda runtime failed")]
    Lambda(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A dependency refuses the function's settings; waiting cannot help.
    #[error("cannot start")]
    Dependency(#[source] NotReady),
    /// The consumer group could not be joined or left with an error.
    #[error("consumer group {group}")]
    Consumer {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: EventLogError,
    },
}

/// Where a function serves HTTP: its API if it has one, and the ops endpoints.
pub enum Endpoint {
    /// A bound TCP listener, served by hyper.
    Tcp(TcpListener),
    /// The AWS Lambda runtime API (`AWS_LAMBDA_RUNTIME_API` set): the router
    /// answers Lambda invocations (responses are buffered, so no streaming).
    Lambda,
    /// Not served: a function embedded in `tributary dev`, whose metrics
    /// another function's endpoint serves.
    Embedded,
}

impl Endpoint {
    /// Bind `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServiceError> {
        TcpListener::bind(addr)
            .await
            .map(Self::Tcp)
            .map_err(|source| ServiceError::Bind { addr, source })
    }

    /// The Lambda runtime API when `AWS_LAMBDA_RUNTIME_API` is set, `addr` bound otherwise.
    pub async fn lambda_or_bind(addr: SocketAddr) -> Result<Self, ServiceError> {
        if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
            Ok(Self::Lambda)
        } else {
            Self::bind(addr).await
        }
    }

    /// The bound address, for a TCP endpoint.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Lambda | Self::Embedded => None,
        }
    }
}

/// What the process gives a function besides its backends: where to serve
/// and where to register its metrics.
pub struct Host {
    /// Where HTTP is served.
    pub endpoint: Endpoint,
    /// Where metrics are registered (shared by the functions of one process).
    pub metrics: MetricsRegistry,
}

impl Host {
    /// A host serving on `endpoint` with a registry of its own.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            metrics: MetricsRegistry::new(),
        }
    }

    /// A function embedded in a bigger process: nothing served, metrics in `metrics`.
    pub fn embedded(metrics: MetricsRegistry) -> Self {
        Self {
            endpoint: Endpoint::Embedded,
            metrics,
        }
    }
}

/// Which group a consumer joins, on which topics, how it batches, and what
/// it waits for before joining.
#[derive(Clone)]
pub struct ConsumerSettings {
    /// Consumer group.
    pub group: String,
    /// Topics it reads.
    pub topics: Vec<String>,
    /// Batching and back-off.
    pub runner: RunnerConfig,
    /// The store the handler writes to, which must be usable before the
    /// group is joined (`None`: join at once).
    pub sink: Option<Arc<dyn Readiness>>,
    /// Topics to create (with this many partitions) once the ops endpoints
    /// answer, before joining: those the function reads and writes.
    pub create: Option<(Vec<String>, i32)>,
}

impl ConsumerSettings {
    /// Group `group` on `topics`, at most `max_batch` records per batch, the runner's other defaults.
    pub fn new(group: &str, topics: &[&str], max_batch: usize) -> Self {
        Self {
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            runner: RunnerConfig {
                max_batch,
                group: group.to_owned(),
                ..RunnerConfig::default()
            },
            sink: None,
            create: None,
        }
    }

    /// Create `topics` before joining, if `kafka` says the functions create
    /// theirs (off in production, where the deployment does).
    pub fn creating(mut self, kafka: &KafkaArgs, topics: &[&str]) -> Self {
        if kafka.create_topics {
            self.create = Some((topics.iter().map(|t| (*t).to_owned()).collect(), kafka.partitions));
        }
        self
    }

    /// Commit at most every `kafka`'s `commit_every_ms` (see [`RunnerConfig::commit_every`]).
    pub fn committing(mut self, kafka: &KafkaArgs) -> Self {
        self.runner.commit_every = std::time::Duration::from_millis(kafka.commit_every_ms);
        self
    }

    /// Join only once `sink` is ready: a member that cannot write would only
    /// take partitions from members that can and retry its batches.
    pub fn after(mut self, sink: Arc<dyn Readiness>) -> Self {
        self.sink = Some(sink);
        self
    }
}

/// One function, hosted: its name (in logs), endpoint and ops endpoints.
pub struct Service {
    name: &'static str,
    endpoint: Endpoint,
    ops: Ops,
}

impl Service {
    /// Host function `name` on `host`, ready when `readiness` says so.
    pub fn new(name: &'static str, host: Host, readiness: Arc<dyn Readiness>) -> Self {
        Self {
            name,
            endpoint: host.endpoint,
            ops: Ops::new(host.metrics, readiness),
        }
    }

    /// Serve `api` with the ops routes until `shutdown`, then finish the
    /// requests in flight. Under Lambda the runtime decides when to stop.
    pub async fn serve(self, api: Router, shutdown: &Shutdown) -> Result<(), ServiceError> {
        let router = api.merge(self.ops.router());
        match self.endpoint {
            Endpoint::Tcp(listener) => {
                tracing::info!(function = self.name, addr = ?listener.local_addr().ok(), "{} listening", self.name);
                http::serve(listener, router, drain(&self.ops, shutdown)).await;
            }
            Endpoint::Lambda => {
                tracing::info!(function = self.name, "serving through the Lambda runtime API");
                serve_lambda(router)?;
            }
            Endpoint::Embedded => drain(&self.ops, shutdown).await,
        }
        tracing::info!(function = self.name, "{} stopped", self.name);
        Ok(())
    }

    /// Run `handler` as a member of `settings.group` until `shutdown`: the
    /// ops endpoints are served throughout; the group is joined once the
    /// settings' sink is ready, if they name one (waiting with back-off while
    /// it is unavailable, failing if it is misconfigured); on shutdown the
    /// last batch is committed, the group left and `log`'s publisher flushed.
    pub async fn consume<H: Handler + ?Sized>(
        self,
        log: &dyn EventLog,
        settings: &ConsumerSettings,
        handler: &H,
        shutdown: &Shutdown,
    ) -> Result<(), ServiceError> {
        let ops_stop = Shutdown::new();
        let ops_server = spawn_ops(self.name, self.endpoint, self.ops.router(), &ops_stop);
        let result = consume(self.name, &self.ops, log, settings, handler, shutdown).await;
        ops_stop.trigger();
        if let Some(server) = ops_server {
            let _ = server.await;
        }
        tracing::info!(function = self.name, "{} stopped", self.name);
        result
    }
}

/// Run a further consumer group in a function that serves its ops
/// endpoints already (process's notifier): what [`Service::consume`] does,
/// without ops endpoints of its own, until `shutdown`.
pub async fn consume_beside<H: Handler + ?Sized>(
    name: &'static str,
    log: &dyn EventLog,
    settings: &ConsumerSettings,
    handler: &H,
    shutdown: &Shutdown,
) -> Result<(), ServiceError> {
    join_and_run(name, log, settings, handler, shutdown, shutdown.wait()).await?;
    Ok(())
}

/// Wait for the settings' sink, create their topics, join the group and
/// drive `handler` until `stop`; whether the group was joined at all (a
/// shutdown while waiting for the sink: no).
async fn join_and_run<H: Handler + ?Sized>(
    name: &'static str,
    log: &dyn EventLog,
    settings: &ConsumerSettings,
    handler: &H,
    shutdown: &Shutdown,
    stop: impl Future<Output = ()>,
) -> Result<bool, ServiceError> {
    if let Some(sink) = &settings.sink
        && !wait_until_ready(name, sink.as_ref(), shutdown).await?
    {
        return Ok(false);
    }
    if let Some((topics, partitions)) = &settings.create {
        create_topics(log, topics, *partitions).await;
    }
    let group = settings.group.clone();
    let sub = log
        .subscribe(&settings.group, &settings.topics)
        .await
        .map_err(|source| ServiceError::Consumer {
            group: group.clone(),
            source,
        })?;
    tracing::info!(function = name, group = %settings.group, topics = ?settings.topics, "{name} consuming");
    run_consumer(sub, handler, &settings.runner, stop)
        .await
        .map_err(|source| ServiceError::Consumer { group, source })?;
    Ok(true)
}

async fn consume<H: Handler + ?Sized>(
    name: &'static str,
    ops: &Ops,
    log: &dyn EventLog,
    settings: &ConsumerSettings,
    handler: &H,
    shutdown: &Shutdown,
) -> Result<(), ServiceError> {
    if !join_and_run(name, log, settings, handler, shutdown, drain(ops, shutdown)).await? {
        return Ok(());
    }
    if let Err(e) = log.publisher().flush(FLUSH_AT_STOP).await {
        tracing::warn!(function = name, error = %ErrorChain(&e), "records nobody waited for any more were left unsent at stop");
    }
    Ok(())
}

/// Answer Lambda invocations with `router` until the runtime stops. The
/// runtime's future is not `Send` (it holds a request body across an await),
/// so it is driven to completion in place, on this worker thread turned
/// blocking, which keeps [`Service::serve`] spawnable; Lambda sends one
/// invocation at a time. Needs the multi-threaded runtime the binaries start.
fn serve_lambda(router: Router) -> Result<(), ServiceError> {
    let runtime = tokio::runtime::Handle::current();
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(ServiceError::Lambda(
            "the Lambda runtime needs a multi-threaded Tokio runtime".into(),
        ));
    }
    tokio::task::block_in_place(|| runtime.block_on(lambda_http::run(router))).map_err(ServiceError::Lambda)
}

/// Resolves once `shutdown` fired, after turning `/readyz` to 503.
fn drain(ops: &Ops, shutdown: &Shutdown) -> impl Future<Output = ()> + Send + 'static {
    let (ops, stop) = (ops.clone(), shutdown.wait());
    async move {
        stop.await;
        ops.start_draining();
    }
}

/// Serve `router` on a TCP endpoint until `stop`; nothing to serve otherwise.
fn spawn_ops(
    name: &'static str,
    endpoint: Endpoint,
    router: Router,
    stop: &Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    let Endpoint::Tcp(listener) = endpoint else { return None };
    tracing::info!(function = name, addr = ?listener.local_addr().ok(), "{name}'s ops endpoints listening");
    let stop = stop.wait();
    Some(tokio::spawn(http::serve(listener, router, stop)))
}

/// Check readiness until it passes (`true`) or `shutdown` fires (`false`),
/// backing off up to [`MAX_READY_BACKOFF`]; a misconfigured dependency is an error.
async fn wait_until_ready(name: &'static str, sink: &dyn Readiness, shutdown: &Shutdown) -> Result<bool, ServiceError> {
    let mut delay = Duration::from_millis(200);
    loop {
        // A check can take seconds against an unreachable broker: a shutdown must not wait for it.
        let checked = tokio::select! {
            _ = shutdown.triggered() => return Ok(false),
            checked = sink.check() => checked,
        };
        match checked {
            Ok(()) => return Ok(true),
            Err(e) if e.is_permanent() => return Err(ServiceError::Dependency(e)),
            Err(e) => {
                tracing::warn!(function = name, error = %ErrorChain(&e), retry_in = ?delay, "not ready to consume yet; waiting");
            }
        }
        tokio::select! {
            _ = shutdown.triggered() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_READY_BACKOFF);
    }
}

/// Create `topics` if `kafka` says the functions create theirs (see [`create_topics`]).
pub async fn ensure_topics(log: &(impl EventLog + ?Sized), kafka: &KafkaArgs, topics: &[String]) {
    if kafka.create_topics {
        create_topics(log, topics, kafka.partitions).await;
    }
}

/// Create `topics`; a failure is logged, not fatal (the broker may come up
/// after the function; `/readyz` and the runner's retries cover that).
async fn create_topics(log: &(impl EventLog + ?Sized), topics: &[String], partitions: i32) {
    if let Err(e) = log.ensure_topics(topics, partitions).await {
        tracing::warn!(error = %ErrorChain(&e), ?topics, "could not create topics");
    }
}
