//! The JSON API (`/api/...`), which the page itself uses. Described in
//! `static/openapi.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tributary_shared::results::{self, DeviceState, FleetSummary, StoredAlert};

use crate::{ApiError, Dashboard};

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

async fn redis_get(st: &Dashboard, key: &str) -> Option<String> {
    let client = st.redis.as_ref()?;
    let fut = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        conn.get::<_, Option<String>>(key).await.ok().flatten()
    };
    tokio::time::timeout(REDIS_TIMEOUT, fut).await.ok().flatten()
}

/// `GET /api/fleet`: counts for the overview.
pub async fn fleet(State(st): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let (summary, source) = match redis_get(&st, "tributary:fleet:summary").await.and_then(|s| serde_json::from_str::<FleetSummary>(&s).ok()) {
        Some(s) => (s, "redis"),
        None => (results::fleet_summary(&st.pool).await.map_err(|e| ApiError::from(e.0))?, "postgres"),
    };
    // Metric values per second over the last minute, from the smallest window size in use.
    let (rate,): (f64,) = sqlx::query_as(
        "WITH w AS (SELECT min(window_seconds) AS s FROM aggregates WHERE window_start > now() - interval '10 minutes')
         SELECT coalesce(sum(count), 0)::float8 / 60.0 FROM aggregates, w
         WHERE window_seconds = w.s AND window_end > now() - interval '1 minute' AND window_end <= now()",
    )
    .fetch_one(&st.pool)
    .await?;
    Ok(Json(json!({
        "devices": summary.devices,
        "devicesOnline": summary.devices_online,
        "alertsOpen": summary.alerts_open,
        "valuesPerSecond": rate,
        "source": source,
    })))
}

/// Query parameters of a list.
#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadParam { param: "limit", reason: format!("'{s}' is not an integer in 1..={max}") }),
        },
    }
}

#[derive(Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct DeviceRow {
    device_id: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    last_values: Value,
    open_alerts: i64,
    online: bool,
}

/// `GET /api/devices?limit=`: devices, most recently seen first.
pub async fn devices(State(st): State<Arc<Dashboard>>, Query(q): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 200, 2000)?;
    let rows: Vec<DeviceRow> = sqlx::query_as(
        "SELECT d.device_id, d.first_seen, d.last_seen, d.last_values,
                (SELECT count(*) FROM alerts a WHERE a.device_id = d.device_id AND a.state <> 'resolved') AS open_alerts,
                d.last_seen > now() - make_interval(secs => $2) AS online
         FROM devices d ORDER BY d.last_seen DESC LIMIT $1",
    )
    .bind(limit)
    .bind(st.offline_after_secs as f64)
    .fetch_all(&st.pool)
    .await?;
    Ok(Json(json!({ "devices": rows })))
}

fn check_id(param: &'static str, id: &str) -> Result<(), ApiError> {
    if tributary_shared::model::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadParam { param, reason: "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into() })
    }
}

/// `GET /api/devices/{id}`: a device's latest state.
pub async fn device(State(st): State<Arc<Dashboard>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id("deviceId", &id)?;
    let state: Option<DeviceState> = match redis_get(&st, &format!("tributary:device:{id}")).await.and_then(|s| serde_json::from_str(&s).ok()) {
        Some(d) => Some(d),
        None => results::devices(&st.pool, std::slice::from_ref(&id)).await.map_err(|e| ApiError::from(e.0))?.into_iter().next(),
    };
    let d = state.ok_or_else(|| ApiError::NotFound(format!("device '{id}'")))?;
    let online = d.last_seen > Utc::now() - chrono::Duration::seconds(st.offline_after_secs);
    let mut v = serde_json::to_value(&d).unwrap_or(Value::Null);
    v["online"] = json!(online);
    Ok(Json(v))
}

