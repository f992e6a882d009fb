//! The Kafka side of analyze: the batch handler the consumer runner drives.
//!
//! Guarantees (no reading lost, none counted twice in an emitted aggregate,
//! across crash, restart, scale-out and scale-in):
//! - offsets are committed only up to the earliest reading still inside an
//!   open window ([`Handler::committable`]), with the partition's event clock
//!   as commit metadata; a new owner restores it and rebuilds the open
//!   windows by re-reading from the committed offset, so re-emitted windows are
//!   identical and keyed by (device, metric, size, start): an overwrite downstream;
//! - outputs are published (aggregates, alerts, dead letters, Splunk when
//!   configured) before the handler returns `Ok`; if publishing fails, the
//!   outputs are kept and retried, and readings already applied to the windows
//!   are not applied again;
//! - between polls the runner calls [`Handler::tick`]: the idle rule closes
//!   the windows of quiet partitions, and their offsets are committed once
//!   those windows are published (see [`crate::idle`]); idle series are
//!   evicted periodically (see [`crate::engine`]).
//!
//! - with a state topic ([`Snapshots`]), model and alert state is
//!   snapshotted per partition every few seconds, after the outputs are
//!   published and before the commit, and offsets are committed only up to
//!   the newest snapshot; a new owner restores it before the first record
//!   (see [`crate::state`]), so its scores and alerts are an uninterrupted
//!   run's. A clean stop snapshots every partition once more and commits up
//!   to it. Without a state topic, models restart cold from the replayed
//!   readings.
//! - with a [`RuleSource`], the threshold rules in force are rebuilt
//!   whenever the followed rules change, before the next batch is applied:
//!   a rule change applies from the next reading on (see
//!   [`crate::detect::rulebook`]).
//! - with traces on, an aggregate or alert carries the trace context of the
//!   reading that closed its window or raised it (see [`crate::outbox`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tributary_shared::eventlog::runner::{Handler, HandlerError, Offsets};
use tributary_shared::eventlog::{Committed, EventLog, KeyValues, Message, Publisher, Record, TopicPartition};
use tributary_shared::model::Reading;
use tributary_shared::records::{Aggregate, Alert};
use tributary_shared::registry::view::GroupView;
use tributary_shared::rules::view::RuleView;
use tributary_shared::splunk::{HecClient, HecEvent};
use tributary_shared::telemetry::{ErrorChain, trace};

use crate::detect::rulebook::RuleBook;
use crate::engine::{Analyzer, Evictions};
use crate::idle::IdleClock;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, TraceHeaders};
use crate::state;

/// How often [`AnalyzeHandler::tick`] sweeps idle series.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A successful broker check lets idle advances go ahead for this long.
const BROKER_CHECK_VALID: Duration = Duration::from_secs(5);
/// After a snapshot could not be written, the next attempt waits this long
/// (each attempt after a failure writes every series again).
const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Records of a snapshot published per call (about 7 MB).
const SNAPSHOT_CHUNK: usize = 5_000;
/// Least time between two log lines about the series cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pending {
    aggregates: Outbox<Aggregate>,
    alerts: Outbox<Alert>,
    dead: Vec<Record>,
}

struct State {
    analyzer: Analyzer,
    /// Per partition, the next offset not yet applied to the windows.
    applied: HashMap<TopicPartition, i64>,
    pending: Pending,
    /// Quiet time per owned partition (the idle rule).
    idle: IdleClock,
    /// Per partition, the offset last committed (by the runner or a tick).
    committed: HashMap<TopicPartition, i64>,
    last_sweep: Instant,
    /// The idle rule closed windows whose offsets a tick has not committed yet.
    commit_due: bool,
    broker_ok_at: Option<Instant>,
    /// Evictions already counted in the metrics.
    reported: Evictions,
    cap_logged_at: Option<Instant>,
    last_snapshot: Instant,
    /// When writing a snapshot last failed: no new attempt for a while.
    snapshot_failed_at: Option<Instant>,
    /// The generation of the followed rules the analyzer applies.
    rules_generation: u64,
}

