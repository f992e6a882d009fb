//! The SQLite side of the rollup job (see [`crate::results::rollup`]):
//! marking buckets, claiming them, recomputing and upserting them.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{CHUNK, SqliteStore, ms, point_from_row, time};
use crate::results::StoreError;
use crate::results::rollup::{self, RollupRow, SourceRow};

/// Mark `buckets` of `tier` dirty (existing marks stay).
pub(super) async fn insert_marks(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tier: u32,
    buckets: &[(&str, &str, DateTime<Utc>)],
) -> Result<(), StoreError> {
    for chunk in buckets.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO rollup_dirty (window_seconds, device_id, metric, window_start) ");
        q.push_values(chunk, |mut b, (device, metric, bucket)| {
            b.push_bind(i64::from(tier))
                .push_bind(*device)
                .push_bind(*metric)
                .push_bind(ms(*bucket));
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn upsert_rollups(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    tier: u32,
    rows: &[RollupRow],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO rollups (device_id, metric, window_seconds, window_start, source_seconds, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming, sketch) ",
        );
        q.push_values(chunk, |mut b, r| {
            let p = &r.point;
            b.push_bind(&r.device_id)
                .push_bind(&r.metric)
                .push_bind(i64::from(tier))
                .push_bind(ms(p.window_start))
                .push_bind(i64::from(r.source_seconds))
                .push_bind(p.count)
                .push_bind(p.min)
                .push_bind(p.max)
                .push_bind(p.mean)
                .push_bind(p.stddev)
                .push_bind(p.p50)
                .push_bind(p.p95)
                .push_bind(p.p99)
                .push_bind(p.anomaly_score)
                .push_bind(&p.model)
                .push_bind(p.expected_low)
                .push_bind(p.expected_high)
                .push_bind(p.warming)
                .push_bind(p.sketch.as_deref());
        });
        q.push(
            " ON CONFLICT (device_id, metric, window_seconds, window_start) DO UPDATE SET
               source_seconds = excluded.source_seconds, count = excluded.count, min = excluded.min, max = excluded.max,
               mean = excluded.mean, stddev = excluded.stddev, p50 = excluded.p50, p95 = excluded.p95, p99 = excluded.p99,
               anomaly_score = excluded.anomaly_score, model = excluded.model, expected_low = excluded.expected_low,
               expected_high = excluded.expected_high, warming = excluded.warming, sketch = excluded.sketch",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// One transaction of the rollup job: claim up to `limit` marked buckets
    /// of `tier`, recompute them from their sources, mark their parents.
    /// SQLite has one writer at a time, so jobs never interleave.
    pub(super) async fn roll_up_step(&self, tier: u32, limit: usize) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(String, String, i64)> = sqlx::query_as(
            "DELETE FROM rollup_dirty WHERE window_seconds = ?1 AND (device_id, metric, window_start) IN (
                 SELECT device_id, metric, window_start FROM rollup_dirty WHERE window_seconds = ?1 ORDER BY window_start LIMIT ?2)
             RETURNING device_id, metric, window_start",
        )
        .bind(i64::from(tier))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let (table, sizes) = match rollup::tier_below(tier) {
            None => ("aggregates", rollup::MINUTE_SOURCES.map(|s| s.to_string()).join(",")),
            Some(below) => ("rollups", below.to_string()),
        };
        let mut sources = Vec::new();
        // 3 binds a bucket: well under the bind limit.
        for chunk in claimed.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH d(device_id, metric, bucket) AS (");
            q.push_values(chunk, |mut b, (device, metric, bucket)| {
                b.push_bind(device).push_bind(metric).push_bind(*bucket);
            });
            q.push(format!(
                ") SELECT d.device_id AS device_id, d.metric AS metric, d.bucket AS bucket, a.window_seconds AS size,
                          a.window_start, a.count, a.min, a.max, a.mean, a.stddev, a.p50, a.p95, a.p99, a.anomaly_score,
                          a.model, a.expected_low, a.expected_high, a.warming, a.sketch
                   FROM d JOIN {table} a ON a.device_id = d.device_id AND a.metric = d.metric AND a.window_seconds IN ({sizes})
                                         AND a.window_start >= d.bucket AND a.window_start < d.bucket + {}",
                i64::from(tier) * 1000
            ));
            for r in q.build().fetch_all(&mut *tx).await? {
                sources.push(SourceRow {
                    device_id: r.try_get("device_id")?,
                    metric: r.try_get("metric")?,
                    bucket: time(r.try_get("bucket")?),
                    size: r.try_get::<i64, _>("size")? as u32,
                    point: point_from_row(&r)?,
                });
            }
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
