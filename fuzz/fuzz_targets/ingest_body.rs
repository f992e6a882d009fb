//! Fuzz the ingest body parser (`tributary_ingest::body`: Content-Type,
//! Content-Encoding with the gzip-bomb guard, JSON / NDJSON splitting) and, for
//! every item it yields, `parse_reading`, exactly as the request handler does.
//!
//! Input layout: byte 0 is a flags byte, byte 1 sets the decoded-size cap, the
//! rest is the body. Flags: bit 0 NDJSON (else JSON); bit 1 gzip the body here
//! and send it with `Content-Encoding: gzip` (round trip); bit 2 send the body
//! as is but claim `x-gzip` (arbitrary bytes into the gzip decoder); bits 3-7
//! give the batch limit, 1 + (flags >> 3). The cap is 256 * (1 + byte1 % 16).
//! Seeds (fuzz/corpus/ingest_body) start with printable flag bytes: `@` JSON,
//! `A` NDJSON, `B` JSON gzipped, `C` NDJSON gzipped, `D` JSON claimed gzip;
//! all with a batch limit of 9.
//!
//! Invariants: decoding returns the body itself (identity or gzip round trip)
//! when it fits the cap and PayloadTooLarge when not, never more than the cap
//! from any gzip stream; a request is refused only as BadRequest or
//! PayloadTooLarge, with a message; JSON yields one item per array element
//! (or one object), NDJSON one per non-blank line, within the batch limit and
//! never zero; re-sending a JSON array as NDJSON yields the same items; every
//! item is then encoded exactly as the general path (`parse_reading` on a
//! `Value`, then serde) would, or rejected with its error, naming a field
//! (see `common`).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tributary_ingest::body::{self, Format};
use tributary_ingest::error::ApiError;
use tributary_shared::model;

mod common;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("write to a Vec");
    e.finish().expect("finish to a Vec")
}

/// The request is refused as a whole only for these reasons, each with a message.
fn check_refusal(e: &ApiError) {
    match e {
        ApiError::BadRequest(m) | ApiError::PayloadTooLarge(m) => assert!(!m.is_empty()),
        other => panic!("a body can only be a bad request or too large, got {other:?}"),
    }
}

