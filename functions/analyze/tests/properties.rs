//! Property tests for window aggregation (issue 9, "bad input"): generated
//! inputs, shrunk to a minimal counterexample on failure.
//!
//! - [`Stats`]: splitting any sequence at any points and merging the partial
//!   aggregates (in order or reversed) gives count/min/max and the sketch
//!   exactly, and mean/stddev within float tolerance, of one pass and of a
//!   naive two-pass reference.
//! - [`QuantileSketch`]: p50/p95/p99 (and p0/p100) within the documented
//!   relative error `alpha` of the exact lower quantile; merging any split is
//!   identical to the sketch of the whole.
//! - [`Windower`] against a reference model written from its documented rules:
//!   every window is emitted once, when the watermark passes its end, with the
//!   reference's count/min/max/mean/stddev/quantiles; values are never lost or
//!   doubled across window boundaries (sum of window counts + late values =
//!   values × window sizes); the committable offset is the reference's; and
//!   any arrival order within the allowed lateness gives the aggregates of the
//!   direct computation, with nothing late.
//!
//! Run: `cargo test -p tributary-analyze --test properties`. The case count is
//! proptest's default (256 per property) unless `PROPTEST_CASES` is set.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use tributary_analyze::records::Aggregate;
use tributary_analyze::sketch::{DEFAULT_ALPHA, MIN_INDEXABLE, QuantileSketch};
use tributary_analyze::window::{Stats, WindowConfig, Windower};
use tributary_shared::model::Reading;

// ---------------------------------------------------------------- references

fn naive_mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var)
}

/// The exact "lower" quantile the sketch documents: rank `floor(q * (n - 1))`.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

/// Float tolerance of a mean or variance over `n` values of magnitude at most
/// `scale`: each rounding step is off by at most `EPSILON * scale`, and `n`
/// of them add up (with a safety factor of 4).
fn rounding(n: usize, scale: f64) -> f64 {
    4.0 * n as f64 * f64::EPSILON * scale
}

/// Mean within float tolerance.
fn mean_close(got: f64, want: f64, n: usize, scale: f64) -> bool {
    (got - want).abs() <= rounding(n, scale) + f64::MIN_POSITIVE
}

/// Variance within float tolerance: an error `e` in each deviation moves the
/// variance by about `2 * stddev * e + e^2` (cancellation when values are
/// large and their spread tiny), plus relative rounding of the sum.
fn var_close(got: f64, want: f64, n: usize, scale: f64) -> bool {
    let e = rounding(n, scale);
    (got - want).abs() <= 1e-9 * want.abs() + 2.0 * want.abs().sqrt() * e + e * e + f64::MIN_POSITIVE
}

fn max_abs(xs: &[f64]) -> f64 {
    xs.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn within_alpha(got: f64, want: f64) -> bool {
    (got - want).abs() <= DEFAULT_ALPHA * want.abs() + MIN_INDEXABLE
}

fn stats_of(xs: &[f64]) -> Stats {
    let mut s = Stats::default();
    xs.iter().for_each(|&x| s.push(x));
    s
}

// ---------------------------------------------------------------- strategies

/// Finite values of one kind per sequence: plain, tightly clustered around a
/// large offset (cancellation), or mixed-sign over eight decades (the sketch's
/// range without folding), with exact zeros and repeats among them.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    let plain = prop::collection::vec(-1e6..1e6f64, 1..max_len);
    let clustered = (-1e9..1e9f64, prop::collection::vec(-1.0..1.0f64, 1..max_len))
        .prop_map(|(c, d)| d.into_iter().map(|x| c + x).collect());
    let wide = prop::collection::vec(
        prop_oneof![
            1 => Just(0.0),
            8 => (any::<bool>(), -4.0..4.0f64).prop_map(|(neg, e)| if neg { -(10f64.powf(e)) } else { 10f64.powf(e) }),
            1 => (-100i32..100).prop_map(f64::from),
        ],
        1..max_len,
    );
    prop_oneof![plain, clustered, wide]
}

/// Sorted cut points in 0..=len.
fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..6).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

