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
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tributary_shared::cache::{CHANGES, CacheOp, FLEET_SUMMARY, alert_key, device_key};
use tributary_shared::results::{AlertFilter, DeviceState, FleetSummary, SeriesPoint, StoredAlert, Transition, TransitionOutcome};

use crate::{ApiError, Dashboard};

const CACHE_TIMEOUT: Duration = Duration::from_millis(500);

async fn cache_get(st: &Dashboard, key: &str) -> Option<String> {
    let cache = st.cache.as_ref()?;
    tokio::time::timeout(CACHE_TIMEOUT, cache.get(key)).await.ok()?.ok()?
}

fn online_since(st: &Dashboard) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(st.offline_after_secs)
}

/// `GET /api/fleet`: counts for the overview.
pub async fn fleet(State(st): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let cached = cache_get(&st, FLEET_SUMMARY).await.and_then(|s| serde_json::from_str::<FleetSummary>(&s).ok());
    let (summary, source) = match (cached, &st.cache) {
        (Some(s), Some(c)) => (s, c.backend()),
        _ => (st.store.fleet_summary(online_since(&st)).await?, st.store.backend()),
    };
    let rate = st.store.values_per_second(Utc::now()).await?;
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

/// `GET /api/devices?limit=`: devices, most recently seen first.
pub async fn devices(State(st): State<Arc<Dashboard>>, Query(q): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 200, 2000)?;
    let rows = st.store.device_listing(limit, online_since(&st)).await?;
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
    let state: Option<DeviceState> = match cache_get(&st, &device_key(&id)).await.and_then(|s| serde_json::from_str(&s).ok()) {
        Some(d) => Some(d),
        None => st.store.devices(std::slice::from_ref(&id)).await?.into_iter().next(),
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
    #[serde(rename = "maxPoints")]
    max_points: Option<String>,
}

/// Merge consecutive windows so at most `max` points remain (as Grafana's
/// `maxDataPoints`): counts add, min/max are exact, the mean is
/// count-weighted, the standard deviation is pooled (within plus between
/// windows), the anomaly score and model are the highest window's, and the
/// percentiles are the count-weighted mean of the windows' (p50) or their
/// highest (p95, p99): approximations, as the sketches are not stored.
/// Returns the points and how many windows each merged point covers.
pub fn downsample(points: Vec<SeriesPoint>, max: usize) -> (Vec<SeriesPoint>, usize) {
    if points.len() <= max || max == 0 {
        return (points, 1);
    }
    let k = points.len().div_ceil(max);
    let merged = points
        .chunks(k)
        .map(|c| {
            let n: i64 = c.iter().map(|p| p.count).sum();
            let w = |p: &SeriesPoint| p.count as f64 / n.max(1) as f64;
            let mean: f64 = c.iter().map(|p| w(p) * p.mean).sum();
            let var: f64 = c.iter().map(|p| w(p) * (p.stddev * p.stddev + (p.mean - mean).powi(2))).sum();
            let top = c.iter().max_by(|a, b| a.anomaly_score.total_cmp(&b.anomaly_score)).unwrap_or(&c[0]);
            SeriesPoint {
                window_start: c[0].window_start,
                count: n,
                min: c.iter().map(|p| p.min).fold(f64::INFINITY, f64::min),
                max: c.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max),
                mean,
                stddev: var.max(0.0).sqrt(),
                p50: c.iter().map(|p| w(p) * p.p50).sum(),
                p95: c.iter().map(|p| p.p95).fold(f64::NEG_INFINITY, f64::max),
                p99: c.iter().map(|p| p.p99).fold(f64::NEG_INFINITY, f64::max),
                anomaly_score: top.anomaly_score,
                model: top.model.clone(),
            }
        })
        .collect();
    (merged, k)
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

/// `GET /api/devices/{id}/series?metric=&window=&from=&to=`: window aggregates of one metric.
pub async fn series(State(st): State<Arc<Dashboard>>, Path(id): Path<String>, Query(q): Query<SeriesParams>) -> Result<Json<Value>, ApiError> {
    check_id("deviceId", &id)?;
    let metric = q.metric.ok_or(ApiError::BadParam { param: "metric", reason: "required".into() })?;
    if metric.is_empty() || metric.len() > 64 || !metric.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(ApiError::BadParam { param: "metric", reason: "must be 1-64 characters of A-Z a-z 0-9 . _ -".into() });
    }
    let window: u32 = match q.window.as_deref() {
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
    let max_points: usize = match q.max_points.as_deref() {
        None => 1500,
        Some(m) => m.parse().ok().filter(|m| (10..=10_000).contains(m)).ok_or_else(|| ApiError::BadParam { param: "maxPoints", reason: format!("'{m}' is not an integer in 10..=10000") })?,
    };
    let mut series = st.store.series(&id, &metric, window, from, to).await?;
    let mut window = window;
    // No size asked for and none of the default: show the smallest size there is.
    if q.window.is_none() && series.points.is_empty() {
        if let Some(&w) = series.available_windows.first().filter(|&&w| w != window) {
            window = w;
            series = st.store.series(&id, &metric, window, from, to).await?;
        }
    }
    let (points, merged) = downsample(series.points, max_points);
    Ok(Json(json!({
        "deviceId": id, "metric": metric, "windowSeconds": window,
        "from": tributary_shared::model::fmt_millis(&from), "to": tributary_shared::model::fmt_millis(&to),
        "availableWindows": series.available_windows,
        "windowsPerPoint": merged,
        "points": points, "alerts": series.alerts,
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
    let filter: AlertFilter = q.state.as_deref().unwrap_or("unresolved").parse().map_err(|reason| ApiError::BadParam { param: "state", reason })?;
    if let Some(d) = &q.device {
        check_id("device", d)?;
    }
    let rows = st.store.alert_list(filter, q.device.as_deref(), limit).await?;
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

async fn transition(st: &Dashboard, headers: &HeaderMap, id: &str, action: Transition) -> Result<Json<StoredAlert>, ApiError> {
    let who = authorize(st, headers)?;
    check_id("id", id)?;
    let alert = match st.store.transition(id, action, &who, Utc::now()).await? {
        TransitionOutcome::Done(a) => a,
        TransitionOutcome::NotFound => return Err(ApiError::NotFound(format!("alert '{id}'"))),
        TransitionOutcome::Conflict(state) => return Err(ApiError::Conflict(format!("alert '{id}' is {state}"))),
    };
    tracing::info!(alert = %id, state = %alert.state, "alert changed by an operator");
    let change = json!({"kind": "alert", "alerts": [id]}).to_string();
    // Through the cache, so every dashboard instance hears of it; locally if the cache is down.
    let published = match &st.cache {
        Some(cache) => {
            let ops = vec![
                CacheOp::Set { key: alert_key(id), value: serde_json::to_string(&alert).unwrap_or_default(), ttl_secs: 86_400 },
                CacheOp::Publish { channel: CHANGES.into(), message: change.clone() },
            ];
            matches!(tokio::time::timeout(CACHE_TIMEOUT, cache.apply(ops)).await, Ok(Ok(())))
        }
        None => false,
    };
    if !published {
        st.live.send(change);
    }
    Ok(Json(alert))
}

/// `POST /api/alerts/{id}/ack`: acknowledge an open alert (operator token).
pub async fn acknowledge(State(st): State<Arc<Dashboard>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<StoredAlert>, ApiError> {
    transition(&st, &headers, &id, Transition::Acknowledge).await
}

/// `POST /api/alerts/{id}/resolve`: resolve an alert (operator token).
pub async fn resolve(State(st): State<Arc<Dashboard>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<StoredAlert>, ApiError> {
    transition(&st, &headers, &id, Transition::Resolve).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: i64, count: i64, mean: f64, score: f64) -> SeriesPoint {
        SeriesPoint {
            window_start: DateTime::from_timestamp(i * 10, 0).unwrap_or_default(),
            count,
            min: mean - 1.0,
            max: mean + 1.0,
            mean,
            stddev: 0.0,
            p50: mean,
            p95: mean + 0.5,
            p99: mean + 0.9,
            anomaly_score: score,
            model: format!("m{i}"),
        }
    }

    #[test]
    fn downsampling_keeps_counts_extremes_and_the_anomaly() {
        let pts: Vec<SeriesPoint> = (0..100).map(|i| point(i, 1 + i % 3, i as f64, if i == 57 { 0.95 } else { 0.1 })).collect();
        let total: i64 = pts.iter().map(|p| p.count).sum();
        let (out, k) = downsample(pts.clone(), 30);
        assert_eq!(k, 4);
        assert_eq!(out.len(), 25);
        assert_eq!(out.iter().map(|p| p.count).sum::<i64>(), total, "no reading lost or doubled");
        assert_eq!((out[0].min, out[24].max), (-1.0, 100.0), "extremes are exact");
        assert_eq!(out[0].window_start, pts[0].window_start);
        let hot = &out[57 / 4];
        assert_eq!((hot.anomaly_score, hot.model.as_str()), (0.95, "m57"), "the anomaly survives");
        // Weighted mean of windows 0..4 with counts 1,2,3,1 and means 0,1,2,3.
        assert!((out[0].mean - (0.0 + 2.0 + 6.0 + 3.0) / 7.0).abs() < 1e-12);
        // Pooled deviation: the spread between the windows' means.
        let m = out[0].mean;
        let var = (1.0 * m * m + 2.0 * (1.0 - m).powi(2) + 3.0 * (2.0 - m).powi(2) + (3.0 - m).powi(2)) / 7.0;
        assert!((out[0].stddev - var.sqrt()).abs() < 1e-12);
        let (same, k) = downsample(pts.clone(), 100);
        assert_eq!((same.len(), k), (100, 1), "under the cap nothing changes");
    }
}
