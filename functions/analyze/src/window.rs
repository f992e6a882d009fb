//! Event-time tumbling windows per (device, metric, window size), closed by a
//! per-partition watermark.
//!
//! [`Stats`] keeps count, min, max, a Welford mean/variance (the *population*
//! variance, dividing by `count`) and a [`QuantileSketch`]; two `Stats` merge
//! (Chan et al.'s parallel formula) into what one pass over both inputs gives,
//! up to floating-point rounding of mean/variance (count, min, max and the
//! sketch are exact).
//!
//! [`Windower`] guarantees:
//! - The watermark of a partition is its *event clock* minus the allowed
//!   lateness; it never goes back. The event clock is the largest event time
//!   seen on the partition, or further ahead where the idle rule moved it
//!   ([`Windower::advance_clock`], driven by [`crate::idle`] when the partition
//!   has been quiet).
//! - A window `[start, start + size)` closes once `end <= watermark` and is
//!   emitted exactly once as an [`Aggregate`], in a deterministic order
//!   (window end, size, device, metric): replaying the same readings in the
//!   same order gives identical aggregates.
//! - A value whose window has already closed is not added; it is counted in
//!   [`Windower::late_values`].
//! - [`Windower::committable_offset`] is the lowest offset still contributing
//!   to an open window (or one past the last offset seen when none is open):
//!   committing it means a restart re-reads everything an open window needs.
//! - [`Windower::revoke`] drops every trace of a partition.
//! - A device's resend of a reading (same device, id and event time, e.g. a
//!   retry after an ambiguous 503, or a duplicate send) is recognised by
//!   [`Windower::first_sighting`] while any window it belongs to can still
//!   take it, so it is counted once. The memory this needs is bounded: a
//!   reading is remembered until it would be late for every window size.
//!   After a rebalance the new owner re-reads from the committed offset, which
//!   is at or before every reading still in an open window, so it remembers
//!   the same readings.
//! - A window closed by an idle advance is closed like any other: it holds
//!   exactly the values accepted before the advance, and a value for it that
//!   arrives later is late.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use tributary_shared::model::Reading;

use crate::detect::{model_at, model_code};
use crate::records::Aggregate;
use crate::sketch::QuantileSketch;

/// Running statistics of one window. Count, min and max are the sketch's
/// (kept once: every open window of every series holds one of these).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Stats {
    /// Running mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    pub m2: f64,
    /// Quantiles, count, min and max.
    pub sketch: QuantileSketch,
}

impl Stats {
    /// Add one value (Welford's update, numerically stable). Non-finite
    /// values are ignored, as the sketch ignores them.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.sketch.insert(x);
        let d = x - self.mean;
        self.mean += d / self.count() as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Add everything `other` holds (Chan et al.).
    pub fn merge(&mut self, other: &Stats) {
        if other.count() == 0 {
            return;
        }
        if self.count() == 0 {
            *self = other.clone();
            return;
        }
        let (a, b) = (self.count() as f64, other.count() as f64);
        let n = a + b;
        let d = other.mean - self.mean;
        self.mean += d * b / n;
        self.m2 += other.m2 + d * d * a * b / n;
        self.sketch.merge(&other.sketch);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.sketch.count()
    }

    /// Smallest value (`+inf` when empty).
    pub fn min(&self) -> f64 {
        self.sketch.min()
    }

    /// Largest value (`-inf` when empty).
    pub fn max(&self) -> f64 {
        self.sketch.max()
    }

    /// Population variance (0 when empty).
    pub fn variance(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            (self.m2 / self.count() as f64).max(0.0)
        }
    }
}

/// A model's verdict on one value, fed to [`Windower::push`] so the
/// aggregate carries the window's highest score, the band the values were
/// expected in and whether the models were warming up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Score in [0, 1].
    pub score: f64,
    /// The model that gave it.
    pub model: &'static str,
    /// The band the value was expected in (`None` while warming up).
    pub expected: Option<(f64, f64)>,
    /// The models had not seen enough of the series to score it yet.
    pub warming: bool,
}

impl Scored {
    /// A score with no band, from models past their warm-up.
    pub fn plain(score: f64, model: &'static str) -> Self {
        Self {
            score,
            model,
            expected: None,
            warming: false,
        }
    }
}

/// Window sizes and allowed lateness.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// Window sizes in seconds (each > 0), e.g. `[10, 60]`.
    pub sizes_seconds: Vec<u32>,
    /// How far behind the partition's newest event time a value may be and
    /// still join its window.
    pub allowed_lateness: chrono::Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            sizes_seconds: vec![10, 60],
            allowed_lateness: chrono::Duration::seconds(5),
        }
    }
}

mod table;

use table::{SeriesKey, SeriesTable};

