//! Rollup tiers: a device's metric summarised per epoch-aligned minute, 5
//! and 15 minutes, hour, 6 hours and day, so that a chart of any range from
//! 15 minutes to a year reads at most about as many rows as it draws points.
//!
//! Guarantees of every backend:
//! - **Derived, never written directly.** A batch of windows marks, in its
//!   own transaction, the 1-minute buckets it touched; [`ResultStore::roll_up`]
//!   recomputes each marked bucket from its sources (the 1-minute tier from
//!   the finest windows whose size divides a minute, every other tier from
//!   the tier below it) and marks the bucket above it. Recomputing is
//!   idempotent, so a replayed or late window leaves the rollups exactly as
//!   if it had come first, and a crash between a batch and its rollup loses
//!   nothing (the marks are durable).
//! - **The merge is [`merge_points`]**, the same merge the dashboard applies
//!   to windows: counts add, min and max are exact, the mean is
//!   count-weighted, the standard deviation pooled, the top anomaly and its
//!   model kept. p50/p95/p99 come from the merge of the windows' quantile
//!   sketches (kept with the row, so the tier above merges them again):
//!   within the sketch's 1% relative error of the quantiles of every value
//!   under the bucket. Where a source has no sketch (windows from an analyze
//!   before sketches), p50 is the count-weighted mean of medians and p95/p99
//!   the highest (approximations), and the row keeps no sketch. Every part
//!   of it is associative, so a tier equals the merge of the windows under it.
//! - **Retention per tier** ([`RollupRetention`]): a tier's rows outlive the
//!   windows they came from; a bucket whose sources are gone is left as it
//!   is, never recomputed from nothing.
//!
//! Windows longer than a minute (a deployment's own 5-minute windows, say)
//! are not rolled up; analyze's default 10 s and 60 s windows are.
//!
//! [`ResultStore::roll_up`]: super::ResultStore::roll_up

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{SeriesPoint, merge_points, windows_per_point};

/// The tiers, finest first, in seconds. Each divides the next, and the
/// ratio between neighbours is at most 6, so a chart that reads the finest
/// tier giving at most its points draws at least a sixth of them.
pub const TIERS: [u32; 6] = [60, 300, 900, 3_600, 21_600, 86_400];

/// Window sizes the 1-minute tier is computed from: the divisors of 60.
pub const MINUTE_SOURCES: [u32; 12] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60];

/// The tier below `tier` (what it is computed from), `None` for the
/// 1-minute tier (computed from windows) or a size that is not a tier.
pub fn tier_below(tier: u32) -> Option<u32> {
    let i = TIERS.iter().position(|t| *t == tier)?;
    i.checked_sub(1).map(|i| TIERS[i])
}

/// The tier above `tier`, `None` at the top.
pub fn tier_above(tier: u32) -> Option<u32> {
    let i = TIERS.iter().position(|t| *t == tier)?;
    TIERS.get(i + 1).copied()
}

/// Start of the epoch-aligned bucket of `seconds` holding `t`.
pub fn bucket_of(t: DateTime<Utc>, seconds: u32) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    let size = i64::from(seconds.max(1)) * 1000;
    DateTime::from_timestamp_millis(ms.div_euclid(size) * size).unwrap_or(t)
}

/// The 1-minute bucket a window of `window_seconds` starting at `start`
/// dirties, if such windows are rolled up.
pub fn minute_bucket(window_seconds: u32, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
    MINUTE_SOURCES
        .contains(&window_seconds)
        .then(|| bucket_of(start, TIERS[0]))
}

/// One source row of a bucket: the size it covers and its summary.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// Device.
    pub device_id: String,
    /// Metric.
    pub metric: String,
    /// The bucket being computed.
    pub bucket: DateTime<Utc>,
    /// Size of the window or rollup this row summarises.
    pub size: u32,
    /// Its summary.
    pub point: SeriesPoint,
}

