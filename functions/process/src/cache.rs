//! The Redis cache the dashboard reads hot data from, and the change
//! notifications it pushes to browsers.
//!
//! Every entry is derived from PostgreSQL after a committed batch (never from
//! the batch alone), so the cache can always be rebuilt from the database and
//! a replay rewrites the same values. Keys (all with a TTL):
//! - `tributary:device:{id}`: JSON of the device's latest state;
//! - `tributary:fleet:summary`: JSON fleet counts;
//! - `tributary:alert:{id}`: JSON of one alert; `tributary:alerts:recent`: a
//!   sorted set of alert ids by update time, capped;
//! - channel `tributary:changes`: one JSON message per committed batch.
//!
//! Redis down never fails a batch: the cache is marked stale and rebuilt
//! from PostgreSQL once Redis answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::store;

/// Key of a device's latest state.
pub fn device_key(id: &str) -> String {
    format!("tributary:device:{id}")
}
/// Key of one alert.
pub fn alert_key(id: &str) -> String {
    format!("tributary:alert:{id}")
}
/// Sorted set of recent alert ids.
pub const RECENT_ALERTS: &str = "tributary:alerts:recent";
/// Fleet summary.
pub const FLEET_SUMMARY: &str = "tributary:fleet:summary";
/// Pub/sub channel of change notifications.
pub const CHANGES: &str = "tributary:changes";

const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the cache (logged and counted, never fatal to a batch).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis is unreachable or failed.
    #[error("redis: {0}")]
    Redis(String),
    /// Reading PostgreSQL for the cache failed.
    #[error("{0}")]
    Store(#[from] tributary_shared::results::ReadError),
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

/// The cache writer.
pub struct Cache {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    stale: AtomicBool,
    ttl_secs: u64,
    recent: usize,
}

impl Cache {
    /// A cache on `url`; connects lazily, so Redis may be down at start.
    pub fn new(url: &str, ttl_secs: u64, recent: usize) -> Result<Self, CacheError> {
        Ok(Self { client: redis::Client::open(url)?, conn: Mutex::new(None), stale: AtomicBool::new(true), ttl_secs, recent })
    }

    /// Whether the cache may lack committed data (Redis was unreachable).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(OP_TIMEOUT * 2, self.client.get_connection_manager_with_config(cfg))
            .await
            .map_err(|_| CacheError::Redis("connect timed out".into()))??;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Refresh what a committed batch touched, or rebuild everything if the
    /// cache is stale. Failures mark the cache stale and are returned for logging.
    pub async fn after_commit(&self, pool: &PgPool, devices: &[String], alert_ids: &[String]) -> Result<(), CacheError> {
        let res = if self.is_stale() { self.rebuild(pool).await } else { self.refresh(pool, devices, alert_ids).await };
        if res.is_err() {
            self.stale.store(true, Ordering::SeqCst);
        }
        res
    }

    /// Rebuild every entry from PostgreSQL (on start, and after an outage).
    pub async fn rebuild(&self, pool: &PgPool) -> Result<(), CacheError> {
        let since = chrono::Utc::now() - chrono::Duration::seconds(self.ttl_secs as i64);
        let devices = store::recent_devices(pool, since, 10_000).await?;
        let alerts = store::recent_alerts(pool, self.recent as i64).await?;
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.del(RECENT_ALERTS).ignore();
        self.fill(&mut pipe, &devices, &alerts);
        self.summary(pool, &mut pipe).await?;
        let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
        pipe.publish(CHANGES, json!({"kind": "rebuild", "devices": ids.len(), "alerts": alerts.len()}).to_string()).ignore();
        self.exec(&mut conn, &pipe).await?;
        self.stale.store(false, Ordering::SeqCst);
        tracing::info!(devices = devices.len(), alerts = alerts.len(), "cache rebuilt from PostgreSQL");
        Ok(())
    }

    async fn refresh(&self, pool: &PgPool, device_ids: &[String], alert_ids: &[String]) -> Result<(), CacheError> {
        let devices = if device_ids.is_empty() { Vec::new() } else { store::devices(pool, device_ids).await? };
        let alerts = if alert_ids.is_empty() { Vec::new() } else { store::alerts(pool, alert_ids).await? };
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        self.fill(&mut pipe, &devices, &alerts);
        self.summary(pool, &mut pipe).await?;
        pipe.publish(CHANGES, json!({"kind": "batch", "devices": device_ids, "alerts": alert_ids}).to_string()).ignore();
        self.exec(&mut conn, &pipe).await
    }

    fn fill(&self, pipe: &mut redis::Pipeline, devices: &[store::DeviceState], alerts: &[store::StoredAlert]) {
        for d in devices {
            pipe.set_ex(device_key(&d.device_id), json!(d).to_string(), self.ttl_secs).ignore();
        }
        for a in alerts {
            pipe.set_ex(alert_key(&a.id), json!(a).to_string(), self.ttl_secs).ignore();
            pipe.zadd(RECENT_ALERTS, &a.id, a.updated_at.timestamp_millis()).ignore();
        }
        if !alerts.is_empty() {
            // Keep the newest `recent` ids: ranks 0..len-recent-1 are the oldest.
            pipe.zremrangebyrank(RECENT_ALERTS, 0, -(self.recent as isize) - 1).ignore();
            pipe.expire(RECENT_ALERTS, self.ttl_secs as i64).ignore();
        }
    }

    async fn summary(&self, pool: &PgPool, pipe: &mut redis::Pipeline) -> Result<(), CacheError> {
        let s = store::fleet_summary(pool).await?;
        pipe.set_ex(FLEET_SUMMARY, json!(s).to_string(), self.ttl_secs).ignore();
        Ok(())
    }

    async fn exec(&self, conn: &mut ConnectionManager, pipe: &redis::Pipeline) -> Result<(), CacheError> {
        tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(conn)).await.map_err(|_| CacheError::Redis("timed out".into()))??;
        Ok(())
    }

    /// Read one key (for tests and the readiness detail).
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut conn = self.connection().await?;
        Ok(tokio::time::timeout(OP_TIMEOUT, conn.get(key)).await.map_err(|_| CacheError::Redis("timed out".into()))??)
    }
}
