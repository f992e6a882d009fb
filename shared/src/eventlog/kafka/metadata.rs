//! Commit metadata on brokers that drop it.
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
//! so, as stopping every commit would be worse). When the broker returns an
//! offset with empty metadata, the subscription's `committed` takes the
//! newest mirror entry for that partition *with the same offset* (an entry
//! for another offset is never used: its checkpoint belongs to a different
//! position). Left open: a process that dies between the first metadata
//! commit and the read-back leaves that one commit without a mirror entry,
//! which costs what it cost before (no checkpoint for that position).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::admin::create_topics;
use super::reader::{has_partition, reader_config};
use super::{KafkaLog, map_err, reconnecting};
use crate::eventlog::{EventLogError, Publisher, Record, TopicPartition};

/// Where a subscription's commit metadata is kept (see the module docs above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MetadataStore {
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
pub(super) struct MetadataMirror {
    pub(super) topic: String,
    log: KafkaLog,
    pub(super) store: MetadataStore,
}

/// Entries scanned per step when looking for a partition's newest mirror entry.
const MIRROR_SCAN_CHUNK: i64 = 2_000;
/// Longest a mirror lookup may take before giving up (the partition then starts without a checkpoint).
const MIRROR_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The mirror topic of `group`: Kafka topic names allow `[a-zA-Z0-9._-]`.
pub(super) fn mirror_topic(prefix: &str, group: &str) -> String {
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
    /// The mirror `topic` of a group, written through `log`; where the
    /// metadata is kept is not known until the first commit is read back.
    pub(super) fn new(topic: String, log: KafkaLog) -> Self {
        Self {
            topic,
            log,
            store: MetadataStore::Unknown,
        }
    }

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
    pub(super) async fn record(
        &mut self,
        offsets: &[(TopicPartition, i64, String)],
        create: bool,
    ) -> Result<(), EventLogError> {
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
    pub(super) async fn lookup(
        &self,
        wanted: Vec<(TopicPartition, i64)>,
    ) -> Result<HashMap<TopicPartition, String>, EventLogError> {
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let cfg = reader_config(&self.log, &self.topic)?;
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
    // The mirror has one partition.
    if !has_partition(&consumer, topic, 0)? {
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
}
