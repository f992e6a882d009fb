//! The fast path from one item's raw JSON to its `telemetry.raw` record.
//!
//! [`encode_item`] is what ingest runs per item. It first tries [`encode`]:
//! a typed, borrowing parse (no `serde_json::Value`, no owned strings for
//! names the item already holds) that writes the record bytes directly. That
//! path only handles items that are valid in every respect; anything unusual
//! (an invalid field, a duplicate key, an unknown field, a year past 9999)
//! makes it give up, and the item goes through the general path,
//! [`parse_reading`] on a `Value`, which names the offending field.
//!
//! Guarantee: whenever [`encode`] returns a record, the general path accepts
//! the same item and serialises exactly the same bytes with the same id. The
//! unit tests check it on hand-picked items and the `parse_reading` fuzz
//! target checks it on arbitrary ones.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use smallvec::SmallVec;

use super::{
    ItemError, Limits, Location, SCHEMA_VERSION, derived_id_of, parse_reading, truncate_millis, valid_id, valid_name,
    write_millis,
};

/// What every item of one request shares: the device the token was issued
/// to, the receive time (stamped once per request) and the limits.
pub struct ItemContext<'a> {
    device: Option<&'a str>,
    now: DateTime<Utc>,
    received: [u8; 24],
    received_ok: bool,
    limits: &'a Limits,
}

impl<'a> ItemContext<'a> {
    /// Context for items received at `now` on a request authenticated as
    /// `device` (`None`: each item must name its device).
    pub fn new(device: Option<&'a str>, now: DateTime<Utc>, limits: &'a Limits) -> Self {
        let now = truncate_millis(now);
        let mut received = [0u8; 24];
        let received_ok = write_millis(now.timestamp_millis(), &mut received).is_some();
        Self {
            device,
            now,
            received,
            received_ok,
            limits,
        }
    }
}

/// One valid item, ready to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The reading's id (sent by the device or derived from its content).
    pub id: String,
    /// The device id: the record's key.
    pub device_id: String,
    /// The record: the [`super::Reading`] as JSON, schema version 1.
    pub bytes: Vec<u8>,
}

/// Validate one item given as raw JSON and encode it for `telemetry.raw`:
/// the fast path when it applies, else the general one. The error names the
/// offending field exactly as [`parse_reading`] does; bytes that are not JSON
/// are rejected as a whole (`malformed JSON line: ...`).
pub fn encode_item(raw: &[u8], ctx: &ItemContext<'_>) -> Result<Encoded, ItemError> {
    if let Some(e) = encode(raw, ctx) {
        return Ok(e);
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| ItemError::new("", format!("malformed JSON line: {e}")))?;
    let reading = parse_reading(&v, ctx.device, ctx.now, ctx.limits)?;
    let bytes = serde_json::to_vec(&reading).map_err(|e| ItemError::new("", format!("cannot encode: {e}")))?;
    Ok(Encoded {
        id: reading.id,
        device_id: reading.device_id,
        bytes,
    })
}

