//! The registry's relay: publishes every change recorded in the registry's
//! outbox to `tributary.devices`, whoever made it, so the topic follows the
//! database even when a writer did not or could not publish (a command run
//! against the SQLite file of `tributary dev`, a publish that failed).
//!
//! Guarantees: at start every registered device is published (a new or
//! emptied topic is filled, and whatever changed while no relay ran is
//! sent); after that, each recorded change is published about
//! [`RelaySettings::every`] after it became visible. A sequence number that
//! becomes visible out of order (PostgreSQL transactions commit in another
//! order than they drew their numbers) is waited for up to
//! [`RelaySettings::gap_grace`] before it is taken for a rolled-back one.
//! Publishing a device twice is harmless: readers keep the highest revision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::view::publish;
use super::{DeviceRegistry, MAX_LIST, RegisteredDevice, RegistryError, RegistryQuery};
use crate::eventlog::{EventLogError, Publisher};
use crate::service::Shutdown;
use crate::telemetry::ErrorChain;

/// How the relay polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Time between polls of the outbox.
    pub every: Duration,
    /// How long a missing sequence number is waited for.
    pub gap_grace: Duration,
    /// Most changes read per poll.
    pub batch: u32,
    /// How long recorded changes are kept before they are pruned.
    pub keep_changes: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            every: Duration::from_millis(500),
            gap_grace: Duration::from_secs(10),
            batch: 5_000,
            keep_changes: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Why a relay step failed (the next step tries again).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The registry could not be read.
    #[error("reading the registry")]
    Registry(#[from] RegistryError),
    /// A device could not be published.
    #[error("publishing to the devices topic")]
    Publish(#[from] EventLogError),
}

/// The relay's state: where it is in the outbox.
pub struct Relay {
    registry: Arc<dyn DeviceRegistry>,
    publisher: Arc<dyn Publisher>,
    topic: String,
    settings: RelaySettings,
    /// Every change up to here is published.
    cursor: i64,
    /// The first missing sequence number above the cursor, and since when.
    gap: Option<(i64, Instant)>,
}

impl Relay {
    /// A relay that has published nothing yet.
    pub fn new(
        registry: Arc<dyn DeviceRegistry>,
        publisher: Arc<dyn Publisher>,
        topic: impl Into<String>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            registry,
            publisher,
            topic: topic.into(),
            settings,
            cursor: 0,
            gap: None,
        }
    }

    /// Publish every registered device; later steps start from the newest
    /// change recorded before the listing began. Returns how many.
    pub async fn publish_all(&mut self) -> Result<usize, RelayError> {
        let from = self.registry.last_change().await?;
        let mut after = None;
        let mut total = 0;
        loop {
            let page = self
                .registry
                .list(&RegistryQuery {
                    after: after.clone(),
                    limit: MAX_LIST,
                    ..RegistryQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            total += publish(self.publisher.as_ref(), &self.topic, &page).await?;
        }
        self.cursor = from;
        self.gap = None;
        Ok(total)
    }

    /// Publish the changes recorded since the last step; returns how many
    /// devices were published.
    pub async fn step(&mut self) -> Result<usize, RelayError> {
        let changes = self.registry.changes_after(self.cursor, self.settings.batch).await?;
        if changes.is_empty() {
            return Ok(0);
        }
        // Each change row carries the device as it is now: one record per device.
        let mut latest: HashMap<&str, &RegisteredDevice> = HashMap::with_capacity(changes.len());
        for (_, d) in &changes {
            latest.insert(d.id.as_str(), d);
        }
        let devices: Vec<RegisteredDevice> = latest.into_values().cloned().collect();
        let published = publish(self.publisher.as_ref(), &self.topic, &devices).await?;
        self.advance(changes.iter().map(|(seq, _)| *seq), Instant::now());
        Ok(published)
    }

    /// Move the cursor over the published sequence numbers, up to the first
    /// gap that is younger than the grace period.
    fn advance(&mut self, seqs: impl Iterator<Item = i64>, now: Instant) {
        for seq in seqs {
            if seq <= self.cursor {
                continue;
            }
            let missing = self.cursor + 1;
            if seq > missing {
                match self.gap {
                    Some((at, since)) if at == missing && now.duration_since(since) >= self.settings.gap_grace => {
                        tracing::debug!(
                            from = missing,
                            to = seq - 1,
                            "registry change numbers never appeared; skipped"
                        );
                    }
                    Some((at, _)) if at == missing => return,
                    _ => {
                        self.gap = Some((missing, now));
                        return;
                    }
                }
            }
            self.cursor = seq;
            self.gap = None;
        }
    }

    /// Where the relay is in the outbox.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }
}

/// Run `relay` until `shutdown`: everything once (retried until it works),
/// then a step every [`RelaySettings::every`], and old changes pruned hourly.
pub async fn run(mut relay: Relay, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // Each call is raced against the stop: with the broker unreachable a
    // publish waits out its delivery timeout, and a stop must not. What it
    // leaves unsent is sent again at the next start (publish_all first).
    loop {
        let published = tokio::select! {
            _ = &mut stop => return,
            p = relay.publish_all() => p,
        };
        match published {
            Ok(n) => {
                tracing::info!(topic = %relay.topic, devices = n, "device registry published");
                break;
            }
            Err(e) => {
                tracing::warn!(topic = %relay.topic, error = %ErrorChain(&e), "publishing the device registry failed; retrying in 5 s");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(relay.settings.every) => {}
        }
        let stepped = tokio::select! {
            _ = &mut stop => return,
            s = relay.step() => s,
        };
        if let Err(e) = stepped {
            tracing::warn!(topic = %relay.topic, error = %ErrorChain(&e), "relaying registry changes failed; retrying");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(Instant::now());
            let keep = chrono::Duration::from_std(relay.settings.keep_changes).unwrap_or(chrono::Duration::days(7));
            match relay.registry.prune_changes(chrono::Utc::now() - keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "old registry changes pruned"),
                Err(e) => tracing::warn!(error = %ErrorChain(&e), "pruning old registry changes failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Relay {
        // advance() reads neither the registry nor the log.
        let registry = crate::registry::SqliteRegistry::new(
            sqlx::sqlite::SqlitePoolOptions::new()
                .connect_lazy("sqlite::memory:")
                .expect("lazy pool"),
        );
        let log = crate::eventlog::memory::MemoryLog::default();
        Relay::new(
            Arc::new(registry),
            crate::eventlog::EventLog::publisher(&log),
            "t",
            RelaySettings::default(),
        )
    }

    #[tokio::test]
    async fn the_cursor_stops_at_a_young_gap_and_skips_an_old_one() {
        let mut r = relay();
        let t0 = Instant::now();
        r.advance([1, 2, 3].into_iter(), t0);
        assert_eq!(r.cursor(), 3);
        // 4 is missing: stop before it.
        r.advance([5, 6].into_iter(), t0);
        assert_eq!(r.cursor(), 3);
        // Still missing within the grace period: wait.
        r.advance([5, 6].into_iter(), t0 + Duration::from_secs(5));
        assert_eq!(r.cursor(), 3);
        // 4 appears: everything is contiguous.
        r.advance([4, 5, 6].into_iter(), t0 + Duration::from_secs(6));
        assert_eq!(r.cursor(), 6);
        // 7 never appears: after the grace period it is skipped.
        r.advance([8].into_iter(), t0 + Duration::from_secs(7));
        assert_eq!(r.cursor(), 6);
        r.advance([8, 9].into_iter(), t0 + Duration::from_secs(18));
        assert_eq!(r.cursor(), 9);
        // A second gap gets its own grace period.
        r.advance([11].into_iter(), t0 + Duration::from_secs(19));
        assert_eq!(r.cursor(), 9);
        r.advance([11].into_iter(), t0 + Duration::from_secs(20));
        assert_eq!(r.cursor(), 9);
    }
}
