//! The Kafka backend, on rdkafka (librdkafka): works with Apache Kafka, Azure
//! Event Hubs' Kafka endpoint and tansu.
//!
//! The producer is idempotent with `acks=all`, so an `Ok` delivery is on every
//! in-sync replica and a retried send is never written twice. Its queue is
//! bounded (`queue.buffering.max.messages`) and a full queue is reported, not
//! waited on. Consumers never auto-commit; [`super::runner`] commits.
//!
//! # Commit metadata on brokers that drop it
//!
//! Kafka stores the metadata string committed with an offset and returns it
//! to the partition's next owner; analyze keeps its watermark there, and
//! without it a new owner re-reading from the committed offset can reopen a
//! window that was already emitted and emit it again with only the readings
//! it re-read, overwriting the complete one downstream. tansu 0.6 accepts the
//! metadata and answers OffsetFetch with it empty. So the first commit of a
//! subscription that carries metadata is read back; if the broker dropped
//! it, the subscription from then on first writes each commit's metadata to
//! a mirror topic (`<TRIBUTARY_KAFKA_METADATA_TOPIC_PREFIX><group>`, one
//! partition, compacted; key `topic/partition`, value `offset` and the
//! metadata) and commits only once that write is acknowledged (the topic is
//! the backend's own plumbing, created even with `TRIBUTARY_KAFKA_CREATE_TOPICS`
//! off; if the broker refuses it, commits go on without it and an error says
//! so, as stopping every commit would be worse). When the
//! broker returns an offset with empty metadata, [`Subscription::committed`]
//! takes the newest mirror entry for that partition *with the same offset*
//! (an entry for another offset is never used: its checkpoint belongs to a
//! different position). Left open: a process that dies between the first
//! metadata commit and the read-back leaves that one commit without a mirror
//! entry, which costs what it cost before (no checkpoint for that position).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{
    Committed, Delivered, Event, EventLog, EventLogError, Message, Publisher, Record, Subscription, TopicPartition,
};
use crate::config::KafkaArgs;

/// A connection to a Kafka-protocol cluster.
#[derive(Clone)]
pub struct KafkaLog {
    args: KafkaArgs,
    client_id: String,
    publisher: Arc<KafkaPublisher>,
}

impl KafkaLog {
    /// Connect (lazily: librdkafka connects in the background) as `client_id`.
    pub fn connect(args: &KafkaArgs, client_id: &str) -> Result<Self, EventLogError> {
        let mut cfg = ClientConfig::new();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", args.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.messages", args.queue_max_messages.to_string());
        // Operator options come last so they can override any default above.
        apply_base(&mut cfg, args, client_id)?;
        let producer = create_producer(&cfg).map_err(|e| EventLogError::Other(format!("creating producer: {e}")))?;
        let publisher = KafkaPublisher {
            config: cfg,
            current: RwLock::new(producer),
            last_rebuild: Mutex::new(Instant::now()),
        };
        Ok(Self {
            args: args.clone(),
            client_id: client_id.to_owned(),
            publisher: Arc::new(publisher),
        })
    }
}

fn base_config(args: &KafkaArgs, client_id: &str) -> Result<ClientConfig, EventLogError> {
    let mut cfg = ClientConfig::new();
    apply_base(&mut cfg, args, client_id)?;
    Ok(cfg)
}

/// Where TLS clients find the CA bundle: the path the images ship and Debian
/// uses. Vendored OpenSSL would look in `/usr/local/ssl` otherwise.
/// `SSL_CERT_FILE` overrides it, and so does an explicit `ssl.ca.location` option.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn apply_base(cfg: &mut ClientConfig, args: &KafkaArgs, client_id: &str) -> Result<(), EventLogError> {
    cfg.set("bootstrap.servers", &args.brokers).set("client.id", client_id);
    let ca = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| CA_BUNDLE.to_owned());
    if std::path::Path::new(&ca).exists() {
        cfg.set("ssl.ca.location", ca);
    }
    for opt in &args.options {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| EventLogError::Other(format!("Kafka option '{opt}' is not key=value")))?;
        cfg.set(k.trim(), v.trim());
    }
    if let Some(pw) = &args.sasl_password {
        cfg.set("sasl.password", pw);
    }
    Ok(())
}

/// A consumer-queue error that only reports a lost or refused broker
/// connection, which librdkafka retries on its own.
fn reconnecting(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageConsumption(
            C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve | C::OperationTimedOut
        )
    )
}

