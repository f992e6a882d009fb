//! The records that travel between the functions, and the validation of what
//! devices send.
//!
//! A [`Reading`] is what ingest writes to `telemetry.raw`: schema version 1,
//! camelCase JSON. [`parse_reading`] turns one untrusted JSON item from a
//! device into a `Reading` or an [`ItemError`] that names the offending field,
//! so the HTTP edge can answer with a precise 4xx and never panics.
//!
//! Unknown top-level fields are rejected rather than ignored: a misspelt
//! `metrcs` would otherwise silently drop a device's data. Free-form extras
//! belong in `tags`. A `schemaVersion` newer than this build understands is
//! rejected so an old ingest never rewrites a newer record it cannot read.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod fast;

/// The schema version this build writes and the highest it accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// A device's position.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
    /// Altitude in metres, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<f64>,
}

/// One accepted reading, as stored in `telemetry.raw` and archived in Cosmos DB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Unique id: the device's own (so retries are idempotent) or one derived
    /// at ingest from the reading's content (see [`derived_id`]).
    pub id: String,
    /// The device that took the reading; also the Kafka key and the Cosmos DB partition key.
    pub device_id: String,
    /// When the device took the reading (UTC, millisecond precision).
    #[serde(with = "millis_rfc3339")]
    pub event_time: DateTime<Utc>,
    /// When ingest accepted it (UTC, millisecond precision).
    #[serde(with = "millis_rfc3339")]
    pub received_time: DateTime<Utc>,
    /// Metric name to a finite value.
    pub metrics: BTreeMap<String, f64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Where the device was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// Why one item of a request was rejected: the field (a dotted path inside
/// the item, e.g. `metrics.temperature`) and a reason a device maker can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Dotted path of the offending field inside the item; empty for the item as a whole.
    pub field: String,
    /// Human-readable reason.
    pub reason: String,
    /// What kind of refusal it is (for the answer's status; not serialized).
    #[serde(skip)]
    pub kind: ItemErrorKind,
}

/// What kind of refusal an [`ItemError`] is: what the HTTP edge acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ItemErrorKind {
    /// The item is malformed or out of bounds (422 when no item was accepted).
    #[default]
    Invalid,
    /// The item names a device other than the one its token was issued to
    /// (403 when no item was accepted).
    OtherDevice,
}

impl ItemError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            kind: ItemErrorKind::Invalid,
        }
    }

    /// The item names device `named`, but its token was issued to `token_device`.
    pub fn other_device(token_device: &str, named: &str) -> Self {
        Self {
            field: "deviceId".into(),
            reason: format!("the token was issued to device '{token_device}', not '{named}'"),
            kind: ItemErrorKind::OtherDevice,
        }
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// Bounds on what one reading may hold. The defaults suit vehicles, sensors
/// and machines alike and keep one record well under Kafka's 1 MB message limit.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most metrics in one reading.
    pub max_metrics: usize,
    /// Most tags in one reading.
    pub max_tags: usize,
    /// Longest tag value, in bytes.
    pub max_tag_value_len: usize,
    /// How far ahead of the server clock an event time may be.
    pub max_future_skew: chrono::Duration,
    /// How far behind the server clock an event time may be.
    pub max_age: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_metrics: 256,
            max_tags: 32,
            max_tag_value_len: 256,
            max_future_skew: chrono::Duration::minutes(10),
            max_age: chrono::Duration::days(30),
        }
    }
}

const MAX_ID_LEN: usize = 128;
const MAX_NAME_LEN: usize = 64;
const KNOWN_FIELDS: &[&str] = &[
    "schemaVersion",
    "id",
    "deviceId",
    "timestamp",
    "metrics",
    "tags",
    "location",
];

/// Whether `s` is a valid device or reading id: 1..=128 of `[A-Za-z0-9._:-]`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Whether `s` is a valid metric name: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid_metric_name(s: &str) -> bool {
    valid_name(s)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parse and validate one item a device sent.
