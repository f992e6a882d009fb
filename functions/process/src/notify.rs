//! The notifier: a consumer group of its own (`tributary-notify`) on
//! `telemetry.alerts`, run inside process beside the results writer, that
//! delivers every alert record to the channels that want it (see
//! [`tributary_shared::notify`]).
//!
//! Guarantees: at least once. A batch's offsets are committed only once
//! every (record, channel) delivery it holds is delivered or kept in the
//! channel's dead letters; a stop, or a dead letter that cannot be written,
//! fails the batch, so it is delivered again (same idempotency keys) after a
//! restart or retry. Per channel, records go in the order they came (an
//! incident's `opened` before its `resolved`); channels are served side by
//! side, so one slow receiver does not delay the others' deliveries of the
//! batch. It does hold the batch's commit, and with it the next batches for
//! every channel, for up to the retry time: the price of committing only
//! after delivery with one consumer position (a position per channel would
//! lift it).
//!
//! Why in process and not a function of its own: it needs what process
//! already has (the results database for channels and groups) and is light;
//! its own consumer group keeps a slow receiver from holding the results
//! writer back. Deliveries are retried for at most
//! [`Backoff::give_up_after`] (4 min here), under Kafka's
//! `max.poll.interval.ms` (5 min): a batch never outlives its membership.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tributary_shared::eventlog::Message;
use tributary_shared::eventlog::runner::{Handler, HandlerError};
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::deliver::{Deliverer, Outcome};
use tributary_shared::notify::store::{ChannelStore, DeadLetter};
use tributary_shared::notify::{Channel, idempotency_key};
use tributary_shared::records::{Alert, AlertState};
use tributary_shared::registry::{DEFAULT_GROUP, DeviceRegistry};
use tributary_shared::service::Shutdown;

use crate::metrics::Metrics;

/// The consumer group of the notifier.
pub const GROUP: &str = "tributary-notify";

/// How deliveries are retried in process: under Kafka's 5 min poll interval.
pub fn backoff() -> Backoff {
    Backoff {
        give_up_after: Duration::from_secs(4 * 60),
        ..Backoff::default()
    }
}

/// The notifier's batch handler.
pub struct Notifier {
    channels: Arc<dyn ChannelStore>,
    registry: Arc<dyn DeviceRegistry>,
    deliverer: Deliverer,
    stop: Shutdown,
    metrics: Metrics,
}

impl Notifier {
    /// A notifier delivering with `deliverer`; `stop` ends retries at once.
    pub fn new(
        channels: Arc<dyn ChannelStore>,
        registry: Arc<dyn DeviceRegistry>,
        deliverer: Deliverer,
        stop: Shutdown,
        metrics: Metrics,
    ) -> Self {
        Self {
            channels,
            registry,
            deliverer,
            stop,
            metrics,
        }
    }

    /// Deliver `alerts` (in order) to `channel`; the first failure to keep a
    /// dead letter, or a stop, is an error.
    async fn serve(&self, channel: &Channel, alerts: &[(&Alert, &str)]) -> Result<(), HandlerError> {
        for (alert, group) in alerts {
            let outcome = self.deliverer.deliver(channel, alert, group, &self.stop).await;
            let (attempts, status, error) = match outcome {
                Outcome::Delivered { attempts } => {
                    self.metrics.notified("delivered");
                    tracing::info!(channel = %channel.id, alert = %alert.id, device = %alert.device_id, attempts, "notification delivered");
                    continue;
                }
                Outcome::Stopped { .. } => {
                    return Err(HandlerError::msg(format!(
                        "stopped before alert {} reached channel {}",
                        alert.id, channel.id
                    )));
                }
                Outcome::Refused {
                    attempts,
                    status,
                    answer,
                } => {
                    self.metrics.notified("refused");
                    (attempts, Some(status), format!("refused with {status}: {answer}"))
                }
                Outcome::GaveUp {
                    attempts,
                    last_error,
                    last_status,
                } => {
                    self.metrics.notified("gave_up");
                    (attempts, last_status, last_error)
                }
            };
            tracing::warn!(channel = %channel.id, alert = %alert.id, device = %alert.device_id, attempts, status, error = %error, "notification not delivered; kept in the channel's dead letters");
            let body = tributary_shared::notify::format::body(channel, alert, group);
            let letter = DeadLetter {
                channel_id: channel.id.clone(),
                key: idempotency_key(alert),
                alert_id: alert.id.clone(),
                device_id: alert.device_id.clone(),
                severity: alert.severity,
                state: match alert.state {
                    AlertState::Opened => "opened",
                    AlertState::Updated => "updated",
                    AlertState::Resolved => "resolved",
                }
                .into(),
                attempts,
                status,
                error,
                // PagerDuty's body holds its routing key: not kept.
                body: if channel.spec.format == tributary_shared::notify::Format::PagerDuty {
                    String::new()
                } else {
                    body.to_string()
                },
                failed_at: chrono::Utc::now(),
            };
            self.channels
                .dead_letter(&letter)
                .await
                .map_err(|e| HandlerError::new(format!("keeping a dead letter of channel {}", channel.id), e))?;
        }
        Ok(())
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
        let per_channel = channels.iter().filter_map(|c| {
            let wanted: Vec<(&Alert, &str)> = alerts
                .iter()
                .filter_map(|a| {
                    let group = groups.get(a.device_id.as_str()).map_or(DEFAULT_GROUP, String::as_str);
                    c.wants(a, group).then_some((a, group))
                })
                .collect();
            (!wanted.is_empty()).then_some((c, wanted))
        });
        let served =
            futures::future::join_all(per_channel.map(|(c, wanted)| async move { self.serve(c, &wanted).await })).await;
        served.into_iter().collect()
    }
}