/// The open windows of one boundary (end, size) of a partition. Every
/// series' windows share the boundaries (tumbling windows are aligned to
/// the epoch), so a partition has a few groups, and a value finds its window
/// by one hash of its names instead of a search of every open window by
/// string comparisons. Emission sorts a group by (device, metric) once.
#[derive(Clone, Debug)]
struct Group {
    windows: SeriesTable<Open>,
    /// The lowest offset any of its windows holds.
    min_offset: i64,
}

/// One open window: 112 bytes, of which the statistics take 80.
#[derive(Clone, Debug)]
struct Open {
    stats: Stats,
    /// The highest score, if `model` names one.
    score: f64,
    /// The envelope of the values' expected bands (NaN edges: none yet; an
    /// `Option` would cost 8 bytes more in every window).
    expected_low: f64,
    expected_high: f64,
    /// The model that gave `score`, as its [`model_code`] ([`NO_SCORE`]:
    /// none yet): a byte rather than a 16-byte name in every window.
    model: u8,
    warming: bool,
}

/// [`Open::model`] before any value was scored.
const NO_SCORE: u8 = u8::MAX;

impl Open {
    fn new() -> Self {
        Self {
            stats: Stats::default(),
            score: 0.0,
            expected_low: f64::NAN,
            expected_high: f64::NAN,
            model: NO_SCORE,
            warming: false,
        }
    }

    /// The highest score and its model.
    fn top(&self) -> Option<(f64, &'static str)> {
        model_at(self.model).map(|m| (self.score, m))
    }

    fn set_top(&mut self, top: Option<(f64, &'static str)>) {
        let coded = top.and_then(|(score, name)| Some((score, model_code(name)?)));
        debug_assert_eq!(coded.is_some(), top.is_some(), "{top:?} names no model of MODELS");
        (self.score, self.model) = coded.unwrap_or((0.0, NO_SCORE));
    }
}

/// What the models contributed to an open window (its highest score, band
/// envelope and warm-up flag), apart from its values: what a snapshot keeps
/// of the window so a new owner that re-reads the window's values without
/// scoring them again ends with the same aggregate (see [`crate::state`]).
/// Merging is order-free (max, min/max, or), so seeding it first and adding
/// later scores gives what adding every score would.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScorePart {
    /// The highest score and its model.
    pub score: Option<(f64, &'static str)>,
    /// The envelope of the bands (NaN: none).
    pub expected_low: f64,
    /// The envelope of the bands (NaN: none).
    pub expected_high: f64,
    /// Some value was scored while the models were warming up.
    pub warming: bool,
}

impl ScorePart {
    fn of(open: &Open) -> Self {
        Self {
            score: open.top(),
            expected_low: open.expected_low,
            expected_high: open.expected_high,
            warming: open.warming,
        }
    }

