//! The Kafka subscription: a consumer-group member that hands rebalance
//! events to the runner before any record of the partitions they concern,
//! commits only when asked, and keeps commit metadata through the mirror of
//! `metadata.rs` on brokers that drop it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::metadata::{MetadataMirror, MetadataStore, mirror_topic};
use super::{KafkaLog, base_config, map_err, reconnecting};
use crate::eventlog::{Committed, Event, EventLogError, Message, Subscription, TopicPartition};

/// Rebalance callbacks run inside librdkafka's poll; they queue events that
/// the subscription hands to the runner before any further records.
struct RebalanceContext {
    events: Mutex<VecDeque<Event>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.push(Event::Revoked(tpl_to_vec(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.push(Event::Assigned(tpl_to_vec(tpl)));
        }
    }
}

impl RebalanceContext {
    fn push(&self, ev: Event) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push_back(ev);
    }

    fn pop(&self) -> Option<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    fn has_pending(&self) -> bool {
        !self.events.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

fn tpl_to_vec(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

pub(super) struct KafkaSubscription {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    /// Records received before a rebalance: handed out after the rebalance
    /// events (minus those of revoked partitions), so a handler always hears
    /// of an assignment before its records.
    held: Vec<Message>,
    /// The record whose poll ran the rebalance callbacks. librdkafka runs
    /// them inside the same `recv` before returning it, so it comes *after*
    /// the rebalance: when a partition is revoked and assigned again in one
    /// poll (a session timeout after a broker restart does this), it is the
    /// first record of the new assignment, and fetching goes on after it.
    /// Dropping it with the revoked partition's older records lost it for
    /// good (seen once in the fault matrix: one acknowledged reading never
    /// reached the archive while its neighbours did). Handed out after
    /// `held` if its partition is still assigned.
    held_after: Option<Message>,
    mirror: MetadataMirror,
}

/// After the first record of a batch arrives, wait at most this long for more:
/// bounds the latency batching adds.
const BATCH_LINGER: Duration = Duration::from_millis(20);

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Event, EventLogError> {
        if let Some(ev) = self.consumer.context().pop() {
            if let Event::Revoked(parts) = &ev {
                // Records of revoked partitions go to their new owner, from the committed offset.
                self.held.retain(|m| !parts.contains(&m.topic_partition()));
            }
            return Ok(ev);
        }
        if !self.held.is_empty() || self.held_after.is_some() {
            let mut batch = std::mem::take(&mut self.held);
            if let Some(m) = self.held_after.take()
                && self.is_assigned(&m)
            {
                batch.push(m);
            }
            return Ok(Event::Messages(batch));
        }
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        while batch.len() < max.max(1) {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(m)) => {
                    batch.push(Message {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timestamp_ms: m.timestamp().to_millis(),
                    });
                    if batch.len() == 1 {
                        deadline = deadline.min(tokio::time::Instant::now() + BATCH_LINGER);
                    }
                }
                Ok(Err(e)) if reconnecting(&e) => {
                    // librdkafka puts every failed (re)connect on the consumer queue and
                    // reconnects by itself: a report, not a failed poll. Returned as an
                    // error, each queued report cost the runner a back-off (doubling up to
                    // 30 s), so consumers stalled for minutes after a broker restart while
                    // records waited (found by cli/tests/faults.rs).
                    tracing::debug!(error = %e, "broker connection lost; librdkafka reconnects");
                    continue;
                }
                Ok(Err(e)) if batch.is_empty() => return Err(map_err(&e)),
                Ok(Err(_)) => break,
            }
            // A rebalance happened while collecting: announce it before these records.
            if self.consumer.context().has_pending() {
                self.held_after = batch.pop();
                self.held = batch;
                return self.next(max, Duration::ZERO).await;
            }
        }
        if batch.is_empty()
            && let Some(ev) = self.consumer.context().pop()
        {
            return Ok(ev);
        }
        Ok(Event::Messages(batch))
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let carries_metadata = offsets.iter().any(|(_, _, m)| !m.is_empty());
        if carries_metadata && self.mirror.store == MetadataStore::Mirror {
            // Mirror first: an offset committed without its checkpoint is what the mirror prevents.
            self.mirror.record(offsets, false).await?;
        }
        self.commit_to_broker(offsets).await?;
        if carries_metadata && self.mirror.store == MetadataStore::Unknown {
            // The offsets are committed; if this fails the next commit with metadata tries again.
            if let Err(e) = self.learn_metadata_store(offsets).await {
                tracing::warn!(error = %e, mirror = %self.mirror.topic, "could not check whether the broker keeps commit metadata; checking at the next commit");
            }
        }
        Ok(())
    }

