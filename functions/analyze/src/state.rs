//! Warm takeover: the snapshot of a partition's model and alert state, and
//! how a new owner reads it back.
//!
//! The snapshot of a partition is a stream of records in a compacted topic
//! (one partition of it per input partition):
//! - a **series entry** per (device, metric) series whose state changed
//!   since the partition's previous snapshot: key `S`, the device's length
//!   and name, the metric's name; value: the series' model and alert state
//!   and the score parts of its open windows ([`ScorePart`]). A null value
//!   (read back as empty) is a tombstone: the series was evicted;
//! - then a **marker** (key `M`) with the offset `S` the snapshot is at:
//!   every reading before `S`, none from `S` on, is in the state.
//!
//! A series unchanged since an earlier snapshot has the same state at `S`
//! as then, so its newest entry is its state at `S`. Entries after the last
//! marker belong to a snapshot that was cut short (the writer died): they
//! are not used, and the next snapshot of the new owner writes each of
//! those keys again, so no later marker vouches for them.
//!
//! Guarantee (what the handler builds on): offsets are committed only up
//! to the last marker (`C <= S`). A new owner restores the state at `S` and
//! replays from the committed offset `C`: readings in `[C, S)` only rebuild
//! the windows, which take their scores from the snapshot's score parts;
//! from `S` on the models score as the old owner's would have. So scores,
//! aggregates and alerts equal an uninterrupted run's, and an open incident
//! is continued, not opened twice. Where the snapshot cannot be used (no
//! marker, a marker before `C`, state written under another configuration),
//! the series start cold as they did before snapshots existed, and the
//! stale entries are overwritten by tombstones.
//!
//! # Layout
//!
//! - this file: keys, markers, series entries, and reading a partition's
//!   records back ([`read_back`]);
//! - [`codec`]: the binary encoding the entries use.

pub mod codec;

use std::collections::HashMap;

use codec::{Corrupt, Reader, Writer};

use crate::detect::alert::AlertTracker;
use crate::detect::{DetectorConfig, SeriesModel, model_at, model_code};
use crate::window::ScorePart;

/// The format of entries and markers (the first byte of each value).
/// Version 1 had 76 calibration bins, version 2 no range model; their
/// entries start their series cold. Version 3 had no severity in an open
/// incident: it is read, the incident taken for a warning.
const VERSION: u8 = 4;
/// The oldest version still read.
const OLDEST_READ: u8 = 3;
const SERIES: u8 = b'S';
const MARKER: u8 = b'M';

/// The key of a series' entry.
pub fn series_key(device: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + device.len() + metric.len());
    k.push(SERIES);
    k.extend_from_slice(&(device.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    k.extend_from_slice(device.as_bytes());
    k.extend_from_slice(metric.as_bytes());
    k
}

/// The (device, metric) a series key names.
pub fn parse_series_key(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(&[SERIES])?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return None;
    }
    let (device, metric) = rest.split_at(len);
    Some((std::str::from_utf8(device).ok()?, std::str::from_utf8(metric).ok()?))
}

/// The key of a partition's marker.
pub fn marker_key() -> Vec<u8> {
    vec![MARKER]
}

/// The marker of a snapshot at offset `at`.
pub fn marker_value(at: i64) -> Vec<u8> {
    let mut w = Writer::with_capacity(9);
    w.u8(VERSION);
    w.i64(at);
    w.into_bytes()
}

fn parse_marker(value: &[u8]) -> Option<i64> {
    let mut r = Reader::new(value);
    (OLDEST_READ..=VERSION).contains(&r.u8().ok()?).then_some(())?;
    let at = r.i64().ok()?;
    r.is_empty().then_some(at)
}

/// A series' state as a snapshot keeps it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Newest event time (epoch ms).
    pub newest_ms: i64,
    /// Processing order of its last update.
    pub used: u64,
    /// Last value.
    pub last_value: f64,
    /// The models.
    pub model: SeriesModel,
    /// The alert state.
    pub alerts: AlertTracker,
    /// Its open windows' score parts: (size s, end ms, part).
    pub windows: Vec<(u32, i64, ScorePart)>,
}

/// The value of a series' entry.
pub fn encode_entry(
    (newest_ms, used, last_value): (i64, u64, f64),
    model: &SeriesModel,
    alerts: &AlertTracker,
    windows: &[(u32, i64, ScorePart)],
) -> Vec<u8> {
    let mut w = Writer::with_capacity(1536);
    w.u8(VERSION);
    w.i64(newest_ms);
    w.u64(used);
    w.f64(last_value);
    model.save(&mut w);
    alerts.save(&mut w);
    w.u16(windows.len().min(usize::from(u16::MAX)) as u16);
    for (size, end_ms, part) in windows.iter().take(usize::from(u16::MAX)) {
        w.u32(*size);
        w.i64(*end_ms);
        w.str(part.score.map_or("", |(_, m)| m));
        w.f64(part.score.map_or(0.0, |(s, _)| s));
        w.f64(part.expected_low);
        w.f64(part.expected_high);
        w.bool(part.warming);
    }
    w.into_bytes()
}

/// The names a window's score can carry, as the static strings windows hold.
fn model_name(name: &str) -> Result<Option<&'static str>, Corrupt> {
    if name.is_empty() {
        return Ok(None);
    }
    model_code(name).and_then(model_at).map(Some).ok_or(Corrupt)
}