///
/// `device` is the device the request's token was issued to: an item without
/// `deviceId` belongs to it, and an item naming another device is rejected.
/// `now` is the receive time stamped on the reading.
pub fn parse_reading(
    item: &Value,
    device: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Reading, ItemError> {
    let obj = item
        .as_object()
        .ok_or_else(|| ItemError::new("", format!("expected a JSON object, got {}", type_name(item))))?;
    // An empty key cannot be named by a field path (`""` means the whole item),
    // so it is reported on the item with a reason that says so.
    if obj.contains_key("") {
        return Err(ItemError::new(
            "",
            "has a field with an empty name; field names must not be empty",
        ));
    }
    if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(ItemError::new(
            unknown.clone(),
            "unknown field (schema version 1 has schemaVersion, id, deviceId, timestamp, metrics, tags, location; put extra labels in tags)",
        ));
    }

    if let Some(v) = obj.get("schemaVersion") {
        match v.as_u64() {
            Some(n) if n >= 1 && n <= SCHEMA_VERSION as u64 => {}
            Some(n) => {
                return Err(ItemError::new(
                    "schemaVersion",
                    format!("unsupported schema version {n}; this server accepts 1..={SCHEMA_VERSION}"),
                ));
            }
            None => {
                return Err(ItemError::new(
                    "schemaVersion",
                    format!("expected a positive integer, got {}", type_name(v)),
                ));
            }
        }
    }

    let device_id = match (obj.get("deviceId"), device) {
        (Some(Value::String(s)), _) if !valid_id(s) => {
            return Err(ItemError::new(
                "deviceId",
                "must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        (Some(Value::String(s)), Some(d)) if s != d => {
            return Err(ItemError::other_device(d, s));
        }
        (Some(Value::String(s)), _) => s.clone(),
        (Some(v), _) => {
            return Err(ItemError::new(
                "deviceId",
                format!("expected a string, got {}", type_name(v)),
            ));
        }
        (None, Some(d)) => d.to_owned(),
        (None, None) => return Err(ItemError::new("deviceId", "missing")),
    };

    let event_time = match obj.get("timestamp") {
        None => {
            return Err(ItemError::new(
                "timestamp",
                "missing (RFC 3339 string or epoch milliseconds)",
            ));
        }
        Some(v) => parse_timestamp(v).map_err(|reason| ItemError::new("timestamp", reason))?,
    };
    if event_time > now + limits.max_future_skew {
        return Err(ItemError::new(
            "timestamp",
            format!(
                "{} is more than {} s ahead of the server clock",
                fmt_millis(&event_time),
                limits.max_future_skew.num_seconds()
            ),
        ));
    }
    if event_time < now - limits.max_age {
        return Err(ItemError::new(
            "timestamp",
            format!(
                "{} is older than the {} day limit",
                fmt_millis(&event_time),
                limits.max_age.num_days()
            ),
        ));
    }

    let metrics = match obj.get("metrics") {
        None => {
            return Err(ItemError::new(
                "metrics",
                "missing (an object of metric name to number)",
            ));
        }
        Some(Value::Object(m)) => {
            if m.is_empty() {
                return Err(ItemError::new("metrics", "must hold at least one metric"));
            }
            if m.len() > limits.max_metrics {
                return Err(ItemError::new(
                    "metrics",
                    format!("{} metrics, at most {} allowed", m.len(), limits.max_metrics),
                ));
            }
            let mut out = BTreeMap::new();
            for (name, v) in m {
                if !valid_name(name) {
                    return Err(ItemError::new(
                        format!("metrics.{name}"),
                        "metric names must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    ));
                }
                let x = match v {
                    Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
                    _ => {
                        return Err(ItemError::new(
                            format!("metrics.{name}"),
                            format!("expected a number, got {}", type_name(v)),
                        ));
                    }
                };
                let Some(x) = x else {
                    return Err(ItemError::new(format!("metrics.{name}"), "not a finite number"));
                };
                out.insert(name.clone(), x);
            }
            out
        }
        Some(v) => {
            return Err(ItemError::new(
                "metrics",
                format!("expected an object, got {}", type_name(v)),
            ));
        }
    };

    let tags = match obj.get("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            if m.len() > limits.max_tags {
                return Err(ItemError::new(
                    "tags",
                    format!("{} tags, at most {} allowed", m.len(), limits.max_tags),
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                if !valid_name(k) {
                    return Err(ItemError::new(
                        format!("tags.{k}"),
                        "tag names must be 1-64 characters of A-Z a-z 0-9 . _ -",
                    ));
                }
                match v {
                    Value::String(s) if s.len() <= limits.max_tag_value_len => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::String(_) => {
                        return Err(ItemError::new(
                            format!("tags.{k}"),
                            format!("longer than {} bytes", limits.max_tag_value_len),
                        ));
                    }
                    _ => {
                        return Err(ItemError::new(
                            format!("tags.{k}"),
                            format!("expected a string, got {}", type_name(v)),
                        ));
                    }
                }
            }
            out
        }
        Some(v) => {
            return Err(ItemError::new(
                "tags",
                format!("expected an object, got {}", type_name(v)),
            ));
        }
    };

    let location = match obj.get("location") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_location(v)?),
    };

    let id = match obj.get("id") {
        None | Some(Value::Null) => derived_id(&device_id, &event_time, &metrics, &tags, location.as_ref()),
        Some(Value::String(s)) if valid_id(s) => s.clone(),
        Some(Value::String(_)) => return Err(ItemError::new("id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")),
        Some(v) => return Err(ItemError::new("id", format!("expected a string, got {}", type_name(v)))),
    };

    Ok(Reading {
        schema_version: SCHEMA_VERSION,
        id,
        device_id,
        event_time,
        received_time: truncate_millis(now),
        metrics,
        tags,
        location,
    })
}

fn parse_location(v: &Value) -> Result<Location, ItemError> {
    let obj = v.as_object().ok_or_else(|| {
        ItemError::new(
            "location",
            format!("expected an object with lat and lon, got {}", type_name(v)),
        )
    })?;
    if let Some(k) = obj.keys().find(|k| !["lat", "lon", "alt"].contains(&k.as_str())) {
        return Err(ItemError::new(
            format!("location.{k}"),
            "unknown field (location has lat, lon, alt)",
        ));
    }
    let num = |name: &str, required: bool, range: Option<(f64, f64)>| -> Result<Option<f64>, ItemError> {
        match obj.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(ItemError::new(format!("location.{name}"), "missing")),
            Some(Value::Number(n)) => {
                let x = n
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| ItemError::new(format!("location.{name}"), "not a finite number"))?;
                if let Some((lo, hi)) = range
                    && !(lo..=hi).contains(&x)
                {
                    return Err(ItemError::new(
                        format!("location.{name}"),
                        format!("{x} is outside {lo}..={hi}"),
                    ));
                }
                Ok(Some(x))
            }
            Some(other) => Err(ItemError::new(
                format!("location.{name}"),
                format!("expected a number, got {}", type_name(other)),
            )),
        }
    };
    let lat = num("lat", true, Some((-90.0, 90.0)))?.unwrap_or_default();
    let lon = num("lon", true, Some((-180.0, 180.0)))?.unwrap_or_default();
    let alt = num("alt", false, None)?;
    Ok(Location { lat, lon, alt })
}