fn map_err(e: &KafkaError) -> EventLogError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::QueueFull) => EventLogError::QueueFull,
        Some(
            C::MessageSizeTooLarge
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::TopicAuthorizationFailed
            | C::InvalidMessage,
        ) => EventLogError::Rejected(e.to_string()),
        Some(_) | None => EventLogError::Unavailable(e.to_string()),
    }
}

/// The producer, replaced by a fresh one when its idempotence state is lost.
///
/// An idempotent producer whose producer id or sequence numbers the broker no
/// longer recognises (a broker restarted without that state, a fatal error)
/// fails every send from then on. librdkafka's advice is to create a new
/// producer; we do that, at most every [`REBUILD_INTERVAL`], and the sends that
/// failed were already answered as retryable, so nothing acknowledged is lost.
struct KafkaPublisher {
    config: ClientConfig,
    current: RwLock<Arc<BatchProducer>>,
    last_rebuild: Mutex<Instant>,
}

/// librdkafka's producer with its own poll thread, reporting each delivery
/// into the [`Batch`] of the `publish` call that sent it.
type BatchProducer = ThreadedProducer<BatchContext>;

fn create_producer(cfg: &ClientConfig) -> Result<Arc<BatchProducer>, KafkaError> {
    cfg.create_with_context(BatchContext).map(Arc::new)
}

const REBUILD_INTERVAL: Duration = Duration::from_secs(2);

/// The outcomes of one `publish` call: a slot per record, filled by the
/// delivery callback on librdkafka's poll thread, and one wake-up for the
/// caller when the last record is settled. This replaces a future (a channel,
/// two allocations and a wake-up) per record.
struct Batch {
    slots: Vec<OnceLock<Result<Delivered, KafkaError>>>,
    /// Records not settled yet, plus one held by `publish` while it is still sending.
    unsettled: AtomicUsize,
    settled: tokio::sync::Notify,
}

impl Batch {
    fn settle_one(&self) {
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_one();
        }
    }
}

/// One record's claim on its batch, carried through librdkafka as the
/// delivery opaque. However it ends (reported, refused at send, or dropped
/// by a producer shut down first) it settles its slot exactly once: dropping
/// it without a report records a failure, so a caller never waits forever.
struct Pending {
    batch: Arc<Batch>,
    index: usize,
}

impl Pending {
    fn report(self, result: Result<Delivered, KafkaError>) {
        let _ = self.batch.slots[self.index].set(result);
        // Drop settles it.
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = self.batch.slots[self.index].set(Err(KafkaError::Canceled));
        self.batch.settle_one();
    }
}

/// The producer's context: hands each delivery report to its [`Pending`].
struct BatchContext;