/// Where the rules in force and the devices' groups come from: views of the
/// compacted topics `tributary.rules` and `tributary.devices`.
#[derive(Clone)]
pub struct RuleSource {
    /// The rules in the rule store.
    pub rules: Arc<RuleView>,
    /// Each device's group.
    pub groups: Arc<GroupView>,
}

/// Where and how often model and alert state is snapshotted (see [`crate::state`]).
#[derive(Clone)]
pub struct Snapshots {
    /// The backend the state topic lives in.
    pub log: Arc<dyn EventLog>,
    /// The compacted state topic, with a partition per input partition.
    pub topic: String,
    /// Partitions to create it with (at least the input topic's).
    pub partitions: i32,
    /// Time between snapshots (commits wait for them).
    pub every: Duration,
}

/// Topics the handler writes to.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// Window aggregates.
    pub aggregates: String,
    /// Alerts.
    pub alerts: String,
    /// Records that are not readings.
    pub deadletter: String,
}

/// Analyze's batch handler.
pub struct AnalyzeHandler {
    state: Mutex<State>,
    /// Held while applying and publishing (batches and ticks), so outputs are
    /// published and cleared by one caller at a time.
    gate: tokio::sync::Mutex<()>,
    publisher: Arc<dyn Publisher>,
    outputs: Outputs,
    splunk: Option<HecClient>,
    metrics: Metrics,
    snapshots: Option<Snapshots>,
    /// The state topic was created (or found): once per process, not per rebalance.
    state_topic_ready: std::sync::atomic::AtomicBool,
    rules: Option<Arc<RuleView>>,
}

impl AnalyzeHandler {
    /// A handler with a fresh analyzer. The idle rule's timeout comes from
    /// the analyzer's configuration ([`crate::engine::AnalyzerConfig::idle_timeout`]).
    pub fn new(
        analyzer: Analyzer,
        publisher: Arc<dyn Publisher>,
        outputs: Outputs,
        splunk: Option<HecClient>,
        metrics: Metrics,
    ) -> Self {
        let idle = IdleClock::new(analyzer.config().idle_timeout);
        let state = State {
            analyzer,
            applied: HashMap::new(),
            pending: Pending::default(),
            idle,
            committed: HashMap::new(),
            last_sweep: Instant::now(),
            commit_due: false,
            broker_ok_at: None,
            reported: Evictions::default(),
            cap_logged_at: None,
            last_snapshot: Instant::now(),
            snapshot_failed_at: None,
            rules_generation: 0,
        };
        Self {
            state: Mutex::new(state),
            gate: tokio::sync::Mutex::new(()),
            publisher,
            outputs,
            splunk,
            metrics,
            snapshots: None,
            state_topic_ready: std::sync::atomic::AtomicBool::new(false),
            rules: None,
        }
    }

    /// Apply the rules `source` follows, per device group, from the next
    /// batch after each change.
    pub fn with_rules(mut self, source: RuleSource) -> Self {
        self.lock().analyzer.set_groups(Arc::clone(&source.groups));
        self.rules = Some(source.rules);
        self
    }

    /// Rebuild the analyzer's rules if the followed ones changed.
    fn refresh_rules(&self, st: &mut State) {
        let Some(view) = &self.rules else { return };
        if view.generation() == st.rules_generation {
            return;
        }
        let (generation, stored) = view.snapshot();
        let book = RuleBook::new(&st.analyzer.config().detectors.rules, &stored);
        st.analyzer.set_rules(Arc::new(book));
        st.rules_generation = generation;
        tracing::info!(rules = stored.len(), generation, "alert rules applied");
    }

