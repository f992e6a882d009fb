//! The hot-data cache the dashboard reads, and the change notifications it
//! pushes to browsers, on a [`KvCache`] (Redis in production, in-process in
//! the all-in-one mode).
//!
//! Every entry is derived from the results store after a committed batch
//! (never from the batch alone), so the cache can always be rebuilt and a
//! replay rewrites the same values. Keys (all with a TTL):
//! - [`device_key`]: JSON of the device's latest state;
//! - [`FLEET_SUMMARY`]: JSON fleet counts;
//! - [`alert_key`]: JSON of one alert; [`RECENT_ALERTS`]: a sorted set of
//!   alert ids by update time, capped;
//! - channel [`CHANGES`]: one JSON message per committed batch.
//!
//! The cache being down never fails a batch: it is marked stale and rebuilt
//! from the store once it answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
pub use tributary_shared::cache::{
    CHANGES, CacheError as KvError, CacheOp, FLEET_SUMMARY, KvCache, MemoryCache, RECENT_ALERTS, RedisCache, alert_key,
    device_key,
};
use tributary_shared::results::{DeviceState, ResultStore, StoreError, StoredAlert};

/// Seconds since its last window after which a device counts as offline in the cached summary.
pub const ONLINE_WINDOW_SECS: i64 = 300;

/// Errors of the cache (logged and counted, never fatal to a batch).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache is unreachable or failed.
    #[error("{0}")]
    Cache(#[from] KvError),
    /// Reading the results store for the cache failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The cache writer.
pub struct Cache {
    kv: Arc<dyn KvCache>,
    stale: AtomicBool,
    ttl_secs: u64,
    recent: usize,
}

impl Cache {
    /// A cache writer on `kv`, entries living `ttl_secs`, keeping `recent` alert ids.
    pub fn new(kv: Arc<dyn KvCache>, ttl_secs: u64, recent: usize) -> Self {
        Self {
            kv,
            stale: AtomicBool::new(true),
            ttl_secs,
            recent,
        }
    }

    /// A cache writer on Redis at `url` (connects lazily, so Redis may be down at start).
    pub fn redis(url: &str, ttl_secs: u64, recent: usize) -> Result<Self, CacheError> {
        Ok(Self::new(Arc::new(RedisCache::new(url)?), ttl_secs, recent))
    }

    /// The cache it writes to.
    pub fn kv(&self) -> &Arc<dyn KvCache> {
        &self.kv
    }

    /// Whether the cache may lack committed data (it was unreachable).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }

    /// Refresh what a committed batch touched, or rebuild everything if the
    /// cache is stale. Failures mark the cache stale and are returned for logging.
    pub async fn after_commit(
        &self,
        store: &dyn ResultStore,
        devices: &[String],
        alert_ids: &[String],
    ) -> Result<(), CacheError> {
        let res = if self.is_stale() {
            self.rebuild(store).await
        } else {
            self.refresh(store, devices, alert_ids).await
        };
        if res.is_err() {
            self.stale.store(true, Ordering::SeqCst);
        }
        res
    }

    /// Rebuild every entry from the store (on start, and after an outage).
    pub async fn rebuild(&self, store: &dyn ResultStore) -> Result<(), CacheError> {
        let since = chrono::Utc::now() - chrono::Duration::seconds(self.ttl_secs as i64);
        let devices = store.recent_devices(since, 10_000).await?;
        let alerts = store.recent_alerts(self.recent as i64).await?;
        let mut ops = vec![CacheOp::Delete(RECENT_ALERTS.into())];
        self.fill(&mut ops, &devices, &alerts);
        self.summary(store, &mut ops).await?;
        ops.push(CacheOp::Publish {
            channel: CHANGES.into(),
            message: json!({"kind": "rebuild", "devices": devices.len(), "alerts": alerts.len()}).to_string(),
        });
        self.kv.apply(ops).await?;
        self.stale.store(false, Ordering::SeqCst);
        tracing::info!(
            devices = devices.len(),
            alerts = alerts.len(),
            backend = self.kv.backend(),
            "cache rebuilt from the results store"
        );
        Ok(())
    }

    async fn refresh(
        &self,
        store: &dyn ResultStore,
        device_ids: &[String],
        alert_ids: &[String],
    ) -> Result<(), CacheError> {
        let devices = if device_ids.is_empty() {
            Vec::new()
        } else {
            store.devices(device_ids).await?
        };
        let alerts = if alert_ids.is_empty() {
            Vec::new()
        } else {
            store.alerts(alert_ids).await?
        };
        let mut ops = Vec::new();
        self.fill(&mut ops, &devices, &alerts);
        self.summary(store, &mut ops).await?;
        ops.push(CacheOp::Publish {
            channel: CHANGES.into(),
            message: json!({"kind": "batch", "devices": device_ids, "alerts": alert_ids}).to_string(),
        });
        Ok(self.kv.apply(ops).await?)
    }

    fn fill(&self, ops: &mut Vec<CacheOp>, devices: &[DeviceState], alerts: &[StoredAlert]) {
        for d in devices {
            ops.push(CacheOp::Set {
                key: device_key(&d.device_id),
                value: json!(d).to_string(),
                ttl_secs: self.ttl_secs,
            });
        }
        for a in alerts {
            ops.push(CacheOp::Set {
                key: alert_key(&a.id),
                value: json!(a).to_string(),
                ttl_secs: self.ttl_secs,
            });
            ops.push(CacheOp::ZAdd {
                key: RECENT_ALERTS.into(),
                member: a.id.clone(),
                score: a.updated_at.timestamp_millis(),
            });
        }
        if !alerts.is_empty() {
            ops.push(CacheOp::ZKeepHighest {
                key: RECENT_ALERTS.into(),
                keep: self.recent,
            });
            ops.push(CacheOp::Expire {
                key: RECENT_ALERTS.into(),
                ttl_secs: self.ttl_secs,
            });
        }
    }

    async fn summary(&self, store: &dyn ResultStore, ops: &mut Vec<CacheOp>) -> Result<(), CacheError> {
        let s = store
            .fleet_summary(chrono::Utc::now() - chrono::Duration::seconds(ONLINE_WINDOW_SECS))
            .await?;
        ops.push(CacheOp::Set {
            key: FLEET_SUMMARY.into(),
            value: json!(s).to_string(),
            ttl_secs: self.ttl_secs,
        });
        Ok(())
    }

    /// Read one key (for tests and the readiness detail).
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        Ok(self.kv.get(key).await?)
    }
}