impl ClientContext for BatchContext {}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        pending.report(match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

impl KafkaPublisher {
    fn producer(&self) -> Arc<BatchProducer> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `e` means this producer's idempotence state is unusable.
    fn needs_rebuild(&self, producer: &BatchProducer, e: &KafkaError) -> bool {
        use RDKafkaErrorCode as C;
        producer.client().fatal_error().is_some()
            || matches!(
                e.rdkafka_error_code(),
                Some(
                    C::Unknown
                        | C::UnknownProducerId
                        | C::OutOfOrderSequenceNumber
                        | C::InvalidProducerEpoch
                        | C::InvalidProducerIdMapping
                        | C::Fatal
                )
            )
    }

    fn rebuild(&self, reason: &KafkaError) {
        let mut last = self.last_rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < REBUILD_INTERVAL {
            return;
        }
        *last = Instant::now();
        match create_producer(&self.config) {
            Ok(p) => {
                tracing::warn!(error = %reason, "replacing the Kafka producer after an unrecoverable producer error");
                // In-flight sends keep their reference to the old producer until they complete.
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = p;
            }
            Err(e) => tracing::error!(error = %e, "could not create a replacement Kafka producer"),
        }
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Vec<Result<Delivered, EventLogError>> {
        let producer = self.producer();
        let batch = Arc::new(Batch {
            slots: (0..records.len()).map(|_| OnceLock::new()).collect(),
            unsettled: AtomicUsize::new(records.len() + 1),
            settled: tokio::sync::Notify::new(),
        });
        for (index, r) in records.iter().enumerate() {
            let pending = Box::new(Pending {
                batch: batch.clone(),
                index,
            });
            let mut br = BaseRecord::with_opaque_to(topic, pending).key(&r.key).payload(&r.value);
            if !r.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in &r.headers {
                    h = h.insert(Header { key: k, value: Some(v) });
                }
                br = br.headers(h);
            }
            if let Err((e, br)) = producer.send(br) {
                br.delivery_opaque.report(Err(e));
            }
        }
        // Our own hold: whoever settles last wakes us (a permit is kept if that was before we wait).
        if batch.unsettled.fetch_sub(1, Ordering::AcqRel) != 1 {
            batch.settled.notified().await;
        }
        let mut rebuild_for: Option<KafkaError> = None;
        let out = batch
            .slots
            .iter()
            .map(|slot| match slot.get() {
                Some(Ok(d)) => Ok(*d),
                Some(Err(KafkaError::Canceled)) | None => {
                    Err(EventLogError::Unavailable("producer shut down before delivery".into()))
                }
                Some(Err(e)) => {
                    if rebuild_for.is_none() && self.needs_rebuild(&producer, e) {
                        rebuild_for = Some(e.clone());
                    }
                    Err(map_err(e))
                }
            })
            .collect();
        if let Some(e) = rebuild_for {
            self.rebuild(&e);
        }
        out
    }

    async fn check_ready(&self) -> Result<(), EventLogError> {
        let producer = self.producer();
        let md = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(2)))
            .await
            .map_err(|e| EventLogError::Other(e.to_string()))?
            .map_err(|e| EventLogError::Unavailable(e.to_string()))?;
        if md.brokers().is_empty() {
            return Err(EventLogError::Unavailable("no brokers in metadata".into()));
        }
        Ok(())
    }

    async fn flush(&self, timeout: Duration) -> Result<(), EventLogError> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| EventLogError::Other(e.to_string()))?
            .map_err(|e| map_err(&e))
    }
}

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

struct KafkaSubscription {
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

/// Where a subscription's commit metadata is kept (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetadataStore {
    /// Not known yet: no commit with metadata was read back.
    Unknown,
    /// The broker returns what was committed.
    Broker,
    /// The broker drops it: the mirror topic keeps it.
    Mirror,
    /// The broker drops it and the mirror topic cannot be created or written
    /// (refused, not unreachable): commits go on without it, as the broker allows.
    Lost,
}

/// The mirror of a group's commit metadata, for brokers that drop it.
struct MetadataMirror {
    topic: String,
    log: KafkaLog,
    store: MetadataStore,
}

/// Entries scanned per step when looking for a partition's newest mirror entry.
const MIRROR_SCAN_CHUNK: i64 = 2_000;
/// Longest a mirror lookup may take before giving up (the partition then starts without a checkpoint).
const MIRROR_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The mirror topic of `group`: Kafka topic names allow `[a-zA-Z0-9._-]`.
fn mirror_topic(prefix: &str, group: &str) -> String {
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{safe}")
}

fn mirror_key(tp: &TopicPartition) -> String {
    format!("{}/{}", tp.topic, tp.partition)
}

fn mirror_value(offset: i64, metadata: &str) -> String {
    format!("{offset}\n{metadata}")
}

fn parse_mirror_value(v: &[u8]) -> Option<(i64, String)> {
    let s = std::str::from_utf8(v).ok()?;
    let (offset, metadata) = s.split_once('\n')?;
    Some((offset.parse().ok()?, metadata.to_owned()))
}