/// Parse an event time: an RFC 3339 string or integer epoch milliseconds.
/// Sub-millisecond precision is truncated.
pub fn parse_timestamp(v: &Value) -> Result<DateTime<Utc>, String> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| truncate_millis(t.with_timezone(&Utc)))
            .map_err(|e| format!("'{s}' is not an RFC 3339 time ({e})")),
        Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("{n} is not integer epoch milliseconds"))?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| format!("{ms} is out of range"))
        }
        other => Err(format!(
            "expected an RFC 3339 string or epoch milliseconds, got {}",
            type_name(other)
        )),
    }
}

/// Drop sub-millisecond precision: the contract stores milliseconds.
pub fn truncate_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis()).single().unwrap_or(t)
}

/// Format a time the way every record does: RFC 3339, UTC, milliseconds, `Z`.
pub fn fmt_millis(t: &DateTime<Utc>) -> String {
    let mut buf = [0u8; 24];
    match write_millis(t.timestamp_millis(), &mut buf) {
        Some(s) => s.to_owned(),
        None => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// The id ingest gives a reading that came without one: a UUID (version 8)
/// from a SHA-256 of its content, so a device retrying the same reading gets
/// the same id and downstream writes stay idempotent.
pub fn derived_id(
    device: &str,
    t: &DateTime<Utc>,
    metrics: &BTreeMap<String, f64>,
    tags: &BTreeMap<String, String>,
    loc: Option<&Location>,
) -> String {
    derived_id_of(
        device,
        t.timestamp_millis(),
        metrics.iter().map(|(k, v)| (k.as_str(), *v)),
        tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        loc,
    )
}

/// [`derived_id`] over borrowed parts: `metrics` and `tags` must come in
/// ascending key order (a `BTreeMap`'s), or the id changes.
pub(crate) fn derived_id_of<'a>(
    device: &str,
    t_ms: i64,
    metrics: impl Iterator<Item = (&'a str, f64)>,
    tags: impl Iterator<Item = (&'a str, &'a str)>,
    loc: Option<&Location>,
) -> String {
    // One contiguous preimage, hashed in one call: feeding SHA-256 a dozen
    // tiny slices cost more than the compression itself. The bytes hashed
    // are exactly the concatenation the id is defined over.
    let mut h = HashBuf::new();
    h.put(device.as_bytes());
    h.put(&[0]);
    h.put(&t_ms.to_be_bytes());
    for (k, v) in metrics {
        h.put(k.as_bytes());
        h.put(&[0]);
        h.put(&v.to_bits().to_be_bytes());
    }
    h.put(&[1]);
    for (k, v) in tags {
        h.put(k.as_bytes());
        h.put(&[0]);
        h.put(v.as_bytes());
        h.put(&[0]);
    }
    if let Some(l) = loc {
        h.put(&l.lat.to_bits().to_be_bytes());
        h.put(&l.lon.to_bits().to_be_bytes());
        h.put(&l.alt.unwrap_or(f64::NAN).to_bits().to_be_bytes());
    }
    let digest = h.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    hyphenated_lower(uuid::Uuid::new_v8(b).as_bytes())
}

/// A UUID's canonical text (`8-4-4-4-12` lowercase hex digits), as
/// `Uuid::hyphenated` writes it, through a lookup table: the uuid crate's
/// branch per digit mispredicts on hash output and showed in ingest's profile.
fn hyphenated_lower(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A SHA-256 fed through a stack buffer, so a short preimage is one
/// `update`; a longer one (many metrics or tags) takes a few.
struct HashBuf {
    h: Sha256,
    buf: [u8; 512],
    len: usize,
}

impl HashBuf {
    fn new() -> Self {
        Self {
            h: Sha256::new(),
            buf: [0; 512],
            len: 0,
        }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.spill(bytes);
        }
    }

    /// `bytes` do not fit: hash what is buffered, then buffer `bytes` or,
    /// if they would not fit an empty buffer either, hash them directly.
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        self.h.update(&self.buf[..self.len]);
        self.len = 0;
        match self.buf.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = bytes.len();
            }
            None => self.h.update(bytes),
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.h.update(&self.buf[..self.len]);
        self.h.finalize().into()
    }
}

