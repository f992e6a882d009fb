//! Tributary's process function: consumes `telemetry.aggregates` and
//! `telemetry.alerts`, writes them to PostgreSQL (one transaction per batch,
//! idempotent upserts) and keeps the Redis cache and change notifications the
//! dashboard reads.
//!
//! Guarantees: offsets are committed only after the batch's transaction
//! committed (the shared consumer runner retries a failed batch); replays
//! change nothing; records that can never be stored go to
//! `telemetry.deadletter` with the reason; Redis being down never stops
//! PostgreSQL writes and the cache is rebuilt from PostgreSQL afterwards.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tributary_shared::ops::Readiness;
use tributary_shared::results::ResultStore;

pub mod cache;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod store;

pub use config::Config;

/// `/readyz` for process (and the dashboard): the results store must answer
/// (the cache is optional by design).
pub struct StoreReadiness(pub Arc<dyn ResultStore>);

#[async_trait]
impl Readiness for StoreReadiness {
    async fn check(&self) -> Result<(), String> {
        let backend = self.0.backend();
        tokio::time::timeout(Duration::from_secs(2), self.0.ping())
            .await
            .map_err(|_| format!("{backend} timed out"))?
            .map_err(|e| format!("{backend}: {e}"))
    }
}

/// Background upkeep until `shutdown`: rebuild a stale cache every few
/// seconds and apply retention hourly.
pub async fn upkeep(
    store: Arc<dyn ResultStore>,
    cache: Arc<cache::Cache>,
    retention_days: u32,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_retention: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if cache.is_stale() {
            if let Err(e) = cache.rebuild(store.as_ref()).await {
                tracing::debug!(error = %e, "cache still stale");
            }
        }
        if retention_days > 0 && last_retention.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            last_retention = Some(tokio::time::Instant::now());
            let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
            match store.delete_aggregates_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention removed old windows"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    }
}