/// Read a series' entry for a series of `metric` under `config`.
pub fn decode_entry(config: &DetectorConfig, metric: &str, value: &[u8]) -> Result<Entry, Corrupt> {
    let mut r = Reader::new(value);
    let version = r.u8()?;
    if !(OLDEST_READ..=VERSION).contains(&version) {
        return Err(Corrupt);
    }
    let newest_ms = r.i64()?;
    let used = r.u64()?;
    let last_value = r.f64()?;
    let model = SeriesModel::load(config, metric, &mut r)?;
    let alerts = AlertTracker::load(&mut r, version)?;
    let n = r.u16()?;
    let mut windows = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let size = r.u32()?;
        let end_ms = r.i64()?;
        let name = model_name(r.str()?)?;
        let score = r.f64()?;
        let part = ScorePart {
            score: name.map(|m| (score, m)),
            expected_low: r.f64()?,
            expected_high: r.f64()?,
            warming: r.bool()?,
        };
        windows.push((size, end_ms, part));
    }
    if !r.is_empty() {
        return Err(Corrupt);
    }
    Ok(Entry {
        newest_ms,
        used,
        last_value,
        model,
        alerts,
        windows,
    })
}

/// A partition's state records, read back in log order.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The last marker's offset, if there is one.
    pub at: Option<i64>,
    /// The newest value per series key up to the last marker (empty: a tombstone).
    pub confirmed: HashMap<Vec<u8>, Vec<u8>>,
    /// Keys written after the last marker (a snapshot cut short).
    pub unconfirmed: Vec<Vec<u8>>,
}

/// Read a partition's state records (key, value), oldest first.
pub fn read_back(records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> ReadBack {
    let mut out = ReadBack::default();
    let mut pending: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (key, value) in records {
        if key == [MARKER] {
            if let Some(at) = parse_marker(&value) {
                out.at = Some(at);
                out.confirmed.extend(pending.drain());
            }
        } else if key.first() == Some(&SERIES) {
            pending.insert(key, value);
        }
    }
    out.unconfirmed = pending.into_keys().collect();
    out
}

#[cfg(test)]
mod takeover_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::spike::SpikeDetector;

    #[test]
    fn keys_and_markers_round_trip_and_a_cut_snapshot_is_not_confirmed() {
        let k = series_key("dev/1", "temp");
        assert_eq!(parse_series_key(&k), Some(("dev/1", "temp")));
        assert_eq!(parse_series_key(&[SERIES, 9, 0, b'x']), None);
        assert_eq!(parse_series_key(&marker_key()), None);
        let a = series_key("a", "x");
        let b = series_key("b", "x");
        let back = read_back([
            (a.clone(), vec![1]),
            (marker_key(), marker_value(10)),
            (b.clone(), vec![2]),
            (a.clone(), vec![3]),
            (marker_key(), marker_value(20)),
            (a.clone(), vec![4]), // cut short: no marker after it
            (marker_key(), b"garbage".to_vec()),
        ]);
        assert_eq!(back.at, Some(20));
        assert_eq!(back.confirmed.get(&a), Some(&vec![3]));
        assert_eq!(back.confirmed.get(&b), Some(&vec![2]));
        assert_eq!(back.unconfirmed, vec![a]);
    }

    #[test]
    fn a_corrupt_or_truncated_entry_is_refused_without_panicking() {
        let config = DetectorConfig::default();
        let mut model = SeriesModel::new(&config, "temp");
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        // A rule's state is part of the entry, written as its condition.
        let rules = [std::sync::Arc::new(
            crate::detect::rules::Rule::parse("temp > 3 for 2s").expect("valid"),
        )];
        for i in 0..500 {
            model.update(&config, &rules, t + chrono::Duration::seconds(i), (i % 7) as f64);
        }
        let part = ScorePart {
            score: Some((0.5, SpikeDetector::NAME)),
            expected_low: 1.0,
            expected_high: f64::NAN,
            warming: true,
        };
        let v = encode_entry((5, 6, 7.0), &model, &AlertTracker::new(), &[(10, 20, part)]);
        let e = decode_entry(&config, "temp", &v).expect("decodes");
        assert_eq!((e.newest_ms, e.used, e.last_value), (5, 6, 7.0));
        assert_eq!(e.windows.len(), 1);
        assert_eq!(e.windows[0].2.score, part.score);
        assert!(e.windows[0].2.expected_high.is_nan() && e.windows[0].2.warming);
        assert_eq!(
            encode_entry((5, 6, 7.0), &e.model, &e.alerts, &e.windows),
            v,
            "bit-identical"
        );
        for cut in 0..v.len() {
            assert!(decode_entry(&config, "temp", &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(decode_entry(&config, "temp", &longer).is_err());
        // Another configuration's state is refused: no seasonal model here.
        let other = DetectorConfig {
            seasonal: None,
            ..DetectorConfig::default()
        };
        assert!(decode_entry(&other, "temp", &v).is_err());
    }

    #[test]
    fn a_window_topped_by_any_model_round_trips() {
        // The range model was missing from the names a snapshot could read
        // back: a series whose open window it topped came back cold.
        let config = DetectorConfig::default();
        let model = SeriesModel::new(&config, "temp");
        for name in crate::detect::MODELS {
            let part = ScorePart {
                score: Some((0.75, name)),
                expected_low: 1.0,
                expected_high: 2.0,
                warming: false,
            };
            let v = encode_entry((5, 6, 7.0), &model, &AlertTracker::new(), &[(10, 20, part)]);
            let e = decode_entry(&config, "temp", &v).unwrap_or_else(|_| panic!("{name} decodes"));
            assert_eq!(e.windows[0].2, part, "{name}");
        }
    }
}
