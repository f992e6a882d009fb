//! The read side of the results in PostgreSQL (tables in `shared/migrations`),
//! shared by the process function (to rebuild the Redis cache) and the
//! dashboard (history and fallbacks when Redis is down).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// A read failed (the database is unreachable or failed).
#[derive(Debug, thiserror::Error)]
#[error("database read failed: {0}")]
pub struct ReadError(#[from] pub sqlx::Error);

/// Latest state of one device, as cached.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    /// Device id.
    pub device_id: String,
    /// Start of its first window.
    pub first_seen: DateTime<Utc>,
    /// End of its latest window.
    pub last_seen: DateTime<Utc>,
    /// Metric to its latest window's summary.
    pub last_values: Value,
}

/// An alert as stored (with the operator's acknowledgement).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct StoredAlert {
    /// Deterministic id.
    pub id: String,
    /// Device.
    pub device_id: String,
    /// Metric.
    pub metric: String,
    /// Model that raised it.
    pub model: String,
    /// Latest score.
    pub score: f64,
    /// Latest value.
    pub value: f64,
    /// Reason.
    pub reason: String,
    /// open, acknowledged or resolved.
    pub state: String,
    /// When the incident began (event time).
    pub opened_at: DateTime<Utc>,
    /// Latest change (event time).
    pub updated_at: DateTime<Utc>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When an operator acknowledged it.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
}

/// Fleet-wide counts for the overview.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    /// Devices ever seen.
    pub devices: i64,
    /// Devices with a window ending in the last five minutes.
    pub devices_online: i64,
    /// Alerts not resolved.
    pub alerts_open: i64,
}

/// Devices by id (for refreshing their cache entries).
pub async fn devices(pool: &PgPool, ids: &[String]) -> Result<Vec<DeviceState>, ReadError> {
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>, Value)> =
        sqlx::query_as("SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE device_id = ANY($1)").bind(ids).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(device_id, first_seen, last_seen, last_values)| DeviceState { device_id, first_seen, last_seen, last_values }).collect())
}

/// Devices seen since `since`, newest first, at most `limit` (for the cache warm-up).
pub async fn recent_devices(pool: &PgPool, since: DateTime<Utc>, limit: i64) -> Result<Vec<DeviceState>, ReadError> {
    let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>, Value)> =
        sqlx::query_as("SELECT device_id, first_seen, last_seen, last_values FROM devices WHERE last_seen >= $1 ORDER BY last_seen DESC LIMIT $2")
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(device_id, first_seen, last_seen, last_values)| DeviceState { device_id, first_seen, last_seen, last_values }).collect())
}

const ALERT_COLUMNS: &str = "id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by";

/// Alerts by id.
pub async fn alerts(pool: &PgPool, ids: &[String]) -> Result<Vec<StoredAlert>, ReadError> {
    Ok(sqlx::query_as(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ANY($1)")).bind(ids).fetch_all(pool).await?)
}

/// The latest `limit` alerts.
pub async fn recent_alerts(pool: &PgPool, limit: i64) -> Result<Vec<StoredAlert>, ReadError> {
    Ok(sqlx::query_as(&format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY updated_at DESC, id LIMIT $1")).bind(limit).fetch_all(pool).await?)
}

/// Fleet-wide counts.
pub async fn fleet_summary(pool: &PgPool) -> Result<FleetSummary, ReadError> {
    let (devices, devices_online): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE last_seen > now() - interval '5 minutes') FROM devices").fetch_one(pool).await?;
    let (alerts_open,): (i64,) = sqlx::query_as("SELECT count(*) FROM alerts WHERE state <> 'resolved'").fetch_one(pool).await?;
    Ok(FleetSummary { devices, devices_online, alerts_open })
}

