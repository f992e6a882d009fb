//! The Kafka side of analyze: the batch handler the consumer runner drives.
//!
//! Guarantees (no reading lost, none counted twice in an emitted aggregate,
//! across crash, restart, scale-out and scale-in):
//! - offsets are committed only up to the earliest reading still inside an
//!   open window ([`Handler::committable`]), with the partition's newest event
//!   time as commit metadata; a new owner restores it and rebuilds the open
//!   windows by re-reading from the committed offset, so re-emitted windows are
//!   identical and keyed by (device, metric, size, start): an overwrite downstream;
//! - outputs are published (aggregates, alerts, dead letters, Splunk when
//!   configured) before the handler returns `Ok`; if publishing fails, the
//!   outputs are kept and retried, and readings already applied to the windows
//!   are not applied again.
//! Limit: model and alert state is rebuilt only from the replayed readings, so
//! anomaly scores right after a rebalance can differ until models warm up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::Arc;

use async_trait::async_trait;
use tributary_shared::eventlog::runner::{Handler, HandlerError};
use tributary_shared::eventlog::{Committed, Message, Publisher, Record, TopicPartition};
use tributary_shared::model::Reading;
use tributary_shared::records::{Aggregate, Alert};
use tributary_shared::splunk::{HecClient, HecEvent};

use crate::engine::Analyzer;
use crate::metrics::Metrics;

#[derive(Default)]
struct Pending {
    aggregates: Vec<Aggregate>,
    alerts: Vec<Alert>,
    dead: Vec<Record>,
}

struct State {
    analyzer: Analyzer,
    /// Per partition, the next offset not yet applied to the windows.
    applied: HashMap<TopicPartition, i64>,
    pending: Pending,
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
    publisher: Arc<dyn Publisher>,
    outputs: Outputs,
    splunk: Option<HecClient>,
    metrics: Metrics,
}

impl AnalyzeHandler {
    /// A handler with a fresh analyzer.
    pub fn new(analyzer: Analyzer, publisher: Arc<dyn Publisher>, outputs: Outputs, splunk: Option<HecClient>, metrics: Metrics) -> Self {
        Self { state: Mutex::new(State { analyzer, applied: HashMap::new(), pending: Pending::default() }), publisher, outputs, splunk, metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, batch: &[Message]) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut readings = 0u64;
        for m in batch {
            let tp = m.topic_partition();
            if st.applied.get(&tp).is_some_and(|&next| m.offset < next) {
                continue; // applied in an earlier attempt of this batch
            }
            st.applied.insert(tp, m.offset + 1);
            match serde_json::from_slice::<Reading>(&m.value) {
                Ok(r) => {
                    readings += 1;
                    let out = st.analyzer.process(m.partition, m.offset, &r);
                    st.pending.aggregates.extend(out.aggregates);
                    st.pending.alerts.extend(out.alerts);
                }
                Err(e) => st.pending.dead.push(m.dead_letter("analyze", &format!("not a reading: {e}"))),
            }
        }
        self.metrics.readings(readings, st.analyzer.late_values());
    }

    async fn publish_all(&self, topic: &str, records: Vec<Record>) -> Result<(), HandlerError> {
        if records.is_empty() {
            return Ok(());
        }
        for r in self.publisher.publish(topic, records).await {
            r.map_err(|e| HandlerError(format!("publishing to {topic}: {e}")))?;
        }
        Ok(())
    }
}

fn hec_events(aggs: &[Aggregate], alerts: &[Alert]) -> Vec<HecEvent> {
    let t = |d: &chrono::DateTime<chrono::Utc>| d.timestamp_millis() as f64 / 1000.0;
    aggs.iter()
        .map(|a| HecEvent { time: t(&a.window_start), host: a.device_id.clone(), source: "tributary:analyze".into(), sourcetype: "tributary:aggregate".into(), event: serde_json::to_value(a).unwrap_or_default() })
        .chain(alerts.iter().map(|a| HecEvent { time: t(&a.updated_at), host: a.device_id.clone(), source: "tributary:analyze".into(), sourcetype: "tributary:alert".into(), event: serde_json::to_value(a).unwrap_or_default() }))
        .collect()
}

#[async_trait]
impl Handler for AnalyzeHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        self.apply(batch);
        let (aggs, alerts, dead) = {
            let st = self.lock();
            (st.pending.aggregates.clone(), st.pending.alerts.clone(), st.pending.dead.clone())
        };
        let to_record = |device: &str, v: Vec<u8>| Record::new(device.to_owned(), v);
        self.publish_all(&self.outputs.aggregates, aggs.iter().map(|a| to_record(&a.device_id, serde_json::to_vec(a).unwrap_or_default())).collect()).await?;
        self.publish_all(&self.outputs.alerts, alerts.iter().map(|a| to_record(&a.device_id, serde_json::to_vec(a).unwrap_or_default())).collect()).await?;
        self.publish_all(&self.outputs.deadletter, dead.clone()).await?;
        if let Some(hec) = &self.splunk {
            hec.send(&hec_events(&aggs, &alerts)).await.map_err(|e| HandlerError(e.to_string()))?;
        }
        self.metrics.published(aggs.len(), alerts.len(), dead.len());
        // Everything pending when we started is out; outputs of this batch only ever come from apply above.
        self.lock().pending = Pending::default();
        Ok(())
    }

    fn committable(&self, processed: Vec<(TopicPartition, i64)>) -> Vec<(TopicPartition, i64)> {
        let st = self.lock();
        processed.into_iter().map(|(tp, next)| {
            let safe = st.analyzer.committable_offset(tp.partition).map_or(next, |c| c.min(next));
            (tp, safe)
        }).collect()
    }

    fn commit_metadata(&self, partition: &TopicPartition) -> String {
        self.lock().analyzer.checkpoint(partition.partition).unwrap_or_default()
    }

    async fn on_assigned(&self, _partitions: &[TopicPartition], committed: &[Committed]) {
        let mut st = self.lock();
        for c in committed {
            st.applied.remove(&c.tp);
            if st.analyzer.restore(c.tp.partition, &c.metadata) {
                tracing::info!(partition = c.tp.partition, checkpoint = %c.metadata, "restored the partition's watermark");
            }
        }
    }

    async fn on_revoked(&self, partitions: &[TopicPartition]) {
        let mut st = self.lock();
        for tp in partitions {
            st.analyzer.revoke(tp.partition);
            st.applied.remove(tp);
        }
    }
}