/// A computed rollup row.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    /// Device.
    pub device_id: String,
    /// Metric.
    pub metric: String,
    /// Size of its sources.
    pub source_seconds: u32,
    /// The merged summary; `window_start` is the bucket's start.
    pub point: SeriesPoint,
}

/// Merge source rows (ordered by device, metric, bucket, then start) into
/// one row per bucket: from the finest source size present in the bucket
/// only (10 s and 60 s windows cover the same readings; adding both would
/// count them twice).
pub fn compute(rows: Vec<SourceRow>) -> Vec<RollupRow> {
    // (device, metric, bucket) -> the finest source size seen and its rows.
    type Bucket = (String, String, DateTime<Utc>);
    let mut buckets: BTreeMap<Bucket, (u32, Vec<SeriesPoint>)> = BTreeMap::new();
    for r in rows {
        let e = buckets
            .entry((r.device_id, r.metric, r.bucket))
            .or_insert((r.size, Vec::new()));
        if r.size < e.0 {
            *e = (r.size, Vec::new());
        }
        if r.size == e.0 {
            e.1.push(r.point);
        }
    }
    buckets
        .into_iter()
        .filter_map(|((device_id, metric, bucket), (size, mut points))| {
            points.sort_by_key(|p| p.window_start);
            let mut point = merge_points(&points)?;
            point.window_start = bucket;
            Some(RollupRow {
                device_id,
                metric,
                source_seconds: size,
                point,
            })
        })
        .collect()
}

/// The buckets of tier `above` that `computed` rows (of the tier below it)
/// fall in, once each and sorted (so concurrent jobs lock marks in one order).
pub(crate) fn parent_marks(above: u32, computed: &[RollupRow]) -> Vec<(&str, &str, DateTime<Utc>)> {
    let marks: std::collections::BTreeSet<(&str, &str, DateTime<Utc>)> = computed
        .iter()
        .map(|r| {
            (
                r.device_id.as_str(),
                r.metric.as_str(),
                bucket_of(r.point.window_start, above),
            )
        })
        .collect();
    marks.into_iter().collect()
}

/// Run one job: `step(tier, limit)` (one transaction: claim up to `limit`
/// marks of `tier`, recompute, mark the parents; returns the marks claimed)
/// tier by tier, finest first, until a step claims fewer than `limit`. At
/// most 64 steps a tier, so writers marking faster than the job keeps up
/// cannot hold it in one tier. Returns the buckets recomputed.
pub(crate) async fn run_job<F, Fut, E>(limit: usize, mut step: F) -> Result<u64, E>
where
    F: FnMut(u32, usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
{
    let limit = limit.max(1);
    let mut total = 0;
    for tier in TIERS {
        for _ in 0..64 {
            let n = step(tier, limit).await?;
            total += n as u64;
            if n < limit {
                break;
            }
        }
    }
    Ok(total)
}

/// What a series is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Analyze's windows of this many seconds.
    Windows(u32),
    /// The rollup tier of this many seconds.
    Rollup(u32),
}

impl Resolution {
    /// Seconds one row covers.
    pub fn seconds(self) -> u32 {
        match self {
            Self::Windows(s) | Self::Rollup(s) => s,
        }
    }

    /// The table holding its rows.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Windows(_) => "aggregates",
            Self::Rollup(_) => "rollups",
        }
    }

    /// `"windows"` or `"rollup"`, for the API.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Windows(_) => "windows",
            Self::Rollup(_) => "rollup",
        }
    }
}

/// Epoch-aligned slots of `seconds` that `[from, to)` touches.
fn slots(seconds: u32, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let size = i64::from(seconds.max(1)) * 1000;
    let (a, b) = (from.timestamp_millis(), to.timestamp_millis());
    if b <= a {
        return 0;
    }
    (b - 1).div_euclid(size) - a.div_euclid(size) + 1
}

/// Windows a chart merges itself before it reads a rollup tier instead,
/// per point it draws: up to this many, the newest minutes (which the rollup
/// job reaches up to its interval later) are on the chart, at a bounded cost.
pub const MERGE_WINDOWS_PER_POINT: i64 = 4;

