//! Why the analyze function could not start, or stopped with an error.

/// Errors of [`crate::run`] and [`crate::Deps::connect`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A threshold rule in `TRIBUTARY_RULES` does not parse.
    #[error("TRIBUTARY_RULES")]
    Rules(#[from] crate::detect::rules::RuleError),
    /// TRIBUTARY_SPLUNK_CA_FILE could not be read.
    #[error("reading the Splunk CA file {path} (TRIBUTARY_SPLUNK_CA_FILE)")]
    SplunkCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Splunk HEC client could not be built from its settings.
    #[error("Splunk HEC settings")]
    Splunk(#[source] tributary_shared::splunk::HecError),
    /// The Kafka client could not be created from the settings.
    #[error("connecting to the event log")]
    EventLog(#[source] tributary_shared::eventlog::EventLogError),
    /// Binding, a misconfigured dependency or the consumer group failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}
