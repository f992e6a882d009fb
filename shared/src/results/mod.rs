//! The results store: window aggregates, alerts and device summaries written
//! by the process function and read by the dashboard.
//!
//! One small trait, [`ResultStore`], with two backends that pass the same
//! contract suite (`tributary-testkit`):
//! - [`postgres::PgStore`], the production store (tables in `shared/migrations`);
//! - [`sqlite::SqliteStore`], the embedded store of the all-in-one mode
//!   (`shared/migrations-sqlite`), a file in the data directory;
//! - [`rollup`]: the rollup tiers both keep, and what a chart reads;
//! - [`listing`]: the fleet list's paging, search and order;
//! - [`roles`]: the dashboard's PostgreSQL role, given its password at start.
//!
//! Guarantees of every backend: a batch is written entirely or not at all;
//! writing the same records again leaves the store unchanged (upserts on the
//! record identities, and an alert only moves forward in event time); an
//! operator's acknowledgement survives later updates of the incident until it
//! resolves. Callers pass "now" in, so no query depends on the server's clock.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::records::{Aggregate, Alert, AlertState};
use crate::sketch::QuantileSketch;

pub mod listing;
pub mod postgres;
pub mod roles;
pub mod rollup;
pub mod sqlite;

pub use listing::{DeviceGroup, DeviceListing, DevicePage, DeviceQuery, DeviceSort, DeviceStatus};
pub use postgres::PgStore;
pub use rollup::{Resolution, RollupRetention};
pub use sqlite::SqliteStore;

/// Errors of a results store, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused the data itself (a constraint or a bad value):
    /// retrying the same rows will fail again.
    #[error("rejected by the database: {0}")]
    Rejected(String),
    /// The store is unreachable or failed: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => {
                // Constraint violations (any backend) and PostgreSQL's data exceptions (SQLSTATE
                // class 22) are about the rows; everything else (busy, connection, I/O) is transient.
                let pg_data_exception = db.code().is_some_and(|c| c.len() == 5 && c.starts_with("22"));
                if !matches!(db.kind(), sqlx::error::ErrorKind::Other) || pg_data_exception {
                    Self::Rejected(db.message().to_owned())
                } else {
                    Self::Unavailable(db.message().to_owned())
                }
            }
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Unavailable(format!("migrations: {e}"))
    }
}

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
    /// Metric to its latest window's summary
    /// (`{"value", "windowStart", "windowSeconds", "anomalyScore"}`).
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
    /// info, warning or critical (cached entries from before severities: warning).
    #[serde(default)]
    #[sqlx(try_from = "String")]
    pub severity: crate::rules::Severity,
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
    /// Devices with a window ending after the caller's "online since".
    pub devices_online: i64,
    /// Alerts not resolved.
    pub alerts_open: i64,
}

/// One window of a series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Readings in the window.
    pub count: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Median (sketch).
    pub p50: f64,
    /// 95th percentile (sketch).
    pub p95: f64,
    /// 99th percentile (sketch).
    pub p99: f64,
    /// Highest anomaly score in the window.
    pub anomaly_score: f64,
    /// Model that gave it.
    pub model: String,
    /// Lower edge of the band the models expected the values in (see
    /// [`Aggregate::expected_low`]); `None` while they warmed up.
    pub expected_low: Option<f64>,
    /// Upper edge of that band.
    pub expected_high: Option<f64>,
    /// Some value was scored while the models were still learning the series.
    pub warming: bool,
    /// The window's or rollup row's quantile sketch
    /// ([`QuantileSketch::to_bytes`]), where the rollup job reads it; the
    /// charts' queries leave it out, and the API never shows it.
    #[sqlx(default)]
    #[serde(skip)]
    pub sketch: Option<Vec<u8>>,
}

