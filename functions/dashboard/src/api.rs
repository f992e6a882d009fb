//! The JSON API (`/api/...`), which the page itself uses. Described in
//! `static/openapi.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tributary_shared::cache::{CHANGES, CacheOp, FLEET_SUMMARY, alert_key, device_key};
use tributary_shared::results::{
    AlertFilter, DeviceListing, DeviceQuery, DeviceSort, DeviceState, DeviceStatus, FleetSummary, Resolution,
    SeriesPoint, StoredAlert, Transition, TransitionOutcome, rollup, windows_per_point,
};

use crate::extract::{Path, Query};
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
    let cached = cache_get(&st, FLEET_SUMMARY)
        .await
        .and_then(|s| serde_json::from_str::<FleetSummary>(&s).ok());
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

/// An integer parameter in `range`, `default` when absent.
fn parse_int(
    param: &'static str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| ApiError::BadParam {
                param,
                reason: format!("'{s}' is not an integer in {}..={}", range.start(), range.end()),
            }),
    }
}

pub(crate) fn parse_limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    parse_int("limit", raw, default, 1..=max)
}

/// Query parameters of the fleet list.
#[derive(Deserialize)]
pub struct DeviceListParams {
    q: Option<String>,
    status: Option<String>,
    group: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// Longest search term (a device id's length).
const SEARCH_MAX: usize = 128;
/// Deepest page: past it a search is the way to a device.
const OFFSET_MAX: i64 = 1_000_000;

/// The answer of [`devices`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceListBody {
    devices: Vec<DeviceListing>,
    /// Devices that match the search and status, on every page.
    total: i64,
    offset: i64,
    limit: i64,
    sort: &'static str,
    order: &'static str,
    status: &'static str,
    /// The group filter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

/// `GET /api/devices?q=&status=&group=&sort=&order=&limit=&offset=`: one
/// page of the fleet (default: the 50 most recently seen), searched by id,
/// filtered by status and by the device registry's group, and sorted in the
/// database, with the number that match.
pub async fn devices(
    State(st): State<Arc<Dashboard>>,
    Query(p): Query<DeviceListParams>,
) -> Result<Json<DeviceListBody>, ApiError> {
    let limit = parse_limit(p.limit.as_deref(), 50, 2000)?;
    let offset = parse_int("offset", p.offset.as_deref(), 0, 0..=OFFSET_MAX)?;
    let search = p.q.filter(|q| !q.is_empty());
    if search.as_ref().is_some_and(|q| q.chars().count() > SEARCH_MAX) {
        return Err(ApiError::BadParam {
            param: "q",
            reason: format!("longer than {SEARCH_MAX} characters"),
        });
    }
    let status: DeviceStatus = match p.status.as_deref() {
        None => DeviceStatus::All,
        Some(s) => s.parse().map_err(|reason| ApiError::BadParam {
            param: "status",
            reason,
        })?,
    };
    let group = p.group.filter(|g| !g.is_empty());
    if let Some(g) = &group {
        check_group(g)?;
    }
    let sort: DeviceSort = match p.sort.as_deref() {
        None => DeviceSort::LastSeen,
        Some(s) => s
            .parse()
            .map_err(|reason| ApiError::BadParam { param: "sort", reason })?,
    };
    // Ids read A to Z; times and alert counts largest first.
    let descending = match p.order.as_deref() {
        None => sort != DeviceSort::DeviceId,
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::BadParam {
                param: "order",
                reason: format!("'{other}' is not asc or desc"),
            });
        }
    };
    let query = DeviceQuery {
        search,
        status,
        group: group.clone(),
        sort,
        descending,
        offset,
        limit,
        online_since: online_since(&st),
    };
    let page = st.store.device_listing(&query).await?;
    Ok(Json(DeviceListBody {
        devices: page.devices,
        total: page.total,
        offset,
        limit,
        sort: sort.name(),
        order: if descending { "desc" } else { "asc" },
        status: status.name(),
        group,
    }))
}

pub(crate) fn check_group(group: &str) -> Result<(), ApiError> {
    if tributary_shared::registry::valid_label(group) {
        Ok(())
    } else {
        Err(ApiError::BadParam {
            param: "group",
            reason: format!(
                "must be 1-{} characters of A-Z a-z 0-9 . _ : -",
                tributary_shared::registry::MAX_GROUP_LEN
            ),
        })
    }
}

