//! Why the archive function could not start, or stopped with an error.

/// Errors of [`crate::run`] and [`crate::Deps::connect`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Cosmos DB endpoint is configured.
    #[error("TRIBUTARY_COSMOS_ENDPOINT is required: the Cosmos DB account the raw archive is kept in")]
    NoCosmosEndpoint,
    /// Identity auth cannot create the database and container.
    #[error(
        "TRIBUTARY_COSMOS_AUTH=identity cannot create the database and container: provision them in the \
         deployment and set TRIBUTARY_COSMOS_CREATE=false"
    )]
    IdentityCannotCreate,
    /// The Cosmos DB settings are unusable (a missing key, no identity).
    #[error("Cosmos DB settings")]
    Cosmos(#[source] tributary_shared::raw::StoreError),
    /// The Kafka client could not be created from the settings.
    #[error("connecting to the event log")]
    EventLog(#[source] tributary_shared::eventlog::EventLogError),
    /// Binding, a misconfigured store or the consumer group failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}