/// The fast path alone: `Some` only for an item that is valid in every
/// respect, with the bytes the general path would write; `None` means "ask
/// the general path" (which may still accept the item).
pub fn encode(raw: &[u8], ctx: &ItemContext<'_>) -> Option<Encoded> {
    if !ctx.received_ok {
        return None;
    }
    // One UTF-8 check for the whole item: parsing from bytes would check
    // every string in it again, one call each (bytes that are not UTF-8 go to
    // the general path, which names the error).
    let text = std::str::from_utf8(raw).ok()?;
    let w: Wire<'_> = serde_json::from_str(text).ok()?;
    let limits = ctx.limits;
    if w.schema_version.0.is_some_and(|n| n != u64::from(SCHEMA_VERSION)) {
        return None;
    }
    let device_id: &str = match (&w.device_id.0, ctx.device) {
        (Some(BStr(s)), _) if !valid_id(s) => return None,
        (Some(BStr(s)), Some(d)) if s.as_ref() != d => return None,
        (Some(BStr(s)), _) => s,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    let event_ms = w.timestamp.0;
    let event_time = Utc.timestamp_millis_opt(event_ms).single()?;
    if event_time > ctx.now + limits.max_future_skew || event_time < ctx.now - limits.max_age {
        return None;
    }

    let mut metrics = w.metrics.0;
    if metrics.is_empty() || metrics.len() > limits.max_metrics {
        return None;
    }
    // A BTreeMap's order, which the general path serialises and hashes in.
    metrics.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if metrics.windows(2).any(|p| p[0].0 == p[1].0) || !metrics.iter().all(|(k, x)| valid_name(k) && x.is_finite()) {
        return None;
    }
    let mut tags = w.tags.map(|t| t.0).unwrap_or_default();
    if tags.len() > limits.max_tags {
        return None;
    }
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if tags.windows(2).any(|p| p[0].0 == p[1].0)
        || !tags
            .iter()
            .all(|(k, v)| valid_name(k) && v.0.len() <= limits.max_tag_value_len)
    {
        return None;
    }
    let location = match w.location {
        None => None,
        Some(l) => {
            let finite = l.lat.is_finite() && l.lon.is_finite() && l.alt.is_none_or(f64::is_finite);
            if !finite || !(-90.0..=90.0).contains(&l.lat) || !(-180.0..=180.0).contains(&l.lon) {
                return None;
            }
            Some(Location {
                lat: l.lat,
                lon: l.lon,
                alt: l.alt,
            })
        }
    };
    let id: Cow<'_, str> = match w.id {
        Some(BStr(s)) if valid_id(&s) => s,
        Some(_) => return None,
        None => Cow::Owned(derived_id_of(
            device_id,
            event_ms,
            metrics.iter().map(|(k, v)| (k.as_ref(), *v)),
            tags.iter().map(|(k, v)| (k.as_ref(), v.0.as_ref())),
            location.as_ref(),
        )),
    };

    // The layout of `Reading`'s serde output, field for field: ids and names
    // were validated to need no escaping, tag values go through serde_json.
    let mut out = Vec::with_capacity(128 + raw.len());
    let mut tbuf = [0u8; 24];
    out.extend_from_slice(b"{\"schemaVersion\":1,\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"deviceId\":\"");
    out.extend_from_slice(device_id.as_bytes());
    out.extend_from_slice(b"\",\"eventTime\":\"");
    out.extend_from_slice(write_millis(event_ms, &mut tbuf)?.as_bytes());
    out.extend_from_slice(b"\",\"receivedTime\":\"");
    out.extend_from_slice(&ctx.received);
    out.extend_from_slice(b"\",\"metrics\":{");
    write_members(&mut out, &metrics, |out, v| {
        write_f64(out, *v);
        Some(())
    })?;
    out.push(b'}');
    if !tags.is_empty() {
        out.extend_from_slice(b",\"tags\":{");
        write_members(&mut out, &tags, |out, v| serde_json::to_writer(out, v.0.as_ref()).ok())?;
        out.push(b'}');
    }
    if let Some(l) = &location {
        out.extend_from_slice(b",\"location\":{\"lat\":");
        write_f64(&mut out, l.lat);
        out.extend_from_slice(b",\"lon\":");
        write_f64(&mut out, l.lon);
        if let Some(alt) = l.alt {
            out.extend_from_slice(b",\"alt\":");
            write_f64(&mut out, alt);
        }
        out.push(b'}');
    }
    out.push(b'}');
    Some(Encoded {
        id: id.into_owned(),
        device_id: device_id.to_owned(),
        bytes: out,
    })
}