/// `GET /api/groups`: the device registry's groups, each with its
/// registered devices and how many of them are online (what the fleet
/// list's group filter offers).
pub async fn groups(State(st): State<Arc<Dashboard>>) -> Result<Json<Value>, ApiError> {
    let groups = st.store.device_groups(online_since(&st)).await?;
    Ok(Json(json!({ "groups": groups })))
}

pub(crate) fn check_id(param: &'static str, id: &str) -> Result<(), ApiError> {
    if tributary_shared::model::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadParam {
            param,
            reason: "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into(),
        })
    }
}

/// `GET /api/devices/{id}`: a device's latest state.
pub async fn device(State(st): State<Arc<Dashboard>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id("deviceId", &id)?;
    let state: Option<DeviceState> = match cache_get(&st, &device_key(&id))
        .await
        .and_then(|s| serde_json::from_str(&s).ok())
    {
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

/// Parse a time: RFC 3339, or a duration back from now such as `90m`, `24h`, `7d`.
pub fn parse_time(param: &'static str, s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || ApiError::BadParam {
        param,
        reason: format!("'{s}' is neither an RFC 3339 time nor a duration like 90m, 24h or 7d"),
    };
    // At the last character, not the last byte: a multi-byte character
    // there must be a 400, not a panic.
    let (num, unit) = match s.char_indices().last() {
        Some((i, _)) => s.split_at(i),
        None => return Err(bad()),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let back = n
        .checked_mul(secs)
        .filter(|b| (0..=366 * 86_400).contains(b))
        .ok_or_else(bad)?;
    Ok(now - chrono::Duration::seconds(back))
}

/// The `from` (default 1 h back) and `to` (default now) parameters, checked to be in order.
fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let now = Utc::now();
    let from = parse_time("from", from.unwrap_or("1h"), now)?;
    let to = match to {
        None => now,
        Some(t) => parse_time("to", t, now)?,
    };
    if from >= to {
        return Err(ApiError::BadParam {
            param: "from",
            reason: "must be before 'to'".into(),
        });
    }
    Ok((from, to))
}

/// The answer of [`series`], serialised as it is (a `json!` value would
/// first build a map per point).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesBody {
    device_id: String,
    metric: String,
    /// Seconds each row read covers (the window size or the tier).
    window_seconds: u32,
    /// `windows` or `rollup`.
    source: &'static str,
    from: String,
    to: String,
    available_windows: Vec<u32>,
    windows_per_point: u32,
    points: Vec<SeriesPoint>,
    alerts: Vec<StoredAlert>,
}

/// `GET /api/devices/{id}/series?metric=&window=&from=&to=`: window aggregates of one metric.
pub async fn series(
    State(st): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Query(q): Query<SeriesParams>,
) -> Result<Json<SeriesBody>, ApiError> {
    check_id("deviceId", &id)?;
    let metric = q.metric.ok_or(ApiError::BadParam {
        param: "metric",
        reason: "required".into(),
    })?;
    check_metric("metric", &metric)?;
    let window: u32 = match q.window.as_deref() {
        None => 10,
        Some(w) => w
            .parse()
            .ok()
            .filter(|w| (1..=86_400).contains(w))
            .ok_or_else(|| ApiError::BadParam {
                param: "window",
                reason: format!("'{w}' is not a window size in seconds (1..=86400)"),
            })?,
    };
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    let max_points: u32 = match q.max_points.as_deref() {
        None => 1500,
        Some(m) => m
            .parse()
            .ok()
            .filter(|m| (10..=10_000).contains(m))
            .ok_or_else(|| ApiError::BadParam {
                param: "maxPoints",
                reason: format!("'{m}' is not an integer in 10..=10000"),
            })?,
    };
    // The finest of the windows and the rollup tiers that has at most `max_points`
    // rows in the range (one row per point); past the coarsest tier the store merges.
    let (mut resolution, mut per_point) = rollup::pick(window, from, to, max_points);
    let mut series = st.store.series(&id, &metric, resolution, from, to, per_point).await?;
    // No size asked for and none of the default: show the smallest size there is.
    if q.window.is_none()
        && series.points.is_empty()
        && let Some(&w) = series.available_windows.first().filter(|&&w| w != window)
    {
        (resolution, per_point) = rollup::pick(w, from, to, max_points);
        series = st.store.series(&id, &metric, resolution, from, to, per_point).await?;
    }
    // Windows past their retention (kept at least a day in any setting): the
    // finest tier that has the range. A recent empty range (a quiet device) is
    // not probed tier by tier.
    if series.points.is_empty()
        && matches!(resolution, Resolution::Windows(_))
        && from < Utc::now() - chrono::Duration::days(1)
    {
        for tier in rollup::TIERS.iter().filter(|t| **t > resolution.seconds()) {
            let per = windows_per_point(*tier, from, to, max_points);
            let found = st
                .store
                .series(&id, &metric, Resolution::Rollup(*tier), from, to, per)
                .await?;
            if !found.points.is_empty() {
                (resolution, per_point, series) = (Resolution::Rollup(*tier), per, found);
                break;
            }
        }
    }
    Ok(Json(SeriesBody {
        device_id: id,
        metric,
        window_seconds: resolution.seconds(),
        source: resolution.kind(),
        from: tributary_shared::model::fmt_millis(&from),
        to: tributary_shared::model::fmt_millis(&to),
        available_windows: series.available_windows,
        windows_per_point: per_point,
        points: series.points,
        alerts: series.alerts,
    }))
}