/// What a chart of at most `max_points` over `[from, to)` that asked for
/// windows of `window_seconds` reads, and how many rows each point merges:
/// the windows when they number at most [`MERGE_WINDOWS_PER_POINT`] times
/// the points (merged when more than the points); otherwise the finest tier
/// whose rows number at most `max_points` (one row per point, so a 24 h
/// chart of 800 points reads the 288 five-minute rows, not 8,640 windows);
/// when even the coarsest tier has more rows, it merges them.
pub fn pick(window_seconds: u32, from: DateTime<Utc>, to: DateTime<Utc>, max_points: u32) -> (Resolution, u32) {
    let windows = slots(window_seconds, from, to);
    if windows <= i64::from(max_points) {
        return (Resolution::Windows(window_seconds), 1);
    }
    if windows <= MERGE_WINDOWS_PER_POINT * i64::from(max_points) {
        let per_point = windows_per_point(window_seconds, from, to, max_points);
        return (Resolution::Windows(window_seconds), per_point);
    }
    let mut last = Resolution::Windows(window_seconds);
    for tier in TIERS.iter().filter(|t| **t > window_seconds) {
        last = Resolution::Rollup(*tier);
        if slots(*tier, from, to) <= i64::from(max_points) {
            return (last, 1);
        }
    }
    (last, windows_per_point(last.seconds(), from, to, max_points))
}

/// How long each tier is kept (`None`: for ever), e.g.
/// `1m=90d,5m=180d,15m=1y,1h=2y,6h=forever,1d=forever`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRetention(pub [(u32, Option<u32>); TIERS.len()]);

impl Default for RollupRetention {
    fn default() -> Self {
        Self([
            (60, Some(90)),
            (300, Some(180)),
            (900, Some(365)),
            (3_600, Some(730)),
            (21_600, None),
            (86_400, None),
        ])
    }
}

fn tier_name(seconds: u32) -> String {
    match seconds {
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s => format!("{}m", s / 60),
    }
}

fn days_name(days: u32) -> String {
    if days.is_multiple_of(365) {
        format!("{}y", days / 365)
    } else {
        format!("{days}d")
    }
}

impl fmt::Display for RollupRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(tier, days)| {
                format!(
                    "{}={}",
                    tier_name(*tier),
                    days.map_or_else(|| "forever".to_owned(), days_name)
                )
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for RollupRetention {
    type Err = String;

    /// Tiers not named keep their default.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tier, keep) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not TIER=AGE, like 1h=2y"))?;
            let slot = out
                .0
                .iter_mut()
                .find(|(t, _)| tier_name(*t) == tier.trim())
                .ok_or_else(|| {
                    let names: Vec<String> = TIERS.iter().map(|t| tier_name(*t)).collect();
                    format!("'{tier}' is not a tier (one of {})", names.join(", "))
                })?;
            let keep = keep.trim();
            slot.1 = if keep == "forever" {
                None
            } else {
                let bad = || format!("'{keep}' is not an age like 90d, 2y or forever");
                // At the last character, not byte: anything typed is an error, never a panic.
                let (n, unit) = match keep.char_indices().last() {
                    Some((i, _)) => keep.split_at(i),
                    None => return Err(bad()),
                };
                let n: u32 = n.parse().map_err(|_| bad())?;
                let days = match unit {
                    "d" => n,
                    "y" => n.checked_mul(365).ok_or_else(bad)?,
                    _ => return Err(bad()),
                };
                if days == 0 {
                    return Err(format!("'{keep}': a tier is kept at least a day"));
                }
                Some(days)
            };
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    use crate::sketch::QuantileSketch;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().expect("valid")
    }

