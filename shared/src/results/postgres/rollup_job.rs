//! The PostgreSQL side of the rollup job (see [`crate::results::rollup`]):
//! marking buckets, claiming them, recomputing and upserting them.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::results::rollup::{self, RollupRow, SourceRow};
use crate::results::{SeriesPoint, StoreError};

/// Serialises rollup jobs across replicas (a `pg_advisory_xact_lock` key):
/// two jobs recomputing one bucket could otherwise commit in the opposite
/// order to the one they read in, leaving the older computation.
const ROLLUP_LOCK: i64 = 0x7472_6962_726f_6c6c;

/// Mark `buckets` of `tier` dirty (existing marks stay).
pub(super) async fn insert_marks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tier: u32,
    buckets: &[(&str, &str, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if buckets.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rollup_dirty (window_seconds, device_id, metric, window_start)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(tier as i32)
    .bind(buckets.iter().map(|b| b.0).collect::<Vec<_>>())
    .bind(buckets.iter().map(|b| b.1).collect::<Vec<_>>())
    .bind(buckets.iter().map(|b| b.2).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl PgStore {
    /// One transaction of the rollup job: claim up to `limit` marked buckets
    /// of `tier`, recompute them from their sources, mark their parents.
    pub(super) async fn roll_up_step(&self, tier: u32, limit: usize) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROLLUP_LOCK)
            .execute(&mut *tx)
            .await?;
        let claimed: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "DELETE FROM rollup_dirty WHERE (window_seconds, device_id, metric, window_start) IN (
                 SELECT window_seconds, device_id, metric, window_start FROM rollup_dirty
                 WHERE window_seconds = $1 ORDER BY window_start LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING device_id, metric, window_start",
        )
        .bind(tier as i32)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let (table, sizes): (&str, Vec<i32>) = match rollup::tier_below(tier) {
            None => ("aggregates", rollup::MINUTE_SOURCES.iter().map(|s| *s as i32).collect()),
            Some(below) => ("rollups", vec![below as i32]),
        };
        // One index range per (bucket, size), forced by the lateral subquery
        // (`OFFSET 0` keeps it from being flattened): as a plain join the planner
        // bounded the scan by device and metric only and filtered every window
        // of the series for every bucket, 13 s per 5,000 buckets on a year of minutes.
        let rows = sqlx::query(&format!(
            "SELECT d.device_id, d.metric, d.bucket, a.window_seconds AS size, a.window_start, a.count, a.min, a.max, a.mean,
                    a.stddev, a.p50, a.p95, a.p99, a.anomaly_score, a.model, a.expected_low, a.expected_high, a.warming, a.sketch
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS d(device_id, metric, bucket)
             CROSS JOIN UNNEST($4::int[]) AS s(size)
             CROSS JOIN LATERAL (
                 SELECT * FROM {table} w
                 WHERE w.device_id = d.device_id AND w.metric = d.metric AND w.window_seconds = s.size
                   AND w.window_start >= d.bucket AND w.window_start < d.bucket + make_interval(secs => $5)
                 OFFSET 0) a"
        ))
        .bind(claimed.iter().map(|c| c.0.as_str()).collect::<Vec<_>>())
        .bind(claimed.iter().map(|c| c.1.as_str()).collect::<Vec<_>>())
        .bind(claimed.iter().map(|c| c.2).collect::<Vec<_>>())
        .bind(sizes)
        .bind(f64::from(tier))
        .fetch_all(&mut *tx)
        .await?;
        let mut sources = Vec::with_capacity(rows.len());
        for r in &rows {
            use sqlx::{FromRow, Row};
            sources.push(SourceRow {
                device_id: r.try_get("device_id")?,
                metric: r.try_get("metric")?,
                bucket: r.try_get("bucket")?,
                size: r.try_get::<i32, _>("size")? as u32,
                point: SeriesPoint::from_row(r)?,
            });
        }
        let computed = rollup::compute(sources);
        upsert_rollups(&mut tx, tier, &computed).await?;
        if let Some(above) = rollup::tier_above(tier) {
            insert_marks(&mut tx, above, &rollup::parent_marks(above, &computed)).await?;
        }
        tx.commit().await?;
        Ok(claimed.len())
    }
}

async fn upsert_rollups(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tier: u32,
    rows: &[RollupRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&SeriesPoint) -> f64| rows.iter().map(|r| f(&r.point)).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO rollups (device_id, metric, window_seconds, window_start, source_seconds, count, min, max, mean, stddev,
                              p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming, sketch)
         SELECT u.device_id, u.metric, $3, u.window_start, u.source_seconds, u.count, u.min, u.max, u.mean, u.stddev,
                u.p50, u.p95, u.p99, u.anomaly_score, u.model, u.expected_low, u.expected_high, u.warming, u.sketch
         FROM UNNEST($1::text[], $2::text[], $4::timestamptz[], $5::int[], $6::bigint[], $7::float8[], $8::float8[], $9::float8[],
                     $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[], $16::float8[],
                     $17::float8[], $18::bool[], $19::bytea[])
              AS u(device_id, metric, window_start, source_seconds, count, min, max, mean, stddev, p50, p95, p99,
                   anomaly_score, model, expected_low, expected_high, warming, sketch)
         ON CONFLICT (device_id, metric, window_seconds, window_start) DO UPDATE SET
           source_seconds = EXCLUDED.source_seconds, count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max,
           mean = EXCLUDED.mean, stddev = EXCLUDED.stddev, p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99,
           anomaly_score = EXCLUDED.anomaly_score, model = EXCLUDED.model, expected_low = EXCLUDED.expected_low,
           expected_high = EXCLUDED.expected_high, warming = EXCLUDED.warming, sketch = EXCLUDED.sketch",
    )
    .bind(rows.iter().map(|r| r.device_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
    .bind(tier as i32)
    .bind(rows.iter().map(|r| r.point.window_start).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.source_seconds as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.point.count).collect::<Vec<_>>())
    .bind(col(|p| p.min))
    .bind(col(|p| p.max))
    .bind(col(|p| p.mean))
    .bind(col(|p| p.stddev))
    .bind(col(|p| p.p50))
    .bind(col(|p| p.p95))
    .bind(col(|p| p.p99))
    .bind(col(|p| p.anomaly_score))
    .bind(rows.iter().map(|r| r.point.model.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.point.expected_low).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.point.expected_high).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.point.warming).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.point.sketch.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
