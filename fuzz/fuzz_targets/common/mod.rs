//! Invariants shared by the fuzz targets: what `parse_reading` promises about
//! every answer it gives, whatever the input.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use tributary_shared::model::{self, ItemError, Limits, Reading};

/// The fixed "server clock" of the targets: 2026-11-25T12:00:00Z.
pub const NOW_MS: i64 = 1_795_608_000_000;
/// The device the request's token was issued to.
pub const DEVICE: &str = "dev-1";

pub fn now() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(NOW_MS).single().expect("valid constant")
}

/// Small limits, so the fuzzer reaches every limit branch with short inputs.
pub fn tight_limits() -> Limits {
    Limits {
        max_metrics: 3,
        max_tags: 2,
        max_tag_value_len: 8,
        max_future_skew: chrono::Duration::seconds(30),
        max_age: chrono::Duration::hours(1),
    }
}

const KNOWN: &[&str] = &[
    "schemaVersion",
    "id",
    "deviceId",
    "timestamp",
    "metrics",
    "tags",
    "location",
];

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// An error names a field that really is in (or missing from) the item:
/// empty only when the item is not an object; otherwise a top-level field
/// (known, or an unknown key the item holds), or `metrics.<k>`, `tags.<k>`,
/// `location.<k>` for a key inside that object (or a missing lat/lon).
pub fn check_error_names_a_field(item: &Value, e: &ItemError) {
    assert!(!e.reason.is_empty(), "empty reason for field '{}'", e.field);
    let Some(obj) = item.as_object() else {
        assert_eq!(e.field, "", "a non-object item is rejected as a whole: {e:?}");
        return;
    };
    // An empty top-level key cannot be named by a path, so it is reported on
    // the item as a whole, with a reason saying so (found by this target).
    if obj.contains_key("") {
        assert_eq!(e.field, "", "an empty key is reported on the item: {e:?}");
        assert!(e.reason.contains("empty name"), "the reason names the empty key: {e:?}");
        return;
    }
    assert!(
        !e.field.is_empty(),
        "an object item's error must name a field: {e:?} for {item}"
    );
    if KNOWN.contains(&e.field.as_str()) {
        return;
    }
    if obj.contains_key(&e.field) {
        // An unknown top-level field the item really has.
        assert!(!KNOWN.contains(&e.field.as_str()));
        return;
    }
    let (head, key) = e
        .field
        .split_once('.')
        .unwrap_or_else(|| panic!("field '{}' is neither a known field nor in the item: {item}", e.field));
    match head {
        "metrics" | "tags" => {
            let sub = obj
                .get(head)
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("'{}' named but {head} is not an object", e.field));
            assert!(sub.contains_key(key), "'{}' names a key not in {head}", e.field);
        }
        "location" => {
            let sub = obj
                .get("location")
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("'{}' named but location is not an object", e.field));
            assert!(
                sub.contains_key(key) || key == "lat" || key == "lon",
                "'{}' names a key not in location",
                e.field
            );
        }
        _ => panic!("field '{}' has an unknown head", e.field),
    }
}

/// What an accepted reading must satisfy.
pub fn check_reading(item: &Value, device: Option<&str>, limits: &Limits, r: &Reading) {
    let obj = item.as_object().expect("only objects are accepted");
    assert_eq!(r.schema_version, model::SCHEMA_VERSION);
    assert!(model::valid_id(&r.id), "invalid id {:?}", r.id);
    assert!(model::valid_id(&r.device_id), "invalid device id {:?}", r.device_id);
    if let Some(d) = device {
        assert_eq!(r.device_id, d, "a token for {d} accepted a reading of {}", r.device_id);
    } else {
        assert_eq!(
            obj.get("deviceId").and_then(Value::as_str),
            Some(r.device_id.as_str()),
            "without a token device the item must name it"
        );
    }
    // Event time: within the allowed skew and age, millisecond precision.
    let now = now();
    assert!(
        r.event_time <= now + limits.max_future_skew && r.event_time >= now - limits.max_age,
        "event time {} out of bounds",
        r.event_time
    );
    assert_eq!(
        r.event_time.timestamp_subsec_nanos() % 1_000_000,
        0,
        "sub-millisecond precision kept"
    );
    assert_eq!(r.received_time, model::truncate_millis(now));
    // Metrics: at least one, within the limit, valid names, finite values, exactly the item's.
    assert!(!r.metrics.is_empty() && r.metrics.len() <= limits.max_metrics);
    let sent = obj.get("metrics").and_then(Value::as_object).expect("metrics object");
    assert_eq!(sent.len(), r.metrics.len(), "metrics dropped or invented");
    for (k, v) in &r.metrics {
        assert!(valid_name(k) && v.is_finite(), "metric {k}={v}");
        assert_eq!(sent.get(k).and_then(Value::as_f64), Some(*v), "metric {k} changed");
    }
    assert!(r.tags.len() <= limits.max_tags);
    for (k, v) in &r.tags {
        assert!(valid_name(k) && v.len() <= limits.max_tag_value_len, "tag {k}={v}");
    }
    if let Some(l) = &r.location {
        assert!(
            (-90.0..=90.0).contains(&l.lat) && (-180.0..=180.0).contains(&l.lon),
            "location {l:?}"
        );
        assert!(l.alt.is_none_or(f64::is_finite));
    }
    // The id: the device's own, or derived from the content (stable, so retries are idempotent).
    match obj.get("id") {
        Some(Value::String(s)) => assert_eq!(&r.id, s),
        _ => assert_eq!(
            r.id,
            model::derived_id(&r.device_id, &r.event_time, &r.metrics, &r.tags, r.location.as_ref())
        ),
    }
    // What ingest writes to telemetry.raw reads back as the same reading.
    let bytes = serde_json::to_vec(r).expect("a reading serialises");
    let back: Reading = serde_json::from_slice(&bytes).expect("a serialised reading deserialises");
    assert_eq!(&back, r, "serde round trip changed the reading");
}

/// Validate `item` under the default and the tight limits, with and without a
/// token device, and check every answer.
pub fn check_parse(item: &Value) {
    let now = now();
    let default = Limits::default();
    let tight = tight_limits();
    let mut results = Vec::new();
    for device in [Some(DEVICE), None] {
        for limits in [&default, &tight] {
            let got = model::parse_reading(item, device, now, limits);
            // Deterministic: the same input gives the same answer (and id).
            assert_eq!(got, model::parse_reading(item, device, now, limits));
            match &got {
                Ok(r) => check_reading(item, device, limits, r),
                Err(e) => check_error_names_a_field(item, e),
            }
            results.push(got);
        }
    }
    let [tok_default, tok_tight, none_default, none_tight] = <[_; 4]>::try_from(results).expect("four results");
    // Loosening the limits never turns an accepted reading into a rejected one.
    if let Ok(r) = &tok_tight {
        assert_eq!(
            tok_default.as_ref(),
            Ok(r),
            "accepted under tight limits but not under the defaults"
        );
    }
    if let Ok(r) = &none_tight {
        assert_eq!(none_default.as_ref(), Ok(r));
    }
    // An item that names the token's own device is read the same with or without the token.
    if item.get("deviceId").and_then(Value::as_str) == Some(DEVICE) {
        assert_eq!(
            tok_default, none_default,
            "deviceId == token device must not change the answer"
        );
    }
    // An item without deviceId is never accepted without a token to say whose it is.
    if item.get("deviceId").is_none() {
        assert!(none_default.is_err());
    }
}