fn nonblank_lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [flags, cap, body @ ..] = data else { return };
    let fmt = if flags & 1 == 1 { Format::NdJson } else { Format::Json };
    let max_items = 1 + usize::from(flags >> 3);
    let max_decoded = 256 * (1 + usize::from(cap % 16));

    // Content-Type: the documented names map to their format, in any case, with parameters.
    let ct = if fmt == Format::Json {
        "Application/JSON; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    assert_eq!(body::format(Some(ct)).ok(), Some(fmt));

    // Content-Encoding.
    let decoded = if flags & 2 == 2 {
        let zipped = gzip(body);
        let got = body::decode(Some("gzip"), &zipped, max_decoded);
        if body.len() <= max_decoded {
            assert_eq!(got.as_deref().ok(), Some(body), "gzip round trip changed the body");
        } else {
            assert!(
                matches!(got, Err(ApiError::PayloadTooLarge(_))),
                "an over-cap gzip body was not refused as too large"
            );
            return;
        }
        std::borrow::Cow::Borrowed(body)
    } else if flags & 4 == 4 {
        // Arbitrary bytes claimed to be gzip: never more than the cap, never a panic.
        match body::decode(Some("x-gzip"), body, max_decoded) {
            Ok(out) => {
                assert!(
                    out.len() <= max_decoded,
                    "gzip bomb guard let {} > {max_decoded} bytes through",
                    out.len()
                );
                out
            }
            Err(e) => return check_refusal(&e),
        }
    } else {
        match body::decode(None, body, max_decoded) {
            Ok(out) => {
                assert!(
                    body.len() <= max_decoded && out == body,
                    "identity decoding changed the body or ignored the cap"
                );
                out
            }
            Err(e) => {
                assert!(
                    body.len() > max_decoded && matches!(e, ApiError::PayloadTooLarge(_)),
                    "identity decoding refused a body within the cap: {e:?}"
                );
                return;
            }
        }
    };

    // Splitting into items.
    let items = match body::items(fmt, &decoded, max_items) {
        Ok(items) => items,
        Err(e) => {
            check_refusal(&e);
            // Refused for a reason the spec gives.
            match fmt {
                Format::Json => match serde_json::from_slice::<Value>(&decoded) {
                    Ok(Value::Array(v)) => assert!(
                        v.is_empty() || v.len() > max_items,
                        "array of {} refused: {e:?}",
                        v.len()
                    ),
                    Ok(Value::Object(_)) => panic!("a single object was refused: {e:?}"),
                    Ok(_) | Err(_) => assert!(matches!(e, ApiError::BadRequest(_))),
                },
                Format::NdJson => {
                    let n = nonblank_lines(&decoded).len();
                    assert!(n == 0 || n > max_items, "{n} lines refused: {e:?}");
                }
            }
            return;
        }
    };
    assert!(
        !items.is_empty() && items.len() <= max_items,
        "{} items, limit {max_items}",
        items.len()
    );
    match fmt {
        Format::Json => {
            let whole: Value = serde_json::from_slice(&decoded).expect("items() accepted it, so it is JSON");
            let parsed: Vec<Value> = items
                .iter()
                .map(|i| serde_json::from_slice(i).expect("a JSON body's items are JSON"))
                .collect();
            match &whole {
                Value::Array(v) => assert_eq!(&parsed, v, "the items are not the array's elements"),
                Value::Object(_) => assert_eq!(parsed, vec![whole.clone()]),
                other => panic!("JSON {other} accepted as items"),
            }
            // The same readings sent as NDJSON give the same items.
            let lines: Vec<String> = parsed
                .iter()
                .map(|v| serde_json::to_string(v).expect("serialise"))
                .collect();
            let joined = lines.join("\n");
            let nd = body::items(Format::NdJson, joined.as_bytes(), max_items).expect("the same items as NDJSON");
            let nd: Vec<Value> = nd
                .iter()
                .map(|i| serde_json::from_slice(i).expect("JSON lines"))
                .collect();
            assert_eq!(nd, parsed, "JSON array and NDJSON disagree");
        }
        Format::NdJson => assert_eq!(items, nonblank_lines(&decoded), "one item per non-blank line, as sent"),
    }

    // Each item, as the handler validates and encodes it: exactly what the
    // general path (parse_reading on a Value) gives, or its error.
    let no_defaults = Default::default();
    let ctx = model::fast::ItemContext::new(Some(common::DEVICE), common::now(), &no_defaults);
    for item in &items {
        let got = model::fast::encode_item(item, &ctx);
        match serde_json::from_slice::<Value>(item) {
            Ok(v) => {
                let general = model::parse_reading(&v, Some(common::DEVICE), common::now(), &Default::default());
                match (&got, &general) {
                    (Ok(enc), Ok(r)) => {
                        common::check_reading(&v, Some(common::DEVICE), &Default::default(), r);
                        assert_eq!(
                            enc.bytes,
                            serde_json::to_vec(r).expect("serialise"),
                            "the record differs from the general path's"
                        );
                        assert_eq!((&enc.id, &enc.device_id), (&r.id, &r.device_id));
                    }
                    (Err(e), Err(g)) => {
                        assert_eq!(e, g, "a different error than the general path's");
                        common::check_error_names_a_field(&v, e);
                    }
                    _ => panic!("encode_item {got:?} but the general path {general:?}"),
                }
            }
            Err(_) => {
                let e = got.expect_err("bytes that are not JSON were accepted");
                assert!(
                    e.field.is_empty() && e.reason.starts_with("malformed JSON line"),
                    "{e:?}"
                );
            }
        }
    }
});
