//! The SQLite backend of [`ResultStore`]: the embedded store of the
//! all-in-one mode, one file (WAL journal) in the data directory.
//!
//! Same contract as PostgreSQL (the same tests run on both); the rollup
//! job's statements are in `rollup_job`. Times are stored
//! as integer milliseconds; a batch is one `IMMEDIATE`-style transaction of
//! multi-row upserts in chunks that stay under SQLite's bind limit.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::listing::{ListingBind, SQLITE, like_pattern, listing_sql};
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
/// Rows per statement: 16 binds a row keeps a statement under SQLite's 32,766 bind limit.
const CHUNK: usize = 1000;

/// Results in an SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("database URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed batch survives a process crash (not a power cut).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        Ok(Self { pool })
    }

    /// The pool (for tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Rows of `{select} (?, ...) {tail}` for every id, in chunks under the bind limit.
    async fn fetch_in(&self, select: &str, tail: &str, ids: &[String]) -> Result<Vec<SqliteRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!("{select} ({}) {tail}", placeholders(chunk.len()));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }
}

fn alert_from_row(r: &SqliteRow) -> Result<StoredAlert, sqlx::Error> {
    Ok(StoredAlert {
        id: r.try_get("id")?,
        device_id: r.try_get("device_id")?,
        metric: r.try_get("metric")?,
        model: r.try_get("model")?,
        score: r.try_get("score")?,
        value: r.try_get("value")?,
        reason: r.try_get("reason")?,
        severity: r
            .try_get::<&str, _>("severity")?
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        state: r.try_get("state")?,
        opened_at: time(r.try_get("opened_at")?),
        updated_at: time(r.try_get("updated_at")?),
        resolved_at: r.try_get::<Option<i64>, _>("resolved_at")?.map(time),
        acknowledged_at: r.try_get::<Option<i64>, _>("acknowledged_at")?.map(time),
        acknowledged_by: r.try_get("acknowledged_by")?,
    })
}

fn alerts_from_rows(rows: Vec<SqliteRow>) -> Result<Vec<StoredAlert>, StoreError> {
    Ok(rows.iter().map(alert_from_row).collect::<Result<_, _>>()?)
}

fn device_from_row(r: &SqliteRow) -> Result<DeviceState, sqlx::Error> {
    Ok(DeviceState {
        device_id: r.try_get("device_id")?,
        first_seen: time(r.try_get("first_seen")?),
        last_seen: time(r.try_get("last_seen")?),
        last_values: json(r.try_get::<&str, _>("last_values")?),
    })
}

