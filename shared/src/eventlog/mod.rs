//! The event log: the only way functions hand work to each other.
//!
//! Two small traits, [`Publisher`] and [`Subscription`], hide the backend:
//! [`kafka`] (rdkafka, any Kafka-protocol broker: Apache Kafka, Event Hubs,
//! tansu) for deployments and [`memory`] (in-process) for the all-in-one local
//! mode and fast tests. Both pass the same contract suite (`tributary-testkit`).
//!
//! Guarantees both backends give:
//! - a record published with key K goes to one partition chosen by K, so one
//!   device's records stay in order;
//! - [`Publisher::publish`] reports a record `Ok` only once the log has it
//!   durably (for Kafka: acks=all with the idempotent producer);
//! - a consumer group delivers from its last committed offset, and
//!   [`runner::run_consumer`] commits only after the handler succeeded, so
//!   delivery is at-least-once and handlers write idempotently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod follow;
pub mod kafka;
pub mod memory;
pub mod runner;

/// A record to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key (the device id everywhere in Tributary).
    pub key: Vec<u8>,
    /// The payload.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition to write to; `None`: the one the key maps to.
    pub partition: Option<i32>,
    /// Written with a null payload (`value` is empty): the record that makes
    /// a compacted topic drop its key. An empty payload is not one; Kafka
    /// keeps its key for ever.
    pub tombstone: bool,
}

impl Record {
    /// A record without headers.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
            partition: None,
            tombstone: false,
        }
    }

    /// A tombstone for `key` (see [`Record::tombstone`]); read back, its
    /// value is empty.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        Self {
            tombstone: true,
            ..Self::new(key, Vec::new())
        }
    }

    /// This record, written to `partition` whatever its key (for state kept
    /// per input partition, where compaction still needs distinct keys).
    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Records as (key, value), oldest first: a partition read back.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Where a published record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Partition the key mapped to.
    pub partition: i32,
    /// Offset within that partition.
    pub offset: i64,
}

/// A topic and partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Build one.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// What a consumer group has committed for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The partition.
    pub tp: TopicPartition,
    /// The next offset to read, if the group ever committed one.
    pub offset: Option<i64>,
    /// The metadata committed with it (empty if none): a handler's state that
    /// must survive a rebalance, such as a watermark.
    pub metadata: String,
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Topic it came from.
    pub topic: String,
    /// Partition it came from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload (empty for a null payload).
    pub value: Vec<u8>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Broker or producer timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    /// This record as it goes to `telemetry.deadletter`: the original key and
    /// bytes, with headers naming the source topic, partition, offset, the
    /// function that gave up and the error.
    pub fn dead_letter(&self, function: &str, error: &str) -> Record {
        tracing::warn!(topic = %self.topic, partition = self.partition, offset = self.offset, function, error, "dead-lettering a record");
        Record {
            key: self.key.clone().unwrap_or_default(),
            value: self.value.clone(),
            headers: vec![
                ("source-topic".into(), self.topic.clone().into_bytes()),
                ("source-partition".into(), self.partition.to_string().into_bytes()),
                ("source-offset".into(), self.offset.to_string().into_bytes()),
                ("function".into(), function.as_bytes().to_vec()),
                ("error".into(), error.as_bytes().to_vec()),
            ],
            partition: None,
            tombstone: false,
        }
    }

    /// The topic-partition it came from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Event {
    /// Partitions newly given to this member.
    Assigned(Vec<TopicPartition>),
    /// Partitions taken away from this member.
    Revoked(Vec<TopicPartition>),
    /// Records, possibly none if nothing arrived in time.
    Messages(Vec<Message>),
}

/// Errors of the event log. The variants say what a caller can do.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The broker could not be reached or did not acknowledge in time:
    /// retry later (the HTTP edge answers 503).
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The local send queue is full: back off (the HTTP edge answers 503).
    #[error("event log queue full")]
    QueueFull,
    /// The record was refused for what it is (too large, bad topic): do not retry as is.
    #[error("record rejected: {0}")]
    Rejected(String),
    /// The topic does not exist (a follower of a topic nobody created yet
    /// takes it for an empty one).
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    /// Anything else from the backend.
    #[error("event log error: {0}")]
    Other(String),
}

impl EventLogError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::QueueFull)
    }
}

/// Writes records to topics.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publish `records` to `topic`. Returns one result per record, in order;
    /// `Ok` means the log durably has it. Never buffers without bound: when
    /// the send queue is full the remaining records fail with
    /// [`EventLogError::QueueFull`].
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Vec<Result<Delivered, EventLogError>>;

    /// Whether the log is reachable now (for `/readyz`).
    async fn check_ready(&self) -> Result<(), EventLogError>;

    /// Wait until everything queued was acknowledged or `timeout` passed.
    async fn flush(&self, timeout: Duration) -> Result<(), EventLogError>;
}

/// A consumer group member's view of its partitions.
#[async_trait]
pub trait Subscription: Send {
    /// The next event: a rebalance, or up to `max` records. Waits at most
    /// `wait` for records and returns `Messages(vec![])` if none came.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Event, EventLogError>;

    /// Commit, for each partition, the offset of the next record to read and
    /// a metadata string stored with it.
    async fn commit(&mut self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError>;

    /// What the group has committed for `partitions`.
    async fn committed(&mut self, partitions: &[TopicPartition]) -> Result<Vec<Committed>, EventLogError>;

    /// Leave the group (partitions move to the other members at once).
    async fn close(self: Box<Self>);
}

/// A reader of a whole topic outside any consumer group: every partition
/// from its start, then whatever is appended. How each replica follows state
/// kept in a compacted topic (the device registry's `tributary.devices`).
#[async_trait]
pub trait Tail: Send {
    /// The next records (at most about `max`), in offset order within each
    /// partition, waiting at most `wait` when there are none; empty if none came.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<KeyValues, EventLogError>;

    /// Whether every record the topic held when the tail was opened has been
    /// returned.
    fn caught_up(&self) -> bool;
}

/// A backend: makes publishers and subscriptions, and creates topics.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// A publisher sharing this backend's connection.
    fn publisher(&self) -> Arc<dyn Publisher>;

    /// Join consumer `group` on `topics`, reading from the committed offsets
    /// (from the earliest record when the group has none).
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, EventLogError>;

    /// Create the topics that do not exist yet, with `partitions` each.
    async fn ensure_topics(&self, topics: &[String], partitions: i32) -> Result<(), EventLogError>;

    /// Create `topic` if it does not exist yet, with `partitions`, compacted
    /// (the newest record per key is kept, whatever its age): for state.
    async fn ensure_compacted_topic(&self, topic: &str, partitions: i32) -> Result<(), EventLogError>;

    /// Every record (key, value) of one partition of `topic`, oldest first,
    /// up to its end when called; nothing if the topic does not exist. For
    /// reading state back, outside any consumer group.
    async fn read_partition(&self, topic: &str, partition: i32) -> Result<KeyValues, EventLogError>;

    /// Follow every partition of `topic` from its start (see [`Tail`]). The
    /// topic must exist.
    async fn tail(&self, topic: &str) -> Result<Box<dyn Tail>, EventLogError>;
}

/// Stable partition choice for the in-process backend (FNV-1a of the key).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % partitions.max(1) as u32) as i32
}