    /// Snapshot model and alert state to `snapshots`' topic and restore it
    /// on assignment: a warm takeover (see [`crate::state`]).
    pub fn with_snapshots(mut self, snapshots: Snapshots) -> Self {
        self.lock().analyzer.keep_snapshots();
        self.snapshots = Some(snapshots);
        self
    }

    /// Write a snapshot of every partition that is due one: all of them
    /// every [`Snapshots::every`], and at once a partition that has none
    /// yet (it cannot commit before) or is in `now`. Call with the gate held, after the
    /// outputs were published (a snapshot is at the applied offset: its
    /// readings' outputs must be out). An error leaves the commit where it
    /// was; the partition's next snapshot is then a full one, attempted
    /// after [`SNAPSHOT_RETRY_AFTER`].
    async fn snapshot_if_due(&self, now: &[i32], due: Due) -> Result<(), HandlerError> {
        let Some(snap) = &self.snapshots else {
            return Ok(());
        };
        // The partitions due one, at what they applied. Each is encoded only
        // when its turn comes, so what is held at once is one partition's
        // snapshot, not every partition's (at 100k series, 140 MB in all).
        let due_partitions: Vec<(i32, i64)> = {
            let mut st = self.lock();
            let st = &mut *st;
            if due == Due::AsScheduled
                && st
                    .snapshot_failed_at
                    .is_some_and(|t| t.elapsed() < SNAPSHOT_RETRY_AFTER)
            {
                return Ok(());
            }
            let all = due == Due::Now || st.last_snapshot.elapsed() >= snap.every;
            let mut partitions: Vec<(i32, i64)> = st.applied.iter().map(|(tp, &o)| (tp.partition, o)).collect();
            partitions.sort_unstable();
            partitions.retain(|(p, _)| all || st.analyzer.snapshot_offset(*p).is_none() || now.contains(p));
            if all {
                st.last_snapshot = Instant::now();
            }
            partitions
        };
        if due_partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let (mut bytes, mut count, mut failed) = (0usize, 0usize, None);
        for (p, at) in due_partitions {
            let encoded = self.lock().analyzer.snapshot(p, at);
            let Some(out) = encoded else { continue };
            // An empty entry is an evicted series: a real tombstone, so
            // compaction drops its key instead of keeping it for ever.
            let mut records: Vec<Record> = out
                .into_iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        Record::tombstone(k)
                    } else {
                        Record::new(k, v)
                    }
                    .to_partition(p)
                })
                .collect();
            bytes += records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
            count += records.len();
            // In chunks: a snapshot of every series can hold more records than
            // the producer's queue (`TRIBUTARY_KAFKA_QUEUE_MAX_MESSAGES`) takes
            // at once. One partition failing leaves the others' snapshots good.
            let mut result = Ok(());
            while !records.is_empty() && result.is_ok() {
                let rest = records.split_off(records.len().min(SNAPSHOT_CHUNK));
                result = self.publish_all(&snap.topic, records).await;
                records = rest;
            }
            let mut st = self.lock();
            match result {
                Ok(()) => st.analyzer.snapshot_written(p, at),
                Err(e) => {
                    st.analyzer.snapshot_lost(p);
                    failed.get_or_insert(e);
                }
            }
        }
        self.lock().snapshot_failed_at = failed.is_some().then(Instant::now);
        self.metrics.snapshot(bytes, started.elapsed());
        tracing::debug!(
            records = count,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        failed.map_or(Ok(()), Err)
    }

    /// Restore the snapshots of newly assigned partitions (see [`crate::state`]),
    /// read concurrently: a rebalance waits for the slowest, not the sum.
    async fn restore_snapshots(&self, committed: &[Committed]) {
        let Some(snap) = &self.snapshots else {
            return;
        };
        if !self.state_topic_ready.load(std::sync::atomic::Ordering::Relaxed) {
            match snap.log.ensure_compacted_topic(&snap.topic, snap.partitions).await {
                Ok(()) => self.state_topic_ready.store(true, std::sync::atomic::Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %snap.topic, "could not create the state topic; reading it anyway")
                }
            }
        }
        let reads: Vec<_> = committed
            .iter()
            .map(|c| {
                let (log, topic, partition) = (Arc::clone(&snap.log), snap.topic.clone(), c.tp.partition);
                tokio::spawn(async move {
                    let started = Instant::now();
                    (read_with_retries(log.as_ref(), &topic, partition).await, started)
                })
            })
            .collect();
        for (c, read) in committed.iter().zip(reads) {
            let (records, started) = read.await.unwrap_or((None, Instant::now()));
            let mut st = self.lock();
            let Some(records) = records else {
                st.analyzer.exclude_from_snapshots(c.tp.partition);
                continue;
            };
            let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
            let n = records.len();
            let restored = st
                .analyzer
                .restore_state(c.tp.partition, c.offset, state::read_back(records));
            tracing::info!(
                partition = c.tp.partition,
                committed = ?c.offset,
                snapshot_at = ?restored.at,
                series = restored.series,
                refused = restored.refused,
                records = n,
                bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "restored the partition's model and alert state"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, batch: &[Message]) {
        let mut st = self.lock();
        let st = &mut *st;
        self.refresh_rules(st);
        let mut readings = 0u64;
        // Runs of one partition's records (a fetch hands them out that way):
        // its bookkeeping is looked up and written once per run, not per record.
        for run in batch.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
            let tp = run[0].topic_partition();
            let (before, mut next) = (st.applied.get(&tp).copied(), None);
            for m in run {
                if next.or(before).is_some_and(|next| m.offset < next) {
                    continue; // applied in an earlier attempt of this batch
                }
                next = Some(m.offset + 1);
                match serde_json::from_slice::<Reading>(&m.value) {
                    Ok(r) => {
                        readings += 1;
                        let out = st.analyzer.process(m.partition, m.offset, &r);
                        let traced: Option<TraceHeaders> = trace::carried(&m.headers).map(Arc::from);
                        st.pending.aggregates.extend(out.aggregates, traced.as_ref());
                        st.pending.alerts.extend(out.alerts, traced.as_ref());
                    }
                    Err(e) => st
                        .pending
                        .dead
                        .push(m.dead_letter("analyze", &format!("not a reading: {e}"))),
                }
            }
            if let Some(next) = next {
                st.idle.active(&tp);
                st.applied.insert(tp, next);
            }
        }
        self.metrics.readings(
            readings,
            st.analyzer.late_values(),
            st.analyzer.duplicates(),
            st.analyzer.remembered(),
        );
        self.report_series(st);
    }

    /// Series metrics, and a log line (at most one a minute) when the cap evicted.
    fn report_series(&self, st: &mut State) {
        let now = st.analyzer.evictions();
        let (idle, cap) = (now.idle - st.reported.idle, now.cap - st.reported.cap);
        self.metrics.series(st.analyzer.series_count(), idle, cap);
        if cap > 0 && st.cap_logged_at.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
            tracing::warn!(
                evicted_total = now.cap,
                rounds = now.cap_rounds,
                max_series = st.analyzer.config().series.max,
                series = st.analyzer.series_count(),
                "series cap reached: evicted the least recently updated series (their models start cold if they return); raise TRIBUTARY_MAX_SERIES or add instances"
            );
            st.cap_logged_at = Some(Instant::now());
        }
        st.reported = now;
    }

    /// Publish everything pending; on success it is cleared, on failure kept
    /// for the next attempt. Call with the gate held.
    async fn publish_pending(&self) -> Result<(), HandlerError> {
        let (aggs, alerts, dead) = {
            let st = self.lock();
            (
                st.pending.aggregates.clone(),
                st.pending.alerts.clone(),
                st.pending.dead.clone(),
            )
        };
        if aggs.is_empty() && alerts.is_empty() && dead.is_empty() {
            return Ok(());
        }
        self.publish_all(
            &self.outputs.aggregates,
            aggs.records(|a| Record::new(a.device_id.clone(), serde_json::to_vec(a).unwrap_or_default())),
        )
        .await?;
        self.publish_all(
            &self.outputs.alerts,
            alerts.records(|a| Record::new(a.device_id.clone(), serde_json::to_vec(a).unwrap_or_default())),
        )
        .await?;
        self.publish_all(&self.outputs.deadletter, dead.clone()).await?;
        if let Some(hec) = &self.splunk {
            hec.send(&hec_events(aggs.items(), alerts.items()))
                .await
                .map_err(|e| HandlerError::new("forwarding to Splunk", e))?;
        }
        self.metrics.published(aggs.len(), alerts.len(), dead.len());
        // Only the gate holder appends, so what was cloned is a prefix of what is pending.
        let mut st = self.lock();
        st.pending.aggregates.drain_front(aggs.len());
        st.pending.alerts.drain_front(alerts.len());
        st.pending.dead.drain(..dead.len());
        Ok(())
    }

    /// Work between batches (see [`crate::idle`]): apply the idle rule to
    /// quiet partitions, sweep idle series every few seconds, publish what
    /// that produced (and anything still pending), and return the offsets to
    /// commit now with their metadata: each partition whose safe offset moved
    /// past its last commit. Returns nothing if publishing failed (the
    /// outputs stay pending and go out with the next tick or batch). The
    /// runner calls it (as [`Handler::tick`]) before each poll, never during a batch.
    async fn between_batches(&self) -> Offsets {
        let _gate = self.gate.lock().await;
        let quiet: Vec<(TopicPartition, chrono::Duration)> = {
            let st = self.lock();
            st.idle
                .quiet()
                .into_iter()
                .map(|(tp, q)| (tp, chrono::Duration::from_std(q).unwrap_or(chrono::Duration::MAX)))
                .collect()
        };
        let mut advance = !quiet.is_empty();
        let needs_broker = {
            let st = self.lock();
            let fresh = st.broker_ok_at.is_some_and(|t| t.elapsed() < BROKER_CHECK_VALID);
            !fresh
                && quiet
                    .iter()
                    .any(|(tp, q)| st.analyzer.idle_would_close(tp.partition, *q))
        };
        if needs_broker {
            match self.publisher.check_ready().await {
                Ok(()) => self.lock().broker_ok_at = Some(Instant::now()),
                Err(e) => {
                    tracing::debug!(error = %e, "broker unreachable: quiet partitions keep their windows open for now");
                    advance = false;
                }
            }
        }
        {
            let mut st = self.lock();
            let st = &mut *st;
            if advance {
                let mut closed = 0;
                for (tp, q) in &quiet {
                    let out = st.analyzer.advance_idle(tp.partition, *q);
                    if !out.is_empty() {
                        tracing::debug!(
                            partition = tp.partition,
                            windows = out.len(),
                            quiet_ms = q.num_milliseconds(),
                            "idle partition: closed its windows"
                        );
                    }
                    closed += out.len();
                    st.pending.aggregates.extend(out, None);
                }
                self.metrics.idle_closed(closed);
                st.commit_due |= closed > 0;
            }
            if st.last_sweep.elapsed() >= SWEEP_EVERY {
                st.last_sweep = Instant::now();
                let resolved = st.analyzer.evict_idle_series();
                st.pending.alerts.extend(resolved, None);
                self.report_series(st);
            }
        }
        if let Err(e) = self.publish_pending().await {
            tracing::warn!(error = %e, "publishing between batches failed; kept for the next attempt");
            return Vec::new();
        }
        // The idle rule closed windows: their offsets are committed now, so
        // the partitions they moved need a snapshot now, not at the next interval.
        let moved: Vec<i32> = {
            let st = self.lock();
            if st.commit_due {
                st.idle
                    .partitions()
                    .filter_map(|tp| {
                        let next = *st.applied.get(tp)?;
                        let safe = st.analyzer.committable_offset(tp.partition)?.min(next);
                        let behind = st.analyzer.snapshot_offset(tp.partition).is_some_and(|s| safe > s);
                        behind.then_some(tp.partition)
                    })
                    .collect()
            } else {
                Vec::new()
            }
        };
        if let Err(e) = self.snapshot_if_due(&moved, Due::AsScheduled).await {
            tracing::warn!(error = %e, "writing a snapshot between batches failed; commits wait for the next one");
            return Vec::new();
        }
        let mut st = self.lock();
        if !st.commit_due {
            return Vec::new(); // batches commit their own partitions; only idle closes need one here
        }
        let offsets: Vec<_> = st
            .idle
            .partitions()
            .filter_map(|tp| {
                let next = *st.applied.get(tp)?;
                let safe = st.analyzer.committable_offset(tp.partition)?.min(next);
                let safe = st.analyzer.snapshot_cap(tp.partition).cap(safe)?;
                let moved = st.committed.get(tp).is_none_or(|&c| safe > c);
                moved.then(|| {
                    (
                        tp.clone(),
                        safe,
                        st.analyzer.checkpoint(tp.partition).unwrap_or_default(),
                    )
                })
            })
            .collect();
        // Stays due until a tick finds nothing left to commit (i.e. after a successful commit).
        st.commit_due = !offsets.is_empty();
        offsets
    }

    async fn publish_all(&self, topic: &str, records: Vec<Record>) -> Result<(), HandlerError> {
        if records.is_empty() {
            return Ok(());
        }
        for r in self.publisher.publish(topic, records).await {
            r.map_err(|e| HandlerError::new(format!("publishing to {topic}"), e))?;
        }
        Ok(())
    }
}

