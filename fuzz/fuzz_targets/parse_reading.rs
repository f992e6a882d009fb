//! Fuzz `tributary_shared::model::parse_reading`, the validation of one
//! untrusted item a device sent.
//!
//! Input: any bytes; those that are JSON are validated (an array's elements
//! each as an item too). Invariants checked (see `common`): an item is either
//! a reading that obeys every documented bound (valid ids, finite metrics
//! exactly as sent, times within skew and age at millisecond precision, limits,
//! a content-derived id when none was sent, a lossless serde round trip) or an
//! error whose reason is non-empty and whose field names the offending part of
//! the item; the answer is deterministic, loosening limits never rejects what
//! tight limits accepted, and a token's device is the only one accepted.
//! The fast path ingest runs first (`model::fast::encode`) accepts only what
//! this general path accepts, and writes the same bytes with the same id;
//! the hand-written time formatter agrees with chrono.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tributary_shared::model;

mod common;

/// The fast path never accepts what the general path refuses, and writes the
/// same bytes and id when it accepts.
fn check_fast_path(raw: &[u8], v: &Value) {
    let tight = common::tight_limits();
    let default = Default::default();
    for device in [Some(common::DEVICE), None] {
        for limits in [&default, &tight] {
            let ctx = model::fast::ItemContext::new(device, common::now(), limits);
            if let Some(enc) = model::fast::encode(raw, &ctx) {
                let r = model::parse_reading(v, device, common::now(), limits)
                    .unwrap_or_else(|e| panic!("fast path accepted what the general path refuses: {e}"));
                assert_eq!(
                    enc.bytes,
                    serde_json::to_vec(&r).expect("serialise"),
                    "fast path bytes differ"
                );
                assert_eq!((&enc.id, &enc.device_id), (&r.id, &r.device_id));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Any 8 bytes as epoch milliseconds: the hand-written formatter agrees with chrono.
    if let Some(ms) = data
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_le_bytes)
    {
        let ms = ms % 400_000_000_000_000; // chrono's range is about ±262,000 years
        if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
            let mut buf = [0u8; 24];
            if let Some(s) = model::write_millis(ms, &mut buf) {
                assert_eq!(s, t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            } else {
                assert!(!(0..=9999).contains(&chrono::Datelike::year(&t)), "{t} not formatted");
            }
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_fast_path(data, &v);
    common::check_parse(&v);
    if let Some(ts) = v.get("timestamp")
        && let Ok(t) = model::parse_timestamp(ts)
    {
        assert_eq!(t, model::truncate_millis(t), "timestamps are truncated to milliseconds");
    }
    if let Value::Array(items) = &v {
        for item in items.iter().take(64) {
            common::check_parse(item);
        }
        if let Ok(raws) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(data) {
            for (raw, item) in raws.iter().zip(items).take(64) {
                check_fast_path(raw.get().as_bytes(), item);
            }
        }
    }
});