    async fn committed(&mut self, partitions: &[TopicPartition]) -> Result<Vec<Committed>, EventLogError> {
        let mut got = self.committed_on_broker(partitions).await?;
        if self.mirror.store != MetadataStore::Broker {
            let wanted: Vec<(TopicPartition, i64)> = got
                .iter()
                .filter(|c| c.metadata.is_empty())
                .filter_map(|c| Some((c.tp.clone(), c.offset?)))
                .collect();
            if !wanted.is_empty() {
                let mut found = self.mirror.lookup(wanted).await?;
                for c in &mut got {
                    if let Some(m) = found.remove(&c.tp) {
                        tracing::debug!(topic = %c.tp.topic, partition = c.tp.partition, mirror = %self.mirror.topic, "commit metadata restored from the mirror topic");
                        c.metadata = m;
                    }
                }
            }
        }
        Ok(got)
    }

    async fn close(self: Box<Self>) {
        let consumer = self.consumer;
        // Leaving the group blocks on the network; keep it off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}

impl KafkaSubscription {
    /// Join consumer `group` on `topics` through `log`'s connection settings,
    /// from the committed offsets (the earliest record when there are none).
    pub(super) fn join(log: &KafkaLog, group: &str, topics: &[String]) -> Result<Self, EventLogError> {
        let mut cfg = base_config(&log.args, &log.client_id)?;
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Fail over quickly when an instance is killed (KEDA scale-in, crash).
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        let ctx = RebalanceContext {
            events: Mutex::new(VecDeque::new()),
        };
        let consumer: StreamConsumer<RebalanceContext> = cfg
            .create_with_context(ctx)
            .map_err(|e| EventLogError::Other(format!("creating consumer: {e}")))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| map_err(&e))?;
        let mirror = MetadataMirror::new(mirror_topic(&log.args.metadata_topic_prefix, group), log.clone());
        Ok(Self {
            consumer: Arc::new(consumer),
            held: Vec::new(),
            held_after: None,
            mirror,
        })
    }

    /// Whether `m`'s partition is in the current assignment (assumed so if
    /// librdkafka cannot tell).
    fn is_assigned(&self, m: &Message) -> bool {
        self.consumer
            .assignment()
            .map_or(true, |tpl| tpl.find_partition(&m.topic, m.partition).is_some())
    }

    /// After the first commit that carried metadata: read it back, and if the
    /// broker dropped it, mirror it from now on (this commit included).
    async fn learn_metadata_store(&mut self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError> {
        let parts: Vec<TopicPartition> = offsets
            .iter()
            .filter(|(_, _, m)| !m.is_empty())
            .map(|(tp, _, _)| tp.clone())
            .collect();
        let back = self.committed_on_broker(&parts).await?;
        let mut dropped = false;
        for (tp, off, meta) in offsets.iter().filter(|(_, _, m)| !m.is_empty()) {
            // Another member may have committed meanwhile; only our own offset tells.
            match back.iter().find(|c| &c.tp == tp && c.offset == Some(*off)) {
                Some(c) if c.metadata == *meta => {
                    self.mirror.store = MetadataStore::Broker;
                    return Ok(());
                }
                Some(_) => dropped = true,
                None => {}
            }
        }
        if dropped {
            tracing::warn!(mirror = %self.mirror.topic, "the broker does not keep offset commit metadata (tansu 0.6 drops it); keeping it in the mirror topic");
            self.mirror.store = MetadataStore::Mirror;
            self.mirror.record(offsets, true).await?;
        }
        Ok(())
    }

    async fn commit_to_broker(&self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError> {
        let mut tpl = TopicPartitionList::new();
        for (tp, off, meta) in offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off))
                .map_err(|e| EventLogError::Other(e.to_string()))?;
            if !meta.is_empty()
                && let Some(mut e) = tpl.find_partition(&tp.topic, tp.partition)
            {
                e.set_metadata(meta.as_str());
            }
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| EventLogError::Other(e.to_string()))?
            .map_err(|e| map_err(&e))
    }

    async fn committed_on_broker(&self, partitions: &[TopicPartition]) -> Result<Vec<Committed>, EventLogError> {
        let mut tpl = TopicPartitionList::new();
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let consumer = self.consumer.clone();
        let got = tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, Duration::from_secs(10)))
            .await
            .map_err(|e| EventLogError::Other(e.to_string()))?
            .map_err(|e| map_err(&e))?;
        Ok(partitions
            .iter()
            .map(|tp| {
                let e = got.find_partition(&tp.topic, tp.partition);
                let offset = match e.as_ref().map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                Committed {
                    tp: tp.clone(),
                    offset,
                    metadata: e.map(|e| e.metadata().to_owned()).unwrap_or_default(),
                }
            })
            .collect())
    }
}