    fn p(start: i64, count: i64, mean: f64, score: f64) -> SeriesPoint {
        SeriesPoint {
            window_start: t(start),
            count,
            min: mean - 1.0,
            max: mean + 1.0,
            mean,
            stddev: 0.5,
            p50: mean,
            p95: mean + 0.8,
            p99: mean + 0.9,
            anomaly_score: score,
            model: format!("m{start}"),
            expected_low: None,
            expected_high: None,
            warming: false,
            sketch: None,
        }
    }

    #[test]
    fn a_retention_with_any_characters_is_an_error_not_a_panic() {
        for bad in ["1h=2\u{904b0}", "1h=é", "1h=", "1h=\u{10FFFF}d"] {
            assert!(bad.parse::<RollupRetention>().is_err(), "{bad:?}");
        }
        assert!("1h=2y".parse::<RollupRetention>().is_ok());
    }

    #[test]
    fn tiers_divide_each_other_and_neighbours_are_at_most_six_apart() {
        for w in TIERS.windows(2) {
            assert_eq!(w[1] % w[0], 0, "{w:?}");
            assert!(w[1] / w[0] <= 6, "{w:?}");
        }
        assert_eq!(tier_below(60), None);
        assert_eq!(tier_below(3600), Some(900));
        assert_eq!(tier_above(86_400), None);
        assert_eq!(tier_above(60), Some(300));
        assert_eq!(tier_below(10), None);
        assert!(MINUTE_SOURCES.iter().all(|s| 60 % s == 0));
        assert_eq!(minute_bucket(10, t(125)), Some(t(120)));
        assert_eq!(minute_bucket(300, t(125)), None);
        assert_eq!(bucket_of(t(-1), 60), t(-60));
    }

    #[test]
    fn a_bucket_is_computed_from_its_finest_source_only() {
        let row = |size, start, mean| SourceRow {
            device_id: "d".into(),
            metric: "m".into(),
            bucket: t(60),
            size,
            point: p(start, 10, mean, 0.1),
        };
        let out = compute(vec![
            row(60, 60, 100.0),
            row(10, 70, 1.0),
            row(10, 60, 3.0),
            row(60, 60, 100.0),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].source_seconds, 10);
        assert_eq!(out[0].point.count, 20);
        assert_eq!(out[0].point.mean, 2.0);
        assert_eq!(out[0].point.window_start, t(60));
        // Merged in time order whatever the rows' order: on a tie of scores the earliest window's model.
        assert_eq!(out[0].point.model, "m60");
    }

    /// 10 s windows rolled up as the job does, tier by tier: 60 s from the
    /// windows, 300 from 60, 900 from 300, 3600 from 900.
    fn up_to_the_hour(windows: Vec<SeriesPoint>) -> Vec<SeriesPoint> {
        let mut level = windows;
        let mut size = 10;
        for tier in [60, 300, 900, 3600] {
            let rows = level
                .iter()
                .map(|w| SourceRow {
                    device_id: "d".into(),
                    metric: "m".into(),
                    bucket: bucket_of(w.window_start, tier),
                    size,
                    point: w.clone(),
                })
                .collect();
            level = compute(rows).into_iter().map(|r| r.point).collect();
            size = tier;
        }
        level
    }

