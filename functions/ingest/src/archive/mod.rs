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

pub mod bench;
pub mod config;
pub mod handler;

pub use config::ArchiveConfig;
pub use handler::ArchiveHandler;
pub use tributary_shared::raw::cosmos::CosmosStore;
/// The stores, shared with the dashboard (`tributary_shared::raw`).
pub use tributary_shared::raw::{CosmosAuth, LocalRawStore, Page, RawStore, StoreError, cosmos, local};