impl MetadataMirror {
    /// Write the metadata of `offsets` (those that carry any) to the mirror;
    /// `Ok` once the broker acknowledged every entry.
    async fn write(&self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError> {
        let records: Vec<Record> = offsets
            .iter()
            .filter(|(_, _, m)| !m.is_empty())
            .map(|(tp, off, m)| Record::new(mirror_key(tp), mirror_value(*off, m)))
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        for r in self.log.publisher.publish(&self.topic, records).await {
            r.map_err(|e| match e {
                EventLogError::Rejected(e) => {
                    EventLogError::Rejected(format!("recording commit metadata in {}: {e}", self.topic))
                }
                e => EventLogError::Unavailable(format!("recording commit metadata in {}: {e}", self.topic)),
            })?;
        }
        Ok(())
    }

    /// [`MetadataMirror::write`] (after creating the topic when `create`),
    /// except that a refusal for good (no ACL, topic deleted) switches the
    /// mirror off and lets the commit go on, loudly: stopping every commit
    /// would be worse (unbounded replays). An unreachable broker is an error.
    async fn record(&mut self, offsets: &[(TopicPartition, i64, String)], create: bool) -> Result<(), EventLogError> {
        let res = if create {
            self.ensure_topic().await.and(self.write(offsets).await)
        } else {
            self.write(offsets).await
        };
        match res {
            Err(EventLogError::Rejected(error)) => {
                tracing::error!(error, mirror = %self.topic, "cannot keep commit metadata in the mirror topic; committing without it: a restart or rebalance may re-emit a closed window with part of its readings");
                self.store = MetadataStore::Lost;
                Ok(())
            }
            res => res,
        }
    }

    /// Create the mirror topic (one partition, compacted) if it is missing.
    /// Done even when `TRIBUTARY_KAFKA_CREATE_TOPICS` is off: like Kafka's own
    /// `__consumer_offsets` it is the backend's plumbing, not a data topic the
    /// deployment plans for, and only exists on brokers that need it.
    async fn ensure_topic(&self) -> Result<(), EventLogError> {
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(self.log.args.replication))
            .set("cleanup.policy", "compact");
        create_topics(&self.log.args, &self.log.client_id, &[topic]).await
    }