/// An object's members `"name":value`, comma-separated; the names were
/// validated to need no escaping.
fn write_members<V>(
    out: &mut Vec<u8>,
    pairs: &[(Cow<'_, str>, V)],
    mut value: impl FnMut(&mut Vec<u8>, &V) -> Option<()>,
) -> Option<()> {
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
        value(out, v)?;
    }
    Some(())
}

/// A finite f64 exactly as serde_json writes it, through its own formatter
/// (its float format has changed between releases).
fn write_f64(out: &mut Vec<u8>, x: f64) {
    use serde_json::ser::Formatter;
    // Writing into a Vec cannot fail.
    let _ = serde_json::ser::CompactFormatter.write_f64(out, x);
}

/// An item as the fast path reads it. Unknown fields and duplicates fail the
/// parse, which sends the item to the general path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(default)]
    schema_version: Present<u64>,
    #[serde(default, borrow)]
    id: Option<BStr<'a>>,
    #[serde(default, borrow)]
    device_id: Present<BStr<'a>>,
    timestamp: EpochMillis,
    #[serde(borrow)]
    metrics: Pairs<'a, f64>,
    #[serde(default, borrow)]
    tags: Option<Pairs<'a, BStr<'a>>>,
    #[serde(default)]
    location: Option<WireLocation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLocation {
    lat: f64,
    lon: f64,
    #[serde(default)]
    alt: Option<f64>,
}

/// A field that may be absent but, when present, must not be `null` (the
/// general path rejects a `null` there, so the fast path must not accept it).
struct Present<T>(Option<T>);

impl<T> Default for Present<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|v| Self(Some(v)))
    }
}

/// An object's entries in document order, names borrowed where unescaped;
/// a typical reading's few metrics and tags stay on the stack.
struct Pairs<'a, V>(SmallVec<[(Cow<'a, str>, V); 4]>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Pairs<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<'a, V>(std::marker::PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for V_<'a, V> {
            type Value = Pairs<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = SmallVec::new();
                while let Some(BStr(k)) = m.next_key::<BStr<'a>>()? {
                    let v = m.next_value::<V>()?;
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// A string, borrowed from the input unless it holds escapes (serde's own
/// `Cow<str>` always allocates).
struct BStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V_).map(BStr)
    }
}

/// An event time: integer epoch milliseconds or an RFC 3339 string,
/// truncated to the millisecond, exactly as [`super::parse_timestamp`] reads them.
struct EpochMillis(i64);

