//! The dispatcher: delivers the notification queue, one lane per channel.
//!
//! Every [`DispatchSettings::poll`] (or at once when the notifier has queued
//! something) it asks which channels have a delivery due and starts a lane
//! for each that has none running here. A lane holds the channel's lease
//! (renewed before every attempt, so one process delivers a channel at a
//! time, and a crashed one's channels are taken over when its leases
//! expire) and delivers the channel's oldest delivery, then the next, until
//! the queue is empty or the head has to wait for a retry; the poll starts
//! the lane again when it is due.
//!
//! Guarantees:
//! - a failed attempt is recorded before the lane moves on, so its retry
//!   schedule and the give-up time ([`Backoff::give_up_after`], from the
//!   first attempt) survive a restart;
//! - a delivery ends delivered, or in the channel's dead letters (a refusal
//!   at once; a receiver that does not accept it in time), never dropped;
//! - a stop ends attempts at once: what was in flight is attempted again
//!   after the restart, with the same idempotency key;
//! - a disabled channel's queue is kept, not delivered, until the channel is
//!   enabled again or deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::deliver::{Deliverer, Failure};
use tributary_shared::notify::queue::{KEEP_DONE, Pending, Retry};
use tributary_shared::notify::store::{ChannelError, ChannelStore, DeadLetter};
use tributary_shared::notify::{Channel, Format, format};
use tributary_shared::service::Shutdown;
use tributary_shared::telemetry::ErrorChain;

use crate::metrics::Metrics;

/// How the dispatcher polls and leases.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Between looks for due deliveries (the notifier also wakes it).
    pub poll: Duration,
    /// How long a lane's lease lasts unless renewed; longer than one
    /// attempt can take.
    pub lease: Duration,
    /// Between purges of done deliveries older than [`KEEP_DONE`].
    pub purge_every: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            purge_every: Duration::from_secs(600),
        }
    }
}

/// Delivers the queue (see the module docs).
pub struct Dispatcher {
    store: Arc<dyn ChannelStore>,
    deliverer: Deliverer,
    settings: DispatchSettings,
    /// This process's name in leases.
    holder: String,
    queued: Arc<Notify>,
    metrics: Metrics,
}

/// What a lane does after an attempt.
enum Next {
    /// Deliver the next one.
    Continue,
    /// End the lane: nothing is due, or the lease is someone else's.
    Stop,
}

impl Dispatcher {
    /// A dispatcher of `store`'s queue; `queued` wakes it.
    pub fn new(
        store: Arc<dyn ChannelStore>,
        deliverer: Deliverer,
        settings: DispatchSettings,
        queued: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "process".into());
        Self {
            store,
            deliverer,
            settings,
            holder: format!("{host}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            queued,
            metrics,
        }
    }

