//! The Kafka publisher: an idempotent librdkafka producer whose delivery
//! reports settle one batch per `publish` call, rebuilt when its idempotence
//! state is lost.
//!
//! Guarantees: a record is reported `Ok` only from librdkafka's delivery
//! report; one that is never reported (a producer shut down first) is
//! reported failed, so a caller never waits forever and never hears `Ok`
//! for a record the broker did not acknowledge.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::map_err;
use crate::eventlog::{Delivered, EventLogError, Publisher, Record};

/// The producer, replaced by a fresh one when its idempotence state is lost.
///
/// An idempotent producer whose producer id or sequence numbers the broker no
/// longer recognises (a broker restarted without that state, a fatal error)
/// fails every send from then on. librdkafka's advice is to create a new
/// producer; we do that, at most every [`REBUILD_INTERVAL`], and the sends that
/// failed were already answered as retryable, so nothing acknowledged is lost.
pub(super) struct KafkaPublisher {
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
    /// A publisher over a producer created from `config` (kept for rebuilds).
    pub(super) fn new(config: ClientConfig) -> Result<Self, KafkaError> {
        let producer = create_producer(&config)?;
        Ok(Self {
            config,
            current: RwLock::new(producer),
            last_rebuild: Mutex::new(Instant::now()),
        })
    }

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
            let mut br = BaseRecord::with_opaque_to(topic, pending).key(&r.key);
            if !r.tombstone {
                br = br.payload(&r.value);
            }
            if let Some(p) = r.partition {
                br = br.partition(p);
            }
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
