//! The Kafka-triggered batch handler of the lake function.
//!
//! Guarantees (with [`run_consumer`](tributary_shared::eventlog::runner::run_consumer),
//! which commits only what [`Handler::committable`] and [`Handler::tick`] allow):
//! - a record's offset becomes committable only once its row is in a
//!   committed Delta version (or the record was dead-lettered, or the table
//!   held it already): a crash at any point loses nothing;
//! - a roll happens when the buffers reach the size limit (inside `handle`:
//!   a failed roll fails the batch, which the runner retries with back-off,
//!   so memory stays bounded during an outage of the store), when the oldest
//!   buffered row reaches the age limit (between batches), at a clean stop,
//!   and for partitions being revoked;
//! - a record that is not a valid reading or aggregate is published to the
//!   dead-letter topic (key and bytes kept, the reason in its headers) before
//!   its offset can be committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tributary_shared::eventlog::runner::{Handler, HandlerError, Offsets};
use tributary_shared::eventlog::{Committed, Message, Publisher, Record, TopicPartition};
use tributary_shared::telemetry::ErrorChain;

use crate::compact::CompactPolicy;
use crate::error::LakeError;
use crate::metrics::{FailureLabel, LakeMetrics, TableLabel};
use crate::writer::{Rolled, TableWriter};

/// How the handler rolls.
#[derive(Clone, Debug)]
pub struct RollPolicy {
    /// Roll when this many record bytes are buffered.
    pub max_bytes: usize,
    /// Roll when the oldest buffered row is this old.
    pub max_age: Duration,
}

impl Default for RollPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 128 << 20,
            max_age: Duration::from_secs(300),
        }
    }
}

struct Tables {
    /// Topic to its table's writer.
    by_topic: HashMap<String, TableWriter>,
    /// No roll between batches before this (back-off after a failure).
    next_try: Option<Instant>,
    failures: u32,
    /// Partitions this member owns: the owner of a topic's partition 0 compacts its table.
    owned: std::collections::HashSet<TopicPartition>,
    /// When the tables were last compacted.
    compacted: Option<Instant>,
}

/// How often, and when, the tables are compacted.
#[derive(Clone, Debug)]
struct Compaction {
    every: Duration,
    policy: CompactPolicy,
}

/// Writes batches of `telemetry.raw` and `telemetry.aggregates` to the lake.
pub struct LakeHandler {
    tables: tokio::sync::Mutex<Tables>,
    /// Per partition, the first buffered offset: what `committable` must not
    /// pass (read without waiting for the tables' lock).
    held: Mutex<HashMap<TopicPartition, i64>>,
    policy: RollPolicy,
    compaction: Option<Compaction>,
    deadletter: std::sync::Arc<dyn Publisher>,
    deadletter_topic: String,
    metrics: LakeMetrics,
}

impl LakeHandler {
    /// A handler writing each topic to its table (`writers`: topic to writer).
    pub fn new(
        writers: Vec<(String, TableWriter)>,
        policy: RollPolicy,
        deadletter: std::sync::Arc<dyn Publisher>,
        deadletter_topic: impl Into<String>,
        metrics: LakeMetrics,
    ) -> Self {
        Self {
            tables: tokio::sync::Mutex::new(Tables {
                by_topic: writers.into_iter().collect(),
                next_try: None,
                failures: 0,
                owned: Default::default(),
                compacted: None,
            }),
            held: Mutex::new(HashMap::new()),
            policy,
            compaction: None,
            deadletter,
            deadletter_topic: deadletter_topic.into(),
            metrics,
        }
    }

    /// Compact the tables every `every` (see [`crate::compact`]): done by the
    /// member that owns partition 0 of a table's topic, so one member at a time.
    pub fn compacting(mut self, every: Duration, policy: CompactPolicy) -> Self {
        self.compaction = Some(Compaction { every, policy });
        self
    }