    /// Deliver until `stop`; lanes end with it.
    pub async fn run(self: Arc<Self>, stop: Shutdown) {
        let mut lanes: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut purged = Instant::now();
        loop {
            lanes.retain(|_, lane| !lane.is_finished());
            match self.store.due(Utc::now()).await {
                Ok(due) => {
                    for channel in due {
                        if let std::collections::hash_map::Entry::Vacant(free) = lanes.entry(channel.clone()) {
                            free.insert(tokio::spawn(self.clone().lane(channel, stop.clone())));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %ErrorChain(&e), "reading the notification queue failed; retrying"),
            }
            if purged.elapsed() >= self.settings.purge_every {
                purged = Instant::now();
                match self.store.purge(Utc::now() - KEEP_DONE).await {
                    Ok(n) => tracing::debug!(purged = n, "done notifications forgotten"),
                    Err(e) => tracing::warn!(error = %ErrorChain(&e), "purging the notification queue failed"),
                }
            }
            tokio::select! {
                _ = stop.wait() => break,
                _ = self.queued.notified() => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        for (_, lane) in lanes {
            let _ = lane.await;
        }
    }

    async fn lane(self: Arc<Self>, channel: String, stop: Shutdown) {
        loop {
            match self.step(&channel, &stop).await {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => break,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %ErrorChain(&e), "notification lane failed; it starts again at the next poll");
                    break;
                }
            }
        }
        if let Err(e) = self.store.release(&channel, &self.holder).await {
            tracing::debug!(channel = %channel, error = %ErrorChain(&e), "releasing a lease failed; it expires");
        }
    }

    /// Attempt `channel`'s head once, if it is due and the lease is ours.
    async fn step(&self, channel: &str, stop: &Shutdown) -> Result<Next, ChannelError> {
        if stop.is_triggered() {
            return Ok(Next::Stop);
        }
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(60));
        if !self.store.lease(channel, &self.holder, now, until).await? {
            return Ok(Next::Stop);
        }
        let Some(head) = self.store.head(channel).await? else {
            return Ok(Next::Stop);
        };
        if head.next_attempt_at > now {
            return Ok(Next::Stop);
        }
        // Read at each attempt: an operator's change applies to the next one.
        let Some(spec) = self.store.get(channel).await? else {
            return Ok(Next::Stop);
        };
        if !spec.spec.enabled {
            return Ok(Next::Stop);
        }
        let q = &head.queued;
        let result = tokio::select! {
            _ = stop.wait() => return Ok(Next::Stop),
            r = self.deliverer.attempt(&spec, &q.alert, &q.group) => r,
        };
        let attempts = head.attempts + 1;
        match result {
            Ok(()) => {
                self.store.delivered(head.seq, Utc::now()).await?;
                self.metrics.notified("delivered");
                tracing::info!(channel, alert = %q.alert.id, device = %q.alert.device_id, attempts, "notification delivered");
                Ok(Next::Continue)
            }
            Err(Failure::Refused { status, answer }) => {
                self.metrics.notified("refused");
                let error = format!("refused with {status}: {answer}");
                self.give_up(&spec, &head, attempts, Some(status), error).await?;
                Ok(Next::Continue)
            }
            Err(Failure::Retry { error, status, after }) => {
                let backoff: &Backoff = self.deliverer.backoff();
                let wait = backoff
                    .delay(&q.key, attempts)
                    .max(after.unwrap_or_default().min(backoff.cap));
                let first = head.first_attempt_at.unwrap_or(now);
                let retry_for = chrono::Duration::from_std(backoff.give_up_after).unwrap_or(chrono::Duration::MAX);
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60));
                if next > first + retry_for {
                    self.metrics.notified("gave_up");
                    self.give_up(&spec, &head, attempts, status, error).await?;
                    return Ok(Next::Continue);
                }
                self.metrics.notified("retried");
                tracing::debug!(channel, alert = %q.alert.id, attempts, retry_in_ms = wait.as_millis() as u64, error = %error, "delivery failed; retrying");
                let retry = Retry {
                    attempts,
                    first_attempt_at: first,
                    next_attempt_at: next,
                    status,
                    error,
                };
                self.store.retry(head.seq, &retry).await?;
                Ok(Next::Stop)
            }
        }
    }

    async fn give_up(
        &self,
        channel: &Channel,
        head: &Pending,
        attempts: u32,
        status: Option<u16>,
        error: String,
    ) -> Result<(), ChannelError> {
        let q = &head.queued;
        tracing::warn!(channel = %channel.id, alert = %q.alert.id, device = %q.alert.device_id, attempts, status, error = %error, "notification not delivered; kept in the channel's dead letters");
        let letter = DeadLetter {
            channel_id: channel.id.clone(),
            key: q.key.clone(),
            alert_id: q.alert.id.clone(),
            device_id: q.alert.device_id.clone(),
            severity: q.alert.severity,
            state: q.alert.state.as_str().into(),
            attempts,
            status,
            error,
            // PagerDuty's body holds its routing key: not kept.
            body: if channel.spec.format == Format::PagerDuty {
                String::new()
            } else {
                format::body(channel, &q.alert, &q.group).to_string()
            },
            failed_at: Utc::now(),
            alert: Some(q.alert.clone()),
            group: Some(q.group.clone()),
        };
        self.store.give_up(head.seq, &letter, Utc::now()).await
    }
}
