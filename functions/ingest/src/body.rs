//! Turning a request body into items: content types, gzip, size limits.
//!
//! Accepted: `application/json` (one reading or an array of readings) and
//! `application/x-ndjson` (one reading per line; `application/jsonl` too),
//! optionally `Content-Encoding: gzip`. The decoded size is capped separately
//! from the sent size so a small gzip bomb cannot expand without bound.

use std::io::Read;

use serde_json::Value;

use crate::error::ApiError;

/// The body's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON value: an object or an array of objects.
    Json,
    /// Newline-delimited JSON objects.
    NdJson,
}

/// Map a `Content-Type` header to a format.
pub fn format(content_type: Option<&str>) -> Result<Format, ApiError> {
    let Some(ct) = content_type else {
        return Err(ApiError::UnsupportedMediaType("missing Content-Type (use application/json or application/x-ndjson)".into()));
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => Ok(Format::NdJson),
        _ => Err(ApiError::UnsupportedMediaType(format!("Content-Type '{essence}' is not supported (use application/json or application/x-ndjson)"))),
    }
}

/// Decode per `Content-Encoding`, refusing to produce more than `max_decoded` bytes.
pub fn decode(encoding: Option<&str>, body: &[u8], max_decoded: usize) -> Result<Vec<u8>, ApiError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > max_decoded {
                return Err(ApiError::PayloadTooLarge(format!("body exceeds {max_decoded} bytes")));
            }
            Ok(body.to_vec())
        }
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_decoded));
            let mut dec = flate2::read::GzDecoder::new(body).take(max_decoded as u64 + 1);
            dec.read_to_end(&mut out).map_err(|e| ApiError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > max_decoded {
                return Err(ApiError::PayloadTooLarge(format!("decoded body exceeds {max_decoded} bytes")));
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!("Content-Encoding '{other}' is not supported (use gzip or none)"))),
    }
}

/// One item of the request: a parsed JSON value, or why its line did not parse.
pub type Item = Result<Value, String>;

/// Split a decoded body into items, refusing more than `max_items`.
pub fn items(format: Format, body: &[u8], max_items: usize) -> Result<Vec<Item>, ApiError> {
    let items: Vec<Item> = match format {
        Format::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(v)) => {
                if v.len() > max_items {
                    return Err(ApiError::PayloadTooLarge(format!("{} readings in one request, at most {max_items} allowed", v.len())));
                }
                v.into_iter().map(Ok).collect()
            }
            Ok(v @ Value::Object(_)) => vec![Ok(v)],
            Ok(_) => return Err(ApiError::BadRequest("expected a JSON object or an array of objects".into())),
            Err(e) => return Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
        },
        Format::NdJson => {
            let mut v = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if v.len() == max_items {
                    return Err(ApiError::PayloadTooLarge(format!("more than {max_items} readings in one request")));
                }
                // A bad line is one rejected item, not a failed request: the other lines still count.
                v.push(serde_json::from_slice::<Value>(line).map_err(|e| format!("malformed JSON line: {e}")));
            }
            v
        }
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("the request holds no readings".into()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn content_types() {
        assert_eq!(format(Some("application/json; charset=utf-8")).ok(), Some(Format::Json));
        assert_eq!(format(Some("Application/X-NDJSON")).ok(), Some(Format::NdJson));
        assert!(matches!(format(Some("text/plain")), Err(ApiError::UnsupportedMediaType(_))));
        assert!(matches!(format(None), Err(ApiError::UnsupportedMediaType(_))));
    }

    #[test]
    fn gzip_round_trip_and_bomb_guard() {
        let data = vec![b' '; 100_000];
        let z = gzip(&data);
        assert!(z.len() < 1_000);
        assert_eq!(decode(Some("gzip"), &z, 100_000).expect("fits").len(), 100_000);
        assert!(matches!(decode(Some("gzip"), &z, 99_999), Err(ApiError::PayloadTooLarge(_))));
        assert!(matches!(decode(Some("gzip"), b"not gzip", 10), Err(ApiError::BadRequest(_))));
        assert!(matches!(decode(Some("br"), b"x", 10), Err(ApiError::UnsupportedMediaType(_))));
    }

    #[test]
    fn ndjson_keeps_going_past_a_bad_line() {
        let got = items(Format::NdJson, b"{\"a\":1}\n\nnot json\r\n{\"b\":2}\n", 10).expect("items");
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[1].is_err() && got[2].is_ok());
        assert!(matches!(items(Format::NdJson, b"{}\n{}\n{}", 2), Err(ApiError::PayloadTooLarge(_))));
        assert!(matches!(items(Format::Json, b"[{},{},{}]", 2), Err(ApiError::PayloadTooLarge(_))));
        assert!(matches!(items(Format::Json, b"[]", 2), Err(ApiError::BadRequest(_))));
        assert!(matches!(items(Format::Json, b"{", 2), Err(ApiError::BadRequest(_))));
        assert!(matches!(items(Format::Json, b"42", 2), Err(ApiError::BadRequest(_))));
    }
}