    /// Merge one partition's small files per table this member compacts, if due.
    async fn compact(&self, tables: &mut Tables) {
        let Some(c) = &self.compaction else { return };
        if tables.compacted.is_some_and(|t| t.elapsed() < c.every) {
            return;
        }
        tables.compacted = Some(Instant::now());
        let Tables { by_topic, owned, .. } = tables;
        for (topic, w) in by_topic.iter_mut() {
            if !owned.contains(&TopicPartition::new(topic, 0)) {
                continue;
            }
            let table = w.kind().dir();
            match w.compact(&c.policy, chrono::Utc::now()).await {
                Ok(Some(done)) => {
                    let label = TableLabel { table };
                    self.metrics.compactions.get_or_create(&label).inc();
                    self.metrics
                        .compacted_files
                        .get_or_create(&label)
                        .inc_by(done.removed as u64);
                }
                Ok(None) => {}
                Err(e) => {
                    let kind = e.kind();
                    self.metrics
                        .failed_compactions
                        .get_or_create(&FailureLabel { table, kind })
                        .inc();
                    tracing::warn!(error = %ErrorChain(&e), table, "compacting the lake failed; trying again later");
                }
            }
        }
    }

    /// Roll the tables (only `partitions` of them when given) and return the
    /// offsets now committable. Every table is tried; the first error is returned.
    async fn roll(&self, tables: &mut Tables, partitions: Option<&[TopicPartition]>) -> Result<Offsets, LakeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut offsets = Vec::new();
        let mut first_error = None;
        for (topic, w) in tables.by_topic.iter_mut() {
            let mine: Option<Vec<i32>> = partitions.map(|ps| {
                ps.iter()
                    .filter(|tp| &tp.topic == topic)
                    .map(|tp| tp.partition)
                    .collect()
            });
            if mine.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let table = w.kind().dir();
            match w.roll(mine.as_deref(), now_ms).await {
                Ok(rolled) => {
                    self.count(table, &rolled);
                    offsets.extend(
                        rolled
                            .committable
                            .into_iter()
                            .map(|(p, off)| (TopicPartition::new(topic, p), off, String::new())),
                    );
                }
                Err(e) => {
                    let kind = e.kind();
                    self.metrics
                        .failed_rolls
                        .get_or_create(&FailureLabel { table, kind })
                        .inc();
                    first_error.get_or_insert(e);
                }
            }
        }
        self.update_held(tables);
        match first_error {
            Some(e) => Err(e),
            None => Ok(offsets),
        }
    }

    fn count(&self, table: &'static str, rolled: &Rolled) {
        if rolled.files == 0 && rolled.committable.is_empty() {
            return;
        }
        let label = TableLabel { table };
        self.metrics.rows.get_or_create(&label).inc_by(rolled.rows);
        self.metrics.files.get_or_create(&label).inc_by(rolled.files as u64);
        self.metrics.bytes.get_or_create(&label).inc_by(rolled.bytes);
        self.metrics.commits.get_or_create(&label).inc();
    }

    fn update_held(&self, tables: &Tables) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.clear();
        let (mut bytes, mut rows) = (0, 0);
        for (topic, w) in &tables.by_topic {
            bytes += w.buffered_bytes();
            rows += w.buffered_rows();
            for p in w.buffered_partitions() {
                if let Some(first) = w.first_buffered(p) {
                    held.insert(TopicPartition::new(topic, p), first);
                }
            }
        }
        self.metrics.buffered.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics.buffered_rows.set(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    async fn dead_letter(&self, poison: Vec<(&Message, String)>) -> Result<(), HandlerError> {
        if poison.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = poison.iter().map(|(m, err)| m.dead_letter("lake", err)).collect();
        let n = records.len() as u64;
        for r in self.deadletter.publish(&self.deadletter_topic, records).await {
            r.map_err(|e| HandlerError::new(format!("dead-lettering to {}", self.deadletter_topic), e))?;
        }
        self.metrics.deadlettered.inc_by(n);
        Ok(())
    }
}

