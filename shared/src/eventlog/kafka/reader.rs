//! Reading one partition back from its start, outside any consumer group:
//! how state kept in a compacted topic is restored.
//!
//! Guarantee: every record the partition held when the read began (its high
//! watermark then), in offset order; compaction's gaps are skipped. A topic
//! or partition that does not exist reads as empty.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{KafkaLog, base_config, map_err, reconnecting};
use crate::eventlog::{EventLogError, KeyValues};

/// Longest a read may take: a restore that cannot finish is an error, not a
/// silent partial state.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// librdkafka properties only a producer reads.
const PRODUCER_ONLY: [&str; 14] = [
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "batch.num.messages",
    "batch.size",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "compression.type",
    "compression.codec",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "message.send.max.retries",
];

/// The records of `topic`'s `partition` (see the module docs).
pub(super) async fn read_partition(log: &KafkaLog, topic: &str, partition: i32) -> Result<KeyValues, EventLogError> {
    let cfg = reader_config(log, topic)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| EventLogError::Other(format!("creating a reader of {topic}: {e}")))?;
        read(&consumer, &topic, partition)
    })
    .await
    .map_err(|e| EventLogError::Other(e.to_string()))?
}

/// A consumer configuration for reading `topic` by assignment, outside any
/// group: librdkafka wants a group id, but nothing is ever committed.
pub(super) fn reader_config(log: &KafkaLog, topic: &str) -> Result<ClientConfig, EventLogError> {
    // Options meant for the producer (ingest's linger among them) are left
    // out, so librdkafka does not warn at every start that a consumer
    // ignores them.
    let mut args = log.args.clone();
    args.options.retain(|o| {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
        !PRODUCER_ONLY.contains(&key)
    });
    let mut cfg = base_config(&args, &log.client_id)?;
    cfg.set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    Ok(cfg)
}

/// Whether `topic` exists with `partition`.
pub(super) fn has_partition(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<bool, EventLogError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| map_err(&e))?;
    Ok(md
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && t.partitions().iter().any(|p| p.id() == partition)))
}

fn read(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<KeyValues, EventLogError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    if !has_partition(consumer, topic, partition)? {
        return Ok(Vec::new());
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .map_err(|e| map_err(&e))?;
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .map_err(|e| EventLogError::Other(e.to_string()))?;
    consumer.assign(&tpl).map_err(|e| map_err(&e))?;
    let mut next = low;
    while next < high {
        if Instant::now() > deadline {
            return Err(EventLogError::Unavailable(format!(
                "reading {topic}/{partition} back took over {READ_TIMEOUT:?} (at offset {next} of {high})"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) if reconnecting(&e) => {}
            Some(Err(e)) => return Err(map_err(&e)),
            Some(Ok(m)) => {
                next = m.offset() + 1;
                if m.offset() < high {
                    out.push((
                        m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    ));
                }
            }
        }
    }
    Ok(out)
}
