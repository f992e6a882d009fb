//! Why the process function could not start, or stopped with an error.

use tributary_shared::cache::CacheError;
use tributary_shared::results::StoreError;

/// Errors of [`crate::run`] and [`crate::Deps::connect`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `DATABASE_URL` does not name a usable results store.
    #[error("opening the results store (DATABASE_URL)")]
    Store(#[source] StoreError),
    /// `DATABASE_URL` does not name a usable device registry.
    #[error("opening the device registry (DATABASE_URL)")]
    Registry(#[source] tributary_shared::registry::RegistryError),
    /// `DATABASE_URL` does not name a usable rule store.
    #[error("opening the alert rules (DATABASE_URL)")]
    Rules(#[source] tributary_shared::rules::RuleError),
    /// `DATABASE_URL` does not name a usable channel store.
    #[error("opening the notification channels (DATABASE_URL)")]
    Channels(#[source] tributary_shared::notify::store::ChannelError),
    /// The notifier's HTTP client could not be made.
    #[error("creating the notifier's HTTP client")]
    NotifyClient(#[source] reqwest::Error),
    /// The migrations could not run.
    #[error("migrating the results store")]
    Migrate(#[source] StoreError),
    /// The dashboard's role could not be given its password.
    #[error("letting the dashboard's role {role} log in (TRIBUTARY_READONLY_PASSWORD)")]
    ReadonlyRole {
        /// The role (TRIBUTARY_READONLY_ROLE).
        role: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// `REDIS_URL` does not name a usable cache.
    #[error("opening the cache (REDIS_URL)")]
    Cache(#[source] CacheError),
    /// The Kafka client could not be created from the settings.
    #[error("connecting to the event log")]
    EventLog(#[source] tributary_shared::eventlog::EventLogError),
    /// Binding or the consumer group failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}
