//! Why the lake could not write, could not start, or stopped.

use crate::delta::DeltaError;

/// Errors of a roll: what [`crate::handler`] logs, counts by kind and retries.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The Delta log refused or could not be read or written.
    #[error("Delta log")]
    Delta(#[from] DeltaError),
    /// A data file could not be stored.
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// Rows could not be made into a record batch.
    #[error("building a record batch")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A record batch could not be encoded as Parquet.
    #[error("encoding Parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl LakeError {
    /// Whether waiting and retrying can help (an outage, throttling, a lost
    /// race) rather than a change of the table or the settings.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Delta(e) => e.is_retryable(),
            Self::Store(e) => crate::delta::store_error_is_retryable(e),
            Self::Arrow(_) | Self::Parquet(_) => false,
        }
    }

    /// A low-cardinality name of the kind, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Delta(DeltaError::Conflict(_)) => "conflict",
            Self::Delta(DeltaError::Store(_)) | Self::Store(_) => "store",
            Self::Delta(_) => "table",
            Self::Arrow(_) | Self::Parquet(_) => "encode",
        }
    }
}

/// Errors of [`crate::run`] and [`crate::Deps::connect`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake's URL names no store this build can write.
    #[error("TRIBUTARY_LAKE_URL {url:?}: {reason}")]
    LakeUrl {
        /// The URL as given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The object store could not be set up from the settings.
    #[error("setting up the lake's object store")]
    Store(#[source] object_store::Error),
    /// The Kafka client could not be created from the settings.
    #[error("connecting to the event log")]
    EventLog(#[source] tributary_shared::eventlog::EventLogError),
    /// Binding, a misconfigured store or the consumer group failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}