/// `?, ?, ...` for an `IN` list.
/// The columns of a [`SeriesPoint`], read from a row that has them by name.
fn point_from_row(r: &SqliteRow) -> Result<SeriesPoint, sqlx::Error> {
    Ok(SeriesPoint {
        window_start: time(r.try_get("window_start")?),
        count: r.try_get("count")?,
        min: r.try_get("min")?,
        max: r.try_get("max")?,
        mean: r.try_get("mean")?,
        stddev: r.try_get("stddev")?,
        p50: r.try_get("p50")?,
        p95: r.try_get("p95")?,
        p99: r.try_get("p99")?,
        anomaly_score: r.try_get("anomaly_score")?,
        model: r.try_get("model")?,
        expected_low: r.try_get("expected_low")?,
        expected_high: r.try_get("expected_high")?,
        warming: r.try_get("warming")?,
        // Only the rollup job reads sketches; the charts' queries leave them out.
        sketch: match r.try_get("sketch") {
            Err(sqlx::Error::ColumnNotFound(_)) => None,
            other => other?,
        },
    })
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[async_trait]
impl ResultStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations-sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn write_batch(&self, aggs: &[Aggregate], alerts: &[Alert]) -> Result<(), StoreError> {
        let aggs = dedup_aggregates(aggs);
        let alerts = dedup_alerts(alerts);
        if aggs.is_empty() && alerts.is_empty() {
            return Ok(());
        }
        let now = ms(Utc::now());
        let mut tx = self.pool.begin().await?;
        for chunk in aggs.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO aggregates (device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming, sketch, written_at) ",
            );
            q.push_values(chunk, |mut b, a| {
                b.push_bind(&a.device_id)
                    .push_bind(&a.metric)
                    .push_bind(i64::from(a.window_seconds))
                    .push_bind(ms(a.window_start))
                    .push_bind(ms(a.window_end))
                    .push_bind(a.count as i64)
                    .push_bind(a.min)
                    .push_bind(a.max)
                    .push_bind(a.mean)
                    .push_bind(a.stddev)
                    .push_bind(a.p50)
                    .push_bind(a.p95)
                    .push_bind(a.p99)
                    .push_bind(a.anomaly_score)
                    .push_bind(&a.model)
                    .push_bind(a.expected_low)
                    .push_bind(a.expected_high)
                    .push_bind(a.warming)
                    .push_bind(a.sketch.as_ref().map(QuantileSketch::to_bytes))
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (device_id, metric, window_seconds, window_start) DO UPDATE SET
                   window_end = excluded.window_end, count = excluded.count, min = excluded.min, max = excluded.max, mean = excluded.mean,
                   stddev = excluded.stddev, p50 = excluded.p50, p95 = excluded.p95, p99 = excluded.p99,
                   anomaly_score = excluded.anomaly_score, model = excluded.model, expected_low = excluded.expected_low,
                   expected_high = excluded.expected_high, warming = excluded.warming, sketch = excluded.sketch, written_at = excluded.written_at",
            );
            q.build().execute(&mut *tx).await?;
        }
        let updates = device_updates(&aggs);
        for chunk in updates.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO devices (device_id, first_seen, last_seen, last_values) ");
            q.push_values(chunk, |mut b, (id, first, last, values)| {
                b.push_bind(*id)
                    .push_bind(ms(*first))
                    .push_bind(ms(*last))
                    .push_bind(values.to_string());
            });
            // json_patch merges per metric like PostgreSQL's `||` (each metric's summary is replaced whole).
            q.push(
                " ON CONFLICT (device_id) DO UPDATE SET
                   first_seen = min(devices.first_seen, excluded.first_seen),
                   last_seen = max(devices.last_seen, excluded.last_seen),
                   last_values = CASE WHEN excluded.last_seen >= devices.last_seen
                                      THEN json_patch(devices.last_values, excluded.last_values)
                                      ELSE json_patch(excluded.last_values, devices.last_values) END",
            );
            q.build().execute(&mut *tx).await?;
        }
        crate::registry::sqlite::enroll_first_contact(&mut tx, &device_ids(&aggs), Utc::now()).await?;
        insert_marks(&mut tx, rollup::TIERS[0], &minute_marks(&aggs)).await?;
        for chunk in alerts.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO alerts (id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, severity) ",
            );
            q.push_values(chunk, |mut b, a| {
                b.push_bind(&a.id)
                    .push_bind(&a.device_id)
                    .push_bind(&a.metric)
                    .push_bind(&a.model)
                    .push_bind(a.score)
                    .push_bind(a.value)
                    .push_bind(&a.reason)
                    .push_bind(state_str(a.state))
                    .push_bind(ms(a.opened_at))
                    .push_bind(ms(a.updated_at))
                    .push_bind((a.state == AlertState::Resolved).then_some(ms(a.updated_at)))
                    .push_bind(a.severity.as_str());
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET
                   score = excluded.score, value = excluded.value, reason = excluded.reason,
                   state = CASE WHEN excluded.state = 'resolved' THEN 'resolved'
                                WHEN alerts.state = 'acknowledged' THEN 'acknowledged'
                                ELSE excluded.state END,
                   updated_at = excluded.updated_at, resolved_at = excluded.resolved_at
                 WHERE excluded.updated_at >= alerts.updated_at",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_aggregates_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM aggregates WHERE window_start < ?")
            .bind(ms(cutoff))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn roll_up(&self, limit: usize) -> Result<u64, StoreError> {
        rollup::run_job(limit, |tier, limit| self.roll_up_step(tier, limit)).await
    }

    async fn delete_rollups_before(&self, tier: u32, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM rollups WHERE window_seconds = ? AND window_start < ?")
                .bind(i64::from(tier))
                .bind(ms(cutoff))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn devices(&self, ids: &[String]) -> Result<Vec<DeviceState>, StoreError> {
        let rows = self
            .fetch_in(
                "SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE device_id IN",
                "",
                ids,
            )
            .await?;
        Ok(rows.iter().map(device_from_row).collect::<Result<_, _>>()?)
    }

    async fn recent_devices(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<DeviceState>, StoreError> {
        let rows = sqlx::query("SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE last_seen >= ? ORDER BY last_seen DESC, device_id LIMIT ?")
            .bind(ms(since))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(device_from_row).collect::<Result<_, _>>()?)
    }

    async fn device_listing(&self, q: &DeviceQuery) -> Result<DevicePage, StoreError> {
        let (page, count, binds) = listing_sql(q, SQLITE);
        let pattern = q.search.as_deref().map(like_pattern).unwrap_or_default();
        // Both statements in one read transaction, so the total matches the page.
        let mut tx = self.pool.begin().await?;
        let mut page_query = sqlx::query(&page);
        let mut count_query = sqlx::query_scalar::<_, i64>(&count);
        for b in binds {
            (page_query, count_query) = match b {
                ListingBind::OnlineSince => (
                    page_query.bind(ms(q.online_since)),
                    count_query.bind(ms(q.online_since)),
                ),
                ListingBind::Pattern => (page_query.bind(pattern.clone()), count_query.bind(pattern.clone())),
                ListingBind::Group => (page_query.bind(q.group.clone()), count_query.bind(q.group.clone())),
            };
        }
        let rows = page_query.bind(q.limit).bind(q.offset).fetch_all(&mut *tx).await?;
        let total = count_query.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let mut devices = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = device_from_row(r)?;
            devices.push(DeviceListing {
                online: d.last_seen > q.online_since,
                open_alerts: r.try_get("open_alerts")?,
                group: r.try_get("device_group")?,
                device_id: d.device_id,
                first_seen: d.first_seen,
                last_seen: d.last_seen,
                last_values: d.last_values,
            });
        }
        Ok(DevicePage { total, devices })
    }

    async fn alerts(&self, ids: &[String]) -> Result<Vec<StoredAlert>, StoreError> {
        alerts_from_rows(
            self.fetch_in(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id IN"),
                "ORDER BY id",
                ids,
            )
            .await?,
        )
    }

    async fn recent_alerts(&self, limit: i64) -> Result<Vec<StoredAlert>, StoreError> {
        alerts_from_rows(
            sqlx::query(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY updated_at DESC, id LIMIT ?"
            ))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        )
    }

    async fn alert_list(
        &self,
        filter: AlertFilter,
        device: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let states = filter.states();
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE state IN ({}) AND (? IS NULL OR device_id = ?) ORDER BY updated_at DESC, id LIMIT ?",
            placeholders(states.len())
        );
        let mut q = sqlx::query(&sql);
        for s in states {
            q = q.bind(*s);
        }
        alerts_from_rows(q.bind(device).bind(device).bind(limit).fetch_all(&self.pool).await?)
    }

    async fn device_groups(&self, online_since: DateTime<Utc>) -> Result<Vec<DeviceGroup>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT r.device_group, count(*), count(*) FILTER (WHERE d.last_seen > ?)
             FROM device_registry r LEFT JOIN devices d ON d.device_id = r.device_id
             GROUP BY r.device_group ORDER BY r.device_group",
        )
        .bind(ms(online_since))
        .fetch_all(&self.pool)
        .await?;
        Ok(DeviceGroup::from_rows(rows))
    }

    async fn fleet_summary(&self, online_since: DateTime<Utc>) -> Result<FleetSummary, StoreError> {
        let (devices, devices_online): (i64, i64) =
            sqlx::query_as("SELECT count(*), coalesce(sum(last_seen > ?), 0) FROM devices")
                .bind(ms(online_since))
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
        let now = ms(now);
        let (rate,): (f64,) = sqlx::query_as(
            "WITH w AS (SELECT min(window_seconds) AS s FROM aggregates WHERE window_start > ?1 - 600000)
             SELECT coalesce(sum(count), 0) / 60.0 FROM aggregates, w
             WHERE window_seconds = w.s AND window_end > ?1 - 60000 AND window_end <= ?1
               -- Implied by the window_end bound; lets the window_start index do the work.
               AND window_start > ?1 - 60000 - w.s * 1000",
        )
        .bind(now)
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
        let merged = per_point > 1;
        let rows = if !merged {
            sqlx::query(&format!(
                "SELECT window_start, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model, expected_low, expected_high, warming
                 FROM {table}
                 WHERE device_id = ? AND metric = ? AND window_seconds = ? AND window_start >= ? AND window_start < ?
                 ORDER BY window_start LIMIT 10000"
            ))
            .bind(device)
            .bind(metric)
            .bind(i64::from(resolution.seconds()))
            .bind(ms(from))
            .bind(ms(to))
            .fetch_all(&self.pool)
            .await?
        } else {
            // The merge of `merge_points`, in SQL, one pass: the pooled variance is
            // E[(x - r)²] - (mean - r)² around a reference r near the values (the
            // range's first window mean, materialised once), which keeps E[x²] - E[x]²'s cancellation
            // away from metrics with a large mean and a small spread; the model is
            // the top-scoring window's (a fixed-width score prefix makes max() pick it).
            sqlx::query(&format!(
                "WITH ref AS MATERIALIZED (
                     SELECT mean AS r FROM {table}
                     WHERE device_id = ?1 AND metric = ?2 AND window_seconds = ?3 AND window_start >= ?4 AND window_start < ?5
                     ORDER BY window_start LIMIT 1
                 )
                 SELECT min(window_start) AS window_start, sum(count) AS count, min(min) AS min, max(max) AS max,
                        sum(count * mean) / sum(count) AS mean,
                        sum(count * (stddev * stddev + (mean - ref.r) * (mean - ref.r))) / sum(count) AS ex2, max(ref.r) AS r,
                        0.0 AS stddev,
                        sum(count * p50) / sum(count) AS p50, max(p95) AS p95, max(p99) AS p99,
                        max(anomaly_score) AS anomaly_score,
                        substr(max(printf('%.15f', anomaly_score) || model), 18) AS model,
                        min(expected_low) AS expected_low, max(expected_high) AS expected_high, max(warming) AS warming
                 FROM {table} CROSS JOIN ref
                 WHERE device_id = ?1 AND metric = ?2 AND window_seconds = ?3 AND window_start >= ?4 AND window_start < ?5
                 GROUP BY window_start / ?6 ORDER BY 1 LIMIT 10000"
            ))
            .bind(device)
            .bind(metric)
            .bind(i64::from(resolution.seconds()))
            .bind(ms(from))
            .bind(ms(to))
            .bind(i64::from(resolution.seconds()) * 1000 * i64::from(per_point))
            .fetch_all(&self.pool)
            .await?
        };
        let mut points = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut p = point_from_row(r)?;
            if merged {
                let reference: f64 = r.try_get("r")?;
                p.stddev = (r.try_get::<f64, _>("ex2")? - (p.mean - reference).powi(2))
                    .max(0.0)
                    .sqrt();
            }
            points.push(p);
        }
        // The sizes stored since `from`, by a loose index scan over the
        // primary key (one probe per size) rather than reading every window.
        let windows: Vec<(i64,)> = sqlx::query_as(
            "WITH RECURSIVE sizes(s) AS (
                 SELECT (SELECT min(window_seconds) FROM aggregates WHERE device_id = ?1 AND metric = ?2)
                 UNION ALL
                 SELECT (SELECT min(window_seconds) FROM aggregates WHERE device_id = ?1 AND metric = ?2 AND window_seconds > s)
                 FROM sizes WHERE s IS NOT NULL
             )
             SELECT s FROM sizes
             WHERE s IS NOT NULL AND EXISTS (SELECT 1 FROM aggregates WHERE device_id = ?1 AND metric = ?2 AND window_seconds = s AND window_start >= ?3)
             ORDER BY s",
        )
        .bind(device)
        .bind(metric)
        .bind(ms(from))
        .fetch_all(&self.pool)
        .await?;
        let alerts = alerts_from_rows(
            sqlx::query(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE device_id = ? AND metric = ? AND opened_at < ? AND coalesce(resolved_at, updated_at) >= ? ORDER BY opened_at, id"
            ))
            .bind(device)
            .bind(metric)
            .bind(ms(to))
            .bind(ms(from))
            .fetch_all(&self.pool)
            .await?,
        )?;
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
            Transition::Acknowledge => {
                format!(
                    "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?3, acknowledged_by = ?2 WHERE id = ?1 AND state = 'open' RETURNING {ALERT_COLUMNS}"
                )
            }
            Transition::Resolve => format!(
                "UPDATE alerts SET state = 'resolved', resolved_at = ?3, acknowledged_by = coalesce(acknowledged_by, ?2) WHERE id = ?1 AND state <> 'resolved' RETURNING {ALERT_COLUMNS}"
            ),
        };
        if let Some(r) = sqlx::query(&sql)
            .bind(id)
            .bind(who)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(TransitionOutcome::Done(alert_from_row(&r)?));
        }
        let state: Option<(String,)> = sqlx::query_as("SELECT state FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match state {
            None => TransitionOutcome::NotFound,
            Some((s,)) => TransitionOutcome::Conflict(s),
        })
    }
}