fn pieces<'a>(xs: &'a [f64], cuts: &[usize]) -> Vec<&'a [f64]> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&xs.len())) {
        out.push(&xs[from..c.max(from)]);
        from = c.max(from);
    }
    out
}

// ---------------------------------------------------------------- Stats and the sketch

proptest! {
    #[test]
    fn stats_split_and_merge_equal_one_pass_and_the_naive_reference((xs, cuts) in values(400).prop_flat_map(|xs| { let n = xs.len(); (Just(xs), cuts(n)) })) {
        let one = stats_of(&xs);
        let parts: Vec<Stats> = pieces(&xs, &cuts).into_iter().map(stats_of).collect();
        let mut merged = Stats::default();
        parts.iter().for_each(|p| merged.merge(p));
        let mut reversed = Stats::default();
        parts.iter().rev().for_each(|p| reversed.merge(p));

        let (mean, var) = naive_mean_var(&xs);
        let scale = max_abs(&xs);
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for (what, s) in [("one pass", &one), ("merged", &merged), ("merged in reverse", &reversed)] {
            prop_assert_eq!((s.count(), s.min(), s.max()), (xs.len() as u64, min, max), "{}", what);
            prop_assert!(mean_close(s.mean, mean, xs.len(), scale), "{what}: mean {} vs naive {mean}", s.mean);
            prop_assert!(var_close(s.variance(), var, xs.len(), scale), "{what}: variance {} vs naive {var}", s.variance());
            prop_assert!(s.variance() >= 0.0);
            // The sketch merges exactly (documented): identical to one pass.
            prop_assert_eq!(&s.sketch, &one.sketch, "{}", what);
        }
    }

    #[test]
    fn sketch_quantiles_are_within_alpha_of_the_exact_ones((xs, cuts) in values(2000).prop_flat_map(|xs| { let n = xs.len(); (Just(xs), cuts(n)) })) {
        let mut whole = QuantileSketch::default();
        xs.iter().for_each(|&x| whole.insert(x));
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        let mut last = f64::NEG_INFINITY;
        for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
            let want = exact_quantile(&sorted, q);
            let got = whole.quantile(q).expect("non-empty");
            prop_assert!(within_alpha(got, want), "q {q}: got {got}, exact {want}");
            prop_assert!(got >= sorted[0] && got <= sorted[sorted.len() - 1], "q {q}: {got} outside [min, max]");
            prop_assert!(got >= last, "quantiles not monotone at q {q}");
            last = got;
        }
        // Any split, merged in either order, is the sketch of the whole.
        let parts: Vec<QuantileSketch> = pieces(&xs, &cuts)
            .into_iter()
            .map(|p| p.iter().fold(QuantileSketch::default(), |mut s, &x| { s.insert(x); s }))
            .collect();
        let mut merged = QuantileSketch::default();
        parts.iter().for_each(|p| merged.merge(p));
        prop_assert_eq!(&merged, &whole);
        let mut reversed = QuantileSketch::default();
        parts.iter().rev().for_each(|p| reversed.merge(p));
        prop_assert_eq!(&reversed, &whole);
    }
}

// ---------------------------------------------------------------- the windower

const DEVICES: [&str; 3] = ["a", "b", "c"];
const METRICS: [&str; 2] = ["temp", "rpm"];

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("in range")
}

fn reading(device: &str, ms: i64, metrics: &[(&str, f64)]) -> Reading {
    Reading {
        schema_version: 1,
        id: format!("{device}-{ms}"),
        device_id: device.to_owned(),
        event_time: time(ms),
        received_time: time(ms),
        metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        tags: BTreeMap::new(),
        location: None,
    }
}

/// Device `a` on partition 0, the others on partition 1 (partitions have
/// their own watermarks).
fn partition(device: &str) -> i32 {
    i32::from(device != "a")
}

/// One generated reading: device index, event time, and one or both metrics.
#[derive(Clone, Debug)]
struct Gen {
    /// Position in the generated input: two readings may share a device and
    /// an instant, but each is a reading of its own (its own id).
    n: usize,
    device: usize,
    ms: i64,
    metrics: Vec<(usize, f64)>,
}

