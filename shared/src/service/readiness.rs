//! Readiness: whether a function can do its job now, as `/readyz` reports it
//! and as the consumer harness waits for it before joining a group.
//!
//! Each backend trait has one adapter here ([`PublisherReady`],
//! [`ResultStoreReady`], [`RawStoreReady`]), so a function names its
//! dependency instead of writing the check again. A [`NotReady`] says which
//! dependency failed, whether waiting can help ([`NotReady::is_permanent`]),
//! and keeps the backend's error as its source.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::eventlog::{EventLogError, Publisher};
use crate::raw::RawStore;
use crate::results::ResultStore;

/// How long a store may take to answer a readiness check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells whether a function's dependencies are usable now.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when the function can do its job now.
    async fn check(&self) -> Result<(), NotReady>;
}

/// A dependency that cannot be used now.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} is {}", state(*.permanent))]
pub struct NotReady {
    dependency: String,
    permanent: bool,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn state(permanent: bool) -> &'static str {
    if permanent { "misconfigured" } else { "unavailable" }
}

impl NotReady {
    /// `dependency` cannot be reached now; waiting may help.
    pub fn unavailable(
        dependency: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            dependency: dependency.into(),
            permanent: false,
            source: source.into(),
        }
    }

    /// `dependency` refuses the settings it was given; waiting cannot help.
    pub fn misconfigured(
        dependency: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            dependency: dependency.into(),
            permanent: true,
            source: source.into(),
        }
    }

    /// Whether only a change of configuration can make it ready.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The dependency, as named in logs and on `/readyz`.
    pub fn dependency(&self) -> &str {
        &self.dependency
    }
}

/// Ready when the event log answers (for functions that publish).
pub struct PublisherReady(pub Arc<dyn Publisher>);

#[async_trait]
impl Readiness for PublisherReady {
    async fn check(&self) -> Result<(), NotReady> {
        match self.0.check_ready().await {
            Ok(()) => Ok(()),
            Err(e @ EventLogError::Rejected(_)) => Err(NotReady::misconfigured("event log", e)),
            Err(e) => Err(NotReady::unavailable("event log", e)),
        }
    }
}

/// Ready when the results store answers within [`CHECK_TIMEOUT`] (the cache
/// is optional by design, so it is not checked).
pub struct ResultStoreReady(pub Arc<dyn ResultStore>);

#[async_trait]
impl Readiness for ResultStoreReady {
    async fn check(&self) -> Result<(), NotReady> {
        let dependency = || format!("results store ({})", self.0.backend());
        match tokio::time::timeout(CHECK_TIMEOUT, self.0.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotReady::unavailable(dependency(), e)),
            Err(elapsed) => Err(NotReady::unavailable(dependency(), elapsed)),
        }
    }
}

/// Ready when the raw store answers (connecting it first if it connects lazily).
pub struct RawStoreReady(pub Arc<dyn RawStore>);

#[async_trait]
impl Readiness for RawStoreReady {
    async fn check(&self) -> Result<(), NotReady> {
        let dependency = || format!("raw store ({})", self.0.backend());
        match self.0.check_ready().await {
            Ok(()) => Ok(()),
            Err(e) if !e.is_retryable() => Err(NotReady::misconfigured(dependency(), e)),
            Err(e) => Err(NotReady::unavailable(dependency(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::ErrorChain;

    #[test]
    fn the_message_names_the_dependency_and_keeps_the_cause() {
        let e = NotReady::unavailable("event log", EventLogError::Unavailable("broker down".into()));
        assert!(!e.is_permanent());
        assert_eq!(
            ErrorChain(&e).to_string(),
            "event log is unavailable: event log unavailable: broker down"
        );
        let e = NotReady::misconfigured("raw store (cosmos)", "bad key");
        assert!(e.is_permanent());
        assert_eq!(e.to_string(), "raw store (cosmos) is misconfigured");
    }
}
