//! Where channels and dead letters live: [`ChannelStore`], in the results
//! database (PostgreSQL: [`super::postgres`]; SQLite: [`super::sqlite`];
//! migrations `20261210000002`), both passing the contract suite in
//! `tributary-testkit`.
//!
//! Guarantees: a channel is written whole or not at all (validated first);
//! writing one exactly as it is changes nothing; a dead letter is keyed by
//! (channel, idempotency key), so a record that fails again after a restart
//! updates its letter instead of adding a second; deleting a channel
//! deletes its dead letters and its queue.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::queue::DeliveryQueue;
use super::{Channel, ChannelSpec, InvalidChannel};
use crate::records::Alert;
use crate::results::StoreError;
use crate::rules::{Severity, Written};

/// Most channels.
pub const MAX_CHANNELS: usize = 100;
/// Most dead letters one listing returns.
pub const MAX_DEAD_LETTERS: u32 = 1000;

/// A delivery that did not go through: kept for an operator to see (and
/// send again by hand), per channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The channel.
    pub channel_id: String,
    /// The alert record's idempotency key.
    pub key: String,
    /// The alert.
    pub alert_id: String,
    /// Its device.
    pub device_id: String,
    /// Its severity.
    pub severity: Severity,
    /// `opened`, `updated` or `resolved`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The receiver's last status, if it answered.
    pub status: Option<u16>,
    /// Why it failed: the receiver's answer or the transport error.
    pub error: String,
    /// The body that was sent.
    pub body: String,
    /// When it was given up on.
    pub failed_at: DateTime<Utc>,
    /// The alert record, to send it again; shown as whether there is one
    /// (`resendable`: letters kept before the delivery queue have none).
    #[serde(rename = "resendable", serialize_with = "holds_record", skip_deserializing)]
    pub alert: Option<Alert>,
    /// The device's group the record was queued with.
    #[serde(skip)]
    pub group: Option<String>,
}

fn holds_record<S: serde::Serializer>(alert: &Option<Alert>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(alert.is_some())
}

/// Errors of the channel store, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No channel with this id.
    #[error("channel {0:?} does not exist")]
    NotFound(String),
    /// A field cannot be stored; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidChannel),
    /// Creating it would exceed [`MAX_CHANNELS`].
    #[error("there are {MAX_CHANNELS} channels already (the most there can be); delete one first")]
    TooMany,
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChannelError {
    /// The HTTP status an API answers this error with.
    pub fn status_code(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) | Self::Store(StoreError::Rejected(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooMany => StatusCode::CONFLICT,
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<sqlx::Error> for ChannelError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The channels, their dead letters and their delivery queue
/// ([`DeliveryQueue`]), in the results database.
#[async_trait]
pub trait ChannelStore: DeliveryQueue + Send + Sync + 'static {
    /// Create or replace channel `id` (see the module docs).
    async fn put(&self, id: &str, spec: &ChannelSpec, now: DateTime<Utc>) -> Result<(Channel, Written), ChannelError>;
    /// One channel, if it exists.
    async fn get(&self, id: &str) -> Result<Option<Channel>, ChannelError>;
    /// Every channel, by id.
    async fn list(&self) -> Result<Vec<Channel>, ChannelError>;
    /// Delete a channel, its dead letters and its queue.
    async fn delete(&self, id: &str) -> Result<(), ChannelError>;
    /// Keep (or update) a dead letter.
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), ChannelError>;
    /// A channel's dead letters, newest first, at most `limit` (capped at
    /// [`MAX_DEAD_LETTERS`]), and how many it has in all.
    async fn dead_letters(&self, channel: &str, limit: u32) -> Result<(Vec<DeadLetter>, u64), ChannelError>;
}

/// Open the channel store a results-store URL names: `postgres://…` (lazily
/// connecting) or `sqlite://PATH` (created if missing).
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn ChannelStore>, ChannelError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(super::sqlite::SqliteChannels::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(super::postgres::PgChannels::connect_lazy(
            url,
            max_connections,
        )?))
    } else {
        let scheme = url.split(':').next().unwrap_or("");
        Err(ChannelError::Store(StoreError::Unavailable(format!(
            "unsupported database URL scheme {scheme:?} (expected postgres:// or sqlite://)"
        ))))
    }
}

/// What a `put` does, given the stored channel.
pub(crate) fn decide(stored: Option<&ChannelSpec>, spec: &ChannelSpec) -> Written {
    match stored {
        None => Written::Created,
        Some(s) if s == spec => Written::Unchanged,
        Some(_) => Written::Updated,
    }
}