/// Merge consecutive windows into one point (the reference semantics of
/// [`ResultStore::series`] with `per_point` > 1, as Grafana's
/// `maxDataPoints`): the start is the first window's; counts add; min and max
/// are exact; the mean is count-weighted; the standard deviation is pooled
/// (within plus between windows, population form, as the windows' own); p50,
/// p95 and p99 come from the merge of the windows' sketches when every window has one
/// (within the sketch's relative error of the quantiles of all their values,
/// and the merged sketch is kept), otherwise p50 is the count-weighted mean
/// of the windows' medians and p95/p99 the highest of theirs
/// (approximations); the anomaly score
/// and model are those of the highest-scoring window; the expected band spans
/// the windows' bands (lowest low, highest high, over the windows that have
/// one) and the point is warming if any window was. `None` for no windows.
pub fn merge_points(windows: &[SeriesPoint]) -> Option<SeriesPoint> {
    let first = windows.first()?;
    let n: i64 = windows.iter().map(|p| p.count).sum();
    let w = |p: &SeriesPoint| p.count as f64 / n.max(1) as f64;
    let mean: f64 = windows.iter().map(|p| w(p) * p.mean).sum();
    let var: f64 = windows
        .iter()
        .map(|p| w(p) * (p.stddev * p.stddev + (p.mean - mean).powi(2)))
        .sum();
    let top = windows.iter().fold(
        first,
        |top, p| if p.anomaly_score > top.anomaly_score { p } else { top },
    );
    let sketch = merged_sketch(windows);
    let q = |q: f64| sketch.as_ref().and_then(|s| s.quantile(q));
    Some(SeriesPoint {
        window_start: first.window_start,
        count: n,
        min: windows.iter().map(|p| p.min).fold(f64::INFINITY, f64::min),
        max: windows.iter().map(|p| p.max).fold(f64::NEG_INFINITY, f64::max),
        mean,
        stddev: var.max(0.0).sqrt(),
        p50: q(0.5).unwrap_or_else(|| windows.iter().map(|p| w(p) * p.p50).sum()),
        p95: q(0.95).unwrap_or_else(|| windows.iter().map(|p| p.p95).fold(f64::NEG_INFINITY, f64::max)),
        p99: q(0.99).unwrap_or_else(|| windows.iter().map(|p| p.p99).fold(f64::NEG_INFINITY, f64::max)),
        anomaly_score: top.anomaly_score,
        model: top.model.clone(),
        expected_low: windows.iter().filter_map(|p| p.expected_low).reduce(f64::min),
        expected_high: windows.iter().filter_map(|p| p.expected_high).reduce(f64::max),
        warming: windows.iter().any(|p| p.warming),
        sketch: sketch.map(|s| s.to_bytes()),
    })
}

/// The merge of the windows' sketches; `None` when one has none (or one
/// that does not decode: the windows then merge as if none had one).
fn merged_sketch(windows: &[SeriesPoint]) -> Option<QuantileSketch> {
    let mut sketches = windows
        .iter()
        .map(|p| p.sketch.as_deref().and_then(|b| QuantileSketch::from_bytes(b).ok()));
    let mut merged = sketches.next()??;
    for s in sketches {
        merged.merge(&s?);
    }
    Some(merged)
}

/// How many windows of `window_seconds` each point must merge so that a
/// range `[from, to)` yields at most `max_points` epoch-aligned points (an
/// unaligned range can touch one slot more than it spans, hence `max - 1`).
pub fn windows_per_point(window_seconds: u32, from: DateTime<Utc>, to: DateTime<Utc>, max_points: u32) -> u32 {
    let span_ms = (to - from).num_milliseconds().max(0) as u128;
    let slot_ms = u128::from(window_seconds.max(1)) * 1000 * u128::from(max_points.saturating_sub(1).max(1));
    span_ms.div_ceil(slot_ms).clamp(1, u128::from(u32::MAX)) as u32
}

/// One metric of one device over a time range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Rows of the requested resolution with `from <= start < to`, oldest
    /// first (at most 10,000), merged `per_point` at a time when asked.
    pub points: Vec<SeriesPoint>,
    /// Window sizes stored for this metric since `from`, ascending.
    pub available_windows: Vec<u32>,
    /// Alerts of this metric overlapping the range, oldest first.
    pub alerts: Vec<StoredAlert>,
}

/// Which alerts a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFilter {
    /// Open or acknowledged.
    Unresolved,
    /// Open only.
    Open,
    /// Acknowledged only.
    Acknowledged,
    /// Resolved only.
    Resolved,
    /// Every state.
    All,
}

