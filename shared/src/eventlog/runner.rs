//! The consumer-group runner every Kafka-triggered function uses.
//!
//! It pulls batches from a [`Subscription`], hands each to a [`Handler`], and
//! commits offsets only after the handler returned `Ok`. A failing handler is
//! retried with exponential back-off on the same batch, never skipped: the
//! handler decides what is poison and dead-letters it itself. Rebalances are
//! passed to the handler's hooks before any record of the new assignment,
//! with what the group committed for those partitions (offsets and
//! metadata; read again until the broker answers, since a handler resuming
//! without its checkpoint could emit wrong results).
//!
//! Delivery is therefore at-least-once: a crash between the handler's write
//! and the commit replays the batch, and handlers write idempotently.
//!
//! Commits are gathered: what batches and ticks make committable is
//! committed at most every [`RunnerConfig::commit_every`] (a synchronous
//! commit per batch cost a broker round trip per batch), and always before
//! the handler hears of a revocation and before the runner returns. A crash
//! replays at most that much more.
//!
//! Between polls (whether or not records came) the runner calls the
//! handler's [`Handler::tick`] and commits what it returns, through the same
//! commit path as batches: a handler that closes windows on a timer (analyze's
//! idle rule) releases their offsets without a batch and without a
//! subscription wrapper of its own. Every successful commit is reported to
//! [`Handler::committed`], and every poll's wait to [`Handler::polled`]. A
//! clean stop calls [`Handler::on_stop`] last and commits what it returns
//! (analyze writes a final snapshot there, so the next owner replays nothing).
//!
//! With traces on, each record that carries a sampled context gets a span
//! from its arrival in a batch until the handler's write is durable (see
//! [`crate::telemetry::trace::consume_spans`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Committed, Event, EventLogError, Message, Subscription, TopicPartition};
use crate::telemetry::{ErrorChain, trace};

/// Why a handler could not finish a batch: what it was doing, and the
/// backend's error as the source. The runner logs it with its causes and
/// retries the batch.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct HandlerError {
    context: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HandlerError {
    /// `context` (what failed, e.g. "publishing to telemetry.aggregates") caused by `source`.
    pub fn new(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A failure with no underlying error.
    pub fn msg(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

/// Offsets to commit: per partition, the next offset to read and the metadata to store with it.
pub type Offsets = Vec<(TopicPartition, i64, String)>;

/// Processes batches of records for a consumer group.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handle one batch. Return `Ok` only when every record's effect is durable.
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError>;

    /// Offsets safe to commit after `processed` (the next offset per
    /// partition). The default commits everything handled; a windowing
    /// handler returns less to keep open windows replayable.
    fn committable(&self, processed: Vec<(TopicPartition, i64)>) -> Vec<(TopicPartition, i64)> {
        processed
    }

    /// Metadata to commit with `partition`'s offset (state that must survive
    /// a rebalance, such as a watermark); empty by default.
    fn commit_metadata(&self, _partition: &TopicPartition) -> String {
        String::new()
    }

    /// Partitions were assigned to this instance; `committed` has what the
    /// group committed for them (offset and metadata), read before any record.
    async fn on_assigned(&self, _partitions: &[TopicPartition], _committed: &[Committed]) {}

    /// Partitions were taken away; drop any state held for them.
    async fn on_revoked(&self, _partitions: &[TopicPartition]) {}

    /// Work between polls, before every poll whether or not records came
    /// (never during a batch); returns offsets to commit now. Nothing by default.
    async fn tick(&self) -> Offsets {
        Vec::new()
    }

    /// The last poll waited `waited` (records may or may not have come).
    fn polled(&self, _waited: Duration) {}

    /// `offsets` were committed, by a batch or a tick.
    fn committed(&self, _offsets: &[(TopicPartition, i64, String)]) {}

    /// The runner is stopping cleanly (shutdown, not a failure): the last
    /// chance to make state durable; the offsets returned are committed with
    /// the last batch's before the runner leaves the group. Nothing by default.
    async fn on_stop(&self) -> Offsets {
        Vec::new()
    }
}

/// How the runner batches and backs off.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Most records per batch.
    pub max_batch: usize,
    /// Longest wait for the first record of a batch.
    pub max_wait: Duration,
    /// First retry delay after a failure.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Least time between two commits (zero: after every batch).
    pub commit_every: Duration,
    /// The consumer group, named on the spans of traced records.
    pub group: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            max_wait: Duration::from_millis(500),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            commit_every: Duration::from_secs(1),
            group: String::new(),
        }
    }
}

