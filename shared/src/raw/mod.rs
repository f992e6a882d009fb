//! The raw store: every reading of `telemetry.raw` kept as a document, one
//! per reading, partitioned by device. Written by the archive function, read
//! by the dashboard (a device's raw points) and by `tributary verify`.
//!
//! Two backends behind one trait, [`RawStore`]:
//! - [`cosmos::CosmosStore`] (feature `cosmos`), Azure Cosmos DB's NoSQL API,
//!   partitioned by `/deviceId`;
//! - [`local::LocalRawStore`], one SQLite file, for the all-in-one mode.
//!
//! Guarantees of both: the document id is the reading id and the partition
//! key its device, and every write is an upsert, so a replayed batch never
//! duplicates anything; [`RawStore::query_device_range`] reads one device's
//! readings in a time range with a single-partition query, oldest first, a
//! page at a time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::Reading;

#[cfg(feature = "cosmos")]
pub mod cosmos;
pub mod local;

pub use local::LocalRawStore;

/// How a function authenticates to Cosmos DB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CosmosAuth {
    /// Account key (`TRIBUTARY_COSMOS_KEY`): the emulator and local use.
    Key,
    /// Microsoft Entra ID: workload identity when `AZURE_FEDERATED_TOKEN_FILE`
    /// is set (AKS), managed identity otherwise. Data-plane only: the
    /// database and container must exist.
    Identity,
}

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

    /// Short name of the backend, for the API's `source` fields and logs.
    fn backend(&self) -> &'static str {
        "raw store"
    }
}
