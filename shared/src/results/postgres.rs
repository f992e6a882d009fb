//! The PostgreSQL backend of [`ResultStore`]: batched upserts with `UNNEST`
//! (one statement per table per batch), one transaction per batch.
//!
//! The rollup job's statements are in `rollup_job` (a batch marks its
//! buckets from here, with `rollup_job::insert_marks`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::listing::{ListingBind, POSTGRES, like_pattern, listing_sql};
use super::rollup::{self, Resolution};

mod rollup_job;
use super::{
    AlertFilter, DeviceGroup, DeviceListing, DevicePage, DeviceQuery, DeviceState, FleetSummary, ResultStore, Series,
    SeriesPoint, StoreError, StoredAlert, Transition, TransitionOutcome, dedup_aggregates, dedup_alerts, device_ids,
    device_updates, minute_marks, state_str,
};
use crate::records::{Aggregate, Alert, AlertState};
use crate::sketch::QuantileSketch;
use rollup_job::insert_marks;

const ALERT_COLUMNS: &str = "id, device_id, metric, model, score, value, reason, severity, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by";

/// Results in PostgreSQL (`shared/migrations`).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A store on a lazily connecting pool of at most `max_connections`
    /// (PostgreSQL may be down at start; calls fail with
    /// [`StoreError::Unavailable`] until it answers).
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(|e| StoreError::Unavailable(format!("database URL: {e}")))?;
        Ok(Self { pool })
    }

    /// The pool (for tests and benchmarks that inspect the tables).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

type DeviceRow = (String, DateTime<Utc>, DateTime<Utc>, Value);

