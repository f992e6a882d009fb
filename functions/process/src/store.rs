//! The results store process writes to: the [`ResultStore`] trait of the
//! shared crate (PostgreSQL in production, SQLite in the all-in-one mode),
//! re-exported with the helpers process needs.

pub use tributary_shared::results::{
    DeviceState, FleetSummary, PgStore, ResultStore, SqliteStore, StoreError, StoredAlert, open,
};
