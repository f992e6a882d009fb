//! Live change notifications: one task follows the process function's cache
//! channel (Redis, or the in-process cache) and fans messages out to every
//! connected browser through a bounded broadcast channel (a slow browser
//! misses messages and reloads, it never slows the others). The Redis
//! follower reconnects with back-off while Redis is down.

use tokio::sync::broadcast;

/// The Redis channel the process function publishes on.
pub const CHANNEL: &str = tributary_shared::cache::CHANGES;

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
        Self {
            tx: broadcast::channel(256).0,
        }
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// Publish locally (used by the dashboard's own write actions).
    pub fn send(&self, msg: String) {
        let _ = self.tx.send(msg);
    }

    /// Forward the cache's change notifications until the process exits.
    pub async fn follow(self, cache: std::sync::Arc<dyn tributary_shared::cache::KvCache>) {
        cache.follow(CHANNEL, self.tx.clone()).await;
    }
}