#[async_trait]
impl Handler for LakeHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        let mut tables = self.tables.lock().await;
        // Decode all first: nothing counts as seen until the poison is out, so
        // a failed dead-lettering retries the batch with every record still new.
        let mut decoded = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for m in batch {
            let Some(w) = tables.by_topic.get(&m.topic) else {
                continue;
            };
            if !w.is_new(m.partition, m.offset) {
                if w.written_through(m.partition).is_some_and(|t| m.offset <= t) {
                    self.metrics.skipped.inc();
                }
                continue;
            }
            match w.kind().decode(&m.value) {
                Ok(row) => decoded.push((m, Some(row))),
                Err(e) => {
                    poison.push((m, e));
                    decoded.push((m, None));
                }
            }
        }
        self.dead_letter(poison).await?;
        for (m, row) in decoded {
            if let Some(w) = tables.by_topic.get_mut(&m.topic) {
                w.add(m.partition, m.offset, row, m.value.len());
            }
        }
        let buffered: usize = tables.by_topic.values().map(TableWriter::buffered_bytes).sum();
        if buffered >= self.policy.max_bytes {
            let offsets = self.roll(&mut tables, None).await;
            offsets.map_err(|e| HandlerError::new("rolling full buffers into the lake", e))?;
            // What the roll made committable, `committable` reports for this batch.
        }
        self.update_held(&tables);
        Ok(())
    }

    fn committable(&self, processed: Vec<(TopicPartition, i64)>) -> Vec<(TopicPartition, i64)> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        processed
            .into_iter()
            .map(|(tp, next)| {
                let off = held.get(&tp).map_or(next, |first| next.min(*first));
                (tp, off)
            })
            .collect()
    }

    async fn on_assigned(&self, partitions: &[TopicPartition], _committed: &[Committed]) {
        // What other writers committed while these partitions were elsewhere decides what to skip.
        let mut tables = self.tables.lock().await;
        tables.owned.extend(partitions.iter().cloned());
        for (topic, w) in tables.by_topic.iter_mut() {
            if !partitions.iter().any(|tp| &tp.topic == topic) {
                continue;
            }
            if let Err(e) = w.refresh().await {
                // A record the table holds is then caught at commit time (a lost race), not here.
                tracing::warn!(error = %ErrorChain(&e), table = w.kind().dir(), "reading the table's log failed");
            }
        }
    }

    async fn on_revoked(&self, partitions: &[TopicPartition]) {
        // Commit what is buffered for them, so their next owner skips it instead of
        // reading it again; if that fails it reads it again from the committed offsets.
        let mut tables = self.tables.lock().await;
        if let Err(e) = self.roll(&mut tables, Some(partitions)).await {
            tracing::warn!(error = %ErrorChain(&e), "rolling revoked partitions failed; their next owner re-reads them");
        }
        for (topic, w) in tables.by_topic.iter_mut() {
            let mine: Vec<i32> = partitions
                .iter()
                .filter(|tp| &tp.topic == topic)
                .map(|tp| tp.partition)
                .collect();
            w.forget(&mine);
        }
        tables.owned.retain(|tp| !partitions.contains(tp));
        self.update_held(&tables);
    }

    async fn tick(&self) -> Offsets {
        let mut tables = self.tables.lock().await;
        self.compact(&mut tables).await;
        if tables.next_try.is_some_and(|t| Instant::now() < t)
            || !tables.by_topic.values().any(|w| w.is_due(self.policy.max_age))
        {
            return Vec::new();
        }
        match self.roll(&mut tables, None).await {
            Ok(offsets) => {
                tables.failures = 0;
                tables.next_try = None;
                offsets
            }
            Err(e) => {
                tables.failures += 1;
                let delay = Duration::from_millis(500u64.saturating_mul(1 << tables.failures.min(6)));
                tables.next_try = Some(Instant::now() + delay);
                tracing::warn!(error = %ErrorChain(&e), retry_in_ms = delay.as_millis() as u64, "rolling into the lake failed; retrying");
                Vec::new()
            }
        }
    }

    async fn on_stop(&self) -> Offsets {
        let mut tables = self.tables.lock().await;
        match self.roll(&mut tables, None).await {
            Ok(offsets) => offsets,
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "the last roll into the lake failed; the next start re-reads what was buffered");
                Vec::new()
            }
        }
    }
}