    fn seed(&self, open: &mut Open) {
        open.set_top(self.score);
        open.expected_low = self.expected_low;
        open.expected_high = self.expected_high;
        open.warming = self.warming;
    }
}

/// Score parts restored for one partition, by boundary, to seed the windows
/// a replay rebuilds: used only while the replay is before `until`.
#[derive(Clone, Debug, Default)]
struct Seeds {
    parts: BTreeMap<(i64, u32), SeriesTable<ScorePart>>,
    until: i64,
}

#[derive(Clone, Debug, Default)]
struct Partition {
    /// Score parts from a snapshot, for the windows a replay rebuilds.
    seeds: Option<Box<Seeds>>,
    /// Newest event time seen (or restored from a checkpoint).
    max_event_ms: Option<i64>,
    /// Where the idle rule moved the event clock, if it did.
    idle_clock_ms: Option<i64>,
    last_offset: Option<i64>,
    /// Open windows by (end, size): the emission order.
    open: BTreeMap<(i64, u32), Group>,
    /// Hashes of (device, id, event time) of the readings that can still join
    /// a window, by event-time second, each second's sorted: for recognising
    /// resends in 8 bytes a reading (an ordered set of (time, hash) pairs
    /// took about 23 with its nodes).
    seen: BTreeMap<i64, Vec<u64>>,
    seen_len: usize,
}

impl Partition {
    /// The event clock: the newest event time, or the idle advance if further.
    fn clock(&self) -> Option<i64> {
        match (self.max_event_ms, self.idle_clock_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Tumbling windows for every partition this consumer owns.
#[derive(Clone, Debug)]
pub struct Windower {
    config: WindowConfig,
    partitions: BTreeMap<i32, Partition>,
    late: u64,
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The record of a closed window; its sketch moves into the record.
fn aggregate((end_ms, size_s): (i64, u32), (device, metric): &SeriesKey, open: Open) -> Aggregate {
    let s = &open.stats;
    let q = |p: f64| s.sketch.quantile(p).unwrap_or(s.mean);
    Aggregate {
        device_id: device.to_string(),
        metric: metric.to_string(),
        window_seconds: size_s,
        window_start: time(end_ms - i64::from(size_s) * 1000),
        window_end: time(end_ms),
        count: s.count(),
        min: s.min(),
        max: s.max(),
        mean: s.mean,
        stddev: s.variance().sqrt(),
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
        anomaly_score: open.top().map_or(0.0, |(score, _)| score),
        model: open.top().map_or("none", |(_, model)| model).to_owned(),
        expected_low: (!open.expected_low.is_nan()).then_some(open.expected_low),
        expected_high: (!open.expected_high.is_nan()).then_some(open.expected_high),
        warming: open.warming,
        sketch: Some(open.stats.sketch),
    }
}

/// The earliest event time some window size can still take at `watermark`:
/// a value at `t` is late for size `S` when `S`'s window holding `t` ends at
/// or before the watermark, i.e. when `t < floor(watermark / S) * S`.
fn horizon(watermark: i64, sizes_seconds: &[u32]) -> i64 {
    sizes_seconds
        .iter()
        .map(|&s| i64::from(s) * 1000)
        .filter(|&s| s > 0)
        .map(|s| watermark.div_euclid(s).saturating_mul(s))
        .min()
        .unwrap_or(watermark)
}

/// Keep the higher score; on a tie the model name decides, so the result
/// does not depend on arrival order.
fn better((a, a_model): (f64, &str), b: &Scored) -> bool {
    b.score > a || (b.score == a && b.model < a_model)
}

impl Windower {
    /// A windower with no state. Sizes of 0 are ignored.
    pub fn new(mut config: WindowConfig) -> Self {
        config.sizes_seconds.retain(|&s| s > 0);
        config.sizes_seconds.sort_unstable();
        config.sizes_seconds.dedup();
        Self {
            config,
            partitions: BTreeMap::new(),
            late: 0,
        }
    }

    /// Whether this is the first time `reading` (device, id, event time) is
    /// pushed into `partition` while some window can still take it; records
    /// it. `false` means a resend: skip it (it is counted already). A reading
    /// too late for every window is never remembered (it is late either way).
    /// The reading's `offset` counts as read either way (for
    /// [`Windower::committable_offset`]).
    pub fn first_sighting(&mut self, partition: i32, offset: i64, reading: &Reading) -> bool {
        let t = reading.event_time.timestamp_millis();
        let horizon = self.seen_horizon(partition);
        let p = self.partitions.entry(partition).or_default();
        p.last_offset = Some(p.last_offset.map_or(offset, |o| o.max(offset)));
        if horizon.is_some_and(|w| t < w) {
            return true;
        }
        // 64 bits: two readings of one second collide with odds of about
        // n^2 / 2^65, n the partition's readings in that second.
        let mut h = std::hash::DefaultHasher::new();
        reading.device_id.hash(&mut h);
        reading.id.hash(&mut h);
        t.hash(&mut h);
        let h = h.finish();
        let second = t.div_euclid(1000);
        let hashes = match p.seen.get_mut(&second) {
            Some(hashes) => hashes,
            None => {
                // The second before is complete but for late resends: trim
                // its spare capacity once.
                if let Some((_, before)) = p.seen.range_mut(..second).next_back() {
                    before.shrink_to_fit();
                }
                p.seen.entry(second).or_default()
            }
        };
        match hashes.binary_search(&h) {
            Ok(_) => false,
            Err(i) => {
                hashes.insert(i, h);
                p.seen_len += 1;
                true
            }
        }
    }

    /// Event times before this are late for every window size of the partition.
    fn seen_horizon(&self, partition: i32) -> Option<i64> {
        Some(horizon(self.watermark_ms(partition)?, &self.config.sizes_seconds))
    }

    /// Readings remembered for recognising resends, over all partitions.
    pub fn remembered(&self) -> usize {
        self.partitions.values().map(|p| p.seen_len).sum()
    }

    /// Add a reading read from `partition` at `offset`, with optional scores
    /// per metric (`(metric, score)`, any order), and return the windows this
    /// closed (deterministic order).
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        reading: &Reading,
        scores: &[(&str, Scored)],
    ) -> Vec<Aggregate> {
        let device: Arc<str> = Arc::from(reading.device_id.as_str());
        let values: Vec<(Arc<str>, f64, Option<Scored>)> = reading
            .metrics
            .iter()
            .filter(|(_, x)| x.is_finite())
            .map(|(metric, &x)| {
                let score = scores.iter().find(|(m, _)| *m == metric.as_str()).map(|&(_, s)| s);
                (Arc::from(metric.as_str()), x, score)
            })
            .collect();
        self.push_named(partition, offset, reading, &device, &values)
    }

    /// [`Windower::push`] with the names already shared (the analyzer's
    /// series map holds them, so a reading allocates none): `values` are the
    /// reading's finite metrics as (name, value, score), `device` its device.
    pub fn push_named(
        &mut self,
        partition: i32,
        offset: i64,
        reading: &Reading,
        device: &Arc<str>,
        values: &[(Arc<str>, f64, Option<Scored>)],
    ) -> Vec<Aggregate> {
        let t = reading.event_time.timestamp_millis();
        let lateness = self.config.allowed_lateness.num_milliseconds().max(0);
        let p = self.partitions.entry(partition).or_default();
        p.last_offset = Some(p.last_offset.map_or(offset, |o| o.max(offset)));
        if p.seeds.as_ref().is_some_and(|s| offset >= s.until) {
            p.seeds = None;
        }
        let watermark_before = p.clock().map(|m| m - lateness);
        for &size in &self.config.sizes_seconds {
            let size_ms = i64::from(size) * 1000;
            let end_ms = t.div_euclid(size_ms) * size_ms + size_ms;
            if watermark_before.is_some_and(|w| end_ms <= w) {
                self.late += reading.metrics.len() as u64;
                continue;
            }
            if !p.open.contains_key(&(end_ms, size)) {
                // Sized like the newest group of the same size: the same
                // series will mostly come again, and a table grown step by
                // step would rehash and leave its old tables behind.
                let expected = p
                    .open
                    .iter()
                    .rev()
                    .find(|((_, s), _)| *s == size)
                    .map_or(0, |(_, g)| g.windows.len());
                p.open.insert(
                    (end_ms, size),
                    Group {
                        windows: SeriesTable::with_capacity(expected),
                        min_offset: offset,
                    },
                );
            }
            let Some(group) = p.open.get_mut(&(end_ms, size)) else {
                continue;
            };
            group.min_offset = group.min_offset.min(offset);
            for (metric, x, score) in values {
                let (open, made) = group.windows.get_or_insert_with(device, metric, Open::new);
                if made {
                    let seed = p
                        .seeds
                        .as_ref()
                        .and_then(|s| s.parts.get(&(end_ms, size))?.get(device, metric));
                    if let Some(seed) = seed {
                        seed.seed(open);
                    }
                }
                open.stats.push(*x);
                if let Some(s) = score {
                    if open.top().is_none_or(|cur| better(cur, s)) {
                        open.set_top(Some((s.score, s.model)));
                    }
                    open.warming |= s.warming;
                    if let Some((lo, hi)) = s.expected {
                        // `min`/`max` return the other operand for a NaN.
                        open.expected_low = open.expected_low.min(lo);
                        open.expected_high = open.expected_high.max(hi);
                    }
                }
            }
        }
        p.max_event_ms = Some(p.max_event_ms.map_or(t, |m| m.max(t)));
        let watermark = p.clock().map_or(i64::MIN, |m| m - lateness);
        Self::close(p, watermark, &self.config.sizes_seconds)
    }

    /// Move a partition's event clock forward to `to_ms` (never back) and
    /// return the windows that closed, in the same order as [`Windower::push`].
    /// This is how the idle rule ([`crate::idle`]) closes the windows of a
    /// quiet partition; a partition never seen (nor restored) is left alone.
    pub fn advance_clock(&mut self, partition: i32, to_ms: i64) -> Vec<Aggregate> {
        let lateness = self.lateness_ms();
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        p.idle_clock_ms = Some(p.idle_clock_ms.map_or(to_ms, |c| c.max(to_ms)));
        let watermark = p.clock().map_or(i64::MIN, |m| m - lateness);
        Self::close(p, watermark, &self.config.sizes_seconds)
    }

    /// Whether [`Windower::advance_clock`] to `to_ms` would close a window.
    pub fn would_close(&self, partition: i32, to_ms: i64) -> bool {
        let Some(p) = self.partitions.get(&partition) else {
            return false;
        };
        let watermark = p.clock().map_or(to_ms, |c| c.max(to_ms)) - self.lateness_ms();
        p.open
            .first_key_value()
            .is_some_and(|(&(end_ms, _), _)| end_ms <= watermark)
    }

    /// The score parts of a series' open windows in `partition`, as
    /// (size in seconds, end in epoch ms, part), in boundary order.
    pub fn score_parts(&self, partition: i32, device: &str, metric: &str) -> Vec<(u32, i64, ScorePart)> {
        let Some(p) = self.partitions.get(&partition) else {
            return Vec::new();
        };
        p.open
            .iter()
            .filter_map(|(&(end_ms, size), g)| {
                let open = g.windows.get(device, metric)?;
                Some((size, end_ms, ScorePart::of(open)))
            })
            .collect()
    }

    /// Seed the window (`size`, `end_ms`) of a series with a snapshot's
    /// score part, for a replay of `partition` up to offset `until` (the
    /// snapshot's): the window a replayed value opens starts from it. A
    /// window the restored watermark has closed is not seeded (its values
    /// replay as late). Restore the watermark first.
    pub fn seed(
        &mut self,
        partition: i32,
        until: i64,
        series: (&Arc<str>, &Arc<str>),
        (size, end_ms): (u32, i64),
        part: ScorePart,
    ) {
        if self.watermark_ms(partition).is_some_and(|w| end_ms <= w) {
            return;
        }
        let p = self.partitions.entry(partition).or_default();
        let seeds = p.seeds.get_or_insert_with(Box::default);
        seeds.until = until;
        let table = seeds
            .parts
            .entry((end_ms, size))
            .or_insert_with(|| SeriesTable::with_capacity(0));
        *table.get_or_insert_with(series.0, series.1, || part).0 = part;
    }

    fn lateness_ms(&self) -> i64 {
        self.config.allowed_lateness.num_milliseconds().max(0)
    }

    /// The largest window size, in milliseconds (0 without windows).
    pub fn max_size_ms(&self) -> i64 {
        self.config.sizes_seconds.last().map_or(0, |&s| i64::from(s) * 1000)
    }

    fn close(p: &mut Partition, watermark: i64, sizes_seconds: &[u32]) -> Vec<Aggregate> {
        // Readings late for every size need not be remembered for resends any more.
        let horizon = horizon(watermark, sizes_seconds);
        // A second goes once all of it is before the horizon (which is on a
        // second boundary whenever there are window sizes).
        while let Some(entry) = p.seen.first_entry() {
            if (*entry.key() + 1).saturating_mul(1000) > horizon {
                break;
            }
            p.seen_len -= entry.remove().len();
        }
        let mut out = Vec::new();
        while let Some(entry) = p.open.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let (boundary, group) = entry.remove_entry();
            out.extend(
                group
                    .windows
                    .into_sorted()
                    .into_iter()
                    .map(|(series, open)| aggregate(boundary, &series, open)),
            );
        }
        out
    }

    /// Close every open window of every partition (e.g. at the end of a
    /// bounded input), in deterministic order (partition, then window order).
    pub fn flush(&mut self) -> Vec<Aggregate> {
        self.partitions
            .values_mut()
            .flat_map(|p| Self::close(p, i64::MAX, &[]))
            .collect()
    }

    /// The current watermark of a partition, if it has seen anything.
    pub fn watermark(&self, partition: i32) -> Option<DateTime<Utc>> {
        self.watermark_ms(partition).map(time)
    }

    /// [`Windower::watermark`] in epoch milliseconds.
    pub fn watermark_ms(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.clock().map(|m| m - self.lateness_ms())
    }

    /// The offset safe to commit for `partition` (Kafka semantics: the next
    /// offset to read after a restart): the lowest offset still contributing to
    /// an open window, else one past the last offset seen; `None` if unseen.
    pub fn committable_offset(&self, partition: i32) -> Option<i64> {
        let p = self.partitions.get(&partition)?;
        p.open
            .values()
            .map(|g| g.min_offset)
            .min()
            .or(p.last_offset.map(|o| o + 1))
    }

    /// A partition's event clock (epoch ms): the newest event time seen on it,
    /// or the idle advance if that is further. The watermark's source,
    /// committed with the offset so a new owner restores it (and a window
    /// closed by idleness stays closed on a replay from that commit).
    pub fn max_event_ms(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.clock()
    }

    /// The newest event time actually seen on (or restored for) a partition,
    /// ignoring idle advances: the base the idle rule counts quiet time from.
    pub fn newest_event_ms(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.max_event_ms
    }

    /// Restore a partition's newest event time after an assignment, before
    /// any record is replayed: windows that closed before the commit stay
    /// closed, so a replay re-emits exactly the windows that were still open.
    pub fn restore_max_event(&mut self, partition: i32, max_event_ms: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.max_event_ms = Some(p.max_event_ms.map_or(max_event_ms, |m| m.max(max_event_ms)));
    }

    /// Forget a partition (on revoke): its open windows are dropped unemitted,
    /// the new owner rebuilds them from the committed offset.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Values (one per metric and window size) dropped because their window had closed.
    pub fn late_values(&self) -> u64 {
        self.late
    }

    /// Number of open windows over all partitions (memory is proportional to it).
    pub fn open_windows(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.open.values())
            .map(|g| g.windows.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

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

    fn cfg(lateness_s: i64) -> WindowConfig {
        WindowConfig {
            sizes_seconds: vec![10, 60],
            allowed_lateness: chrono::Duration::seconds(lateness_s),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn an_open_window_stays_small() {
        // Every series holds one per window size: what ARCHITECTURE.md quotes.
        assert_eq!(size_of::<Open>(), 112);
        assert_eq!(size_of::<Stats>(), 80);
    }

    #[test]
    fn stats_merge_of_any_split_equals_one_pass() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let n = 1 + rng.below(300) as usize;
            let xs: Vec<f64> = (0..n).map(|_| rng.normal() * 100.0 + 1e4).collect();
            let mut one = Stats::default();
            xs.iter().for_each(|&x| one.push(x));
            // Split into a random number of random pieces and merge them.
            let mut merged = Stats::default();
            let mut i = 0;
            while i < n {
                let j = (i + 1 + rng.below(40) as usize).min(n);
                let mut part = Stats::default();
                xs[i..j].iter().for_each(|&x| part.push(x));
                merged.merge(&part);
                i = j;
            }
            assert_eq!(
                (merged.count(), merged.min(), merged.max()),
                (one.count(), one.min(), one.max())
            );
            assert_eq!(merged.sketch, one.sketch);
            assert!(
                close(merged.mean, one.mean) && close(merged.variance(), one.variance()),
                "{merged:?} vs {one:?}"
            );
            // And against brute force.
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            assert!(
                close(one.mean, mean) && (one.variance() - var).abs() <= 1e-6 * (1.0 + var),
                "{} vs {var}",
                one.variance()
            );
            assert_eq!(one.min(), xs.iter().copied().fold(f64::INFINITY, f64::min));
        }
    }

    /// Random readings from a few devices, roughly in event-time order with jitter.
    fn random_input(rng: &mut Rng, n: usize) -> Vec<(i32, i64, Reading)> {
        let mut t = 1_700_000_000_000i64;
        (0..n)
            .map(|i| {
                t += rng.below(3000) as i64;
                let jitter = rng.below(4000) as i64;
                let dev = ["a", "b", "c"][rng.below(3) as usize];
                let part = i32::from(dev != "a");
                let r = reading(
                    dev,
                    t - jitter,
                    &[
                        ("temp", (rng.normal() * 5.0 + 20.0).round()),
                        ("rpm", rng.unit() * 3000.0),
                    ],
                );
                (part, i as i64, r)
            })
            .collect()
    }

    #[test]
    fn replay_is_identical_and_matches_brute_force() {
        let mut rng = Rng::new(5);
        for trial in 0..20 {
            let input = random_input(&mut rng, 400);
            let run = || {
                let mut w = Windower::new(cfg(2));
                let mut out = Vec::new();
                let in_order = |closed: &[Aggregate]| {
                    let key = |g: &Aggregate| (g.window_end, g.window_seconds, g.device_id.clone(), g.metric.clone());
                    closed.windows(2).all(|w| key(&w[0]) < key(&w[1]))
                };
                for (p, o, r) in &input {
                    let closed = w.push(*p, *o, r, &[]);
                    assert!(in_order(&closed), "emitted by (end, size, device, metric): {closed:?}");
                    out.extend(closed);
                }
                out.extend(w.flush());
                (out, w.late_values())
            };
            let (a, late) = run();
            let (b, _) = run();
            assert_eq!(a, b, "trial {trial}: replay differs");

            // Brute force: group accepted values by window identity.
            let mut accepted: BTreeMap<(String, String, u32, i64), Vec<f64>> = BTreeMap::new();
            let mut seen_max: BTreeMap<i32, i64> = BTreeMap::new();
            let mut expected_late = 0;
            for (p, _, r) in &input {
                let t = r.event_time.timestamp_millis();
                for size in [10u32, 60] {
                    let sm = i64::from(size) * 1000;
                    let start = t.div_euclid(sm) * sm;
                    if seen_max.get(p).is_some_and(|m| start + sm <= m - 2000) {
                        expected_late += r.metrics.len() as u64;
                        continue;
                    }
                    for (m, &x) in &r.metrics {
                        accepted
                            .entry((r.device_id.clone(), m.clone(), size, start))
                            .or_default()
                            .push(x);
                    }
                }
                let e = seen_max.entry(*p).or_insert(t);
                *e = (*e).max(t);
            }
            assert_eq!(late, expected_late);
            assert_eq!(a.len(), accepted.len(), "each window emitted exactly once");
            for agg in &a {
                let xs = &accepted[&(
                    agg.device_id.clone(),
                    agg.metric.clone(),
                    agg.window_seconds,
                    agg.window_start.timestamp_millis(),
                )];
                assert_eq!(agg.count, xs.len() as u64);
                assert_eq!(agg.min, xs.iter().copied().fold(f64::INFINITY, f64::min));
                assert_eq!(agg.max, xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                assert!(close(agg.mean, mean), "{} vs {mean}", agg.mean);
                assert!(agg.min <= agg.p50 && agg.p50 <= agg.p95 && agg.p95 <= agg.p99 && agg.p99 <= agg.max);
            }
        }
    }

    #[test]
    fn merging_partial_windows_from_split_input_equals_one_pass() {
        // Split the readings of one window in two halves processed by two
        // windowers (e.g. before and after a rebalance); merging the stats of the
        // halves gives the one-pass aggregate.
        let mut rng = Rng::new(9);
        let xs: Vec<f64> = (0..500).map(|_| rng.normal()).collect();
        let mut one = Stats::default();
        xs.iter().for_each(|&x| one.push(x));
        for split in [0, 1, 250, 499, 500] {
            let mut a = Stats::default();
            let mut b = Stats::default();
            xs[..split].iter().for_each(|&x| a.push(x));
            xs[split..].iter().for_each(|&x| b.push(x));
            b.merge(&a);
            assert_eq!(
                (b.count(), b.min(), b.max(), &b.sketch),
                (one.count(), one.min(), one.max(), &one.sketch)
            );
            assert!(close(b.mean, one.mean) && close(b.variance(), one.variance()));
        }
    }

    #[test]
    fn watermark_closes_windows_counts_late_values_and_tracks_offsets() {
        let mut w = Windower::new(WindowConfig {
            sizes_seconds: vec![10],
            allowed_lateness: chrono::Duration::seconds(5),
        });
        let none: [(&str, Scored); 0] = [];
        assert!(w.push(0, 100, &reading("d", 1_000, &[("x", 1.0)]), &none).is_empty());
        assert!(w.push(0, 101, &reading("d", 9_000, &[("x", 3.0)]), &none).is_empty());
        assert_eq!(w.committable_offset(0), Some(100));
        // 14 s: watermark 9 s, window [0,10) still open.
        assert!(w.push(0, 102, &reading("d", 14_000, &[("x", 5.0)]), &none).is_empty());
        // 15 s: watermark 10 s closes [0,10).
        let out = w.push(0, 103, &reading("d", 15_000, &[("x", 7.0)]), &none);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].count, out[0].min, out[0].max, out[0].mean, out[0].stddev),
            (2, 1.0, 3.0, 2.0, 1.0)
        );
        assert_eq!(out[0].window_start.timestamp_millis(), 0);
        assert_eq!(
            w.committable_offset(0),
            Some(102),
            "offsets 100, 101 are no longer needed"
        );
        // A value for the closed window is late and not added.
        assert!(w.push(0, 104, &reading("d", 2_000, &[("x", 100.0)]), &none).is_empty());
        assert_eq!(w.late_values(), 1);
        // Other partitions have their own watermark.
        assert!(w.push(1, 7, &reading("e", 2_000, &[("x", 1.0)]), &none).is_empty());
        assert_eq!(w.committable_offset(1), Some(7));
        w.revoke(1);
        assert_eq!(w.committable_offset(1), None);
        assert_eq!(w.open_windows(), 1);
        let rest = w.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].count, 2);
        assert_eq!(w.committable_offset(0), Some(105));
    }

