//! Input generation and ground truth shared by the consumer tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use tributary_shared::model::Reading;
use tributary_shared::records::Aggregate;

pub const BASE_MS: i64 = 1_795_000_000_000;
pub const SIZES: [i64; 2] = [10, 60];

/// `devices` devices, one reading per second each for `seconds`, three
/// metrics, in event-time order per device; then one far-future reading per
/// device that closes every earlier window.
pub fn input(devices: usize, seconds: i64) -> Vec<Reading> {
    let mut v = Vec::new();
    for s in 0..seconds {
        for d in 0..devices {
            v.push(reading(d, BASE_MS + s * 1000 + d as i64, s));
        }
    }
    for d in 0..devices {
        v.push(reading(d, BASE_MS + (seconds + 3600) * 1000, seconds));
    }
    v
}

fn reading(d: usize, ms: i64, s: i64) -> Reading {
    let t = Utc.timestamp_millis_opt(ms).single().expect("time");
    let x = ((s * 7 + d as i64 * 13) % 101) as f64 / 3.0;
    Reading {
        schema_version: 1,
        id: format!("r-{d}-{ms}"),
        device_id: format!("dev-{d}"),
        event_time: t,
        received_time: t,
        metrics: BTreeMap::from([("a".to_owned(), x), ("b".to_owned(), -x), ("c".to_owned(), x * x)]),
        tags: BTreeMap::new(),
        location: None,
    }
}

/// (device, metric, size, start ms) -> (count, min, max, sum) of each window.
pub type Truth = HashMap<(String, String, i64, i64), (u64, f64, f64, f64)>;

/// The windows' true contents, for windows that start before `before_ms`
/// (the flush readings' windows stay open).
pub fn truth(readings: &[Reading], before_ms: i64) -> Truth {
    let mut m = HashMap::new();
    for r in readings {
        let t = r.event_time.timestamp_millis();
        if t >= before_ms {
            continue;
        }
        for size in SIZES {
            let start = t - t.rem_euclid(size * 1000);
            for (metric, &x) in &r.metrics {
                let e = m.entry((r.device_id.clone(), metric.clone(), size, start)).or_insert((
                    0u64,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    0.0,
                ));
                e.0 += 1;
                e.1 = e.1.min(x);
                e.2 = e.2.max(x);
                e.3 += x;
            }
        }
    }
    m
}

/// Compare the last emitted aggregate per identity (what an upserting store
/// keeps) with the truth.
pub fn compare(emitted: &[Aggregate], truth: &Truth) -> Result<(), String> {
    let mut last: HashMap<(String, String, i64, i64), &Aggregate> = HashMap::new();
    for a in emitted {
        last.insert(
            (
                a.device_id.clone(),
                a.metric.clone(),
                i64::from(a.window_seconds),
                a.window_start.timestamp_millis(),
            ),
            a,
        );
    }
    let missing: Vec<_> = truth.keys().filter(|k| !last.contains_key(*k)).take(5).collect();
    if !missing.is_empty() {
        return Err(format!("windows never emitted (of {}): {missing:?}", truth.len()));
    }
    for (k, a) in &last {
        let Some(&(count, min, max, sum)) = truth.get(k) else {
            continue;
        };
        if a.count != count {
            return Err(format!("{k:?}: counted {} readings, truth {count}", a.count));
        }
        if (a.min, a.max) != (min, max) {
            return Err(format!("{k:?}: min/max {:?} vs {:?}", (a.min, a.max), (min, max)));
        }
        if (a.mean - sum / count as f64).abs() > 1e-9 * (1.0 + sum.abs()) {
            return Err(format!("{k:?}: mean {} vs {}", a.mean, sum / count as f64));
        }
    }
    Ok(())
}

/// [`compare`], panicking on a difference.
pub fn check(emitted: &[Aggregate], truth: &Truth) {
    if let Err(e) = compare(emitted, truth) {
        panic!("{e}");
    }
}