    /// For each `(partition, committed offset)`, the metadata of the newest
    /// mirror entry with exactly that offset, if any. A missing mirror topic
    /// means no entries.
    async fn lookup(
        &self,
        wanted: Vec<(TopicPartition, i64)>,
    ) -> Result<HashMap<TopicPartition, String>, EventLogError> {
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let mut cfg = base_config(&self.log.args, &self.log.client_id)?;
        // Assigned, never subscribed: the group id is only required by librdkafka, nothing is committed.
        cfg.set("group.id", format!("{}-reader", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || scan_mirror(&cfg, &topic, wanted))
            .await
            .map_err(|e| EventLogError::Other(e.to_string()))?
    }
}

/// Scan the mirror topic backwards, a chunk at a time, until every wanted
/// partition's newest entry with the wanted offset was found or the topic's
/// start was reached.
fn scan_mirror(
    cfg: &ClientConfig,
    topic: &str,
    wanted: Vec<(TopicPartition, i64)>,
) -> Result<HashMap<TopicPartition, String>, EventLogError> {
    let deadline = Instant::now() + MIRROR_LOOKUP_TIMEOUT;
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| EventLogError::Other(format!("creating mirror reader: {e}")))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| map_err(&e))?;
    let exists = md
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if !exists {
        return Ok(HashMap::new());
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .map_err(|e| map_err(&e))?;
    let mut wanted: HashMap<String, (TopicPartition, i64)> = wanted
        .into_iter()
        .map(|(tp, off)| (mirror_key(&tp), (tp, off)))
        .collect();
    let mut found = HashMap::new();
    let mut end = high;
    while end > low && !wanted.is_empty() {
        let start = (end - MIRROR_SCAN_CHUNK).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))
            .map_err(|e| EventLogError::Other(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| map_err(&e))?;
        // Newest entry per key within this chunk (entries are read oldest first).
        let mut newest: HashMap<String, String> = HashMap::new();
        let mut next = start;
        let mut idle_polls = 0;
        while next < end && next < high {
            if Instant::now() > deadline {
                return Err(EventLogError::Unavailable(format!(
                    "reading commit metadata from {topic} took over {MIRROR_LOOKUP_TIMEOUT:?}"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                // Compaction leaves gaps; a chunk that stays silent has nothing more.
                None if idle_polls >= 10 => break,
                None => idle_polls += 1,
                Some(Err(e)) if reconnecting(&e) => {}
                Some(Err(e)) => return Err(map_err(&e)),
                Some(Ok(m)) => {
                    idle_polls = 0;
                    next = m.offset() + 1;
                    if m.offset() >= end {
                        break;
                    }
                    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    let Some((tp_offset, metadata)) = m.payload().and_then(parse_mirror_value) else {
                        continue;
                    };
                    if wanted.get(key).is_some_and(|(_, want)| *want == tp_offset) {
                        newest.insert(key.to_owned(), metadata);
                    }
                }
            }
        }
        for (key, metadata) in newest {
            if let Some((tp, _)) = wanted.remove(&key) {
                found.insert(tp, metadata);
            }
        }
        end = start;
    }
    Ok(found)
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
        if batch.is_empty() {
            if let Some(ev) = self.consumer.context().pop() {
                return Ok(ev);
            }
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
            if !meta.is_empty() {
                if let Some(mut e) = tpl.find_partition(&tp.topic, tp.partition) {
                    e.set_metadata(meta.as_str());
                }
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

#[async_trait]
impl EventLog for KafkaLog {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, EventLogError> {
        let mut cfg = base_config(&self.args, &self.client_id)?;
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
        let mirror = MetadataMirror {
            topic: mirror_topic(&self.args.metadata_topic_prefix, group),
            log: self.clone(),
            store: MetadataStore::Unknown,
        };
        Ok(Box::new(KafkaSubscription {
            consumer: Arc::new(consumer),
            held: Vec::new(),
            held_after: None,
            mirror,
        }))
    }

    async fn ensure_topics(&self, topics: &[String], partitions: i32) -> Result<(), EventLogError> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(self.args.replication)))
            .collect();
        create_topics(&self.args, &self.client_id, &new).await
    }
}

/// Create `topics`; one that exists already is fine. A topic the cluster
/// refuses for good (authorisation, policy, invalid settings) is
/// [`EventLogError::Rejected`], anything else [`EventLogError::Unavailable`].
async fn create_topics(args: &KafkaArgs, client_id: &str, topics: &[NewTopic<'_>]) -> Result<(), EventLogError> {
    use RDKafkaErrorCode as C;
    let cfg = base_config(args, client_id)?;
    let admin: AdminClient<DefaultClientContext> = cfg
        .create()
        .map_err(|e| EventLogError::Other(format!("creating admin client: {e}")))?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(topics, &opts).await.map_err(|e| map_err(&e))? {
        match r {
            Ok(_) | Err((_, C::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                let msg = format!("creating topic {t}: {code}");
                let refused = matches!(
                    code,
                    C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::PolicyViolation
                        | C::InvalidConfig
                        | C::InvalidTopic
                        | C::InvalidReplicationFactor
                );
                return Err(if refused {
                    EventLogError::Rejected(msg)
                } else {
                    EventLogError::Unavailable(msg)
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_and_entries() {
        assert_eq!(
            mirror_topic("tributary.offset-metadata.", "tributary-analyze"),
            "tributary.offset-metadata.tributary-analyze"
        );
        assert_eq!(
            mirror_topic("m.", "a b/c:d"),
            "m.a_b_c_d",
            "only characters Kafka allows in topic names"
        );
        assert_eq!(mirror_key(&TopicPartition::new("telemetry.raw", 7)), "telemetry.raw/7");
        let v = mirror_value(42, "maxEvent=1795000000000\nsecond line");
        assert_eq!(
            parse_mirror_value(v.as_bytes()),
            Some((42, "maxEvent=1795000000000\nsecond line".to_owned())),
            "metadata may hold newlines"
        );
        assert_eq!(parse_mirror_value(b"42"), None);
        assert_eq!(parse_mirror_value(b"x\nmeta"), None);
        assert_eq!(parse_mirror_value(&[0xff, b'\n']), None);
    }

    #[test]
    fn tls_and_sasl_clients_can_be_created_as_for_event_hubs() {
        // Event Hubs' Kafka endpoint: SASL_SSL with PLAIN. A build without TLS
        // support fails right here ("OpenSSL not available at build time").
        let args = KafkaArgs {
            brokers: "example.servicebus.windows.net:9093".into(),
            options: vec![
                "security.protocol=SASL_SSL".into(),
                "sasl.mechanism=PLAIN".into(),
                "sasl.username=$ConnectionString".into(),
            ],
            sasl_password: Some(
                "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x".into(),
            ),
            ..KafkaArgs::default()
        };
        let log = KafkaLog::connect(&args, "tls-test");
        assert!(log.is_ok(), "{:?}", log.err());
        let cfg = base_config(&args, "tls-test").expect("config");
        if std::path::Path::new(CA_BUNDLE).exists() && std::env::var_os("SSL_CERT_FILE").is_none() {
            assert_eq!(
                cfg.get("ssl.ca.location"),
                Some(CA_BUNDLE),
                "the system CA bundle, not vendored OpenSSL's /usr/local/ssl"
            );
        }
    }
}