impl AlertFilter {
    /// The stored states this filter admits.
    pub fn states(self) -> &'static [&'static str] {
        match self {
            Self::Unresolved => &["open", "acknowledged"],
            Self::Open => &["open"],
            Self::Acknowledged => &["acknowledged"],
            Self::Resolved => &["resolved"],
            Self::All => &["open", "acknowledged", "resolved"],
        }
    }
}

impl std::str::FromStr for AlertFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "unresolved" => Self::Unresolved,
            "open" => Self::Open,
            "acknowledged" => Self::Acknowledged,
            "resolved" => Self::Resolved,
            "all" => Self::All,
            other => {
                return Err(format!(
                    "'{other}' is not one of unresolved, open, acknowledged, resolved, all"
                ));
            }
        })
    }
}

/// An operator's action on an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// open -> acknowledged.
    Acknowledge,
    /// open or acknowledged -> resolved.
    Resolve,
}

/// What an operator's action did.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per operator action, returned at once; boxing would only add an allocation"
)]
pub enum TransitionOutcome {
    /// Done; the alert as it is now.
    Done(StoredAlert),
    /// No alert has that id.
    NotFound,
    /// The alert's state does not allow it (the state is given).
    Conflict(String),
}

/// Where results live. Every method is one short transaction.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"` (for logs and the API's `source` fields).
    fn backend(&self) -> &'static str;

    /// Create or upgrade the tables.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Write one batch in one transaction (idempotent; see the module header).
    async fn write_batch(&self, aggs: &[Aggregate], alerts: &[Alert]) -> Result<(), StoreError>;

    /// Delete windows that started before `cutoff`; returns how many.
    async fn delete_aggregates_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Recompute the rollup buckets whose sources changed (see [`rollup`]),
    /// finest tier first, at most `limit` buckets per transaction; returns
    /// how many were recomputed. Safe to run from several replicas at once.
    async fn roll_up(&self, limit: usize) -> Result<u64, StoreError>;

    /// Delete rows of the rollup `tier` that started before `cutoff`; returns how many.
    async fn delete_rollups_before(&self, tier: u32, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Devices by id.
    async fn devices(&self, ids: &[String]) -> Result<Vec<DeviceState>, StoreError>;

    /// Devices seen since `since`, newest first, at most `limit`.
    async fn recent_devices(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<DeviceState>, StoreError>;

    /// One page of the fleet list (see [`listing`]).
    async fn device_listing(&self, query: &DeviceQuery) -> Result<DevicePage, StoreError>;

    /// Alerts by id.
    async fn alerts(&self, ids: &[String]) -> Result<Vec<StoredAlert>, StoreError>;

    /// The latest `limit` alerts of every state.
    async fn recent_alerts(&self, limit: i64) -> Result<Vec<StoredAlert>, StoreError>;

    /// Alerts in `filter`'s states (and of `device` when given), newest first.
    async fn alert_list(
        &self,
        filter: AlertFilter,
        device: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredAlert>, StoreError>;

    /// The device registry's groups with their devices and how many of
    /// those have sent since `online_since`, in name order.
    async fn device_groups(&self, online_since: DateTime<Utc>) -> Result<Vec<DeviceGroup>, StoreError>;

    /// Fleet-wide counts.
    async fn fleet_summary(&self, online_since: DateTime<Utc>) -> Result<FleetSummary, StoreError>;

    /// Metric values per second over the minute before `now`, from the
    /// smallest window size written in the last ten minutes.
    async fn values_per_second(&self, now: DateTime<Utc>) -> Result<f64, StoreError>;

    /// One metric of one device: the windows or rollup rows `resolution`
    /// names that start in `[from, to)` (`available_windows` and `alerts`
    /// are the same whichever it is).
    ///
    /// With `per_point` above 1 the store merges the rows of each
    /// `per_point * resolution.seconds()` slot (slots aligned to the Unix epoch, so
    /// a refreshing chart keeps its buckets) into one point, with exactly the
    /// semantics of [`merge_points`]: the merge happens in the database, so a
    /// long range costs one row per point, not one per window.
    async fn series(
        &self,
        device: &str,
        metric: &str,
        resolution: Resolution,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        per_point: u32,
    ) -> Result<Series, StoreError>;

    /// Apply an operator's action, recording `who` and `now`.
    async fn transition(
        &self,
        id: &str,
        action: Transition,
        who: &str,
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError>;
}

/// Open the store a URL names: `postgres://…` (lazily connecting, so the
/// database may be down at start) or `sqlite://PATH` (created if missing).
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn ResultStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect_lazy(url, max_connections)?))
    } else {
        let scheme = url.split(':').next().unwrap_or("");
        Err(StoreError::Unavailable(format!(
            "unsupported database URL scheme '{scheme}' (want postgres:// or sqlite://)"
        )))
    }
}