    #[test]
    fn a_tier_of_tiers_equals_the_merge_of_the_windows_under_it() {
        // 1 h of 10 s windows with varied counts, means and scores.
        let windows: Vec<SeriesPoint> = (0..360)
            .map(|i| {
                let mut w = p(
                    i * 10,
                    1 + i % 7,
                    (i as f64 * 0.37).sin() * 40.0 + 1000.0,
                    ((i * 13) % 97) as f64 / 97.0,
                );
                w.stddev = 0.1 + (i % 5) as f64;
                w.expected_low = (i % 3 == 0).then_some(990.0 - i as f64 / 10.0);
                w.expected_high = (i % 3 == 0).then_some(1010.0 + i as f64 / 10.0);
                w.warming = i == 17;
                w
            })
            .collect();
        let direct = merge_points(&windows).expect("windows");
        let level = up_to_the_hour(windows);
        assert_eq!(level.len(), 1);
        let hour = &level[0];
        assert_eq!(hour.count, direct.count);
        assert_eq!((hour.min, hour.max), (direct.min, direct.max));
        assert!(
            (hour.mean - direct.mean).abs() < 1e-9,
            "{} vs {}",
            hour.mean,
            direct.mean
        );
        assert!(
            (hour.stddev - direct.stddev).abs() < 1e-9,
            "{} vs {}",
            hour.stddev,
            direct.stddev
        );
        assert!((hour.p50 - direct.p50).abs() < 1e-9);
        assert_eq!((hour.p95, hour.p99), (direct.p95, direct.p99));
        assert_eq!((hour.anomaly_score, &hour.model), (direct.anomaly_score, &direct.model));
        assert_eq!(
            (hour.expected_low, hour.expected_high),
            (direct.expected_low, direct.expected_high)
        );
        assert!(hour.warming);
    }

    /// The lower quantile the sketch estimates: rank `floor(q * (n - 1))`.
    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    /// 10 s windows of random readings as analyze writes them (sketch
    /// included), rolled up to 1 h through every tier: the hour's quantiles
    /// are those of all its readings within the sketch's relative error, and
    /// its sketch is exactly the sketch of all of them.
    #[test]
    fn sketched_windows_roll_up_to_the_quantiles_of_their_readings() {
        let mut rng = tributary_testkit::rng::Rng::new(41);
        for case in 0..24 {
            let mut all = Vec::new();
            let mut whole = QuantileSketch::default();
            let windows: Vec<SeriesPoint> = (0..360)
                .filter_map(|i| {
                    // Gaps, single values, bursts; level shifts, heavy tails, negatives.
                    let n = [0, 1, 1, 3, 8, 40][rng.below(6) as usize];
                    let level =
                        if case % 3 == 0 { 0.0 } else { 20.0 * f64::from(case) } + if i > 200 { 15.0 } else { 0.0 };
                    let xs: Vec<f64> = (0..n)
                        .map(|_| {
                            level
                                + rng.normal() * (1.0 + f64::from(case % 4))
                                + if rng.below(50) == 0 { 1e3 } else { 0.0 }
                        })
                        .collect();
                    if xs.is_empty() {
                        return None;
                    }
                    let mut sk = QuantileSketch::default();
                    xs.iter().for_each(|&x| sk.insert(x));
                    whole.merge(&sk);
                    all.extend_from_slice(&xs);
                    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                    let mut w = p(i64::from(i) * 10, xs.len() as i64, mean, 0.0);
                    w.min = sk.min();
                    w.max = sk.max();
                    (w.p50, w.p95, w.p99) = (sk.quantile(0.5)?, sk.quantile(0.95)?, sk.quantile(0.99)?);
                    w.sketch = Some(sk.to_bytes());
                    Some(w)
                })
                .collect();
            let level = up_to_the_hour(windows);
            assert_eq!(level.len(), 1);
            let hour = &level[0];
            all.sort_by(f64::total_cmp);
            assert_eq!(hour.count, all.len() as i64);
            for (q, got) in [(0.5, hour.p50), (0.95, hour.p95), (0.99, hour.p99)] {
                let want = exact_quantile(&all, q);
                assert!(
                    (got - want).abs() <= 0.01 * want.abs() + 1e-9,
                    "case {case}: p{} is {got}, the readings' is {want}",
                    q * 100.0
                );
            }
            let merged = QuantileSketch::from_bytes(hour.sketch.as_deref().expect("a sketch")).expect("decodes");
            assert_eq!(merged, whole, "case {case}");
        }
    }