/// Run a statement that deletes at most 10,000 rows until it deletes fewer,
/// so no statement holds its locks long; returns the rows deleted.
async fn delete_in_chunks<F>(pool: &PgPool, delete: F) -> Result<u64, StoreError>
where
    F: Fn() -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
{
    let mut total = 0;
    loop {
        let n = delete().execute(pool).await?.rows_affected();
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}

fn device_state((device_id, first_seen, last_seen, last_values): DeviceRow) -> DeviceState {
    DeviceState {
        device_id,
        first_seen,
        last_seen,
        last_values,
    }
}

#[async_trait]
impl ResultStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn write_batch(&self, aggs: &[Aggregate], alerts: &[Alert]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let aggs = dedup_aggregates(aggs);
        if !aggs.is_empty() {
            sqlx::query(
                "INSERT INTO aggregates (device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99,
                                         anomaly_score, model, expected_low, expected_high, warming, sketch)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::bigint[], $7::float8[], $8::float8[],
                                      $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[],
                                      $16::float8[], $17::float8[], $18::bool[], $19::bytea[])
                 ON CONFLICT (device_id, metric, window_seconds, window_start) DO UPDATE SET
                   window_end = EXCLUDED.window_end, count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
                   stddev = EXCLUDED.stddev, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
                   anomaly_score = EXCLUDED.anomaly_score, model = EXCLUDED.model, expected_low = EXCLUDED.expected_low,
                   expected_high = EXCLUDED.expected_high, warming = EXCLUDED.warming, sketch = EXCLUDED.sketch, written_at = now()",
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
            .bind(aggs.iter().map(|a| a.expected_low).collect::<Vec<_>>())
            .bind(aggs.iter().map(|a| a.expected_high).collect::<Vec<_>>())
            .bind(aggs.iter().map(|a| a.warming).collect::<Vec<_>>())
            .bind(aggs.iter().map(|a| a.sketch.as_ref().map(QuantileSketch::to_bytes)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;

            let updates = device_updates(&aggs);
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
            .bind(updates.iter().map(|u| u.0.to_owned()).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.1).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.2).collect::<Vec<_>>())
            .bind(updates.into_iter().map(|u| u.3).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;

            let ids = device_ids(&aggs);
            crate::registry::postgres::enroll_first_contact(&mut tx, &ids, Utc::now()).await?;

            let marks = minute_marks(&aggs);
            insert_marks(&mut tx, rollup::TIERS[0], &marks).await?;
        }

        let alerts = dedup_alerts(alerts);
        if !alerts.is_empty() {
            sqlx::query(
                "INSERT INTO alerts (id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, severity)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[], $8::text[],
                                      $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[])
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
            .bind(alerts.iter().map(|a| a.severity.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_aggregates_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        delete_in_chunks(&self.pool, || {
            sqlx::query("DELETE FROM aggregates WHERE ctid IN (SELECT ctid FROM aggregates WHERE window_start < $1 LIMIT 10000)")
                .bind(cutoff)
        })
        .await
    }

    async fn roll_up(&self, limit: usize) -> Result<u64, StoreError> {
        rollup::run_job(limit, |tier, limit| self.roll_up_step(tier, limit)).await
    }

    async fn delete_rollups_before(&self, tier: u32, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        delete_in_chunks(&self.pool, || {
            sqlx::query(
                "DELETE FROM rollups WHERE ctid IN (SELECT ctid FROM rollups WHERE window_seconds = $1 AND window_start < $2 LIMIT 10000)",
            )
            .bind(tier as i32)
            .bind(cutoff)
        })
        .await
    }

    async fn devices(&self, ids: &[String]) -> Result<Vec<DeviceState>, StoreError> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE device_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(device_state).collect())
    }

    async fn recent_devices(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<DeviceState>, StoreError> {
        let rows: Vec<DeviceRow> = sqlx::query_as("SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE last_seen >= $1 ORDER BY last_seen DESC, device_id LIMIT $2")
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(device_state).collect())
    }

    async fn device_listing(&self, q: &DeviceQuery) -> Result<DevicePage, StoreError> {
        let (page, count, binds) = listing_sql(q, POSTGRES);
        let pattern = q.search.as_deref().map(like_pattern).unwrap_or_default();
        // Both statements in one snapshot, so the total matches the page.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut page_query =
            sqlx::query_as::<_, (String, Option<String>, DateTime<Utc>, DateTime<Utc>, Value, i64)>(&page);
        let mut count_query = sqlx::query_scalar::<_, i64>(&count);
        for b in binds {
            (page_query, count_query) = match b {
                ListingBind::OnlineSince => (page_query.bind(q.online_since), count_query.bind(q.online_since)),
                ListingBind::Pattern => (page_query.bind(pattern.clone()), count_query.bind(pattern.clone())),
                ListingBind::Group => (page_query.bind(q.group.clone()), count_query.bind(q.group.clone())),
            };
        }
        let rows = page_query.bind(q.limit).bind(q.offset).fetch_all(&mut *tx).await?;
        let total = count_query.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let devices = rows
            .into_iter()
            .map(
                |(device_id, group, first_seen, last_seen, last_values, open_alerts)| DeviceListing {
                    online: last_seen > q.online_since,
                    device_id,
                    group,
                    first_seen,
                    last_seen,
                    last_values,
                    open_alerts,
                },
            )
            .collect();
        Ok(DevicePage { total, devices })
    }

    async fn alerts(&self, ids: &[String]) -> Result<Vec<StoredAlert>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ANY($1) ORDER BY id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn recent_alerts(&self, limit: i64) -> Result<Vec<StoredAlert>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY updated_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn alert_list(
        &self,
        filter: AlertFilter,
        device: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        Ok(sqlx::query_as(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE state = ANY($1) AND ($2::text IS NULL OR device_id = $2) ORDER BY updated_at DESC, id LIMIT $3"))
            .bind(filter.states().iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .bind(device)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn device_groups(&self, online_since: DateTime<Utc>) -> Result<Vec<DeviceGroup>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT r.device_group, count(*), count(*) FILTER (WHERE d.last_seen > $1)
             FROM device_registry r LEFT JOIN devices d ON d.device_id = r.device_id
             GROUP BY r.device_group ORDER BY r.device_group COLLATE \"C\"",
        )
        .bind(online_since)
        .fetch_all(&self.pool)
        .await?;
        Ok(DeviceGroup::from_rows(rows))
    }

    async fn fleet_summary(&self, online_since: DateTime<Utc>) -> Result<FleetSummary, StoreError> {
        let (devices, devices_online): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE last_seen > $1) FROM devices")
                .bind(online_since)
                .fetch_one(&self.pool)
                .await?;
        let (alerts_open,): (i64,) = sqlx::query_as("SELECT count(*) FROM alerts WHERE state <> 'resolved'")
            .fetch_one(&self.pool)
            .await?;
        Ok(FleetSummary {
            devices,
            devices_online,
            alerts_open,
        })
    }

    async fn values_per_second(&self, now: DateTime<Utc>) -> Result<f64, StoreError> {
        // Two statements: with the size known, the window_start bound is a plain
        // parameter the planner can range-scan the index with; as one statement
        // (a join or a subquery for the size) it read every window in the table.
        let (size,): (Option<i32>,) = sqlx::query_as(
            "SELECT min(window_seconds) FROM aggregates WHERE window_start > $1 - interval '10 minutes'",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let Some(size) = size else { return Ok(0.0) };
        let (rate,): (f64,) = sqlx::query_as(
            "SELECT coalesce(sum(count), 0)::float8 / 60.0 FROM aggregates
             WHERE window_seconds = $2 AND window_end > $1 - interval '1 minute' AND window_end <= $1
               -- Implied by the window_end bound; lets the window_start index do the work.
               AND window_start > $3",
        )
        .bind(now)
        .bind(size)
        .bind(now - chrono::Duration::minutes(1) - chrono::Duration::seconds(i64::from(size)))
        .fetch_one(&self.pool)
        .await?;
        Ok(rate)
    }

    async fn series(
        &self,
        device: &str,
        metric: &str,
        resolution: Resolution,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        per_point: u32,
    ) -> Result<Series, StoreError> {
        let table = resolution.table();
        let points: Vec<SeriesPoint> = if per_point <= 1 {
            sqlx::query_as(&format!(
                "SELECT window_start, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming
                 FROM {table}
                 WHERE device_id = $1 AND metric = $2 AND window_seconds = $3 AND window_start >= $4 AND window_start < $5
                 ORDER BY window_start LIMIT 10000"
            ))
            .bind(device)
            .bind(metric)
            .bind(resolution.seconds() as i32)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?
        } else {
            // The merge of `merge_points`, in SQL, one pass: the pooled variance is
            // E[(x - r)²] - (mean - r)² around a reference r near the values (the
            // range's first window mean, materialised once: inlined, the planner
            // re-ran it per row), which keeps E[x²] - E[x]²'s cancellation away
            // from metrics with a large mean and a small spread.
            sqlx::query_as(&format!(
                "WITH ref AS MATERIALIZED (
                     SELECT mean AS r FROM {table}
                     WHERE device_id = $1 AND metric = $2 AND window_seconds = $3 AND window_start >= $4 AND window_start < $5
                     ORDER BY window_start LIMIT 1
                 )
                 SELECT window_start, count, min, max, mean, sqrt(greatest(ex2 - (mean - r) * (mean - r), 0)) AS stddev,
                        p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming
                 FROM (SELECT min(window_start) AS window_start, sum(count)::bigint AS count, min(min) AS min, max(max) AS max,
                              sum(count * mean) / sum(count)::float8 AS mean,
                              sum(count * (stddev * stddev + (mean - ref.r) * (mean - ref.r))) / sum(count)::float8 AS ex2, max(ref.r) AS r,
                              sum(count * p50) / sum(count)::float8 AS p50, max(p95) AS p95, max(p99) AS p99,
                              max(anomaly_score) AS anomaly_score,
                              (array_agg(model ORDER BY anomaly_score DESC, window_start))[1] AS model,
                              min(expected_low) AS expected_low, max(expected_high) AS expected_high, bool_or(warming) AS warming
                       FROM {table} CROSS JOIN ref
                       WHERE device_id = $1 AND metric = $2 AND window_seconds = $3 AND window_start >= $4 AND window_start < $5
                       GROUP BY floor(date_part('epoch', window_start) / $6)) slots
                 ORDER BY window_start LIMIT 10000"
            ))
            .bind(device)
            .bind(metric)
            .bind(resolution.seconds() as i32)
            .bind(from)
            .bind(to)
            .bind(f64::from(resolution.seconds()) * f64::from(per_point))
            .fetch_all(&self.pool)
            .await?
        };
        // The sizes stored since `from`, by a loose index scan over the
        // primary key (one probe per size) rather than reading every window.
        // The probe is the size's newest start, which the planner always reads
        // from the end of the index: as `EXISTS`, the generic plan of the
        // prepared statement hashed every window since `from`, and as a
        // `LIMIT 1` the custom plan of a `from` older than most windows was
        // a sequential scan (6 ms a size at 30 days, under 0.1 ms now).
        let windows: Vec<(i32,)> = sqlx::query_as(
            "WITH RECURSIVE sizes(s) AS (
                 SELECT (SELECT min(window_seconds) FROM aggregates WHERE device_id = $1 AND metric = $2)
                 UNION ALL
                 SELECT (SELECT min(window_seconds) FROM aggregates WHERE device_id = $1 AND metric = $2 AND window_seconds > s)
                 FROM sizes WHERE s IS NOT NULL
             )
             SELECT s FROM sizes
             WHERE s IS NOT NULL
               AND (SELECT max(window_start) FROM aggregates WHERE device_id = $1 AND metric = $2 AND window_seconds = s) >= $3
             ORDER BY s",
        )
        .bind(device)
        .bind(metric)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        let alerts: Vec<StoredAlert> = sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE device_id = $1 AND metric = $2 AND opened_at < $4 AND coalesce(resolved_at, updated_at) >= $3 ORDER BY opened_at, id"
        ))
        .bind(device)
        .bind(metric)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(Series {
            points,
            available_windows: windows.into_iter().map(|w| w.0 as u32).collect(),
            alerts,
        })
    }

    async fn transition(
        &self,
        id: &str,
        action: Transition,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        let sql = match action {
            Transition::Acknowledge => format!(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = $3, acknowledged_by = $2 WHERE id = $1 AND state = 'open' RETURNING {ALERT_COLUMNS}"
            ),
            Transition::Resolve => format!(
                "UPDATE alerts SET state = 'resolved', resolved_at = $3, acknowledged_by = coalesce(acknowledged_by, $2) WHERE id = $1 AND state <> 'resolved' RETURNING {ALERT_COLUMNS}"
            ),
        };
        let updated: Option<StoredAlert> = sqlx::query_as(&sql)
            .bind(id)
            .bind(who)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(a) = updated {
            return Ok(TransitionOutcome::Done(a));
        }
        let state: Option<(String,)> = sqlx::query_as("SELECT state FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match state {
            None => TransitionOutcome::NotFound,
            Some((s,)) => TransitionOutcome::Conflict(s),
        })
    }
}
