//! The hot-data cache and change notifications: a small key-value trait,
//! [`KvCache`], with a Redis backend ([`RedisCache`], production) and an
//! in-process one ([`MemoryCache`], the all-in-one mode). Both pass the same
//! contract suite (`tributary-testkit`).
//!
//! Only what Tributary uses is here: strings with a TTL, a capped sorted set
//! of recent ids, and a publish/subscribe channel. A batch of operations is
//! applied in one round trip; entries are always derivable from the results
//! store, so a lost cache only costs a rebuild.

use async_trait::async_trait;
use tokio::sync::broadcast;

pub mod memory;
pub mod redis_cache;

pub use memory::MemoryCache;
pub use redis_cache::RedisCache;

/// Key of a device's latest state (JSON of [`crate::results::DeviceState`]).
pub fn device_key(id: &str) -> String {
    format!("tributary:device:{id}")
}
/// Key of one alert (JSON of [`crate::results::StoredAlert`]).
pub fn alert_key(id: &str) -> String {
    format!("tributary:alert:{id}")
}
/// Sorted set of recent alert ids, scored by update time (ms).
pub const RECENT_ALERTS: &str = "tributary:alerts:recent";
/// Fleet summary (JSON of [`crate::results::FleetSummary`]).
pub const FLEET_SUMMARY: &str = "tributary:fleet:summary";
/// Pub/sub channel of change notifications (one JSON message per committed batch).
pub const CHANGES: &str = "tributary:changes";

/// A cache call failed: the cache is unreachable, timed out or refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(pub String);

/// One write to the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOp {
    /// Set a string that expires after `ttl_secs`.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Seconds to live.
        ttl_secs: u64,
    },
    /// Remove a key of any kind.
    Delete(String),
    /// Add or rescore a member of a sorted set.
    ZAdd {
        /// Set key.
        key: String,
        /// Member.
        member: String,
        /// Score.
        score: i64,
    },
    /// Keep only the `keep` highest-scored members of a sorted set.
    ZKeepHighest {
        /// Set key.
        key: String,
        /// Members kept.
        keep: usize,
    },
    /// Let a key expire after `ttl_secs`.
    Expire {
        /// Key.
        key: String,
        /// Seconds to live.
        ttl_secs: u64,
    },
    /// Publish a message to every current subscriber of `channel`.
    Publish {
        /// Channel.
        channel: String,
        /// Message.
        message: String,
    },
}

/// A cache of strings, capped sorted sets and a pub/sub channel.
#[async_trait]
pub trait KvCache: Send + Sync + 'static {
    /// `"redis"` or `"memory"` (for logs and the API's `source` fields).
    fn backend(&self) -> &'static str;

    /// Apply `ops` in order, in one round trip.
    async fn apply(&self, ops: Vec<CacheOp>) -> Result<(), CacheError>;

    /// A string value, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError>;

    /// Members of a sorted set, highest score first.
    async fn members_newest_first(&self, key: &str) -> Result<Vec<String>, CacheError>;

    /// Forward every message published on `channel` to `sink` until the
    /// process ends, reconnecting after outages (messages published while
    /// disconnected are lost: subscribers treat a reconnect as "reload").
    async fn follow(&self, channel: &str, sink: broadcast::Sender<String>);
}