    #[test]
    fn a_window_without_a_sketch_makes_its_bucket_approximate() {
        let mut with = p(0, 2, 10.0, 0.0);
        let mut sk = QuantileSketch::default();
        [9.0, 11.0].iter().for_each(|&x| sk.insert(x));
        with.sketch = Some(sk.to_bytes());
        let without = p(10, 2, 30.0, 0.0);
        let merged = merge_points(&[with.clone(), without.clone()]).expect("merged");
        assert_eq!(merged.sketch, None);
        assert_eq!((merged.p95, merged.p99), (without.p95, without.p99));
        assert_eq!(merged.p50, 20.0);
        // A sketch that does not decode counts as none.
        let mut broken = with.clone();
        broken.sketch = Some(vec![7, 7]);
        assert_eq!(merge_points(&[with.clone(), broken]).expect("merged").sketch, None);
        // Both sketched: exact, and the sketch kept.
        let mut other = without;
        let mut sk2 = QuantileSketch::default();
        [29.0, 31.0].iter().for_each(|&x| sk2.insert(x));
        other.sketch = Some(sk2.to_bytes());
        let merged = merge_points(&[with, other]).expect("merged");
        assert!((merged.p50 - 11.0).abs() <= 0.11, "{}", merged.p50);
        assert!((merged.p99 - 29.0).abs() <= 0.3, "{}", merged.p99);
        assert!(merged.sketch.is_some());
    }

    #[test]
    fn a_chart_reads_the_finest_resolution_with_at_most_its_points() {
        let now = t(1_800_000_000);
        let back = |s: i64| now - chrono::Duration::seconds(s);
        // 15 minutes of 10 s windows: 90 rows.
        assert_eq!(pick(10, back(900), now, 800), (Resolution::Windows(10), 1));
        // 6 h of 10 s windows, or 1 h of 2 s ones, is at most 4 windows a point:
        // merged from the windows, so the newest minutes are there.
        assert_eq!(pick(10, back(6 * 3600), now, 800), (Resolution::Windows(10), 3));
        assert_eq!(pick(2, back(3600), now, 800), (Resolution::Windows(2), 3));
        // 24 h: 8,640 windows, 1,440 minutes, 288 five-minute rows.
        assert_eq!(pick(10, back(86_400), now, 800), (Resolution::Rollup(300), 1));
        assert_eq!(pick(10, back(86_400), now, 1500), (Resolution::Rollup(60), 1));
        assert_eq!(pick(10, back(7 * 86_400), now, 800), (Resolution::Rollup(900), 1));
        assert_eq!(pick(10, back(30 * 86_400), now, 800), (Resolution::Rollup(3600), 1));
        assert_eq!(pick(10, back(365 * 86_400), now, 800), (Resolution::Rollup(86_400), 1));
        // Ten years in 100 points: the day tier, merged.
        let (r, per) = pick(10, back(3650 * 86_400), now, 100);
        assert_eq!(r, Resolution::Rollup(86_400));
        assert!(per > 1 && slots(86_400 * per, back(3650 * 86_400), now) <= 100, "{per}");
        // A window size coarser than some tiers skips them.
        assert_eq!(pick(600, back(86_400), now, 800), (Resolution::Windows(600), 1));
        assert_eq!(pick(600, back(30 * 86_400), now, 800), (Resolution::Rollup(3600), 1));
    }

    #[test]
    fn retention_parses_ages_per_tier_and_prints_back() {
        let d = RollupRetention::default();
        assert_eq!(d.to_string(), "1m=90d,5m=180d,15m=1y,1h=2y,6h=forever,1d=forever");
        assert_eq!(d.to_string().parse::<RollupRetention>(), Ok(d.clone()));
        let r: RollupRetention = "1m=7d, 1d=10y".parse().expect("valid");
        assert_eq!(r.0[0], (60, Some(7)));
        assert_eq!(r.0[5], (86_400, Some(3650)));
        assert_eq!(r.0[1], d.0[1]);
        for (bad, says) in [
            ("2m=1d", "not a tier"),
            ("1h", "TIER=AGE"),
            ("1h=2w", "not an age"),
            ("1h=0d", "at least a day"),
        ] {
            let e = bad.parse::<RollupRetention>().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