/// Run until `shutdown` resolves. Returns after committing the last handled
/// batch and leaving the group.
pub async fn run_consumer<H: Handler + ?Sized>(
    mut sub: Box<dyn Subscription>,
    handler: &H,
    cfg: &RunnerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), EventLogError> {
    tokio::pin!(shutdown);
    let mut backoff = cfg.initial_backoff;
    let mut pending = Pending::default();
    loop {
        let due = handler.tick().await;
        pending.add(due);
        if pending.is_due(cfg) {
            pending.flush(sub.as_mut(), handler, "between batches").await;
        }
        let started = Instant::now();
        let ev = tokio::select! {
            _ = &mut shutdown => break,
            ev = sub.next(cfg.max_batch, cfg.max_wait) => ev,
        };
        handler.polled(started.elapsed());
        let mut batch = match ev {
            Ok(Event::Assigned(p)) => {
                tracing::info!(partitions = ?p, "partitions assigned");
                // The handler's checkpoint (commit metadata) must be restored before it sees
                // a record of these partitions: a handler that re-read from the committed
                // offset without its watermark could re-emit a closed window with only part
                // of its readings. So retry until the broker answers; no records flow meanwhile.
                let mut attempt = 0u32;
                let committed = loop {
                    match sub.committed(&p).await {
                        Ok(c) => break c,
                        Err(e) => {
                            attempt += 1;
                            tracing::warn!(
                                error = %ErrorChain(&e),
                                attempt,
                                "reading committed offsets failed; retrying before handling these partitions"
                            );
                            tokio::select! {
                                _ = &mut shutdown => {
                                    pending.flush(sub.as_mut(), handler, "when stopping").await;
                                    sub.close().await;
                                    return Ok(());
                                }
                                _ = tokio::time::sleep(retry_delay(cfg, attempt)) => {}
                            }
                        }
                    }
                };
                handler.on_assigned(&p, &committed).await;
                continue;
            }
            Ok(Event::Revoked(p)) => {
                tracing::info!(partitions = ?p, "partitions revoked");
                pending.flush(sub.as_mut(), handler, "at a revocation").await;
                handler.on_revoked(&p).await;
                continue;
            }
            Ok(Event::Messages(b)) if b.is_empty() => continue,
            Ok(Event::Messages(b)) => b,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "event log poll failed; retrying");
                tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
        };

        // Traced records' spans end when this is dropped, after the handler's write.
        let traced = trace::consume_spans(&mut batch, &cfg.group);
        // Retry the same batch until it succeeds: committing past it would lose data.
        let mut attempt = 0u32;
        loop {
            match handler.handle(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(
                        error = %ErrorChain(&e),
                        attempt,
                        records = batch.len(),
                        first_offset = batch[0].offset,
                        "handler failed; retrying batch"
                    );
                    let delay = retry_delay(cfg, attempt);
                    tokio::select! {
                        _ = &mut shutdown => {
                            pending.flush(sub.as_mut(), handler, "when stopping").await;
                            sub.close().await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        backoff = cfg.initial_backoff;
        drop(traced);

        let offsets: Offsets = handler
            .committable(next_offsets(&batch))
            .into_iter()
            .map(|(tp, off)| {
                let meta = handler.commit_metadata(&tp);
                (tp, off, meta)
            })
            .collect();
        pending.add(offsets);
        if pending.is_due(cfg) {
            pending.flush(sub.as_mut(), handler, "after a batch").await;
        }
    }
    pending.add(handler.on_stop().await);
    pending.flush(sub.as_mut(), handler, "when stopping").await;
    sub.close().await;
    Ok(())
}

/// Offsets made committable since the last commit: the newest per partition.
#[derive(Default)]
struct Pending {
    offsets: BTreeMap<TopicPartition, (i64, String)>,
    last_commit: Option<Instant>,
}

impl Pending {
    fn add(&mut self, offsets: Offsets) {
        for (tp, off, meta) in offsets {
            self.offsets.insert(tp, (off, meta));
        }
    }

    fn is_due(&self, cfg: &RunnerConfig) -> bool {
        !self.offsets.is_empty() && self.last_commit.is_none_or(|t| t.elapsed() >= cfg.commit_every)
    }

    /// Commit what is pending. A failed commit is dropped, not retried: the
    /// next batch or tick brings newer offsets (and a lost one only means a replay).
    async fn flush<H: Handler + ?Sized>(&mut self, sub: &mut dyn Subscription, handler: &H, when: &str) {
        if self.offsets.is_empty() {
            return;
        }
        let offsets: Offsets = std::mem::take(&mut self.offsets)
            .into_iter()
            .map(|(tp, (off, meta))| (tp, off, meta))
            .collect();
        self.last_commit = Some(Instant::now());
        commit(sub, handler, &offsets, when).await;
    }
}

/// Commit `offsets` and tell the handler. A failed commit only means a replay
/// of idempotent work later (or a retry at the next tick), so it is logged, not fatal.
async fn commit<H: Handler + ?Sized>(sub: &mut dyn Subscription, handler: &H, offsets: &Offsets, when: &str) {
    if offsets.is_empty() {
        return;
    }
    match sub.commit(offsets).await {
        Ok(()) => {
            tracing::debug!(?offsets, when, "committed offsets");
            handler.committed(offsets);
        }
        Err(e) => tracing::warn!(error = %ErrorChain(&e), when, "offset commit failed; the records may be replayed"),
    }
}

fn retry_delay(cfg: &RunnerConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    cfg.initial_backoff.saturating_mul(factor).min(cfg.max_backoff)
}

/// For each partition in `batch`, the offset after its last record.
pub fn next_offsets(batch: &[Message]) -> Vec<(TopicPartition, i64)> {
    let mut m: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for msg in batch {
        let e = m.entry(msg.topic_partition()).or_insert(msg.offset + 1);
        *e = (*e).max(msg.offset + 1);
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offsets_takes_the_highest_per_partition() {
        let m = |p: i32, o: i64| Message {
            topic: "t".into(),
            partition: p,
            offset: o,
            key: None,
            value: vec![],
            headers: vec![],
            timestamp_ms: None,
        };
        let got = next_offsets(&[m(0, 5), m(1, 2), m(0, 7), m(0, 6)]);
        assert_eq!(
            got,
            vec![(TopicPartition::new("t", 0), 8), (TopicPartition::new("t", 1), 3)]
        );
    }

    struct Count(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Handler for Count {
        async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
            self.0.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn commits_are_gathered_and_what_is_pending_is_committed_on_stop() {
        use crate::eventlog::memory::MemoryLog;
        use crate::eventlog::{EventLog, Publisher, Record};
        let log = MemoryLog::new(1, 1000);
        let publish = |n: usize| {
            let log = log.clone();
            async move {
                let records = (0..n).map(|i| Record::new("k", format!("{i}"))).collect();
                for r in log.publish("t", records).await {
                    r.expect("published");
                }
            }
        };
        publish(5).await;
        let sub = log.subscribe("g", &["t".to_owned()]).await.expect("subscribe");
        let handler = Count(std::sync::atomic::AtomicUsize::new(0));
        let cfg = RunnerConfig {
            max_wait: Duration::from_millis(20),
            commit_every: Duration::from_secs(3600),
            ..RunnerConfig::default()
        };
        let seen = |n: usize| {
            let handler = &handler;
            async move {
                while handler.0.load(std::sync::atomic::Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let lag_while_running = async {
            seen(5).await;
            let first = log.lag("g", "t");
            publish(7).await;
            seen(12).await;
            (first, log.lag("g", "t"))
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let lags = lag_while_running.await;
            let _ = tx.send(lags);
        };
        run_consumer(sub, &handler, &cfg, stop).await.expect("runner");
        let (first, later) = rx.await.expect("lags");
        assert_eq!(first, 0, "the first batch is committed at once");
        assert_eq!(later, 7, "later batches wait for the commit interval");
        assert_eq!(
            log.lag("g", "t"),
            0,
            "what was pending is committed when the runner stops"
        );
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let cfg = RunnerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(retry_delay(&cfg, 1), Duration::from_millis(100));
        assert_eq!(retry_delay(&cfg, 2), Duration::from_millis(200));
        assert_eq!(retry_delay(&cfg, 10), Duration::from_secs(1));
        assert_eq!(retry_delay(&cfg, u32::MAX), Duration::from_secs(1));
    }
}