impl Gen {
    fn reading(&self) -> Reading {
        let m: Vec<(&str, f64)> = self.metrics.iter().map(|&(i, x)| (METRICS[i], x)).collect();
        Reading {
            id: format!("{}-{}-{}", DEVICES[self.device], self.ms, self.n),
            ..reading(DEVICES[self.device], self.ms, &m)
        }
    }
}

/// Readings roughly in event-time order: a walk forward with jitter back,
/// starting near the epoch (negative times too) or in 2023.
fn readings(max_len: usize) -> impl Strategy<Value = Vec<Gen>> {
    let one = (
        0..3usize,
        0..4_000i64,
        0..8_000i64,
        prop::sample::subsequence(vec![0usize, 1], 1..=2),
        -50.0..150.0f64,
        0.0..5000.0f64,
    );
    (
        prop_oneof![Just(-30_000i64), Just(1_700_000_000_000i64)],
        prop::collection::vec(one, 1..max_len),
    )
        .prop_map(|(start, steps)| {
            let mut t = start;
            steps
                .into_iter()
                .enumerate()
                .map(|(n, (device, step, jitter, ms, temp, rpm))| {
                    t += step;
                    Gen {
                        n,
                        device,
                        ms: t - jitter,
                        metrics: ms
                            .into_iter()
                            .map(|i| (i, if i == 0 { (temp * 10.0).round() / 10.0 } else { rpm }))
                            .collect(),
                    }
                })
                .collect()
        })
}

fn window_config() -> impl Strategy<Value = WindowConfig> {
    (prop::sample::subsequence(vec![1u32, 5, 10, 60], 1..=4), 0..15_000i64).prop_map(|(sizes_seconds, lateness_ms)| {
        WindowConfig {
            sizes_seconds,
            allowed_lateness: chrono::Duration::milliseconds(lateness_ms),
        }
    })
}

/// A window's identity, in emission order.
type Key = (i64, u32, String, String);

/// The reference windower: the documented rules, applied naively.
#[derive(Default)]
struct Reference {
    max_event: BTreeMap<i32, i64>,
    last_offset: BTreeMap<i32, i64>,
    /// Open windows per partition: values and the lowest offset contributing.
    open: BTreeMap<i32, BTreeMap<Key, (Vec<f64>, i64)>>,
    late: u64,
}

impl Reference {
    fn push(&mut self, cfg: &WindowConfig, offset: i64, r: &Reading) -> Vec<(Key, Vec<f64>)> {
        let p = partition(&r.device_id);
        let t = r.event_time.timestamp_millis();
        let lateness = cfg.allowed_lateness.num_milliseconds();
        let lo = self.last_offset.entry(p).or_insert(offset);
        *lo = (*lo).max(offset);
        let watermark_before = self.max_event.get(&p).map(|m| m - lateness);
        let open = self.open.entry(p).or_default();
        for &size in &cfg.sizes_seconds {
            let size_ms = i64::from(size) * 1000;
            let start = t.div_euclid(size_ms) * size_ms;
            // Late: its window closed before this reading arrived.
            if watermark_before.is_some_and(|w| start + size_ms <= w) {
                self.late += r.metrics.len() as u64;
                continue;
            }
            for (m, &x) in &r.metrics {
                let w = open
                    .entry((start + size_ms, size, r.device_id.clone(), m.clone()))
                    .or_insert((Vec::new(), offset));
                w.0.push(x);
                w.1 = w.1.min(offset);
            }
        }
        let m = self.max_event.entry(p).or_insert(t);
        *m = (*m).max(t);
        let watermark = *m - lateness;
        self.close(p, |k| k.0 <= watermark)
    }

    fn close(&mut self, p: i32, done: impl Fn(&Key) -> bool) -> Vec<(Key, Vec<f64>)> {
        let open = self.open.entry(p).or_default();
        let keys: Vec<Key> = open.keys().filter(|k| done(k)).cloned().collect();
        keys.into_iter()
            .map(|k| {
                let (v, _) = open.remove(&k).expect("present");
                (k, v)
            })
            .collect()
    }