impl<'de> Deserialize<'de> for EpochMillis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'v> Visitor<'v> for V_ {
            type Value = EpochMillis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("epoch milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EpochMillis, E> {
                Ok(EpochMillis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EpochMillis, E> {
                i64::try_from(v).map(EpochMillis).map_err(|_| E::custom("out of range"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EpochMillis, E> {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| EpochMillis(t.timestamp_millis()))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, fmt_millis};

    fn now() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_795_608_000_123).single().expect("valid")
    }

    /// The fast path's answer for `raw`, checked against the general path.
    fn check(raw: &str, device: Option<&str>, limits: &Limits) -> Option<Encoded> {
        let ctx = ItemContext::new(device, now(), limits);
        let fast = encode(raw.as_bytes(), &ctx);
        // None: not JSON at all.
        let general = serde_json::from_str::<Value>(raw)
            .ok()
            .map(|v| parse_reading(&v, device, now(), limits));
        match (&fast, &general) {
            (Some(enc), Some(Ok(r))) => {
                assert_eq!(
                    String::from_utf8_lossy(&enc.bytes),
                    serde_json::to_string(r).expect("serialise"),
                    "{raw}"
                );
                assert_eq!((&enc.id, &enc.device_id), (&r.id, &r.device_id), "{raw}");
                let back: Reading = serde_json::from_slice(&enc.bytes).expect("the record reads back");
                assert_eq!(&back, r);
            }
            (Some(enc), other) => panic!("fast path accepted {raw} as {enc:?}; the general path says {other:?}"),
            (None, _) => {}
        }
        // encode_item always answers as the general path does, fast or not.
        let item = encode_item(raw.as_bytes(), &ctx);
        match (&item, &general) {
            (Ok(enc), Some(Ok(r))) => assert_eq!(enc.bytes, serde_json::to_vec(r).expect("serialise")),
            (Err(a), Some(Err(b))) => assert_eq!(a, b),
            (Err(a), None) => assert!(
                a.field.is_empty() && a.reason.starts_with("malformed JSON line: "),
                "{a}"
            ),
            _ => panic!("encode_item {item:?} vs general {general:?} for {raw}"),
        }
        fast
    }

    #[test]
    fn common_items_take_the_fast_path_and_match_the_general_one() {
        let limits = Limits::default();
        for raw in [
            r#"{"timestamp": 1795608000000, "metrics": {"speed": 40.5, "rpm": 1500, "engine_temp": 88.5}, "tags": {"fw": "1.4.2"}}"#,
            r#"{"id":"r-1","deviceId":"dev-1","timestamp":"2026-11-25T11:59:59.123456Z","metrics":{"temp":21.5,"rpm":3000},"tags":{"fw":"1.2"},"location":{"lat":52.5,"lon":13.4}}"#,
            r#"{"schemaVersion":1,"timestamp":"2026-11-25T13:59:59+02:00","metrics":{"b":-0,"a":1e-7,"c":-12345678901234567890,"d":1.5e300},"location":{"lat":-90,"lon":180,"alt":null}}"#,
            r#"{"timestamp":1795608000000,"metrics":{"x":1},"tags":{"note":"a \"quoted\"\nline \u00e9 \ud83d\ude00 </script>"},"location":{"alt":-3.25,"lon":0.1,"lat":0.2}}"#,
            r#"{"timestamp":1795608000000,"metrics":{"te\u006dp":1},"tags":null,"location":null,"id":null}"#,
            r#"{"timestamp":1795608000000,"metrics":{"x":18446744073709551615},"tags":{}}"#,
        ] {
            assert!(
                check(raw, Some("dev-1"), &limits).is_some(),
                "{raw} should take the fast path"
            );
        }
    }

    #[test]
    fn anything_unusual_goes_to_the_general_path() {
        let limits = Limits::default();
        for raw in [
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "metrcs": {}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1, "x": 2}}"#,
            r#"{"timestamp": 1795608000000, "timestamp": 1795608000000, "metrics": {"x": 1}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "tags": {"a": "1", "a": "2"}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "schemaVersion": null}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "schemaVersion": 1.0}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "deviceId": null}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "deviceId": "dev-2"}"#,
            r#"{"timestamp": 1795608000000.0, "metrics": {"x": 1}}"#,
            r#"{"timestamp": 9223372036854775808, "metrics": {"x": 1}}"#,
            r#"{"timestamp": 1895608000000, "metrics": {"x": 1}}"#,
            r#"{"timestamp": "2026-11-25", "metrics": {"x": 1}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"bad name": 1}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": "1"}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "tags": {"a": 1}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "location": {"lat": 91, "lon": 0}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "location": {"lat": null, "lon": 0}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "location": {"lat": 1, "lon": 0, "h": 2}}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "id": ""}"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}, "": 1}"#,
            r#"[{"timestamp": 1795608000000, "metrics": {"x": 1}}]"#,
            r#"{"timestamp": 1795608000000, "metrics": {"x": 1}} trailing"#,
            "not json",
        ] {
            assert!(
                check(raw, Some("dev-1"), &limits).is_none(),
                "{raw} must not take the fast path"
            );
        }
        // Without a token device the item must name its device.
        assert!(check(r#"{"timestamp": 1795608000000, "metrics": {"x": 1}}"#, None, &limits).is_none());
        assert!(
            check(
                r#"{"deviceId": "d", "timestamp": 1795608000000, "metrics": {"x": 1}}"#,
                None,
                &limits
            )
            .is_some()
        );
    }

    #[test]
    fn generated_items_agree_with_the_general_path() {
        // A small deterministic generator over the fields and the ways they go wrong.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let tight = Limits {
            max_metrics: 3,
            max_tags: 2,
            max_tag_value_len: 8,
            max_future_skew: chrono::Duration::seconds(30),
            max_age: chrono::Duration::hours(1),
        };
        let names = ["a", "b", "a", "speed", "x.y-z_1", "bad name", "", "\\u0061"];
        let numbers = [
            "1",
            "-0",
            "0.1",
            "1e3",
            "-1.5e-300",
            "3000",
            "\"1\"",
            "null",
            "true",
            "18446744073709551616",
        ];
        let times = [
            "1795608000000",
            "1795607990000",
            "1795608100000",
            "1795600000000",
            "\"2026-11-25T11:59:59.999999Z\"",
            "\"2026-11-25T12:00:00+00:30\"",
            "1.5",
            "-1",
            "null",
        ];
        let mut fast = 0;
        for i in 0..5000 {
            let mut fields = Vec::new();
            if next(8) > 0 {
                fields.push(format!("\"timestamp\":{}", times[next(times.len() as u64) as usize]));
            }
            let metrics: Vec<String> = (0..next(5))
                .map(|_| format!("\"{}\":{}", names[next(8) as usize], numbers[next(10) as usize]))
                .collect();
            fields.push(format!("\"metrics\":{{{}}}", metrics.join(",")));
            if next(3) == 0 {
                let tags: Vec<String> = (0..next(4))
                    .map(|_| {
                        format!(
                            "\"{}\":{}",
                            names[next(8) as usize],
                            ["\"v\"", "\"a long tag value\"", "\"\\n\"", "1"][next(4) as usize]
                        )
                    })
                    .collect();
                fields.push(format!("\"tags\":{{{}}}", tags.join(",")));
            }
            if next(4) == 0 {
                fields.push(format!(
                    "\"location\":{{\"lat\":{},\"lon\":{}}}",
                    ["1", "90.5", "null", "-45"][next(4) as usize],
                    numbers[next(6) as usize]
                ));
            }
            match next(6) {
                0 => fields.push("\"deviceId\":\"dev-1\"".into()),
                1 => fields.push("\"deviceId\":\"dev-2\"".into()),
                2 => fields.push(format!("\"id\":\"r-{i}\"")),
                3 => fields.push("\"schemaVersion\":1".into()),
                _ => {}
            }
            let raw = format!("{{{}}}", fields.join(","));
            for limits in [&Limits::default(), &tight] {
                for device in [Some("dev-1"), None] {
                    if check(&raw, device, limits).is_some() {
                        fast += 1;
                    }
                }
            }
        }
        // Most generated items are invalid somewhere; a few hundred valid ones still exercise the encoder.
        assert!(
            fast > 400,
            "the generator should reach the fast path a few hundred times, got {fast}"
        );
    }

    #[test]
    fn time_formatter_matches_chrono() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Years about 1600..2300, plus the edges of what the layout holds.
            let ms = match i {
                0 => 0,
                1 => -1,
                2 => 253_402_300_799_999,
                3 => 253_402_300_800_000,
                4 => -62_167_219_200_000,
                5 => -62_167_219_200_001,
                _ => (seed >> 20) as i64 % 10_000_000_000_000 - 5_000_000_000_000,
            };
            let t = Utc.timestamp_millis_opt(ms).single().expect("in range");
            let mut buf = [0u8; 24];
            let chrono = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            match write_millis(ms, &mut buf) {
                Some(s) => assert_eq!(s, chrono, "{ms}"),
                None => assert!(!(0..=9999).contains(&chrono::Datelike::year(&t)), "{ms}: {chrono}"),
            }
            assert_eq!(fmt_millis(&t), chrono);
        }
    }
}
