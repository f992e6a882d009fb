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
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tributary_shared::model;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
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
    }
});
