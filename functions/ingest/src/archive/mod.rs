//! The raw archive: every reading of `telemetry.raw` kept in Azure Cosmos DB
//! (NoSQL API), one document per reading, partitioned by `/deviceId`; in the
//! all-in-one mode, in a local SQLite file ([`local::LocalRawStore`]) behind
//! the same [`RawStore`] trait.
//!
//! Guarantees:
//! - the document id is the reading id and the partition key its device, and
//!   every write is an upsert, so a replayed batch never duplicates anything;
//! - [`handler::ArchiveHandler`] returns `Ok` (and so lets the runner commit
//!   offsets) only once every reading of the batch is acknowledged by Cosmos DB
//!   or published to the dead-letter topic with its reason;
//! - throttling (429), timeouts, 5xx and connection failures are retried by the
//!   runner on the whole (idempotent) batch, never skipped; only a record that
//!   is not a valid [`Reading`](tributary_shared::model::Reading) or fails on
//!   its own [`config::ArchiveConfig::max_attempts`] times goes to the
//!   dead-letter topic (throttling and outages never count as a record's fault);
//! - [`RawStore::query_device_range`] reads one device's readings in a time
//!   range with a single-partition query, oldest first, a page at a time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tributary_shared::model::Reading;

pub mod bench;
pub mod config;
pub mod cosmos;
pub mod handler;
pub mod local;

pub use config::{ArchiveConfig, CosmosAuth};
pub use cosmos::CosmosStore;
pub use handler::ArchiveHandler;
pub use local::LocalRawStore;

/// Why a store call failed, in the terms the handler acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Throttled (429), timed out, unreachable or 503/408/410/449: the store
    /// cannot take anything now. Retried forever; never makes a record poison.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure (5xx, auth, missing container...): retried; counts
    /// towards a record's tries only when other records of its batch were stored.
    #[error("store error: {0}")]
    Retryable(String),
    /// The store refused this document for what it is (malformed, too large):
    /// retrying it as is cannot succeed.
    #[error("document refused: {0}")]
    Permanent(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Retryable(_))
    }
}

/// One page of a range query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Readings of this page.
    pub items: Vec<Reading>,
    /// Pass back to get the next page; `None` when this was the last one.
    pub continuation: Option<String>,
}

/// Where raw readings are archived. Implementations write idempotently:
/// upserting the same reading twice leaves one document.
#[async_trait]
pub trait RawStore: Send + Sync + 'static {
    /// Upsert `readings` with at most the store's configured concurrency.
    /// Returns one result per reading, in order.
    async fn upsert_batch(&self, readings: &[Reading]) -> Vec<Result<(), StoreError>>;

    /// One device's readings with `from <= eventTime < to`, oldest first, at
    /// most `page_size` per page, resuming after `continuation` when given
    /// (a single-partition query: the device is the partition key).
    async fn query_device_range(
        &self,
        device: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        continuation: Option<String>,
    ) -> Result<Page, StoreError>;

    /// Whether the store is reachable now (for `/readyz`).
    async fn check_ready(&self) -> Result<(), StoreError>;
}