    fn flush(&mut self) -> Vec<(Key, Vec<f64>)> {
        let ps: Vec<i32> = self.open.keys().copied().collect();
        ps.into_iter().flat_map(|p| self.close(p, |_| true)).collect()
    }

    fn committable(&self, p: i32) -> Option<i64> {
        self.open
            .get(&p)
            .and_then(|o| o.values().map(|(_, off)| *off).min())
            .or(self.last_offset.get(&p).map(|o| o + 1))
    }
}

fn key_of(a: &Aggregate) -> Key {
    (
        a.window_end.timestamp_millis(),
        a.window_seconds,
        a.device_id.clone(),
        a.metric.clone(),
    )
}

/// An aggregate is the exact statistics of its window's values (floats within tolerance).
fn check_aggregate(a: &Aggregate, key: &Key, xs: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(&key_of(a), key);
    prop_assert_eq!(
        a.window_end.timestamp_millis() - a.window_start.timestamp_millis(),
        i64::from(a.window_seconds) * 1000
    );
    prop_assert_eq!(
        a.window_start
            .timestamp_millis()
            .rem_euclid(i64::from(a.window_seconds) * 1000),
        0,
        "window not aligned"
    );
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (mean, var) = naive_mean_var(xs);
    let scale = max_abs(xs);
    prop_assert_eq!(
        (a.count, a.min, a.max),
        (xs.len() as u64, sorted[0], sorted[sorted.len() - 1]),
        "{:?}",
        key
    );
    prop_assert!(
        mean_close(a.mean, mean, xs.len(), scale),
        "{key:?}: mean {} vs {mean}",
        a.mean
    );
    prop_assert!(
        var_close(a.stddev * a.stddev, var, xs.len(), scale),
        "{key:?}: stddev {} vs {}",
        a.stddev,
        var.sqrt()
    );
    for (q, got) in [(0.5, a.p50), (0.95, a.p95), (0.99, a.p99)] {
        let want = exact_quantile(&sorted, q);
        prop_assert!(within_alpha(got, want), "{key:?} p{}: {got} vs exact {want}", q * 100.0);
    }
    Ok(())
}

fn run(cfg: &WindowConfig, input: &[Reading]) -> (Vec<Aggregate>, u64) {
    let mut w = Windower::new(cfg.clone());
    let mut out = Vec::new();
    for (offset, r) in input.iter().enumerate() {
        out.extend(w.push(partition(&r.device_id), offset as i64, r, &[]));
    }
    out.extend(w.flush());
    (out, w.late_values())
}