/// Write epoch milliseconds `ms` as [`fmt_millis`] does
/// (`2026-11-25T12:00:00.123Z`, always 24 bytes) into `out`, without chrono's
/// general formatter: ingest stamps every reading it accepts twice. `None` for
/// a year outside 0..=9999, which this fixed layout cannot hold.
pub fn write_millis(ms: i64, out: &mut [u8; 24]) -> Option<&str> {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    // Each field right-aligned in its slot, zero-padded, then its separator.
    let fields = [
        (0..4, year, b'-'),
        (5..7, month, b'-'),
        (8..10, day, b'T'),
        (11..13, h, b':'),
        (14..16, m, b':'),
        (17..19, s, b'.'),
        (20..23, milli, b'Z'),
    ];
    for (slot, mut v, sep) in fields {
        let end = slot.end;
        for b in out[slot].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out[end] = sep;
    }
    std::str::from_utf8(out).ok()
}

/// Serde for times as RFC 3339 UTC with milliseconds (`2026-11-25T12:00:00.123Z`), used by every record.
pub(crate) mod millis_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        match super::write_millis(t.timestamp_millis(), &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&super::fmt_millis(t)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn parse(v: Value) -> Result<Reading, ItemError> {
        parse_reading(&v, Some("dev-1"), now(), &Limits::default())
    }

    /// Derived ids are a contract: a device retrying after an upgrade must get
    /// the same id. The expected values come from an independent computation
    /// (Python's hashlib and uuid over the documented preimage), including
    /// preimages longer than the hasher's stack buffer and a single part
    /// longer than the buffer.
    #[test]
    fn derived_ids_match_an_independent_computation() {
        let t = |ms| Utc.timestamp_millis_opt(ms).single().expect("valid");
        let map = |kv: &[(&str, f64)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        let tags = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let loc = Location {
            lat: 52.5,
            lon: 13.4,
            alt: None,
        };
        assert_eq!(
            derived_id(
                "dev-1",
                &t(1_795_608_000_000),
                &map(&[("speed", 40.5), ("rpm", 1500.0)]),
                &tags(&[("fw", "1.4.2")]),
                Some(&loc)
            ),
            "586295fe-84dc-8a5c-92a8-ed5f543ff68b"
        );
        assert_eq!(
            derived_id(
                "dev-1",
                &t(1_795_608_000_000),
                &map(&[("x", 1.0)]),
                &BTreeMap::new(),
                None
            ),
            "45fb2c05-ad57-8203-889d-f3974462caf5"
        );
        let names: Vec<String> = (0..40).map(|i| format!("metric_{i:03}")).collect();
        let many: BTreeMap<String, f64> = names
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as f64 * 0.5))
            .collect();
        let long = "a".repeat(100);
        let loc = Location {
            lat: 0.0,
            lon: -0.0,
            alt: Some(12.25),
        };
        assert_eq!(
            derived_id("truck-042", &t(-1), &many, &tags(&[("site", &long)]), Some(&loc)),
            "f60db30c-b573-8da5-bbb7-932812d2a198"
        );
        let huge = "b".repeat(700);
        assert_eq!(
            derived_id("dev-1", &t(0), &map(&[("x", 2.0)]), &tags(&[("note", &huge)]), None),
            "5a7b2466-c5e7-8f68-ab21-3d9c3a24c3ab"
        );
    }

    #[test]
    fn uuid_text_matches_the_uuid_crate() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            let mut b = [0u8; 16];
            for x in &mut b {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *x = (seed >> 56) as u8;
            }
            assert_eq!(hyphenated_lower(&b), uuid::Uuid::from_bytes(b).hyphenated().to_string());
        }
    }

    #[test]
    fn accepts_a_full_reading_and_round_trips() {
        let r = parse(
            json!({"id": "r-1", "deviceId": "dev-1", "timestamp": "2026-11-25T11:59:59.123456Z",
            "metrics": {"temp": 21.5, "rpm": 3000}, "tags": {"fw": "1.2"}, "location": {"lat": 52.5, "lon": 13.4}}),
        )
        .expect("valid");
        assert_eq!(r.id, "r-1");
        assert_eq!(r.event_time.timestamp_millis() % 1000, 123, "truncated to ms");
        assert_eq!(r.metrics["rpm"], 3000.0);
        let json = serde_json::to_value(&r).expect("serialise");
        assert_eq!(json["eventTime"], "2026-11-25T11:59:59.123Z");
        assert_eq!(json["deviceId"], "dev-1");
        assert_eq!(json["schemaVersion"], 1);
        let back: Reading = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, r);
    }

    #[test]
    fn epoch_millis_and_device_from_token() {
        let r = parse(json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}})).expect("valid");
        assert_eq!(r.device_id, "dev-1");
        assert_eq!(r.event_time.timestamp_millis(), 1795608000000);
    }

    #[test]
    fn derived_ids_are_stable_and_content_sensitive() {
        let a = parse(json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}})).expect("valid");
        let b = parse(json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}})).expect("valid");
        let c = parse(json!({"timestamp": 1795608000000i64, "metrics": {"x": 2}})).expect("valid");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn names_the_offending_field() {
        let cases = [
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": "hot"}}),
                "metrics.x",
            ),
            (json!({"timestamp": 1795608000000i64, "metrics": {}}), "metrics"),
            (json!({"timestamp": 1795608000000i64}), "metrics"),
            (json!({"metrics": {"x": 1}}), "timestamp"),
            (json!({"timestamp": "yesterday", "metrics": {"x": 1}}), "timestamp"),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "metrcs": {}}),
                "metrcs",
            ),
            (
                json!({"deviceId": "dev-2", "timestamp": 1795608000000i64, "metrics": {"x": 1}}),
                "deviceId",
            ),
            (
                json!({"deviceId": 7, "timestamp": 1795608000000i64, "metrics": {"x": 1}}),
                "deviceId",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "location": {"lat": 91, "lon": 0}}),
                "location.lat",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "location": {"lat": 1}}),
                "location.lon",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "tags": {"a": 1}}),
                "tags.a",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"bad name": 1}}),
                "metrics.bad name",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "schemaVersion": 2}),
                "schemaVersion",
            ),
            (
                json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "id": ""}),
                "id",
            ),
            (json!({"timestamp": 1864072000000i64, "metrics": {"x": 1}}), "timestamp"),
            (json!([1, 2]), ""),
            (json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "": 1}), ""),
        ];
        for (input, field) in cases {
            let err = parse(input.clone()).expect_err(&format!("{input} must be rejected"));
            assert_eq!(err.field, field, "{input}: {err}");
            assert!(!err.reason.is_empty());
        }
        let empty_key =
            parse(json!({"timestamp": 1795608000000i64, "metrics": {"x": 1}, "": 1})).expect_err("empty key");
        assert!(empty_key.reason.contains("empty name"), "{empty_key}");
    }

    #[test]
    fn huge_numbers_are_not_finite_f64_and_are_rejected() {
        let v: Value =
            serde_json::from_str(r#"{"timestamp": 1795608000000, "metrics": {"x": 1e400}}"#).unwrap_or(Value::Null);
        // serde_json refuses 1e400 outright; either way nothing non-finite gets through.
        if !v.is_null() {
            assert!(parse(v).is_err());
        }
    }
}
