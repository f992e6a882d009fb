//! The delivery queue: what the notifier has taken from the alerts topic
//! and not yet delivered, per channel, in the results database (migrations
//! `20261211000001`; PostgreSQL in [`super::postgres`], SQLite in
//! [`super::sqlite`], both passing the contract suite in `tributary-testkit`).
//!
//! Why a queue and not deliveries straight from the consumer: the consumer
//! group has one position for every channel, so a receiver that is down
//! would hold every other channel's later alerts until it gave up. With the
//! queue, the notifier commits a record's offset once its deliveries are
//! queued (durably: at least once still holds), and each channel is drained
//! on its own schedule.
//!
//! Guarantees:
//! - **Once per record and channel.** A row is keyed by (channel, idempotency
//!   key); queuing it again changes nothing, and a done row (delivered or
//!   dead-lettered) is kept for [`KEEP_DONE`], so a record consumed again
//!   after a restart within that time is neither delivered twice nor after
//!   the records that followed it.
//! - **In order per channel.** Rows are delivered oldest first ([`DeliveryQueue::head`]);
//!   the head is retried until it is done before the next row goes (an
//!   incident's `opened` never arrives after its `resolved`).
//! - **One deliverer per channel.** A process delivers a channel only while it
//!   holds the channel's lease ([`DeliveryQueue::lease`]); a lease that is
//!   not renewed expires, so a crashed process's channels are taken over.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::store::{ChannelError, DeadLetter};
use crate::records::Alert;

/// How long a done row is kept against a second delivery of its record.
pub const KEEP_DONE: chrono::Duration = chrono::Duration::hours(24);
/// Most dead letters one resend moves back to the queue.
pub const MAX_RESEND: u32 = 1000;

/// One delivery to queue: an alert record for a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The channel.
    pub channel_id: String,
    /// The record's idempotency key ([`super::idempotency_key`]).
    pub key: String,
    /// The record.
    pub alert: Alert,
    /// Its device's group when it was queued.
    pub group: String,
}

impl Queued {
    /// `alert` of a device in `group`, for `channel`.
    pub fn new(channel: &str, alert: &Alert, group: &str) -> Self {
        Self {
            channel_id: channel.to_owned(),
            key: super::idempotency_key(alert),
            alert: alert.clone(),
            group: group.to_owned(),
        }
    }
}

/// A queued delivery not yet done.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its place in the queue (ascending in queuing order).
    pub seq: i64,
    /// What it delivers.
    pub queued: Queued,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Not to be attempted before.
    pub next_attempt_at: DateTime<Utc>,
    /// The receiver's last status, if it answered.
    pub last_status: Option<u16>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A failed attempt to record on a pending delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the first attempt was made.
    pub first_attempt_at: DateTime<Utc>,
    /// When to try again.
    pub next_attempt_at: DateTime<Utc>,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: String,
}

/// One channel's undelivered work, for operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// The channel.
    pub channel_id: String,
    /// Deliveries queued and not done.
    pub queued: u64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Attempts made at the oldest.
    pub attempts: u32,
    /// When the oldest is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why its last attempt failed.
    pub last_error: Option<String>,
}

/// What a resend did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resent {
    /// Dead letters moved back to the queue.
    pub resent: u64,
    /// Dead letters kept because they do not hold their alert record
    /// (written before the queue existed).
    pub not_resendable: u64,
}

/// The delivery queue (see the module docs).
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Queue `items` in their order, skipping any already queued (done or
    /// not); returns how many were new.
    async fn enqueue(&self, items: &[Queued], now: DateTime<Utc>) -> Result<u64, ChannelError>;
    /// The channels whose oldest undone delivery is due at `now`.
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, ChannelError>;
    /// Take or renew `channel`'s lease for `holder` until `until`: true if
    /// `holder` now holds it (it was free, expired at `now`, or its own).
    async fn lease(
        &self,
        channel: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, ChannelError>;
    /// Give `channel`'s lease up, if `holder` holds it.
    async fn release(&self, channel: &str, holder: &str) -> Result<(), ChannelError>;
    /// `channel`'s oldest undone delivery.
    async fn head(&self, channel: &str) -> Result<Option<Pending>, ChannelError>;
    /// Mark delivery `seq` delivered.
    async fn delivered(&self, seq: i64, now: DateTime<Utc>) -> Result<(), ChannelError>;
    /// Record a failed attempt at `seq` and when to try again.
    async fn retry(&self, seq: i64, retry: &Retry) -> Result<(), ChannelError>;
    /// Mark `seq` done and keep `letter` (with its record) in the dead
    /// letters, in one transaction.
    async fn give_up(&self, seq: i64, letter: &DeadLetter, now: DateTime<Utc>) -> Result<(), ChannelError>;
    /// Move `channel`'s dead letters (those with `keys`, or all; at most
    /// [`MAX_RESEND`]) back to the end of its queue, due at once.
    async fn resend(&self, channel: &str, keys: Option<&[String]>, now: DateTime<Utc>) -> Result<Resent, ChannelError>;
    /// Every channel's backlog (channels with nothing queued are left out).
    async fn backlog(&self) -> Result<Vec<Backlog>, ChannelError>;
    /// Forget done rows finished before `before`; returns how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, ChannelError>;
}

/// The alert record of a stored row.
pub(crate) fn alert_of(json: &str) -> Result<Alert, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(format!("a queued alert record: {e}").into()))
}

/// The JSON stored for an alert record.
pub(crate) fn alert_json(alert: &Alert) -> String {
    // An Alert is plain data: serializing it cannot fail.
    serde_json::to_string(alert).unwrap_or_default()
}