    #[test]
    fn an_idle_advance_closes_exactly_the_windows_the_watermark_passes() {
        let mut w = Windower::new(WindowConfig {
            sizes_seconds: vec![10, 60],
            allowed_lateness: chrono::Duration::seconds(5),
        });
        let none: [(&str, Scored); 0] = [];
        for (o, ms) in [(0, 51_000), (1, 58_000), (2, 52_000)] {
            assert!(w.push(0, o, &reading("d", ms, &[("x", o as f64)]), &none).is_empty());
        }
        // Another partition with an old open window: an advance of partition 0 leaves it alone.
        w.push(1, 0, &reading("e", 1_000, &[("x", 1.0)]), &none);
        assert_eq!((w.open_windows(), w.watermark_ms(0)), (4, Some(53_000)));
        // [50,60) and [0,60) end at 60 s: a clock of 64.999 s (watermark 59.999 s) closes nothing.
        assert!(!w.would_close(0, 64_999));
        assert!(w.advance_clock(0, 64_999).is_empty());
        assert!(w.would_close(0, 65_000));
        let out = w.advance_clock(0, 65_000);
        let got: Vec<_> = out
            .iter()
            .map(|a| (a.window_seconds, a.window_start.timestamp_millis(), a.count))
            .collect();
        assert_eq!(
            got,
            vec![(10, 50_000, 3), (60, 0, 3)],
            "both windows, in (end, size) order, with every value accepted before"
        );
        assert_eq!(w.open_windows(), 2, "partition 1's two windows untouched");
        assert_eq!(
            w.committable_offset(0),
            Some(3),
            "everything read on partition 0 may be committed"
        );
        assert_eq!(w.committable_offset(1), Some(0));
        // The clock never goes back, and the checkpoint carries the advance; the newest event does not move.
        assert!(w.advance_clock(0, 10_000).is_empty());
        assert_eq!(
            (w.max_event_ms(0), w.newest_event_ms(0), w.watermark_ms(0)),
            (Some(65_000), Some(58_000), Some(60_000))
        );
        // A value for a window closed by idleness is late, like any other; a newer one opens a new window.
        assert!(w.push(0, 3, &reading("d", 59_000, &[("x", 9.0)]), &none).is_empty());
        assert_eq!(
            (w.late_values(), w.open_windows()),
            (2, 2),
            "late in both window sizes, nothing reopened"
        );
        assert!(w.push(0, 4, &reading("d", 61_000, &[("x", 9.0)]), &none).is_empty());
        assert_eq!((w.late_values(), w.open_windows()), (2, 4));
        assert_eq!(w.committable_offset(0), Some(4));
        // A partition never seen is not created by an advance.
        assert!(w.advance_clock(7, i64::MAX / 2).is_empty());
        assert_eq!((w.committable_offset(7), w.watermark_ms(7)), (None, None));
        // A new owner restoring the checkpoint keeps the idle-closed windows closed on replay.
        let mut fresh = Windower::new(WindowConfig {
            sizes_seconds: vec![10, 60],
            allowed_lateness: chrono::Duration::seconds(5),
        });
        fresh.restore_max_event(0, w.max_event_ms(0).expect("clock"));
        assert!(fresh.push(0, 3, &reading("d", 59_000, &[("x", 9.0)]), &none).is_empty());
        assert_eq!((fresh.late_values(), fresh.open_windows()), (2, 0));
    }