/// Whether [`AnalyzeHandler::snapshot_if_due`] keeps to its schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Every partition at the interval, at once those that need one.
    AsScheduled,
    /// Every partition now, even soon after a failed attempt: the instance
    /// is stopping, and what is not in a snapshot the next owner replays.
    Now,
}

/// A partition of the state topic, read back; `None` after a few failed
/// attempts (the partition then starts cold, see [`Analyzer::exclude_from_snapshots`]).
async fn read_with_retries(log: &dyn EventLog, topic: &str, partition: i32) -> Option<KeyValues> {
    let mut attempt = 0u32;
    loop {
        match log.read_partition(topic, partition).await {
            Ok(r) => return Some(r),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, partition, "reading the partition's snapshot failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, partition, topic, "cannot read the partition's snapshot: its models start cold and it is not snapshotted while this instance owns it");
                return None;
            }
        }
    }
}

/// An aggregate as Splunk gets it: the record without its sketch (base64
/// for the results store's rollups; Splunk searches have the quantiles).
fn hec_aggregate(a: &Aggregate) -> serde_json::Value {
    let mut event = serde_json::to_value(a).unwrap_or_default();
    if let Some(fields) = event.as_object_mut() {
        fields.remove("sketch");
    }
    event
}

fn hec_events(aggs: &[Aggregate], alerts: &[Alert]) -> Vec<HecEvent> {
    let t = |d: &chrono::DateTime<chrono::Utc>| d.timestamp_millis() as f64 / 1000.0;
    aggs.iter()
        .map(|a| HecEvent {
            time: t(&a.window_start),
            host: a.device_id.clone(),
            source: "tributary:analyze".into(),
            sourcetype: "tributary:aggregate".into(),
            event: hec_aggregate(a),
        })
        .chain(alerts.iter().map(|a| HecEvent {
            time: t(&a.updated_at),
            host: a.device_id.clone(),
            source: "tributary:analyze".into(),
            sourcetype: "tributary:alert".into(),
            event: serde_json::to_value(a).unwrap_or_default(),
        }))
        .collect()
}

