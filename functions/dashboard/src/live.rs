//! Live change notifications: one task subscribes to the process function's
//! Redis channel and fans messages out to every connected browser through a
//! bounded broadcast channel (a slow browser misses messages and reloads,
//! it never slows the others). Reconnects with back-off while Redis is down.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

/// The Redis channel the process function publishes on.
pub const CHANNEL: &str = "tributary:changes";

/// A fan-out of change messages (JSON strings).
#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<String>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// A fan-out with room for 256 pending messages per subscriber.
    pub fn new() -> Self {
        Self { tx: broadcast::channel(256).0 }
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// Publish locally (used by the dashboard's own write actions).
    pub fn send(&self, msg: String) {
        let _ = self.tx.send(msg);
    }

    /// Forward Redis messages until the process exits.
    pub async fn follow_redis(self, client: redis::Client) {
        let mut delay = Duration::from_millis(200);
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                    Ok(()) => {
                        tracing::info!(channel = CHANNEL, "following change notifications");
                        delay = Duration::from_millis(200);
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(payload) = msg.get_payload::<String>() {
                                self.send(payload);
                            }
                        }
                        tracing::warn!("change notifications stream ended; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "subscribing to change notifications failed"),
                },
                Err(e) => tracing::debug!(error = %e, "Redis unavailable for change notifications"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
