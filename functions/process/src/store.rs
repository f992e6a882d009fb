//! The PostgreSQL side: batched, idempotent upserts of aggregates, alerts and
//! device summaries, one transaction per batch; the reads the cache is
//! rebuilt from; retention.
//!
//! Guarantees: a batch is written entirely or not at all; writing the same
//! records again leaves the tables unchanged (upserts on the identities, and
//! an alert only moves forward in time); an operator's acknowledgement is kept
//! until the incident resolves.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_shared::records::{Aggregate, Alert, AlertState};
pub use tributary_shared::results::{DeviceState, FleetSummary, StoredAlert, alerts, devices, fleet_summary, recent_alerts, recent_devices};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused the data itself (a constraint or a bad value):
    /// retrying the same rows will fail again.
    #[error("rejected by the database: {0}")]
    Rejected(String),
    /// The database is unreachable or failed: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // SQLSTATE classes 22 (data exception) and 23 (integrity violation) are about the rows.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")) => Self::Rejected(db.message().to_owned()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

/// Run the migrations of `shared/migrations`.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../shared/migrations").run(pool).await
}

/// Keep the last record per identity: one statement may not upsert a row twice.
fn dedup_aggregates(aggs: &[Aggregate]) -> Vec<&Aggregate> {
    let mut m: BTreeMap<(&str, &str, u32, i64), &Aggregate> = BTreeMap::new();
    for a in aggs {
        m.insert((&a.device_id, &a.metric, a.window_seconds, a.window_start.timestamp_millis()), a);
    }
    m.into_values().collect()
}

fn dedup_alerts(alerts: &[Alert]) -> Vec<&Alert> {
    let mut m: BTreeMap<&str, &Alert> = BTreeMap::new();
    for a in alerts {
        match m.get(a.id.as_str()) {
            Some(prev) if prev.updated_at > a.updated_at => {}
            _ => {
                m.insert(&a.id, a);
            }
        }
    }
    m.into_values().collect()
}

fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Opened | AlertState::Updated => "open",
        AlertState::Resolved => "resolved",
    }
}

/// Write one batch in one transaction.
pub async fn write_batch(pool: &PgPool, aggs: &[Aggregate], alerts: &[Alert]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let aggs = dedup_aggregates(aggs);
    if !aggs.is_empty() {
        sqlx::query(
            "INSERT INTO aggregates (device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::bigint[], $7::float8[], $8::float8[],
                                  $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[])
             ON CONFLICT (device_id, metric, window_seconds, window_start) DO UPDATE SET
               window_end = EXCLUDED.window_end, count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
               stddev = EXCLUDED.stddev, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
               anomaly_score = EXCLUDED.anomaly_score, model = EXCLUDED.model, written_at = now()",
        )
        .bind(aggs.iter().map(|a| a.device_id.clone()).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.metric.clone()).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.window_seconds as i32).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.window_start).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.window_end).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.count as i64).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.min).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.max).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.mean).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.stddev).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.p50).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.p95).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.p99).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.anomaly_score).collect::<Vec<_>>())
        .bind(aggs.iter().map(|a| a.model.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;

        // Per device: first/last seen and, per metric, its newest window in this batch.
        let mut devices: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>, BTreeMap<&str, &Aggregate>)> = BTreeMap::new();
        for a in &aggs {
            let e = devices.entry(&a.device_id).or_insert((a.window_start, a.window_end, BTreeMap::new()));
            e.0 = e.0.min(a.window_start);
            e.1 = e.1.max(a.window_end);
            let newest = e.2.entry(&a.metric).or_insert(a);
            if a.window_end > newest.window_end {
                *newest = a;
            }
        }
        let mut ids = Vec::new();
        let mut firsts = Vec::new();
        let mut lasts = Vec::new();
        let mut values = Vec::new();
        for (id, (first, last, metrics)) in devices {
            ids.push(id.to_owned());
            firsts.push(first);
            lasts.push(last);
            let v: serde_json::Map<String, Value> = metrics
                .into_iter()
                .map(|(m, a)| (m.to_owned(), json!({"value": a.mean, "windowStart": tributary_shared::model::fmt_millis(&a.window_start), "windowSeconds": a.window_seconds, "anomalyScore": a.anomaly_score})))
                .collect();
            values.push(Value::Object(v));
        }
        sqlx::query(
            "INSERT INTO devices (device_id, first_seen, last_seen, last_values)
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::jsonb[])
             ON CONFLICT (device_id) DO UPDATE SET
               first_seen = LEAST(devices.first_seen, EXCLUDED.first_seen),
               last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen),
               -- Newer data wins per metric; older data only fills metrics not seen yet.
               last_values = CASE WHEN EXCLUDED.last_seen >= devices.last_seen
                                  THEN devices.last_values || EXCLUDED.last_values
                                  ELSE EXCLUDED.last_values || devices.last_values END",
        )
        .bind(ids)
        .bind(firsts)
        .bind(lasts)
        .bind(values)
        .execute(&mut *tx)
        .await?;
    }

    let alerts = dedup_alerts(alerts);
    if !alerts.is_empty() {
        sqlx::query(
            "INSERT INTO alerts (id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[], $8::text[],
                                  $9::timestamptz[], $10::timestamptz[], $11::timestamptz[])
             ON CONFLICT (id) DO UPDATE SET
               score = EXCLUDED.score, value = EXCLUDED.value, reason = EXCLUDED.reason,
               state = CASE WHEN EXCLUDED.state = 'resolved' THEN 'resolved'
                            WHEN alerts.state = 'acknowledged' THEN 'acknowledged'
                            ELSE EXCLUDED.state END,
               updated_at = EXCLUDED.updated_at, resolved_at = EXCLUDED.resolved_at
             -- An alert only moves forward: a replayed older record changes nothing.
             WHERE EXCLUDED.updated_at >= alerts.updated_at",
        )
        .bind(alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.device_id.clone()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.metric.clone()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.model.clone()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.score).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.value).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.reason.clone()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| state_str(a.state).to_owned()).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.opened_at).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| a.updated_at).collect::<Vec<_>>())
        .bind(alerts.iter().map(|a| (a.state == AlertState::Resolved).then_some(a.updated_at)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Delete windows that started before `cutoff`, in chunks so no statement holds locks long.
pub async fn delete_aggregates_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM aggregates WHERE ctid IN (SELECT ctid FROM aggregates WHERE window_start < $1 LIMIT 10000)",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}
