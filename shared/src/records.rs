//! The records analyze publishes (the contract process and the dashboard read): [`Aggregate`] on `telemetry.aggregates`
//! and [`Alert`] on `telemetry.alerts` (see `docs/ARCHITECTURE.md`, "Records").
//!
//! Guarantees: camelCase JSON, times as RFC 3339 UTC with milliseconds and a
//! `Z` (the same format as `Reading`), and identities that make every write
//! idempotent: an aggregate is identified by (device, metric, window size,
//! window start), an alert by its deterministic `id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sketch::QuantileSketch;

/// Summary of one metric of one device over one event-time tumbling window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// The device the readings came from (also the Kafka key).
    pub device_id: String,
    /// The metric name.
    pub metric: String,
    /// Window length in seconds.
    pub window_seconds: u32,
    /// Inclusive start of the window; with device, metric and size the identity.
    #[serde(with = "crate::model::millis_rfc3339")]
    pub window_start: DateTime<Utc>,
    /// Exclusive end of the window (`window_start + window_seconds`).
    #[serde(with = "crate::model::millis_rfc3339")]
    pub window_end: DateTime<Utc>,
    /// Number of values in the window (at least 1).
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation (divides by `count`, so 0 for one value).
    pub stddev: f64,
    /// Median estimate (relative error bound of the analyze function's quantile sketch).
    pub p50: f64,
    /// 95th percentile estimate.
    pub p95: f64,
    /// 99th percentile estimate.
    pub p99: f64,
    /// Highest anomaly score of any value in the window, in [0, 1].
    pub anomaly_score: f64,
    /// The model that gave `anomaly_score` (`"none"` when no model scored).
    pub model: String,
    /// Lower edge of the band the models expected the window's values in:
    /// the lowest of the bands they gave its values (a value outside its own
    /// band scores 0.5 or more). Absent while the models warm up, for a
    /// window with no scored value, and from analyze versions before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_low: Option<f64>,
    /// Upper edge of that band (the highest of the values' bands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_high: Option<f64>,
    /// Some value in the window was scored while the models were still
    /// learning the series: its score is not yet to be trusted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warming: bool,
    /// The window's quantile sketch (base64 of
    /// [`QuantileSketch::to_bytes`]): what lets the results store merge
    /// windows into rollups whose p50/p95/p99 keep the sketch's relative
    /// error. Absent from analyze versions before it; such windows roll up
    /// with approximate quantiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<QuantileSketch>,
}

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// First record of an incident.
    Opened,
    /// The incident is still going on (sent at most every update interval).
    Updated,
    /// The score stayed low long enough: the incident is over.
    Resolved,
    /// An operator acknowledged the incident on the dashboard. Never on the
    /// alerts topic: the dashboard queues this record for the notification
    /// channels only (PagerDuty's `acknowledge`).
    Acknowledged,
}

impl AlertState {
    /// The name a record carries (`opened`, `updated`, `resolved`, `acknowledged`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Updated => "updated",
            Self::Resolved => "resolved",
            Self::Acknowledged => "acknowledged",
        }
    }
}

/// One state change of an incident. All records of an incident share `id`,
/// so a store keyed by it keeps the latest state and a replay overwrites.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Deterministic id: a hash of device, metric, model and `opened_at`.
    pub id: String,
    /// The device.
    pub device_id: String,
    /// The metric.
    pub metric: String,
    /// The model that opened the incident.
    pub model: String,
    /// The latest score, in [0, 1].
    pub score: f64,
    /// The latest value of the metric.
    pub value: f64,
    /// Human-readable reason.
    pub reason: String,
    /// How urgent: the rule's severity for an incident a rule opened,
    /// `warning` for the models' (and for records from before severities).
    #[serde(default)]
    pub severity: crate::rules::Severity,
    /// Opened, updated or resolved.
    pub state: AlertState,
    /// Event time of the reading that opened the incident.
    #[serde(with = "crate::model::millis_rfc3339")]
    pub opened_at: DateTime<Utc>,
    /// Event time of the reading that produced this record.
    #[serde(with = "crate::model::millis_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().expect("valid")
    }

    #[test]
    fn aggregate_json_is_camel_case_with_ms_times_and_round_trips() {
        let a = Aggregate {
            device_id: "d".into(),
            metric: "temp".into(),
            window_seconds: 10,
            window_start: t(1_795_608_000_000),
            window_end: t(1_795_608_010_000),
            count: 2,
            min: 1.0,
            max: 2.0,
            mean: 1.5,
            stddev: 0.5,
            p50: 1.0,
            p95: 2.0,
            p99: 2.0,
            anomaly_score: 0.25,
            model: "spike".into(),
            expected_low: Some(0.5),
            expected_high: Some(2.5),
            warming: false,
            sketch: None,
        };
        let v = serde_json::to_value(&a).expect("serialise");
        assert_eq!(v["windowStart"], "2026-11-25T12:00:00.000Z");
        assert_eq!(v["deviceId"], "d");
        assert_eq!(v["anomalyScore"], 0.25);
        assert_eq!(
            (v["expectedLow"].clone(), v["expectedHigh"].clone()),
            (0.5.into(), 2.5.into())
        );
        assert!(v.get("warming").is_none(), "false is left out: {v}");
        let back: Aggregate = serde_json::from_value(v).expect("deserialise");
        assert_eq!(back, a);
    }

    #[test]
    fn aggregate_from_an_older_analyze_has_no_band_and_is_not_warming() {
        let v = serde_json::json!({
            "deviceId": "d", "metric": "m", "windowSeconds": 10,
            "windowStart": "2026-11-25T12:00:00.000Z", "windowEnd": "2026-11-25T12:00:10.000Z",
            "count": 1, "min": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0.0,
            "p50": 1.0, "p95": 1.0, "p99": 1.0, "anomalyScore": 0.0, "model": "none"
        });
        let a: Aggregate = serde_json::from_value(v).expect("an older record still reads");
        assert_eq!((a.expected_low, a.expected_high, a.warming), (None, None, false));
        let warm = Aggregate { warming: true, ..a };
        assert_eq!(serde_json::to_value(&warm).expect("serialise")["warming"], true);
    }

    #[test]
    fn alert_state_is_lowercase() {
        let a = Alert {
            id: "x".into(),
            device_id: "d".into(),
            metric: "m".into(),
            model: "threshold".into(),
            score: 1.0,
            value: 95.0,
            reason: "r".into(),
            severity: crate::rules::Severity::Critical,
            state: AlertState::Resolved,
            opened_at: t(1000),
            updated_at: t(2500),
        };
        let v = serde_json::to_value(&a).expect("serialise");
        assert_eq!(v["state"], "resolved");
        assert_eq!(v["updatedAt"], "1970-01-01T00:00:02.500Z");
        assert_eq!(v["severity"], "critical");
        assert_eq!(serde_json::from_value::<Alert>(v).expect("deserialise"), a);
    }
}