/// Query parameters of the raw readings.
#[derive(Deserialize)]
pub struct RawParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// Longest range of raw readings one request may ask for.
const RAW_MAX_RANGE_HOURS: i64 = 24;
/// Readings per store page: Cosmos DB's sensible page size, and SQLite's.
const RAW_PAGE: u32 = 1000;

fn check_metric(param: &'static str, metric: &str) -> Result<(), ApiError> {
    if metric.is_empty()
        || metric.len() > 64
        || !metric.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ApiError::BadParam {
            param,
            reason: "must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        });
    }
    Ok(())
}

/// `GET /api/devices/{id}/raw?metric=&from=&to=&limit=`: the device's raw
/// readings as archived, oldest first, with only `metric` when given (then
/// readings without it are skipped). At most `limit` (default 2000, up to
/// 10,000) readings; `truncated` says when the range held more. The range is
/// at most 24 h: longer ranges are what the aggregates are for.
pub async fn raw(
    State(st): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Query(q): Query<RawParams>,
) -> Result<Json<Value>, ApiError> {
    check_id("deviceId", &id)?;
    if let Some(m) = &q.metric {
        check_metric("metric", m)?;
    }
    let limit = parse_limit(q.limit.as_deref(), 2000, 10_000)? as usize;
    let (from, to) = time_range(q.from.as_deref(), q.to.as_deref())?;
    if to - from > chrono::Duration::hours(RAW_MAX_RANGE_HOURS) {
        return Err(ApiError::BadParam {
            param: "from",
            reason: format!(
                "raw readings cover at most {RAW_MAX_RANGE_HOURS} h per request; use the series API for longer ranges"
            ),
        });
    }
    let store = st.raw.as_ref().ok_or(ApiError::NotConfigured(
        "raw readings are not available: this dashboard has no raw store configured (TRIBUTARY_COSMOS_ENDPOINT)",
    ))?;
    let mut readings = Vec::new();
    let mut continuation = None;
    let mut truncated = false;
    loop {
        let page = store
            .query_device_range(&id, from, to, RAW_PAGE, continuation.take())
            .await?;
        for r in page.items {
            let metrics: serde_json::Map<String, Value> = match &q.metric {
                Some(m) => match r.metrics.get(m) {
                    Some(v) => std::iter::once((m.clone(), json!(v))).collect(),
                    None => continue,
                },
                None => r.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
            };
            if readings.len() == limit {
                truncated = true;
                break;
            }
            readings.push(json!({"id": r.id, "eventTime": tributary_shared::model::fmt_millis(&r.event_time), "metrics": metrics}));
        }
        match page.continuation {
            Some(c) if !truncated => continuation = Some(c),
            _ => break,
        }
    }
    Ok(Json(json!({
        "deviceId": id, "metric": q.metric,
        "from": tributary_shared::model::fmt_millis(&from), "to": tributary_shared::model::fmt_millis(&to),
        "source": store.backend(), "truncated": truncated, "readings": readings,
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
    let filter: AlertFilter = q
        .state
        .as_deref()
        .unwrap_or("unresolved")
        .parse()
        .map_err(|reason| ApiError::BadParam { param: "state", reason })?;
    if let Some(d) = &q.device {
        check_id("device", d)?;
    }
    let rows = st.store.alert_list(filter, q.device.as_deref(), limit).await?;
    Ok(Json(json!({ "alerts": rows })))
}

fn authorize(st: &Dashboard, headers: &HeaderMap) -> Result<String, ApiError> {
    st.auth.operator(headers)
}

/// `GET /api/me`: who the dashboard takes the caller for, and how it knows
/// (`token`: anonymous reader unless the operator token is sent;
/// `app-service`: the signed-in user), so the page offers what they may do.
pub async fn me(State(st): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let p = st.auth.principal(&headers)?;
    let writable = !matches!(st.auth, crate::auth::AuthMode::Token { operator: None, .. });
    Ok(Json(json!({
        "auth": st.auth.name(),
        "name": p.name,
        "operator": p.operator,
        "writable": writable,
    })))
}

/// What `POST /api/session` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// Whether the browser reached us over HTTPS (directly or through the
/// ingress or App Service, which say so in `X-Forwarded-Proto`).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// `POST /api/session` with `{"token": "<viewer or operator token>"}`: a
/// session cookie of that token's role (token mode; App Service signs users
/// in itself). The token is never logged.
pub async fn sign_in(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if !matches!(st.auth, crate::auth::AuthMode::Token { .. }) {
        return Err(ApiError::NotConfigured(
            "sessions are for token mode: App Service signs users in",
        ));
    }
    let s: SignIn = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let role = st.auth.role_of_token(&s.token).ok_or(ApiError::WrongToken)?;
    let value = st
        .auth
        .token_of(role)
        .and_then(|secret| crate::session::issue(role, secret, Utc::now().timestamp()))
        .ok_or(ApiError::WrongToken)?;
    let operator = role == crate::session::Role::Operator;
    tracing::info!(operator, "signed in with a session");
    Ok((
        [(
            axum::http::header::SET_COOKIE,
            crate::session::set_cookie(Some(&value), over_https(&headers)),
        )],
        Json(json!({ "operator": operator, "expiresInSecs": crate::session::TTL_SECS })),
    )
        .into_response())
}

/// `DELETE /api/session`: end this browser's session.
pub async fn sign_out(headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::NO_CONTENT,
        [(
            axum::http::header::SET_COOKIE,
            crate::session::set_cookie(None, over_https(&headers)),
        )],
    )
        .into_response()
}

async fn transition(
    st: &Dashboard,
    headers: &HeaderMap,
    id: &str,
    action: Transition,
) -> Result<Json<StoredAlert>, ApiError> {
    let who = authorize(st, headers)?;
    check_id("id", id)?;
    let alert = match st.store.transition(id, action, &who, Utc::now()).await? {
        TransitionOutcome::Done(a) => a,
        TransitionOutcome::NotFound => return Err(ApiError::NotFound(format!("alert '{id}'"))),
        TransitionOutcome::Conflict(state) => return Err(ApiError::Conflict(format!("alert '{id}' is {state}"))),
    };
    tracing::info!(alert = %id, state = %alert.state, "alert changed by an operator");
    crate::channels::queue_operator_change(st, &alert, action, &who).await;
    let change = json!({"kind": "alert", "alerts": [id]}).to_string();
    // Through the cache, so every dashboard instance hears of it; locally if the cache is down.
    let published = match &st.cache {
        Some(cache) => {
            let ops = vec![
                CacheOp::Set {
                    key: alert_key(id),
                    value: serde_json::to_string(&alert).unwrap_or_default(),
                    ttl_secs: 86_400,
                },
                CacheOp::Publish {
                    channel: CHANGES.into(),
                    message: change.clone(),
                },
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
pub async fn acknowledge(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<StoredAlert>, ApiError> {
    transition(&st, &headers, &id, Transition::Acknowledge).await
}

/// `POST /api/alerts/{id}/resolve`: resolve an alert (operator token).
pub async fn resolve(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<StoredAlert>, ApiError> {
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
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::new().interval(st.sse_keepalive))
}

#[cfg(test)]
mod tests {
    use super::{ApiError, Utc, parse_time};
    use chrono::TimeZone;
    use tributary_shared::results::{SeriesPoint, merge_points, windows_per_point};

    fn point(i: i64, count: i64, mean: f64, score: f64) -> SeriesPoint {
        SeriesPoint {
            window_start: chrono::DateTime::from_timestamp(i * 10, 0).unwrap_or_default(),
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
            // The first two windows were scored while the models warmed up.
            expected_low: (i >= 2).then_some(mean - 2.0 - i as f64),
            expected_high: (i >= 2).then_some(mean + 2.0),
            warming: i < 2,
            sketch: None,
        }
    }

    #[test]
    fn times_with_any_characters_are_refused_not_a_panic() {
        let now = Utc::now();
        for bad in [
            "",
            "h",
            "1\u{904b0}",
            "Nf$\u{904b0}",
            "é",
            "1é",
            "\u{10FFFF}h",
            "-1h",
            "9999999999999d",
            "999999999999999999d",
        ] {
            assert!(
                matches!(
                    parse_time("from", bad, now),
                    Err(ApiError::BadParam { param: "from", .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_time("from", "90m", now).ok(),
            Some(now - chrono::Duration::minutes(90))
        );
    }

    #[test]
    fn merging_keeps_counts_extremes_and_the_anomaly() {
        let pts: Vec<SeriesPoint> = (0..8)
            .map(|i| point(i, 1 + i % 3, i as f64, if i == 5 { 0.95 } else { 0.1 }))
            .collect();
        let m = merge_points(&pts[0..4]).expect("merged");
        assert_eq!(m.count, 1 + 2 + 3 + 1, "counts add");
        assert_eq!(
            (m.min, m.max, m.window_start),
            (-1.0, 4.0, pts[0].window_start),
            "extremes are exact; the start is the first window's"
        );
        // Weighted mean of windows 0..4 with counts 1,2,3,1 and means 0,1,2,3.
        assert!((m.mean - (0.0 + 2.0 + 6.0 + 3.0) / 7.0).abs() < 1e-12);
        // Pooled deviation: the spread between the windows' means.
        let var = (1.0 * m.mean.powi(2)
            + 2.0 * (1.0 - m.mean).powi(2)
            + 3.0 * (2.0 - m.mean).powi(2)
            + (3.0 - m.mean).powi(2))
            / 7.0;
        assert!((m.stddev - var.sqrt()).abs() < 1e-12);
        let hot = merge_points(&pts[4..8]).expect("merged");
        assert_eq!(
            (hot.anomaly_score, hot.model.as_str()),
            (0.95, "m5"),
            "the anomaly survives"
        );
        assert!(merge_points(&[]).is_none());
    }

    #[test]
    fn merging_spans_the_expected_bands_and_keeps_warming() {
        let pts: Vec<SeriesPoint> = (0..8).map(|i| point(i, 1, i as f64, 0.1)).collect();
        let early = merge_points(&pts[0..4]).expect("merged");
        // Windows 2 and 3 have bands [-2, 4] and [-2, 5]; 0 and 1 have none.
        assert_eq!(
            (early.expected_low, early.expected_high, early.warming),
            (Some(-2.0), Some(5.0), true)
        );
        let warm = merge_points(&pts[0..2]).expect("merged");
        assert_eq!(
            (warm.expected_low, warm.expected_high, warm.warming),
            (None, None, true)
        );
        let late = merge_points(&pts[4..8]).expect("merged");
        assert_eq!(
            (late.expected_low, late.expected_high, late.warming),
            (Some(-2.0), Some(9.0), false)
        );
    }

    #[test]
    fn points_per_range_stay_under_the_cap() {
        let t0 = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 0, 0, 7)
            .single()
            .expect("time");
        let day = t0 + chrono::Duration::hours(24);
        assert_eq!(
            windows_per_point(10, t0, t0 + chrono::Duration::minutes(10), 1500),
            1,
            "a short range is not merged"
        );
        for (window, max) in [(10u32, 1500u32), (10, 10), (60, 1000), (1, 10_000)] {
            let k = windows_per_point(window, t0, day, max);
            let slot = i64::from(window * k);
            // Epoch-aligned slots the range touches: never more than the cap.
            let touched = (day.timestamp() - 1).div_euclid(slot) - t0.timestamp().div_euclid(slot) + 1;
            assert!(
                touched <= i64::from(max),
                "{window} s windows, cap {max}: {k} per point touches {touched} slots"
            );
            assert!(
                k == 1 || i64::from(window * (k - 1)) * i64::from(max - 1) < 86_400,
                "{k} per point is the least that fits"
            );
        }
    }
}
