//! Tributary's process function: consumes `telemetry.aggregates` and
//! `telemetry.alerts`, writes them to PostgreSQL (one transaction per batch,
//! idempotent upserts) and keeps the Redis cache and change notifications the
//! dashboard reads.
//!
//! It also runs the device registry's relay ([`tributary_shared::registry::relay`]):
//! every change recorded in the registry (same database) is published to
//! `tributary.devices`, which ingest and analyze follow; and the alert
//! rules' relay ([`tributary_shared::rules::relay`]), publishing every rule
//! to `tributary.rules`, which analyze follows.
//!
//! Guarantees: offsets are committed only after the batch's transaction
//! committed (the shared consumer runner retries a failed batch); replays
//! change nothing; records that can never be stored go to
//! `telemetry.deadletter` with the reason; Redis being down never stops
//! PostgreSQL writes and the cache is rebuilt from PostgreSQL afterwards.
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point, and the [`upkeep`] task
//!   (cache rebuilds, the rollup job, retention);
//! - [`config`]: the settings, with their defaults;
//! - [`handler`]: the batch handler (decode, validate, write, dead-letter, refresh the cache);
//! - [`cache`]: what the dashboard reads from the cache, derived from the store;
//! - [`store`]: the results store as process uses it;
//! - [`notify`]: the notifier, queuing alerts for the notification channels
//!   (a consumer group of its own), and its dispatcher, delivering the queue
//!   one lane per channel;
//! - [`metrics`]: the Prometheus counters;
//! - [`error`]: why [`run`] could not start or stopped.

use std::sync::Arc;
use std::time::Duration;

use tributary_shared::cache::{KvCache, RedisCache};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::notify::deliver::Deliverer;
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::registry::DeviceRegistry;
use tributary_shared::registry::relay::{self, Relay, RelaySettings};
use tributary_shared::results::{ResultStore, RollupRetention, StoreError, roles};
use tributary_shared::rules::RuleStore;
use tributary_shared::rules::relay::RulesRelay;
use tributary_shared::service::readiness::ResultStoreReady;
use tributary_shared::service::{ConsumerSettings, Endpoint, Host, Readiness, Service, Shutdown};

pub mod cache;
pub mod config;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod notify;
pub mod store;

pub use config::Config;
pub use error::Error;

/// What process runs on: the event log it reads, the store and cache it
/// writes, and its host.
pub struct Deps {
    /// The event log (Kafka in production).
    pub log: Arc<dyn EventLog>,
    /// The results store (PostgreSQL in production).
    pub store: Arc<dyn ResultStore>,
    /// The device registry, in the same database.
    pub registry: Arc<dyn DeviceRegistry>,
    /// The alert rules, in the same database.
    pub rules: Arc<dyn RuleStore>,
    /// The notification channels, in the same database.
    pub channels: Arc<dyn ChannelStore>,
    /// The hot-data cache (Redis in production).
    pub cache: Arc<dyn KvCache>,
    /// Where the ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: PostgreSQL, Redis (both
    /// connect lazily, so either may be down at start), Kafka and `$PORT`.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let store = store::open(&config.database_url, config.database_max_connections)
            .await
            .map_err(Error::Store)?;
        let registry = tributary_shared::registry::open(&config.database_url, 2)
            .await
            .map_err(Error::Registry)?;
        let rules = tributary_shared::rules::open(&config.database_url, 2)
            .await
            .map_err(Error::Rules)?;
        let channels = tributary_shared::notify::store::open(&config.database_url, 2)
            .await
            .map_err(Error::Channels)?;
        let cache = Arc::new(RedisCache::new(&config.redis_url).map_err(Error::Cache)?);
        let log = KafkaLog::connect(&config.kafka, "tributary-process").map_err(Error::EventLog)?;
        let host = Host::new(Endpoint::bind(config.listen.addr()).await?);
        Ok(Self {
            log: Arc::new(log),
            store,
            registry,
            rules,
            channels,
            cache,
            host,
        })
    }
}