#[async_trait]
impl Handler for AnalyzeHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        let _gate = self.gate.lock().await;
        self.apply(batch);
        self.publish_pending().await?;
        // The batch's outputs are out: a snapshot that cannot be written only
        // holds the commits back (the outputs keep flowing; a new owner
        // would replay more), so it does not fail the batch.
        if let Err(e) = self.snapshot_if_due(&[], Due::AsScheduled).await {
            tracing::warn!(error = %ErrorChain(&e), "writing a snapshot failed; offsets stay at the last snapshot until one is written");
        }
        Ok(())
    }

    fn committable(&self, processed: Vec<(TopicPartition, i64)>) -> Vec<(TopicPartition, i64)> {
        let st = self.lock();
        processed
            .into_iter()
            .filter_map(|(tp, next)| {
                let safe = st
                    .analyzer
                    .committable_offset(tp.partition)
                    .map_or(next, |c| c.min(next));
                let safe = st.analyzer.snapshot_cap(tp.partition).cap(safe)?;
                Some((tp, safe))
            })
            .collect()
    }

    fn commit_metadata(&self, partition: &TopicPartition) -> String {
        self.lock().analyzer.checkpoint(partition.partition).unwrap_or_default()
    }

    async fn on_assigned(&self, partitions: &[TopicPartition], committed: &[Committed]) {
        {
            let mut st = self.lock();
            for tp in partitions {
                st.idle.active(tp);
            }
            for c in committed {
                st.applied.remove(&c.tp);
                match c.offset {
                    Some(o) => st.committed.insert(c.tp.clone(), o),
                    None => st.committed.remove(&c.tp),
                };
                // The watermark before the snapshot: it decides which of the
                // snapshot's windows can still be rebuilt.
                if st.analyzer.restore(c.tp.partition, &c.metadata) {
                    tracing::info!(partition = c.tp.partition, checkpoint = %c.metadata, "restored the partition's watermark");
                }
            }
        }
        self.restore_snapshots(committed).await;
    }

    async fn on_revoked(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        for tp in partitions {
            st.analyzer.revoke(tp.partition);
            st.applied.remove(tp);
            st.idle.forget(tp);
            st.committed.remove(tp);
        }
    }

    async fn tick(&self) -> Offsets {
        self.between_batches().await
    }

    /// The idle rule's clock: time spent waiting for records.
    fn polled(&self, waited: Duration) {
        self.lock().idle.polled(waited);
    }

    /// A clean stop: publish what is pending and snapshot every partition at
    /// what it applied, then commit up to there, so the next owner restores
    /// the state at the stop and replays only the open windows' readings
    /// (without it, everything since the last scheduled snapshot). A failure
    /// here loses nothing: the next owner replays from the last commit.
    async fn on_stop(&self) -> Offsets {
        let _gate = self.gate.lock().await;
        if let Err(e) = self.publish_pending().await {
            tracing::warn!(error = %ErrorChain(&e), "publishing when stopping failed; the next owner replays these readings");
            return Vec::new();
        }
        if let Err(e) = self.snapshot_if_due(&[], Due::Now).await {
            tracing::warn!(error = %ErrorChain(&e), "the final snapshot failed; the next owner replays from the last one");
        }
        let applied: Vec<(TopicPartition, i64)> = self.lock().applied.iter().map(|(tp, &o)| (tp.clone(), o)).collect();
        self.committable(applied)
            .into_iter()
            .map(|(tp, off)| {
                let meta = self.commit_metadata(&tp);
                (tp, off, meta)
            })
            .collect()
    }

    /// Remembered, so a tick commits only partitions whose safe offset moved past it.
    fn committed(&self, offsets: &[(TopicPartition, i64, String)]) {
        let mut st = self.lock();
        for (tp, off, _) in offsets {
            st.committed.insert(tp.clone(), *off);
        }
    }
}
