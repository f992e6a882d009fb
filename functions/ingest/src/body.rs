//! Turning a request body into items: content types, gzip, size limits.
//!
//! Accepted: `application/json` (one reading or an array of readings) and
//! `application/x-ndjson` (one reading per line; `application/jsonl` too),
//! optionally `Content-Encoding: gzip`. The decoded size is capped separately
//! from the sent size so a small gzip bomb cannot expand without bound.

use std::borrow::Cow;
use std::io::Read;

use serde_json::value::RawValue;

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
        return Err(ApiError::UnsupportedMediaType(
            "missing Content-Type (use application/json or application/x-ndjson)".into(),
        ));
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Ok(Format::NdJson)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{essence}' is not supported (use application/json or application/x-ndjson)"
        ))),
    }
}

/// Decode per `Content-Encoding`, refusing to produce more than `max_decoded`
/// bytes. An unencoded body is borrowed, not copied.
pub fn decode<'a>(encoding: Option<&str>, body: &'a [u8], max_decoded: usize) -> Result<Cow<'a, [u8]>, ApiError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > max_decoded {
                return Err(ApiError::PayloadTooLarge(format!("body exceeds {max_decoded} bytes")));
            }
            Ok(Cow::Borrowed(body))
        }
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_decoded));
            let mut dec = flate2::read::GzDecoder::new(body).take(max_decoded as u64 + 1);
            dec.read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > max_decoded {
                return Err(ApiError::PayloadTooLarge(format!(
                    "decoded body exceeds {max_decoded} bytes"
                )));
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding '{other}' is not supported (use gzip or none)"
        ))),
    }
}

/// Split a decoded body into its items' raw JSON, refusing more than
/// `max_items`. Items are not parsed here: each goes to
/// [`tributary_shared::model::fast::encode_item`], so a bad item is one
/// rejected item and the others still count. An NDJSON line that is not JSON
/// comes back as is and is rejected there as malformed.
pub fn items(format: Format, body: &[u8], max_items: usize) -> Result<Vec<&[u8]>, ApiError> {
    let items: Vec<&[u8]> = match format {
        Format::Json => json_items(body, max_items)?,
        Format::NdJson => {
            let mut v = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if v.len() == max_items {
                    return Err(ApiError::PayloadTooLarge(format!(
                        "more than {max_items} readings in one request"
                    )));
                }
                v.push(line);
            }
            v
        }
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("the request holds no readings".into()));
    }
    Ok(items)
}

/// A JSON body: one object, or an array whose elements are the items. The
/// elements are only delimited (serde_json's `RawValue`), not parsed.
fn json_items(body: &[u8], max_items: usize) -> Result<Vec<&[u8]>, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            // Checked as UTF-8 once here; from bytes, each element would be checked again.
            let elements: Vec<&RawValue> = match std::str::from_utf8(body) {
                Ok(text) => serde_json::from_str(text),
                Err(_) => serde_json::from_slice(body),
            }
            .map_err(|_| not_items(body))?;
            if elements.len() > max_items {
                return Err(ApiError::PayloadTooLarge(format!(
                    "{} readings in one request, at most {max_items} allowed",
                    elements.len()
                )));
            }
            Ok(elements.into_iter().map(|e| e.get().as_bytes()).collect())
        }
        Some(b'{') => {
            let whole: &RawValue = serde_json::from_slice(body).map_err(|_| not_items(body))?;
            Ok(vec![whole.get().as_bytes()])
        }
        _ => Err(not_items(body)),
    }
}

/// Why a body is not an object or an array of objects, in serde_json's words
/// when it is not JSON at all.
fn not_items(body: &[u8]) -> ApiError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => ApiError::BadRequest("expected a JSON object or an array of objects".into()),
        Err(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
    }
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
        assert!(matches!(
            format(Some("text/plain")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(format(None), Err(ApiError::UnsupportedMediaType(_))));
    }

    #[test]
    fn gzip_round_trip_and_bomb_guard() {
        let data = vec![b' '; 100_000];
        let z = gzip(&data);
        assert!(z.len() < 1_000);
        assert_eq!(decode(Some("gzip"), &z, 100_000).expect("fits").len(), 100_000);
        assert!(matches!(
            decode(Some("gzip"), &z, 99_999),
            Err(ApiError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode(Some("br"), b"x", 10),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn ndjson_keeps_going_past_a_bad_line() {
        let got = items(Format::NdJson, b"{\"a\":1}\n\nnot json\r\n{\"b\":2}\n", 10).expect("items");
        assert_eq!(got, vec![&b"{\"a\":1}"[..], b"not json", b"{\"b\":2}"]);
        assert!(matches!(
            items(Format::NdJson, b"{}\n{}\n{}", 2),
            Err(ApiError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            items(Format::Json, b"[{},{},{}]", 2),
            Err(ApiError::PayloadTooLarge(_))
        ));
        assert!(matches!(items(Format::Json, b"[]", 2), Err(ApiError::BadRequest(_))));
        assert!(matches!(items(Format::Json, b"{", 2), Err(ApiError::BadRequest(_))));
        assert!(matches!(items(Format::Json, b"42", 2), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn json_items_are_the_elements_raw() {
        let got = items(
            Format::Json,
            b" [ {\"a\": [1, {\"b\": \"]\"}]} ,\n{\"c\":\"x\\\"y\"} ] ",
            10,
        )
        .expect("items");
        assert_eq!(got, vec![&b"{\"a\": [1, {\"b\": \"]\"}]}"[..], b"{\"c\":\"x\\\"y\"}"]);
        assert_eq!(
            items(Format::Json, b"\n {\"a\":1} \n", 10).expect("one object"),
            vec![&b"{\"a\":1}"[..]]
        );
        // A non-object element is an item (rejected later, by itself), not a failed request.
        assert_eq!(
            items(Format::Json, b"[1,{}]", 10).expect("items"),
            vec![&b"1"[..], b"{}"]
        );
        match items(Format::Json, b"[{\"a\":1},", 10) {
            Err(ApiError::BadRequest(m)) => assert!(m.starts_with("malformed JSON: ") && m.contains("line 1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
