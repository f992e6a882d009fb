//! Following a whole topic outside any consumer group: every partition
//! assigned from its start, then polled for what is appended (state topics
//! every replica keeps a view of, such as the device registry's).
//!
//! Guarantees: records come in offset order within each partition;
//! [`Tail::caught_up`] turns true once every partition has been read up to
//! its high watermark at the time the tail was opened; nothing is committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::reader::reader_config;
use super::{KafkaLog, map_err, reconnecting};
use crate::eventlog::{EventLogError, KeyValues, Tail};

/// How long opening may take (metadata and watermarks of every partition).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct KafkaTail {
    consumer: Arc<BaseConsumer>,
    /// Partitions not yet read up to their end at open, with that end.
    behind: HashMap<i32, i64>,
}

pub(super) async fn open(log: &KafkaLog, topic: &str) -> Result<KafkaTail, EventLogError> {
    let mut cfg = reader_config(log, topic)?;
    // A change must reach every follower quickly (the registry promises 2 s):
    // the broker answers an empty fetch after 100 ms, not librdkafka's 500.
    cfg.set("fetch.wait.max.ms", "100");
    // A follower keeps its own view of what it reads: librdkafka's prefetch
    // queue (64 MB by default) would hold a large topic a second time
    // while it is read at start.
    cfg.set("queued.max.messages.kbytes", "4096");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| EventLogError::Other(format!("creating a tail of {topic}: {e}")))?;
        let md = consumer
            .fetch_metadata(Some(&topic), OPEN_TIMEOUT)
            .map_err(|e| map_err(&e))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(EventLogError::NoSuchTopic(topic));
        }
        let mut behind = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, OPEN_TIMEOUT)
                .map_err(|e| map_err(&e))?;
            if high > low {
                behind.insert(p, high);
            }
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(|e| EventLogError::Other(e.to_string()))?;
        }
        consumer.assign(&tpl).map_err(|e| map_err(&e))?;
        Ok(KafkaTail {
            consumer: Arc::new(consumer),
            behind,
        })
    })
    .await
    .map_err(|e| EventLogError::Other(e.to_string()))?
}

#[async_trait]
impl Tail for KafkaTail {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<KeyValues, EventLogError> {
        let consumer = self.consumer.clone();
        let mut behind = self.behind.clone();
        let (out, behind) = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + wait;
            let mut out = Vec::new();
            loop {
                // Once something came, take what is already fetched and return.
                let timeout = if out.is_empty() {
                    deadline.saturating_duration_since(Instant::now())
                } else {
                    Duration::ZERO
                };
                match consumer.poll(timeout) {
                    None => return Ok((out, behind)),
                    Some(Err(e)) if reconnecting(&e) => {
                        if Instant::now() >= deadline {
                            return Ok((out, behind));
                        }
                    }
                    Some(Err(e)) => return Err(map_err(&e)),
                    Some(Ok(m)) => {
                        if behind.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                            behind.remove(&m.partition());
                        }
                        out.push((
                            m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                            m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        ));
                        if out.len() >= max.max(1) {
                            return Ok((out, behind));
                        }
                    }
                }
            }
        })
        .await
        .map_err(|e| EventLogError::Other(e.to_string()))??;
        self.behind = behind;
        Ok(out)
    }

    fn caught_up(&self) -> bool {
        self.behind.is_empty()
    }
}