/// Query parameters of a series.
#[derive(Deserialize)]
pub struct SeriesParams {
    metric: Option<String>,
    window: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Parse a time: RFC 3339, or a duration back from now such as `90m`, `24h`, `7d`.
pub fn parse_time(param: &'static str, s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || ApiError::BadParam { param, reason: format!("'{s}' is neither an RFC 3339 time nor a duration like 90m, 24h or 7d") };
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if !(0..=366 * 86_400).contains(&(n * secs)) {
        return Err(bad());
    }
    Ok(now - chrono::Duration::seconds(n * secs))
}

#[derive(Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct Point {
    window_start: DateTime<Utc>,
    count: i64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    anomaly_score: f64,
    model: String,
}

/// `GET /api/devices/{id}/series?metric=&window=&from=&to=`: window aggregates of one metric.
pub async fn series(State(st): State<Arc<Dashboard>>, Path(id): Path<String>, Query(q): Query<SeriesParams>) -> Result<Json<Value>, ApiError> {
    check_id("deviceId", &id)?;
    let metric = q.metric.ok_or(ApiError::BadParam { param: "metric", reason: "required".into() })?;
    if metric.is_empty() || metric.len() > 64 || !metric.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(ApiError::BadParam { param: "metric", reason: "must be 1-64 characters of A-Z a-z 0-9 . _ -".into() });
    }
    let window: i32 = match q.window.as_deref() {
        None => 10,
        Some(w) => w.parse().ok().filter(|w| (1..=86_400).contains(w)).ok_or_else(|| ApiError::BadParam { param: "window", reason: format!("'{w}' is not a window size in seconds (1..=86400)") })?,
    };
    let now = Utc::now();
    let from = parse_time("from", q.from.as_deref().unwrap_or("1h"), now)?;
    let to = match q.to.as_deref() {
        None => now,
        Some(t) => parse_time("to", t, now)?,
    };
    if from >= to {
        return Err(ApiError::BadParam { param: "from", reason: "must be before 'to'".into() });
    }
    let points: Vec<Point> = sqlx::query_as(
        "SELECT window_start, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model FROM aggregates
         WHERE device_id = $1 AND metric = $2 AND window_seconds = $3 AND window_start >= $4 AND window_start < $5
         ORDER BY window_start LIMIT 10000",
    )
    .bind(&id)
    .bind(&metric)
    .bind(window)
    .bind(from)
    .bind(to)
    .fetch_all(&st.pool)
    .await?;
    let windows: Vec<(i32,)> = sqlx::query_as("SELECT DISTINCT window_seconds FROM aggregates WHERE device_id = $1 AND metric = $2 AND window_start >= $3 ORDER BY 1")
        .bind(&id)
        .bind(&metric)
        .bind(from)
        .fetch_all(&st.pool)
        .await?;
    let alerts: Vec<StoredAlert> = sqlx::query_as(
        "SELECT id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by
         FROM alerts WHERE device_id = $1 AND metric = $2 AND opened_at < $4 AND coalesce(resolved_at, updated_at) >= $3 ORDER BY opened_at",
    )
    .bind(&id)
    .bind(&metric)
    .bind(from)
    .bind(to)
    .fetch_all(&st.pool)
    .await?;
    Ok(Json(json!({
        "deviceId": id, "metric": metric, "windowSeconds": window,
        "from": tributary_shared::model::fmt_millis(&from), "to": tributary_shared::model::fmt_millis(&to),
        "availableWindows": windows.into_iter().map(|w| w.0).collect::<Vec<_>>(),
        "points": points, "alerts": alerts,
    })))
}

/// Query parameters of the alert list.
#[derive(Deserialize)]
pub struct AlertParams {
    state: Option<String>,
    device: Option<String>,
    limit: Option<String>,
}