/// Keep the last record per identity: one statement may not upsert a row twice.
pub(crate) fn dedup_aggregates(aggs: &[Aggregate]) -> Vec<&Aggregate> {
    let mut m: BTreeMap<(&str, &str, u32, i64), &Aggregate> = BTreeMap::new();
    for a in aggs {
        m.insert(
            (
                &a.device_id,
                &a.metric,
                a.window_seconds,
                a.window_start.timestamp_millis(),
            ),
            a,
        );
    }
    m.into_values().collect()
}

/// Keep the newest record per alert id.
pub(crate) fn dedup_alerts(alerts: &[Alert]) -> Vec<&Alert> {
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

/// The stored state of an alert record.
pub(crate) fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Opened | AlertState::Updated => "open",
        AlertState::Resolved => "resolved",
        AlertState::Acknowledged => "acknowledged",
    }
}

/// One device's part of a batch: first window start, last window end, and
/// per metric its newest window.
type DeviceSpan<'a> = (DateTime<Utc>, DateTime<Utc>, BTreeMap<&'a str, &'a Aggregate>);

/// The distinct devices of `aggs`, in id order.
pub(crate) fn device_ids<'a>(aggs: &[&'a Aggregate]) -> Vec<&'a str> {
    let ids: std::collections::BTreeSet<&str> = aggs.iter().map(|a| a.device_id.as_str()).collect();
    ids.into_iter().collect()
}

/// Per device in a batch: first window start, last window end, and per
/// metric its newest window's summary (`last_values`).
pub(crate) fn device_updates<'a>(aggs: &[&'a Aggregate]) -> Vec<(&'a str, DateTime<Utc>, DateTime<Utc>, Value)> {
    let mut devices: BTreeMap<&str, DeviceSpan<'a>> = BTreeMap::new();
    for a in aggs {
        let e = devices
            .entry(&a.device_id)
            .or_insert((a.window_start, a.window_end, BTreeMap::new()));
        e.0 = e.0.min(a.window_start);
        e.1 = e.1.max(a.window_end);
        let newest = e.2.entry(&a.metric).or_insert(a);
        if a.window_end > newest.window_end {
            *newest = a;
        }
    }
    devices
        .into_iter()
        .map(|(id, (first, last, metrics))| {
            let v: serde_json::Map<String, Value> = metrics
                .into_iter()
                .map(|(m, a)| {
                    (m.to_owned(), serde_json::json!({"value": a.mean, "windowStart": crate::model::fmt_millis(&a.window_start), "windowSeconds": a.window_seconds, "anomalyScore": a.anomaly_score}))
                })
                .collect();
            (id, first, last, Value::Object(v))
        })
        .collect()
}

/// The 1-minute rollup buckets a batch's windows touch, once each, sorted
/// (so concurrent writers take their row locks in one order).
pub(crate) fn minute_marks<'a>(aggs: &[&'a Aggregate]) -> Vec<(&'a str, &'a str, DateTime<Utc>)> {
    let marks: std::collections::BTreeSet<(&str, &str, DateTime<Utc>)> = aggs
        .iter()
        .filter_map(|a| {
            rollup::minute_bucket(a.window_seconds, a.window_start)
                .map(|b| (a.device_id.as_str(), a.metric.as_str(), b))
        })
        .collect();
    marks.into_iter().collect()
}
