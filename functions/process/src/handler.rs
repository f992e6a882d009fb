//! The batch handler the consumer runner drives: decode, validate, write to
//! the results store in one transaction, dead-letter poison, refresh the cache.
//!
//! Guarantees: `Ok` is returned (and so offsets are committed) only after the
//! transaction committed and every poison record is in the dead-letter topic;
//! a database outage returns `Err`, so the runner retries the same batch and
//! commits nothing past unwritten data.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tributary_shared::eventlog::runner::{Handler, HandlerError};
use tributary_shared::eventlog::{Message, Publisher, Record};
use tributary_shared::records::{Aggregate, Alert};

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::store::{ResultStore, StoreError};

/// What a record turned out to be.
enum Decoded {
    Aggregate(Aggregate),
    Alert(Alert),
}

fn finite(x: f64, name: &str) -> Result<(), String> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(format!("{name} is not finite"))
    }
}

fn validate_aggregate(a: &Aggregate) -> Result<(), String> {
    if a.device_id.is_empty() || a.metric.is_empty() {
        return Err("empty deviceId or metric".into());
    }
    if a.window_seconds == 0 || a.count == 0 {
        return Err("windowSeconds and count must be positive".into());
    }
    for (x, n) in [
        (a.min, "min"),
        (a.max, "max"),
        (a.mean, "mean"),
        (a.stddev, "stddev"),
        (a.p50, "p50"),
        (a.p95, "p95"),
        (a.p99, "p99"),
        (a.anomaly_score, "anomalyScore"),
    ] {
        finite(x, n)?;
    }
    if !(0.0..=1.0).contains(&a.anomaly_score) {
        return Err("anomalyScore outside [0, 1]".into());
    }
    if a.min > a.max {
        return Err("min > max".into());
    }
    // The rollups count the sketch's values: one that disagrees with the
    // window would count other readings than the window's.
    if let Some(sketch) = &a.sketch
        && sketch.count() != a.count
    {
        return Err(format!(
            "the sketch holds {} values, count is {}",
            sketch.count(),
            a.count
        ));
    }
    Ok(())
}

fn validate_alert(a: &Alert) -> Result<(), String> {
    if a.id.is_empty() || a.device_id.is_empty() || a.metric.is_empty() {
        return Err("empty id, deviceId or metric".into());
    }
    finite(a.score, "score")?;
    finite(a.value, "value")?;
    if !(0.0..=1.0).contains(&a.score) {
        return Err("score outside [0, 1]".into());
    }
    Ok(())
}

/// Writes `telemetry.aggregates` and `telemetry.alerts` batches.
pub struct ProcessHandler {
    store: Arc<dyn ResultStore>,
    cache: Arc<Cache>,
    deadletter: Arc<dyn Publisher>,
    aggregates_topic: String,
    alerts_topic: String,
    deadletter_topic: String,
    metrics: Metrics,
}

impl ProcessHandler {
    /// A handler writing to `store`, caching in `cache`, dead-lettering through `deadletter`.
    pub fn new(
        cfg: &crate::Config,
        store: Arc<dyn ResultStore>,
        cache: Arc<Cache>,
        deadletter: Arc<dyn Publisher>,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            cache,
            deadletter,
            aggregates_topic: cfg.topics.aggregates.clone(),
            alerts_topic: cfg.topics.alerts.clone(),
            deadletter_topic: cfg.topics.deadletter.clone(),
            metrics,
        }
    }

    fn decode(&self, m: &Message) -> Result<Decoded, String> {
        if m.topic == self.aggregates_topic {
            let a: Aggregate = serde_json::from_slice(&m.value).map_err(|e| format!("not an aggregate: {e}"))?;
            validate_aggregate(&a)?;
            Ok(Decoded::Aggregate(a))
        } else if m.topic == self.alerts_topic {
            let a: Alert = serde_json::from_slice(&m.value).map_err(|e| format!("not an alert: {e}"))?;
            validate_alert(&a)?;
            Ok(Decoded::Alert(a))
        } else {
            Err(format!("unexpected topic {}", m.topic))
        }
    }

    async fn dead_letter(&self, poison: Vec<(&Message, String)>) -> Result<(), HandlerError> {
        if poison.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = poison.iter().map(|(m, err)| m.dead_letter("process", err)).collect();
        let n = records.len();
        for r in self.deadletter.publish(&self.deadletter_topic, records).await {
            // Not committing past a record that is neither stored nor dead-lettered.
            r.map_err(|e| HandlerError::new(format!("dead-lettering to {}", self.deadletter_topic), e))?;
        }
        self.metrics.deadlettered(n);
        Ok(())
    }
}

#[async_trait]
impl Handler for ProcessHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        let mut aggs = Vec::new();
        let mut alerts = Vec::new();
        let mut sources: Vec<&Message> = Vec::new();
        let mut poison = Vec::new();
        for m in batch {
            match self.decode(m) {
                Ok(Decoded::Aggregate(a)) => {
                    aggs.push(a);
                    sources.push(m);
                }
                Ok(Decoded::Alert(a)) => {
                    alerts.push(a);
                    sources.push(m);
                }
                Err(e) => poison.push((m, e)),
            }
        }

        match self.store.write_batch(&aggs, &alerts).await {
            Ok(()) => {}
            Err(StoreError::Rejected(reason)) => {
                // Something passed validation but the database refuses it: find the rows one by one.
                tracing::warn!(error = %reason, "batch rejected by the database; isolating the bad records");
                let (mut ok_aggs, mut ok_alerts) = (Vec::new(), Vec::new());
                for a in aggs.drain(..) {
                    let m = sources.remove(0);
                    match self.store.write_batch(std::slice::from_ref(&a), &[]).await {
                        Ok(()) => ok_aggs.push(a),
                        Err(StoreError::Rejected(r)) => poison.push((m, r)),
                        Err(e) => return Err(HandlerError::new("writing one record", e)),
                    }
                }
                for a in alerts.drain(..) {
                    let m = sources.remove(0);
                    match self.store.write_batch(&[], std::slice::from_ref(&a)).await {
                        Ok(()) => ok_alerts.push(a),
                        Err(StoreError::Rejected(r)) => poison.push((m, r)),
                        Err(e) => return Err(HandlerError::new("writing one record", e)),
                    }
                }
                aggs = ok_aggs;
                alerts = ok_alerts;
            }
            Err(e) => {
                self.metrics.batch("failed");
                return Err(HandlerError::new("writing the batch", e));
            }
        }
        self.dead_letter(poison).await?;
        self.metrics.written(aggs.len(), alerts.len());
        self.metrics.batch("written");

        let devices: Vec<String> = aggs
            .iter()
            .map(|a| a.device_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let alert_ids: Vec<String> = alerts
            .iter()
            .map(|a| a.id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Err(e) = self.cache.after_commit(self.store.as_ref(), &devices, &alert_ids).await {
            self.metrics.cache_error();
            tracing::warn!(error = %e, "cache update failed; it will be rebuilt from the store when the cache is back");
        }
        self.metrics.visible(aggs.iter().map(|a| a.window_end));
        Ok(())
    }
}