    #[test]
    fn what_an_idle_advance_emits_does_not_depend_on_the_order_the_values_came_in() {
        let mut rng = Rng::new(21);
        let base: Vec<(i64, f64)> = (0..60)
            .map(|_| (100_000 + rng.below(20_000) as i64, (rng.normal() * 10.0).round()))
            .collect();
        let run = |order: &[(i64, f64)]| {
            // Lateness covers the spread, so every value is accepted whatever the order.
            let mut w = Windower::new(WindowConfig {
                sizes_seconds: vec![10, 60],
                allowed_lateness: chrono::Duration::seconds(30),
            });
            for (o, (ms, x)) in order.iter().enumerate() {
                assert!(w.push(0, o as i64, &reading("d", *ms, &[("x", *x)]), &[]).is_empty());
            }
            let newest = w.newest_event_ms(0).expect("seen");
            let out = w.advance_clock(0, newest + 120_000);
            assert_eq!((w.open_windows(), w.late_values()), (0, 0));
            out
        };
        let a = run(&base);
        for _ in 0..10 {
            let mut shuffled = base.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let b = run(&shuffled);
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(
                    (&x.device_id, x.window_seconds, x.window_start, x.count, x.min, x.max),
                    (&y.device_id, y.window_seconds, y.window_start, y.count, y.min, y.max)
                );
                assert_eq!((x.p50, x.p95, x.p99), (y.p50, y.p95, y.p99));
                assert!(close(x.mean, y.mean) && close(x.stddev, y.stddev));
            }
        }
    }

    #[test]
    fn the_highest_score_is_kept_whatever_the_order() {
        let mut w = Windower::new(WindowConfig {
            sizes_seconds: vec![60],
            allowed_lateness: chrono::Duration::zero(),
        });
        let sc = |s: f64, m: &'static str| [("x", Scored::plain(s, m))];
        w.push(0, 0, &reading("d", 1_000, &[("x", 1.0)]), &sc(0.2, "spike"));
        w.push(0, 1, &reading("d", 2_000, &[("x", 1.0)]), &sc(0.9, "changepoint"));
        w.push(0, 2, &reading("d", 3_000, &[("x", 1.0)]), &sc(0.9, "spike"));
        let out = w.flush();
        assert_eq!((out[0].anomaly_score, out[0].model.as_str()), (0.9, "changepoint"));
    }

    #[test]
    fn a_window_carries_the_envelope_of_its_bands_and_any_warm_up() {
        let mut w = Windower::new(WindowConfig {
            sizes_seconds: vec![10, 60],
            allowed_lateness: chrono::Duration::zero(),
        });
        let band = |s: f64, lo: f64, hi: f64| Scored {
            expected: Some((lo, hi)),
            ..Scored::plain(s, "spike")
        };
        let warming = Scored {
            warming: true,
            ..Scored::plain(0.0, "spike")
        };
        let pushes = [
            (1_000, 1.0, Some(warming)),
            (12_000, 2.0, Some(band(0.1, 0.5, 3.0))),
            (13_000, 9.0, Some(band(0.9, 1.0, 3.5))),
            (14_000, 2.0, None),
        ];
        let mut out = Vec::new();
        for (offset, (ms, x, score)) in (0i64..).zip(pushes) {
            let scores: Vec<(&str, Scored)> = score.map(|s| ("x", s)).into_iter().collect();
            out.extend(w.push(0, offset, &reading("d", ms, &[("x", x)]), &scores));
        }
        out.extend(w.flush());
        let get = |size: u32, start_s: i64| {
            out.iter()
                .find(|a| a.window_seconds == size && a.window_start.timestamp() == start_s)
                .map(|a| (a.expected_low, a.expected_high, a.warming))
        };
        assert_eq!(get(10, 0), Some((None, None, true)), "scored only while warming up");
        assert_eq!(
            get(10, 10),
            Some((Some(0.5), Some(3.5), false)),
            "lowest low, highest high"
        );
        assert_eq!(
            get(60, 0),
            Some((Some(0.5), Some(3.5), true)),
            "one warming value marks the window"
        );
    }
}