/// `GET /api/alerts?state=&device=&limit=`: newest first.
pub async fn alerts(State(st): State<Arc<Dashboard>>, Query(q): Query<AlertParams>) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 50, 500)?;
    let states: &[&str] = match q.state.as_deref().unwrap_or("unresolved") {
        "unresolved" => &["open", "acknowledged"],
        "open" => &["open"],
        "acknowledged" => &["acknowledged"],
        "resolved" => &["resolved"],
        "all" => &["open", "acknowledged", "resolved"],
        other => return Err(ApiError::BadParam { param: "state", reason: format!("'{other}' is not one of unresolved, open, acknowledged, resolved, all") }),
    };
    if let Some(d) = &q.device {
        check_id("device", d)?;
    }
    let rows: Vec<StoredAlert> = sqlx::query_as(
        "SELECT id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by
         FROM alerts WHERE state = ANY($1) AND ($2::text IS NULL OR device_id = $2) ORDER BY updated_at DESC, id LIMIT $3",
    )
    .bind(states.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .bind(q.device.as_deref())
    .bind(limit)
    .fetch_all(&st.pool)
    .await?;
    Ok(Json(json!({ "alerts": rows })))
}

fn authorize(st: &Dashboard, headers: &HeaderMap) -> Result<String, ApiError> {
    let expected = st.operator_token.as_deref().ok_or(ApiError::ReadOnly)?;
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).ok_or(ApiError::Unauthorized)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok("operator".into())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn transition(st: &Dashboard, headers: &HeaderMap, id: &str, to: &str) -> Result<Json<StoredAlert>, ApiError> {
    let who = authorize(st, headers)?;
    check_id("id", id)?;
    let sql = if to == "acknowledged" {
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2 WHERE id = $1 AND state = 'open'
         RETURNING id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by"
    } else {
        "UPDATE alerts SET state = 'resolved', resolved_at = now(), acknowledged_by = coalesce(acknowledged_by, $2) WHERE id = $1 AND state <> 'resolved'
         RETURNING id, device_id, metric, model, score, value, reason, state, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by"
    };
    let updated: Option<StoredAlert> = sqlx::query_as(sql).bind(id).bind(&who).fetch_optional(&st.pool).await?;
    let alert = match updated {
        Some(a) => a,
        None => {
            let state: Option<(String,)> = sqlx::query_as("SELECT state FROM alerts WHERE id = $1").bind(id).fetch_optional(&st.pool).await?;
            return Err(match state {
                None => ApiError::NotFound(format!("alert '{id}'")),
                Some((s,)) => ApiError::Conflict(format!("alert '{id}' is {s}")),
            });
        }
    };
    tracing::info!(alert = %id, state = to, "alert changed by an operator");
    let change = json!({"kind": "alert", "alerts": [id]}).to_string();
    if let Some(client) = &st.redis {
        let body = serde_json::to_string(&alert).unwrap_or_default();
        let fut = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::pipe()
                .set_ex(format!("tributary:alert:{id}"), body, 86_400)
                .ignore()
                .publish(crate::live::CHANNEL, &change)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
            Ok(Ok(())) => {}
            _ => st.live.send(change),
        }
    } else {
        st.live.send(change);
    }
    Ok(Json(alert))
}

/// `POST /api/alerts/{id}/ack`: acknowledge an open alert (operator token).
pub async fn acknowledge(State(st): State<Arc<Dashboard>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<StoredAlert>, ApiError> {
    transition(&st, &headers, &id, "acknowledged").await
}

/// `POST /api/alerts/{id}/resolve`: resolve an alert (operator token).
pub async fn resolve(State(st): State<Arc<Dashboard>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<StoredAlert>, ApiError> {
    transition(&st, &headers, &id, "resolved").await
}

/// `GET /api/events`: server-sent events: `hello` on connect, then one
/// `change` per notification (`{"kind":"reload"}` if this client fell behind).
pub async fn events(State(st): State<Arc<Dashboard>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let hello = futures::stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    let changes = futures::stream::unfold(st.live.subscribe(), |mut rx| async move {
        let data = match rx.recv().await {
            Ok(msg) => msg,
            Err(RecvError::Lagged(_)) => "{\"kind\":\"reload\"}".to_owned(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Event::default().event("change").data(data)), rx))
    });
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