proptest! {
    #[test]
    fn windows_match_the_reference_and_never_lose_or_double_count(input in readings(300), cfg in window_config()) {
        let input: Vec<Reading> = input.iter().map(Gen::reading).collect();
        let mut w = Windower::new(cfg.clone());
        let mut reference = Reference::default();
        let mut emitted: BTreeMap<Key, u64> = BTreeMap::new();
        for (offset, r) in input.iter().enumerate() {
            let p = partition(&r.device_id);
            let got = w.push(p, offset as i64, r, &[]);
            let want = reference.push(&cfg, offset as i64, r);
            // The same windows close at the same push, in (end, size, device, metric) order.
            prop_assert_eq!(got.iter().map(key_of).collect::<Vec<_>>(), want.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), "push {}", offset);
            let watermark = w.watermark(p).expect("seen").timestamp_millis();
            for (a, (k, xs)) in got.iter().zip(&want) {
                prop_assert!(k.0 <= watermark, "window {k:?} emitted before the watermark {watermark} passed its end");
                check_aggregate(a, k, xs)?;
                *emitted.entry(k.clone()).or_default() += a.count;
            }
            prop_assert_eq!(w.late_values(), reference.late);
            // Committing this offset keeps every reading an open window needs.
            prop_assert_eq!(w.committable_offset(p), reference.committable(p), "push {}", offset);
            prop_assert_eq!(w.open_windows(), reference.open.values().map(BTreeMap::len).sum::<usize>());
        }
        let got = w.flush();
        let want = reference.flush();
        prop_assert_eq!(got.len(), want.len());
        for (a, (k, xs)) in got.iter().zip(&want) {
            check_aggregate(a, k, xs)?;
            prop_assert!(emitted.insert(k.clone(), a.count).is_none(), "window {:?} emitted twice", k);
        }
        prop_assert_eq!(w.open_windows(), 0);
        // No value lost or doubled: every value, once per window size, is in exactly one window or counted late.
        let values: u64 = input.iter().map(|r| r.metrics.len() as u64).sum();
        let in_windows: u64 = emitted.values().sum();
        prop_assert_eq!(in_windows + w.late_values(), values * cfg.sizes_seconds.len() as u64);
        for &size in &cfg.sizes_seconds {
            let late_for_size = reference_late_for_size(&cfg, &input, size);
            let counted: u64 = emitted.iter().filter(|(k, _)| k.1 == size).map(|(_, c)| c).sum();
            prop_assert_eq!(counted + late_for_size, values, "size {} s", size);
        }
    }

    #[test]
    fn any_arrival_order_within_the_lateness_gives_the_direct_computation(
        input in readings(200),
        sizes in prop::sample::subsequence(vec![1u32, 5, 10, 60], 1..=4),
        lateness_ms in 0..10_000i64,
        delays in prop::collection::vec(0.0..=1.0f64, 200),
    ) {
        let cfg = WindowConfig { sizes_seconds: sizes.clone(), allowed_lateness: chrono::Duration::milliseconds(lateness_ms) };
        // Event-time order, then each reading delayed by at most the allowed
        // lateness: sorting by (time + delay) never lets a reading arrive more
        // than `lateness` behind the newest one before it, so none is late.
        let mut ordered: Vec<Reading> = input.iter().map(Gen::reading).collect();
        ordered.sort_by_key(|r| r.event_time);
        let mut arrival: Vec<(f64, usize)> = ordered.iter().enumerate().map(|(i, r)| (r.event_time.timestamp_millis() as f64 + delays[i] * lateness_ms as f64, i)).collect();
        arrival.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let shuffled: Vec<Reading> = arrival.iter().map(|&(_, i)| ordered[i].clone()).collect();

        // Direct computation: every value in its window.
        let mut direct: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
        for r in &ordered {
            let t = r.event_time.timestamp_millis();
            for &size in &sizes {
                let size_ms = i64::from(size) * 1000;
                let end = t.div_euclid(size_ms) * size_ms + size_ms;
                for (m, &x) in &r.metrics {
                    direct.entry((end, size, r.device_id.clone(), m.clone())).or_default().push(x);
                }
            }
        }

        for (what, input) in [("event-time order", &ordered), ("delayed order", &shuffled)] {
            let (out, late) = run(&cfg, input);
            prop_assert_eq!(late, 0, "{}: values counted late", what);
            let mut by_key: BTreeMap<Key, &Aggregate> = BTreeMap::new();
            for a in &out {
                prop_assert!(by_key.insert(key_of(a), a).is_none(), "{}: window emitted twice", what);
            }
            prop_assert_eq!(by_key.keys().collect::<Vec<_>>(), direct.keys().collect::<Vec<_>>(), "{}", what);
            for (k, xs) in &direct {
                check_aggregate(by_key[k], k, xs)?;
            }
        }
    }
}

/// Values late for one window size, by the documented rule alone.
fn reference_late_for_size(cfg: &WindowConfig, input: &[Reading], size: u32) -> u64 {
    let lateness = cfg.allowed_lateness.num_milliseconds();
    let size_ms = i64::from(size) * 1000;
    let mut max_event: BTreeMap<i32, i64> = BTreeMap::new();
    let mut late = 0;
    for r in input {
        let p = partition(&r.device_id);
        let t = r.event_time.timestamp_millis();
        let end = t.div_euclid(size_ms) * size_ms + size_ms;
        if max_event.get(&p).is_some_and(|m| end <= m - lateness) {
            late += r.metrics.len() as u64;
        }
        let m = max_event.entry(p).or_insert(t);
        *m = (*m).max(t);
    }
    late
}
