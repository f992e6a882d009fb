//! The notifier: a consumer group of its own (`tributary-notify`) on
//! `telemetry.alerts`, run inside process beside the results writer, that
//! queues every alert record for the channels that want it
//! ([`tributary_shared::notify::queue`]); the [`dispatch`]er delivers the
//! queue, one lane per channel.
//!
//! Guarantees: at least once. A batch's offsets are committed only once its
//! deliveries are in the queue (one transaction); a batch whose queuing
//! fails is retried. Per channel, records go in the order they came (an
//! incident's `opened` before its `resolved`). A receiver that is down holds
//! back only its own channel: the others, and the consumer's position, go
//! on, and its lane catches up when it is back (or its deliveries go to its
//! dead letters after the retry time).
//!
//! Why in process and not a function of its own: it needs what process
//! already has (the results database for channels, the queue and groups)
//! and is light; its own consumer group keeps it from holding the results
//! writer back.
//!
//! # Layout
//! - this file: the batch handler that queues;
//! - [`dispatch`]: the lanes that deliver the queue, with leases, retries
//!   and dead letters.

pub mod dispatch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tributary_shared::eventlog::Message;
use tributary_shared::eventlog::runner::{Handler, HandlerError};
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::queue::Queued;
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::records::Alert;
use tributary_shared::registry::{DEFAULT_GROUP, DeviceRegistry};

use crate::metrics::Metrics;

/// The consumer group of the notifier.
pub const GROUP: &str = "tributary-notify";

/// How deliveries are retried: the default schedule, tried for `retry_for`.
pub fn backoff(retry_for: Duration) -> Backoff {
    Backoff {
        give_up_after: retry_for,
        ..Backoff::default()
    }
}

/// The notifier's batch handler.
pub struct Notifier {
    channels: Arc<dyn ChannelStore>,
    registry: Arc<dyn DeviceRegistry>,
    /// Woken when deliveries are queued, so they go at once.
    queued: Arc<Notify>,
    metrics: Metrics,
}

impl Notifier {
    /// A notifier queuing into `channels`'s queue and waking `queued`.
    pub fn new(
        channels: Arc<dyn ChannelStore>,
        registry: Arc<dyn DeviceRegistry>,
        queued: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        Self {
            channels,
            registry,
            queued,
            metrics,
        }
    }
}

#[async_trait]
impl Handler for Notifier {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        // What is not an alert is process's results writer's to dead-letter.
        let alerts: Vec<Alert> = batch
            .iter()
            .filter_map(|m| serde_json::from_slice(&m.value).ok())
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let channels = self
            .channels
            .list()
            .await
            .map_err(|e| HandlerError::new("reading the notification channels", e))?;
        if !channels.iter().any(|c| c.spec.enabled) {
            return Ok(());
        }
        let mut groups: HashMap<&str, String> = HashMap::new();
        for a in &alerts {
            if !groups.contains_key(a.device_id.as_str()) {
                let group = self
                    .registry
                    .get(&a.device_id)
                    .await
                    .map_err(|e| HandlerError::new("reading the device registry", e))?
                    .map_or_else(|| DEFAULT_GROUP.to_owned(), |d| d.group);
                groups.insert(a.device_id.as_str(), group);
            }
        }
        // Channel by channel, each in the records' order: the queue's order.
        let items: Vec<Queued> = channels
            .iter()
            .flat_map(|c| {
                alerts.iter().filter_map(|a| {
                    let group = groups.get(a.device_id.as_str()).map_or(DEFAULT_GROUP, String::as_str);
                    c.wants(a, group).then(|| Queued::new(&c.id, a, group))
                })
            })
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let added = self
            .channels
            .enqueue(&items, chrono::Utc::now())
            .await
            .map_err(|e| HandlerError::new("queuing notifications", e))?;
        self.metrics.notified_n("queued", added);
        tracing::debug!(
            alerts = alerts.len(),
            deliveries = items.len(),
            added,
            "notifications queued"
        );
        self.queued.notify_one();
        Ok(())
    }
}