/// Write aggregates and alerts until `shutdown`, then commit the last batch
/// and leave the group; the cache upkeep runs alongside.
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    if config.migrate {
        deps.store.migrate().await.map_err(Error::Migrate)?;
    }
    if let Some(password) = &config.readonly_password {
        let role = config.readonly_role.clone();
        let admin = config
            .database_url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| Error::ReadonlyRole {
                role: role.clone(),
                source: StoreError::Rejected(format!(
                    "roles need PostgreSQL; DATABASE_URL is not a PostgreSQL URL: {e}"
                )),
            })?;
        roles::enable_login(&admin, &role, password)
            .await
            .map_err(|source| Error::ReadonlyRole {
                role: role.clone(),
                source,
            })?;
        tracing::info!(role = %role, "the dashboard's role may log in");
    }
    // No warm-up here: the cache starts stale and the upkeep task rebuilds it at
    // once, so a database that is down at start never delays /healthz.
    let cache = Arc::new(cache::Cache::new(
        deps.cache,
        config.cache_ttl_secs,
        config.recent_alerts,
    ));
    let metrics = deps.host.metrics.register(metrics::Metrics::new);
    let handler = handler::ProcessHandler::new(
        &config,
        deps.store.clone(),
        cache.clone(),
        deps.log.publisher(),
        metrics.clone(),
    );
    let upkeep_stop = Shutdown::new();
    let upkeep = tokio::spawn(upkeep(
        deps.store.clone(),
        cache,
        Upkeep::from(&config),
        metrics.clone(),
        upkeep_stop.wait(),
    ));
    // Compacted, before the relays' first records could create them otherwise.
    if config.registry_relay_ms > 0 && config.kafka.create_topics {
        for topic in [&config.topics.devices, &config.topics.rules] {
            if let Err(e) = deps.log.ensure_compacted_topic(topic, 1).await {
                tracing::warn!(topic = %topic, error = %tributary_shared::telemetry::ErrorChain(&e), "could not create the topic");
            }
        }
    }
    let rules_relay = (config.registry_relay_ms > 0).then(|| {
        let relay = RulesRelay::new(
            deps.rules.clone(),
            deps.log.publisher(),
            config.topics.rules.clone(),
            Duration::from_millis(config.registry_relay_ms),
        );
        tokio::spawn(tributary_shared::rules::relay::run(relay, upkeep_stop.clone()))
    });
    let relay = (config.registry_relay_ms > 0).then(|| {
        let settings = RelaySettings {
            every: Duration::from_millis(config.registry_relay_ms),
            ..RelaySettings::default()
        };
        let relay = Relay::new(
            deps.registry.clone(),
            deps.log.publisher(),
            config.topics.devices.clone(),
            settings,
        );
        tokio::spawn(relay::run(relay, upkeep_stop.clone()))
    });
    let notifier = if config.notify {
        let deliverer = Deliverer::new(
            notify::backoff(Duration::from_secs(config.notify_retry_for_secs)),
            Duration::from_secs(10),
        )
        .map_err(Error::NotifyClient)?;
        let queued = Arc::new(tokio::sync::Notify::new());
        let handler = notify::Notifier::new(
            deps.channels.clone(),
            deps.registry.clone(),
            queued.clone(),
            metrics.clone(),
        );
        let dispatcher = Arc::new(notify::dispatch::Dispatcher::new(
            deps.channels.clone(),
            deliverer,
            notify::dispatch::DispatchSettings::default(),
            queued,
            metrics.clone(),
        ));
        let dispatching = tokio::spawn(dispatcher.run(shutdown.clone()));
        let settings = ConsumerSettings::new(&config.notify_group, &[config.topics.alerts.as_str()], 100)
            .committing(&config.kafka)
            .creating(&config.kafka, &[&config.topics.alerts]);
        let (log, stop) = (deps.log.clone(), shutdown.clone());
        Some(tokio::spawn(async move {
            let consumed =
                tributary_shared::service::consume_beside("notify", log.as_ref(), &settings, &handler, &stop).await;
            let _ = dispatching.await;
            consumed
        }))
    } else {
        None
    };
    let ready: Arc<dyn Readiness> = Arc::new(ResultStoreReady(deps.store));
    let topics = [config.topics.aggregates.as_str(), config.topics.alerts.as_str()];
    let consumer = ConsumerSettings::new(&config.group, &topics, config.batch_max)
        .committing(&config.kafka)
        .creating(
            &config.kafka,
            &[
                &config.topics.aggregates,
                &config.topics.alerts,
                &config.topics.deadletter,
            ],
        )
        .after(ready.clone());
    let service = Service::new("process", deps.host, ready);
    let consumed = service.consume(deps.log.as_ref(), &consumer, &handler, &shutdown).await;
    upkeep_stop.trigger();
    let _ = upkeep.await;
    for relay in [relay, rules_relay].into_iter().flatten() {
        let _ = relay.await;
    }
    if let Some(notifier) = notifier {
        match notifier.await {
            Ok(Err(e)) => {
                tracing::error!(error = %tributary_shared::telemetry::ErrorChain(&e), "the notifier stopped with an error")
            }
            Err(e) => tracing::error!(error = %e, "the notifier's task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(consumed?)
}

/// What the [`upkeep`] task does besides the cache.
#[derive(Clone, Debug)]
pub struct Upkeep {
    /// Days windows are kept (0: for ever).
    pub retention_days: u32,
    /// Between rollup jobs (zero: none).
    pub rollup_interval: Duration,
    /// Days each rollup tier is kept.
    pub rollup_retention: RollupRetention,
}

impl From<&Config> for Upkeep {
    fn from(c: &Config) -> Self {
        Self {
            retention_days: c.retention_days,
            rollup_interval: Duration::from_secs(c.rollup_interval_secs),
            rollup_retention: c.rollup_retention.clone(),
        }
    }
}

/// Buckets the rollup job recomputes per transaction.
const ROLLUP_BATCH: usize = 2000;

/// Background upkeep until `shutdown`: rebuild a stale cache every few
/// seconds, run the rollup job every `rollup_interval`, and apply retention
/// to windows and rollup tiers hourly.
pub async fn upkeep(
    store: Arc<dyn ResultStore>,
    cache: Arc<cache::Cache>,
    settings: Upkeep,
    metrics: metrics::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_cache = None;
    let mut last_rollup = None;
    let mut last_retention: Option<tokio::time::Instant> = None;
    let due = |last: Option<tokio::time::Instant>, every: Duration| last.is_none_or(|t| t.elapsed() >= every);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if due(last_cache, Duration::from_secs(5)) {
            last_cache = Some(tokio::time::Instant::now());
            if cache.is_stale()
                && let Err(e) = cache.rebuild(store.as_ref()).await
            {
                tracing::debug!(error = %e, "cache still stale");
            }
        }
        if !settings.rollup_interval.is_zero() && due(last_rollup, settings.rollup_interval) {
            last_rollup = Some(tokio::time::Instant::now());
            // A stop does not wait for a long job: an unfinished transaction rolls
            // back and its marks stay for the next start.
            let outcome = tokio::select! {
                _ = &mut shutdown => return,
                outcome = store.roll_up(ROLLUP_BATCH) => outcome,
            };
            match outcome {
                Ok(n) => {
                    metrics.rolled_up(Ok(n));
                    tracing::debug!(buckets = n, "rollups recomputed");
                }
                Err(e) => {
                    // The marks stay: the next run recomputes them.
                    metrics.rolled_up(Err(()));
                    tracing::warn!(error = %e, "rollup job failed");
                }
            }
        }
        if due(last_retention, Duration::from_secs(3600)) {
            last_retention = Some(tokio::time::Instant::now());
            apply_retention(store.as_ref(), &settings).await;
        }
    }
}

async fn apply_retention(store: &dyn ResultStore, settings: &Upkeep) {
    let now = chrono::Utc::now();
    if settings.retention_days > 0 {
        let cutoff = now - chrono::Duration::days(i64::from(settings.retention_days));
        match store.delete_aggregates_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention removed old windows"),
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
    for (tier, days) in settings.rollup_retention.0 {
        let Some(days) = days else { continue };
        let cutoff = now - chrono::Duration::days(i64::from(days));
        match store.delete_rollups_before(tier, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, tier_seconds = tier, "retention removed old rollups"),
            Err(e) => tracing::warn!(error = %e, tier_seconds = tier, "rollup retention failed"),
        }
    }
}
