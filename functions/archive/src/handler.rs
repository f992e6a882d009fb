//! The Kafka-triggered batch handler of the archive function.
//!
//! Guarantees (with [`run_consumer`](tributary_shared::eventlog::runner::run_consumer),
//! which commits only after `Ok` and retries a failed batch forever):
//! - `handle` returns `Ok` only when every record of the batch is stored in
//!   the [`RawStore`] or published to the dead-letter topic, so offsets are
//!   never committed past an unwritten reading;
//! - a retryable store failure (throttling, timeout, outage) makes `handle`
//!   return `Err`; the runner backs off and replays the whole batch, which is
//!   harmless because upserts are idempotent;
//! - a record that is not a valid `Reading` is dead-lettered at once; a record
//!   the store refuses for itself (400/413), or that keeps failing while other
//!   records of its batch are stored, is dead-lettered after `max_attempts`
//!   tries. Throttling, timeouts and a batch of which nothing could be stored
//!   never count towards that limit, so an outage never dead-letters good data;
//! - dead-lettered records keep their key and bytes, with headers
//!   `source-topic`, `source-partition`, `source-offset`, `function`
//!   (`archive`) and `error`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tributary_shared::eventlog::runner::{Handler, HandlerError};
use tributary_shared::eventlog::{Message, Publisher, Record, TopicPartition};
use tributary_shared::model::Reading;
use tributary_shared::raw::{RawStore, StoreError};

/// Counters of the archive function.
#[derive(Clone, Debug, Default)]
pub struct ArchiveMetrics {
    archived: Counter,
    deadlettered: Counter,
    failed_batches: Counter,
}

impl ArchiveMetrics {
    /// Counters registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tributary_archive_readings",
            "Readings stored in Cosmos DB (replays included)",
            m.archived.clone(),
        );
        registry.register(
            "tributary_archive_deadlettered",
            "Records sent to the dead-letter topic",
            m.deadlettered.clone(),
        );
        registry.register(
            "tributary_archive_failed_batches",
            "Batches returned to the runner for a retry",
            m.failed_batches.clone(),
        );
        m
    }

    /// Readings stored so far (replays included).
    pub fn archived(&self) -> u64 {
        self.archived.get()
    }

    /// Records dead-lettered so far.
    pub fn deadlettered(&self) -> u64 {
        self.deadlettered.get()
    }

    /// Batches handed back to the runner for a retry so far.
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.get()
    }
}

/// Archives batches of `telemetry.raw` into a [`RawStore`].
pub struct ArchiveHandler {
    store: Arc<dyn RawStore>,
    deadletter: Arc<dyn Publisher>,
    deadletter_topic: String,
    max_attempts: u32,
    /// Record-specific failures so far, by (topic, partition, offset). Only
    /// records of the batch being retried are here; cleared when it succeeds.
    attempts: Mutex<HashMap<(String, i32, i64), u32>>,
    metrics: ArchiveMetrics,
}

impl ArchiveHandler {
    /// A handler writing to `store`, dead-lettering through `deadletter` to
    /// `deadletter_topic` after `max_attempts` record-specific failures.
    pub fn new(
        store: Arc<dyn RawStore>,
        deadletter: Arc<dyn Publisher>,
        deadletter_topic: impl Into<String>,
        max_attempts: u32,
        metrics: ArchiveMetrics,
    ) -> Self {
        Self {
            store,
            deadletter,
            deadletter_topic: deadletter_topic.into(),
            max_attempts: max_attempts.max(1),
            attempts: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    async fn dead_letter(&self, poison: Vec<(&Message, String)>) -> Result<(), HandlerError> {
        if poison.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = poison.iter().map(|(m, err)| m.dead_letter("archive", err)).collect();
        let n = records.len() as u64;
        for r in self.deadletter.publish(&self.deadletter_topic, records).await {
            // Not committing past a record that is neither stored nor dead-lettered.
            r.map_err(|e| HandlerError::new(format!("dead-lettering to {}", self.deadletter_topic), e))?;
        }
        self.metrics.deadlettered.inc_by(n);
        Ok(())
    }
}

fn decode(m: &Message) -> Result<Reading, String> {
    let r: Reading = serde_json::from_slice(&m.value).map_err(|e| format!("not a valid Reading: {e}"))?;
    if r.id.is_empty() || r.device_id.is_empty() {
        return Err("not a valid Reading: empty id or deviceId".into());
    }
    if r.id.len() > 255 || r.id.contains(['/', '\\', '?', '#']) {
        return Err(format!(
            "not a valid Reading: id {:?} cannot be a Cosmos DB document id",
            r.id
        ));
    }
    Ok(r)
}

#[async_trait]
impl Handler for ArchiveHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        let mut poison: Vec<(&Message, String)> = Vec::new();
        let mut readings = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for m in batch {
            match decode(m) {
                Ok(r) => {
                    readings.push(r);
                    sources.push(m);
                }
                Err(e) => poison.push((m, e)),
            }
        }

        let results = self.store.upsert_batch(&readings).await;
        let stored = results.iter().filter(|r| r.is_ok()).count();
        let mut retry: Option<StoreError> = None;
        {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            for (m, res) in sources.iter().zip(results) {
                let key = (m.topic.clone(), m.partition, m.offset);
                let err = match res {
                    Ok(()) => {
                        attempts.remove(&key);
                        continue;
                    }
                    Err(e) => e,
                };
                // Throttling and outages are nobody's fault, nor is a batch of
                // which nothing could be stored: retry without counting.
                let counts = match err {
                    StoreError::Permanent(_) => true,
                    StoreError::Retryable(_) => stored > 0,
                    StoreError::Unavailable(_) => false,
                };
                if !counts {
                    retry.get_or_insert(err);
                    continue;
                }
                let n = attempts.entry(key.clone()).or_insert(0);
                *n += 1;
                if *n >= self.max_attempts {
                    // Stays counted out until the batch succeeds, so a replay decides the same.
                    poison.push((m, format!("not stored after {} tries: {err}", self.max_attempts)));
                } else {
                    retry.get_or_insert(err);
                }
            }
        }
        self.metrics.archived.inc_by(stored as u64);

        if let Some(cause) = retry {
            // Dead-letter nothing yet: the replay decides the same records
            // poison again (undecodable, or still counted out), so each is
            // dead-lettered once, together with the batch's success.
            self.metrics.failed_batches.inc();
            let context = format!("{} of {} readings not stored", readings.len() - stored, readings.len());
            return Err(HandlerError::new(context, cause));
        }
        self.dead_letter(poison).await?;
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    async fn on_revoked(&self, _partitions: &[TopicPartition]) {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
