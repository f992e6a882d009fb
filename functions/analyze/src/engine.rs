//! The analyze function's per-consumer state, wired together: readings in,
//! aggregates and alerts out, and the offsets that are safe to commit.
//!
//! [`Analyzer::process`] scores every metric of a reading with its series'
//! [`SeriesModel`], feeds the verdict to the series' [`AlertTracker`] and the
//! reading to the [`Windower`]. Deterministic: the same readings in the same
//! order give the same output. Memory: one bounded [`SeriesModel`] per
//! (device, metric) seen (see [`crate::detect`]) plus the open windows.
//!
//! Warm takeover ([`crate::state`]): with [`Analyzer::keep_snapshots`], a
//! partition's changed series are written out by [`Analyzer::snapshot`],
//! commits are held to the newest snapshot ([`Analyzer::snapshot_cap`]), and
//! a new owner's [`Analyzer::restore_state`] continues from it: readings
//! replayed from before the snapshot only rebuild windows, so the output
//! equals an uninterrupted run's. Without snapshots, a new owner's models
//! start cold from the committed offset; aggregates are re-emitted with the
//! same identity (an overwrite), but their scores may differ.
//!
//! Threshold rules: each series takes its rules from the current
//! [`RuleBook`] (set with [`Analyzer::set_rules`], per group through the
//! device registry's [`GroupView`]) at every reading, so a rule change
//! applies from the next reading on; windows already closed are never
//! touched.
//!
//! # Bounded memory: series eviction
//!
//! The model state of a (device, metric) series (under 1.5 KiB with the
//! default models, see [`crate::detect`]) is dropped when the series is idle
//! or when there are too many, so devices that come and go do not grow the
//! process without bound ([`SeriesLimits`]):
//! - **idle**: a series whose partition's watermark is `idle` (and at least
//!   the largest window) past the series' newest event time is evicted by
//!   [`Analyzer::evict_idle_series`] (called periodically by the handler);
//!   all its windows have closed by then. Independently of when that sweep
//!   runs, a reading that comes `idle` or more of event time after its
//!   series' previous newest one always starts from fresh model state, so the
//!   scores do not depend on sweep timing.
//! - **cap**: when a new series would exceed `max`, the least recently
//!   updated series (processing order) are evicted, 1/64 of the cap at a
//!   time so the scan is amortised; counted separately, logged by the handler.
//!
//! Eviction frees model and alert state only: open windows live in the
//! [`Windower`] and complete normally. A returning device loses its
//! detectors' warm-up (spike, change-point and seasonal history and the
//! per-series calibration): its scores are 0 until the models have seen
//! enough values again, so an anomaly right after its return can go
//! unalerted. An incident still open when its series is evicted is resolved
//! (an `resolved` record with a reason saying why) so a returning device does
//! not leave a second, never-resolved incident behind. Devices that report
//! less often than `idle` therefore never warm up: raise
//! `TRIBUTARY_SERIES_IDLE_SECS` for such fleets.

use std::collections::HashMap;

use foldhash::fast::FixedState;
use std::sync::Arc;

use tributary_shared::eventlog::KeyValues;
use tributary_shared::model::Reading;
use tributary_shared::registry::view::GroupView;
use tributary_shared::rules::Severity;

use crate::detect::alert::{AlertConfig, AlertTracker};
use crate::detect::rulebook::RuleBook;
use crate::detect::rules::Rule;
use crate::detect::{DetectorConfig, SeriesModel};
use crate::records::{Aggregate, Alert};
use crate::state;
use crate::window::{Scored, WindowConfig, Windower};

/// Everything the analyze function can be configured with.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// Window sizes and lateness.
    pub windows: WindowConfig,
    /// Models.
    pub detectors: DetectorConfig,
    /// Alerting.
    pub alerts: AlertConfig,
    /// The idle rule (see [`crate::idle`]): how long a partition must be quiet
    /// (processing time spent polling) before its event clock follows the
    /// wall clock. `None` turns the rule off. Used by the handler, not here.
    pub idle_timeout: Option<std::time::Duration>,
    /// Series eviction.
    pub series: SeriesLimits,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            windows: WindowConfig::default(),
            detectors: DetectorConfig::default(),
            alerts: AlertConfig::default(),
            idle_timeout: Some(std::time::Duration::from_secs(30)),
            series: SeriesLimits::default(),
        }
    }
}

/// When per-series model state is dropped (see the module docs).
#[derive(Clone, Debug)]
pub struct SeriesLimits {
    /// Event time without a reading after which a series is evicted; zero
    /// turns idle eviction off.
    pub idle: chrono::Duration,
    /// Most series kept; 0 means no cap.
    pub max: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            idle: chrono::Duration::hours(1),
            max: 100_000,
        }
    }
}

/// Series evicted since start, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Idle for longer than [`SeriesLimits::idle`].
    pub idle: u64,
    /// Forced by [`SeriesLimits::max`].
    pub cap: u64,
    /// How many times the cap forced an eviction round.
    pub cap_rounds: u64,
}

/// What one reading produced, in deterministic order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Windows closed by this reading (publish to `telemetry.aggregates`).
    pub aggregates: Vec<Aggregate>,
    /// Alert records (publish to `telemetry.alerts`), in metric order.
    pub alerts: Vec<Alert>,
}

/// One series' state: boxed in its device's sorted vector, and sized to
/// fit the allocator's 512-byte class (a test holds it there).
#[derive(Clone, Debug)]
struct Series {
    partition: i32,
    /// Newest event time of the series (epoch ms).
    newest_ms: i64,
    /// Processing order of the last update (unique), for the cap's LRU.
    used: u64,
    /// Last value, for the record that resolves an incident on eviction.
    last_value: f64,
    model: SeriesModel,
    alerts: AlertTracker,
    /// Changed since the partition's last snapshot (see [`crate::state`]).
    dirty: bool,
}

impl Series {
    /// A series first seen (or restarted) at event time `t_ms` with value `x`.
    fn new(detectors: &DetectorConfig, partition: i32, t_ms: i64, metric: &str, x: f64) -> Self {
        Self {
            partition,
            newest_ms: t_ms,
            used: 0,
            last_value: x,
            model: SeriesModel::new(detectors, metric),
            alerts: AlertTracker::new(),
            dirty: true,
        }
    }

    /// Drop this series' state: the record resolving its open incident, if any.
    fn evict(&mut self, device: &str, metric: &str, why: &str) -> Option<Alert> {
        let t = chrono::DateTime::from_timestamp_millis(self.newest_ms).unwrap_or_default();
        self.alerts.evict(device, metric, t, self.last_value, why)
    }
}

/// The reason an idle series' open incident is resolved with.
fn idle_reason(idle_ms: i64) -> String {
    format!(
        "no readings for at least {} s of event time; series state evicted",
        idle_ms / 1000
    )
}

/// Every series, by device and then by metric: a reading finds its device
/// with one hash lookup of its borrowed name (no key to build per value),
/// then each metric by a binary search of the device's few, and the names
/// are shared with the open windows. Sweeps go in (device, metric) order,
/// so what they emit is deterministic. A series is boxed, so the device's
/// sorted vector moves 24-byte entries, not model state.
#[derive(Clone, Debug, Default)]
struct SeriesMap {
    devices: HashMap<Arc<str>, Device, FixedState>,
    /// Metric names, one shared copy each: a fleet has few, and a copy per
    /// series would cost each series 24 bytes. A name no series holds any
    /// more is dropped when series are removed.
    metric_names: hashbrown::HashSet<Arc<str>, FixedState>,
    len: usize,
}

/// The series of one device. The name is the map's key again (a shared
/// pointer), so one lookup yields both.
#[derive(Clone, Debug)]
struct Device {
    name: Arc<str>,
    /// By metric name, sorted.
    metrics: Vec<Metric>,
}

/// A metric's shared name and its series.
type Metric = (Arc<str>, Box<Series>);

/// Where `metric` is (or would go) in a device's sorted series.
fn find_metric(metrics: &[Metric], metric: &str) -> Result<usize, usize> {
    metrics.binary_search_by(|(m, _)| (**m).cmp(metric))
}

impl Device {
    fn find(&self, metric: &str) -> Result<usize, usize> {
        find_metric(&self.metrics, metric)
    }
}

impl SeriesMap {
    /// A device's name and series.
    fn device_mut(&mut self, device: &str) -> Option<(&Arc<str>, &mut [Metric])> {
        self.devices
            .get_mut(device)
            .map(|d| (&d.name, d.metrics.as_mut_slice()))
    }

    fn contains(&self, device: &str, metric: &str) -> bool {
        self.devices.get(device).is_some_and(|d| d.find(metric).is_ok())
    }

    fn insert(&mut self, device: &str, metric: &str, series: Series) {
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => {
                let name: Arc<str> = Arc::from(device);
                self.devices.entry(Arc::clone(&name)).or_insert(Device {
                    name,
                    metrics: Vec::new(),
                })
            }
        };
        match d.find(metric) {
            Ok(i) => *d.metrics[i].1 = series,
            Err(i) => {
                let name = Arc::clone(self.metric_names.get_or_insert_with(metric, |m: &str| Arc::from(m)));
                d.metrics.insert(i, (name, Box::new(series)));
                self.len += 1;
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn values(&self) -> impl Iterator<Item = &Series> {
        self.devices.values().flat_map(|d| d.metrics.iter()).map(|(_, s)| &**s)
    }

    /// Keep the series `keep` says to keep, in (device, metric) order.
    fn retain(&mut self, mut keep: impl FnMut(&str, &str, &mut Series) -> bool) {
        let mut names: Vec<Arc<str>> = self.devices.keys().cloned().collect();
        names.sort_unstable();
        for name in names {
            let Some(d) = self.devices.get_mut(&*name) else {
                continue;
            };
            let before = d.metrics.len();
            d.metrics.retain_mut(|(metric, s)| keep(&name, metric, s));
            self.len -= before - d.metrics.len();
            if d.metrics.is_empty() {
                self.devices.remove(&*name);
            }
        }
        // Held only here: no series (nor open window) has the name now.
        self.metric_names.retain(|name| Arc::strong_count(name) > 1);
    }
}

/// Windows, models and alert state for the partitions one consumer owns.
#[derive(Clone, Debug)]
pub struct Analyzer {
    config: AnalyzerConfig,
    windower: Windower,
    series: SeriesMap,
    used: u64,
    evictions: Evictions,
    duplicates: u64,
    snapshots: Snapshots,
    rules: Arc<RuleBook>,
    groups: Option<Arc<GroupView>>,
}

/// Snapshot bookkeeping (see [`crate::state`]); empty while snapshots are off.
#[derive(Clone, Debug, Default)]
struct Snapshots {
    on: bool,
    /// Per partition, the offset of its newest snapshot (written or restored):
    /// offsets are committed only up to it.
    at: HashMap<i32, i64, FixedState>,
    /// Per partition being replayed after a restore, the snapshot's offset:
    /// readings before it only rebuild windows.
    replay: HashMap<i32, i64, FixedState>,
    /// Keys to write as tombstones with the partition's next snapshot.
    dropped: Vec<(i32, Vec<u8>)>,
    /// Partitions whose snapshot could not be read: not snapshotted while
    /// owned (a snapshot would vouch for stale entries it cannot see).
    excluded: std::collections::HashSet<i32, FixedState>,
}

/// How far a partition's offsets may be committed, given its snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotCap {
    /// No snapshots: as far as the windows allow.
    Free,
    /// Not before the partition's first snapshot.
    Hold,
    /// Up to the newest snapshot's offset.
    At(i64),
}

impl SnapshotCap {
    /// The offset to commit instead of `safe`, if any.
    pub fn cap(self, safe: i64) -> Option<i64> {
        match self {
            Self::Free => Some(safe),
            Self::Hold => None,
            Self::At(at) => Some(safe.min(at)),
        }
    }
}

/// What [`Analyzer::restore_state`] did with a partition's snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Series restored warm.
    pub series: usize,
    /// Entries that could not be used (corrupt, or written under another
    /// configuration): those series start cold.
    pub refused: usize,
    /// The snapshot's offset, when it was used (`None`: the partition starts cold).
    pub at: Option<i64>,
}

impl Analyzer {
    /// An analyzer with no state.
    pub fn new(config: AnalyzerConfig) -> Self {
        Self {
            windower: Windower::new(config.windows.clone()),
            rules: Arc::new(RuleBook::from_defaults(&config.detectors.rules)),
            config,
            series: SeriesMap::default(),
            used: 0,
            evictions: Evictions::default(),
            duplicates: 0,
            snapshots: Snapshots::default(),
            groups: None,
        }
    }

    /// Apply `rules` from the next reading on.
    pub fn set_rules(&mut self, rules: Arc<RuleBook>) {
        self.rules = rules;
    }

    /// Where devices' groups are looked up (without it, every device is in
    /// the default group).
    pub fn set_groups(&mut self, groups: Arc<GroupView>) {
        self.groups = Some(groups);
    }

    /// Keep what snapshots need (which series changed, which were evicted)
    /// and hold commits to the newest snapshot: on for a handler that writes
    /// snapshots, off for benches and evaluations.
    pub fn keep_snapshots(&mut self) {
        self.snapshots.on = true;
    }

    /// Whether snapshots are kept.
    pub fn keeps_snapshots(&self) -> bool {
        self.snapshots.on
    }

    /// The offset of `partition`'s newest snapshot, if it has one.
    pub fn snapshot_offset(&self, partition: i32) -> Option<i64> {
        self.snapshots.at.get(&partition).copied()
    }

    /// How far `partition`'s offsets may be committed: not past its newest
    /// snapshot, and not before it has one (see [`crate::state`]).
    pub fn snapshot_cap(&self, partition: i32) -> SnapshotCap {
        if !self.snapshots.on || self.snapshots.excluded.contains(&partition) {
            return SnapshotCap::Free;
        }
        self.snapshot_offset(partition)
            .map_or(SnapshotCap::Hold, SnapshotCap::At)
    }

    /// `partition`'s snapshot could not be read back: it starts cold and is
    /// not snapshotted while owned; its commits are not held.
    pub fn exclude_from_snapshots(&mut self, partition: i32) {
        self.snapshots.excluded.insert(partition);
    }

    /// The records of [`Analyzer::snapshot`] at `at` are durable: commits may go up to `at`.
    pub fn snapshot_written(&mut self, partition: i32, at: i64) {
        self.snapshots.at.insert(partition, at);
        self.snapshots.dropped.retain(|(p, _)| *p != partition);
    }

    /// The records of [`Analyzer::snapshot`] were not written: the next
    /// snapshot of `partition` holds every series (and the same tombstones).
    pub fn snapshot_lost(&mut self, partition: i32) {
        for d in self.series.devices.values_mut() {
            for (_, s) in &mut d.metrics {
                if s.partition == partition {
                    s.dirty = true;
                }
            }
        }
    }

    /// The records of `partition`'s snapshot at `applied` (the next offset
    /// not yet applied), to write in order: tombstones of evicted series,
    /// entries of the series changed since the last snapshot, then the
    /// marker. Then [`Analyzer::snapshot_written`] or [`Analyzer::snapshot_lost`].
    /// `None` while the partition replays readings from before the restored
    /// snapshot (the state is ahead of `applied` then), or when excluded.
    pub fn snapshot(&mut self, partition: i32, applied: i64) -> Option<KeyValues> {
        if self.snapshots.excluded.contains(&partition) {
            return None;
        }
        if let Some(&until) = self.snapshots.replay.get(&partition) {
            if applied < until {
                return None;
            }
            self.snapshots.replay.remove(&partition);
        }
        let mut out: KeyValues = self
            .snapshots
            .dropped
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, key)| (key.clone(), Vec::new()))
            .collect();
        let windower = &self.windower;
        for d in self.series.devices.values_mut() {
            for (metric, s) in &mut d.metrics {
                if s.partition != partition || !s.dirty {
                    continue;
                }
                s.dirty = false;
                let windows = windower.score_parts(partition, &d.name, metric);
                let value = state::encode_entry((s.newest_ms, s.used, s.last_value), &s.model, &s.alerts, &windows);
                out.push((state::series_key(&d.name, metric), value));
            }
        }
        out.push((state::marker_key(), state::marker_value(applied)));
        Some(out)
    }

    /// Restore `partition`'s snapshot read back from its records, on
    /// assignment, after [`Analyzer::restore`] (the watermark decides which
    /// windows can still be rebuilt). `committed` is where the replay
    /// starts. The snapshot is used when its offset is at or after
    /// `committed`; otherwise (or without one) the partition starts cold and
    /// its old entries are overwritten by tombstones with the next snapshot.
    pub fn restore_state(&mut self, partition: i32, committed: Option<i64>, back: state::ReadBack) -> Restored {
        let mut restored = Restored::default();
        let usable = back.at.filter(|&at| committed.is_some_and(|c| at >= c));
        let Some(at) = usable else {
            let mut stale: Vec<Vec<u8>> = back
                .confirmed
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k)
                .chain(back.unconfirmed)
                .collect();
            stale.sort_unstable();
            stale.dedup();
            self.snapshots.dropped.extend(stale.into_iter().map(|k| (partition, k)));
            return restored;
        };
        for (key, value) in &back.confirmed {
            if value.is_empty() {
                continue;
            }
            let Some((device, metric)) = state::parse_series_key(key) else {
                continue;
            };
            let entry = match state::decode_entry(&self.config.detectors, metric, value) {
                Ok(e) => e,
                Err(_) => {
                    restored.refused += 1;
                    self.snapshots.dropped.push((partition, key.clone()));
                    continue;
                }
            };
            self.used = self.used.max(entry.used);
            let series = Series {
                partition,
                newest_ms: entry.newest_ms,
                used: entry.used,
                last_value: entry.last_value,
                model: entry.model,
                alerts: entry.alerts,
                dirty: false,
            };
            self.series.insert(device, metric, series);
            if let Some((name, metrics)) = self.series.device_mut(device) {
                let name = Arc::clone(name);
                if let Ok(i) = find_metric(metrics, metric) {
                    let metric = Arc::clone(&metrics[i].0);
                    for (size, end_ms, part) in entry.windows {
                        self.windower
                            .seed(partition, at, (&name, &metric), (size, end_ms), part);
                    }
                }
            }
            restored.series += 1;
        }
        // Keys of a snapshot cut short: rewrite each with the next snapshot.
        for key in back.unconfirmed {
            let series = state::parse_series_key(&key).and_then(|(device, metric)| {
                let (_, metrics) = self.series.device_mut(device)?;
                let i = find_metric(metrics, metric).ok()?;
                Some(&mut metrics[i].1)
            });
            match series {
                Some(s) => s.dirty = true,
                None => self.snapshots.dropped.push((partition, key)),
            }
        }
        self.snapshots.at.insert(partition, at);
        self.snapshots.replay.insert(partition, at);
        restored.at = Some(at);
        restored
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// Handle one reading read from `partition` at `offset`.
    pub fn process(&mut self, partition: i32, offset: i64, reading: &Reading) -> Output {
        // A resend of a reading already counted (same device, id, event time)
        // changes nothing: not the windows, not the models.
        if !self.windower.first_sighting(partition, offset, reading) {
            self.duplicates += 1;
            return Output::default();
        }
        if !self.snapshots.replay.is_empty() && self.snapshots.replay.get(&partition).is_some_and(|&s| offset < s) {
            return self.rebuild_windows(partition, offset, reading);
        }
        let mut values = Vec::with_capacity(reading.metrics.len());
        let mut alerts = Vec::new();
        let t = reading.event_time.timestamp_millis();
        let idle_ms = self.config.series.idle.num_milliseconds();
        let device = reading.device_id.as_str();
        // Series this reading starts are made first (and room for them):
        // after that one lookup finds the device for all of its metrics.
        let finite = || reading.metrics.iter().filter(|(_, x)| x.is_finite());
        if finite().any(|(metric, _)| !self.series.contains(device, metric)) {
            for (metric, &x) in finite() {
                if !self.series.contains(device, metric) {
                    self.make_room(&mut alerts);
                    let mut fresh = Series::new(&self.config.detectors, partition, t, metric, x);
                    // Recently used already, so making room for the next
                    // metric does not evict it first.
                    self.used += 1;
                    fresh.used = self.used;
                    self.series.insert(device, metric, fresh);
                }
            }
        }
        let detectors = &self.config.detectors;
        let alert_config = &self.config.alerts;
        let book = &*self.rules;
        // Looked up once per reading, and only when some rule is per group.
        let group = match &self.groups {
            Some(groups) if book.has_group_rules() => groups.group_of(device),
            _ => None,
        };
        let (device_name, mut series) = match self.series.device_mut(device) {
            Some((name, series)) => (Arc::clone(name), Some(series)),
            // Not reached (the device's series were just made); should that
            // change, its values still count in their windows.
            None => (Arc::from(device), None),
        };
        for (metric, &x) in finite() {
            let found = series.as_mut().and_then(|ms| {
                let i = find_metric(ms, metric).ok()?;
                let (name, s) = &mut ms[i];
                Some((&*name, &mut **s))
            });
            let Some((name, s)) = found else {
                values.push((Arc::from(metric.as_str()), x, None));
                continue;
            };
            // A series silent for `idle` of event time starts fresh, whether
            // or not a sweep evicted it yet.
            if idle_ms > 0 && t - s.newest_ms >= idle_ms {
                alerts.extend(s.evict(device, metric, &idle_reason(idle_ms)));
                self.evictions.idle += 1;
                *s = Series::new(detectors, partition, t, metric, x);
            }
            self.used += 1;
            s.dirty = true;
            s.partition = partition;
            s.newest_ms = s.newest_ms.max(t);
            s.used = self.used;
            s.last_value = x;
            let rules = book.for_series(device, group.as_deref(), metric);
            let v = s.model.update(detectors, &rules, reading.event_time, x);
            let model = &s.model;
            let severity = match model.fired_rule() {
                Some(rule) if v.model == Rule::NAME => rule.severity,
                _ => Severity::Warning,
            };
            if let Some(a) = s.alerts.observe(
                alert_config,
                &reading.device_id,
                metric,
                reading.event_time,
                x,
                v.score,
                (v.model, severity),
                || v.reason(x, model.fired_rule()),
            ) {
                alerts.push(a);
            }
            let scored = Scored {
                score: v.score,
                model: v.model,
                expected: v.expected,
                warming: v.warming,
            };
            values.push((Arc::clone(name), x, Some(scored)));
        }
        let aggregates = self
            .windower
            .push_named(partition, offset, reading, &device_name, &values);
        Output { aggregates, alerts }
    }

    /// A reading from before the restored snapshot: its values were scored
    /// already (the snapshot holds their windows' score parts and the state
    /// after them), so they only go into their windows.
    fn rebuild_windows(&mut self, partition: i32, offset: i64, reading: &Reading) -> Output {
        let device: Arc<str> = Arc::from(reading.device_id.as_str());
        let values: Vec<(Arc<str>, f64, Option<Scored>)> = reading
            .metrics
            .iter()
            .filter(|(_, x)| x.is_finite())
            .map(|(metric, &x)| (Arc::from(metric.as_str()), x, None))
            .collect();
        Output {
            aggregates: self.windower.push_named(partition, offset, reading, &device, &values),
            alerts: Vec::new(),
        }
    }

    /// Resent readings recognised and skipped since start (see [`Windower::first_sighting`]).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Readings remembered for recognising resends (memory is proportional to it).
    pub fn remembered(&self) -> usize {
        self.windower.remembered()
    }

    /// The offset safe to commit for `partition` (see [`Windower::committable_offset`]).
    pub fn committable_offset(&self, partition: i32) -> Option<i64> {
        self.windower.committable_offset(partition)
    }

    /// The state to commit with `partition`'s offset (`maxEvent=<epoch ms>`), if any.
    pub fn checkpoint(&self, partition: i32) -> Option<String> {
        self.windower.max_event_ms(partition).map(|m| format!("maxEvent={m}"))
    }

    /// Restore what [`Analyzer::checkpoint`] produced, on assignment; unknown text is ignored.
    pub fn restore(&mut self, partition: i32, checkpoint: &str) -> bool {
        match checkpoint.strip_prefix("maxEvent=").and_then(|v| v.parse::<i64>().ok()) {
            Some(ms) => {
                self.windower.restore_max_event(partition, ms);
                true
            }
            None => false,
        }
    }

    /// Before adding a series: if the cap is reached, evict the least recently
    /// updated 1/64 of the cap (at least one).
    fn make_room(&mut self, alerts: &mut Vec<Alert>) {
        let max = self.config.series.max;
        if max == 0 || self.series.len() < max {
            return;
        }
        let n = self.series.len() + 1 - max + (max / 64);
        let n = n.min(self.series.len());
        let mut used: Vec<u64> = self.series.values().map(|s| s.used).collect();
        let threshold = *used.select_nth_unstable(n - 1).1;
        let before = self.series.len();
        let snapshots = &mut self.snapshots;
        self.series.retain(|device, metric, s| {
            if s.used > threshold {
                return true;
            }
            alerts.extend(s.evict(device, metric, "series cap reached; series state evicted"));
            if snapshots.on {
                snapshots.dropped.push((s.partition, state::series_key(device, metric)));
            }
            false
        });
        self.evictions.cap += (before - self.series.len()) as u64;
        self.evictions.cap_rounds += 1;
    }

    /// Evict every series whose partition's watermark is past its newest event
    /// time by the idle limit (and by the largest window, so its windows have
    /// closed). Returns the records resolving incidents that were still open.
    pub fn evict_idle_series(&mut self) -> Vec<Alert> {
        let idle_ms = self.config.series.idle.num_milliseconds();
        if idle_ms <= 0 {
            return Vec::new();
        }
        let horizon = idle_ms.max(self.windower.max_size_ms());
        let windower = &self.windower;
        let snapshots = &mut self.snapshots;
        let mut alerts = Vec::new();
        let before = self.series.len();
        self.series.retain(|device, metric, s| {
            if windower
                .watermark_ms(s.partition)
                .is_none_or(|w| w - s.newest_ms < horizon)
            {
                return true;
            }
            alerts.extend(s.evict(device, metric, &idle_reason(idle_ms)));
            if snapshots.on {
                snapshots.dropped.push((s.partition, state::series_key(device, metric)));
            }
            false
        });
        self.evictions.idle += (before - self.series.len()) as u64;
        alerts
    }

    /// The idle rule for one partition (see [`crate::idle`]): it has been quiet
    /// for `quiet`, so its event clock moves to its newest event time plus
    /// `quiet`; returns the windows that closed. No-op for an unknown partition.
    pub fn advance_idle(&mut self, partition: i32, quiet: chrono::Duration) -> Vec<Aggregate> {
        match self.windower.newest_event_ms(partition) {
            Some(newest) => self
                .windower
                .advance_clock(partition, newest.saturating_add(quiet.num_milliseconds())),
            None => Vec::new(),
        }
    }

    /// Whether [`Analyzer::advance_idle`] would close a window now.
    pub fn idle_would_close(&self, partition: i32, quiet: chrono::Duration) -> bool {
        self.windower.newest_event_ms(partition).is_some_and(|n| {
            self.windower
                .would_close(partition, n.saturating_add(quiet.num_milliseconds()))
        })
    }

    /// Series evicted since start.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Number of open windows (memory is proportional to it).
    pub fn open_windows(&self) -> usize {
        self.windower.open_windows()
    }

    /// Drop all state of a revoked partition.
    pub fn revoke(&mut self, partition: i32) {
        self.windower.revoke(partition);
        self.series.retain(|_, _, s| s.partition != partition);
        self.snapshots.at.remove(&partition);
        self.snapshots.replay.remove(&partition);
        self.snapshots.dropped.retain(|(p, _)| *p != partition);
        self.snapshots.excluded.remove(&partition);
    }

    /// Close every open window (bounded input, or shutdown after a final commit).
    pub fn flush(&mut self) -> Vec<Aggregate> {
        self.windower.flush()
    }

    /// Values dropped because their window had already closed.
    pub fn late_values(&self) -> u64 {
        self.windower.late_values()
    }

    /// Number of (device, metric) series with model state.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::AlertState;
    use crate::testutil::{Rng, reading_of};
    use chrono::Utc;

    fn reading(device: &str, s: i64, x: f64) -> Reading {
        reading_of(device, s, &[("temp", x)])
    }

    fn run(input: &[(i32, Reading)]) -> (Vec<Output>, Analyzer) {
        let mut a = Analyzer::new(AnalyzerConfig::default());
        let out = input
            .iter()
            .enumerate()
            .map(|(o, (p, r))| a.process(*p, o as i64, r))
            .collect();
        (out, a)
    }

    /// Every aggregate of 10 s windows for `device`, after a flush.
    fn counts(a: &mut Analyzer, out: &[Output], device: &str) -> (u64, Vec<f64>) {
        let aggs: Vec<Aggregate> = out
            .iter()
            .flat_map(|o| o.aggregates.clone())
            .chain(a.flush())
            .filter(|g| g.device_id == device && g.window_seconds == 10)
            .collect();
        (aggs.iter().map(|g| g.count).sum(), aggs.iter().map(|g| g.max).collect())
    }

    #[test]
    fn a_resent_reading_is_counted_once() {
        let mut input: Vec<(i32, Reading)> = (0..30).map(|s| (0, reading("d", s, s as f64))).collect();
        // A duplicate send right away, a retry a little later (still inside open windows), and a
        // different reading at the same instant (another id): only the last one counts.
        input.insert(5, (0, reading("d", 4, 4.0)));
        input.insert(12, (0, reading("d", 7, 7.0)));
        let mut other = reading("d", 7, 100.0);
        other.id = "d-7-second-sensor".into();
        input.insert(13, (0, other));
        let (out, mut a) = run(&input);
        assert_eq!(a.duplicates(), 2, "both resends recognised");
        let (n, maxes) = counts(&mut a, &out, "d");
        assert_eq!(
            n, 31,
            "30 readings and one distinct reading at the same instant, each once"
        );
        assert!(maxes.contains(&100.0));
        // The same id on another device is another reading.
        let (_, b) = run(&[
            (0, reading("d", 1, 1.0)),
            (
                0,
                Reading {
                    device_id: "e".into(),
                    ..reading("d", 1, 1.0)
                },
            ),
        ]);
        assert_eq!(b.duplicates(), 0);
    }

    #[test]
    fn resends_are_remembered_only_while_a_window_can_take_them() {
        let mut a = Analyzer::new(AnalyzerConfig::default());
        for s in 0..600 {
            a.process(0, s, &reading("d", s, 1.0));
        }
        // Lateness 5 s, sizes 10 s and 60 s: only readings of the last open 60 s window stay.
        assert!(a.remembered() <= 65, "{} remembered", a.remembered());
        let late_before = a.late_values();
        a.process(0, 600, &reading("d", 3, 1.0));
        assert_eq!(
            (a.duplicates(), a.late_values() - late_before),
            (0, 2),
            "an old resend is late for both sizes, not remembered"
        );
        a.process(0, 601, &reading("d", 590, 1.0));
        assert_eq!(a.duplicates(), 1, "a recent resend is recognised");
        assert_eq!(a.committable_offset(0).map(|o| o <= 601), Some(true));
    }

    #[test]
    fn a_spike_opens_one_alert_and_replay_is_identical() {
        let mut rng = Rng::new(12);
        let mut input: Vec<(i32, Reading)> = (0..1500).map(|s| (0, reading("d", s, 20.0 + rng.normal()))).collect();
        input.push((0, reading("d", 1500, 80.0)));
        input.extend((1501..1900).map(|s| (0, reading("d", s, 20.0 + rng.normal()))));
        input.extend((0..50).map(|s| (1, reading("e", s, 1.0))));
        let (out, mut a) = run(&input);
        let alerts: Vec<&Alert> = out.iter().flat_map(|o| &o.alerts).collect();
        let opened: Vec<_> = alerts.iter().filter(|x| x.state == AlertState::Opened).collect();
        assert!(
            opened
                .iter()
                .any(|x| x.updated_at == input[1500].1.event_time && x.model == "spike"),
            "{alerts:?}"
        );
        assert!(alerts.iter().any(|x| x.state == AlertState::Resolved));
        let aggs: Vec<&Aggregate> = out.iter().flat_map(|o| &o.aggregates).collect();
        let spike_window = aggs
            .iter()
            .find(|g| g.window_seconds == 10 && g.max == 80.0)
            .expect("spike window emitted");
        assert!(spike_window.anomaly_score > 0.9);
        // The aggregate explains itself: the spike is far outside what the models expected,
        // which was around the usual level; the first windows were scored while warming up.
        let (lo, hi) = (
            spike_window.expected_low.expect("a band"),
            spike_window.expected_high.expect("a band"),
        );
        assert!(lo > 10.0 && lo < 20.0 && hi > 20.0 && hi < 30.0, "expected {lo}..{hi}");
        assert!(!spike_window.warming);
        let first = aggs
            .iter()
            .filter(|g| g.device_id == "d" && g.window_seconds == 10)
            .min_by_key(|g| g.window_start)
            .expect("first window");
        assert!(first.warming && first.expected_low.is_none(), "{first:?}");
        assert!(
            opened.iter().any(|x| x.reason.contains("expected")),
            "the alert says what was expected: {opened:?}"
        );
        assert_eq!(run(&input).0, out, "replay gives identical output");
        assert_eq!(a.series_count(), 2);
        assert!(a.committable_offset(0).is_some());
        a.revoke(1);
        assert_eq!((a.series_count(), a.committable_offset(1)), (1, None));
    }

    #[test]
    fn a_restored_checkpoint_keeps_closed_windows_closed_on_replay() {
        let mut a = Analyzer::new(AnalyzerConfig::default());
        for s in 0..100 {
            a.process(0, s, &reading("d", s, 1.0));
        }
        let cp = a.checkpoint(0).expect("checkpoint");
        assert_eq!(
            cp,
            format!("maxEvent={}", reading("d", 99, 1.0).event_time.timestamp_millis())
        );
        // A new owner replays from some offset; a reading for a window that had closed must stay out.
        let mut b = Analyzer::new(AnalyzerConfig::default());
        assert!(b.restore(0, &cp));
        assert!(!b.restore(0, "garbage"));
        let out = b.process(0, 100, &reading("d", 5, 9.0));
        assert!(out.aggregates.is_empty());
        assert!(b.late_values() > 0, "the old window is not rebuilt from a late value");
        // Without the checkpoint the same value would open (and later re-emit) an old window.
        let mut c = Analyzer::new(AnalyzerConfig::default());
        c.process(0, 100, &reading("d", 5, 9.0));
        assert_eq!(c.late_values(), 0);
    }
    fn limits(idle_s: i64, max: usize) -> AnalyzerConfig {
        AnalyzerConfig {
            series: SeriesLimits {
                idle: chrono::Duration::seconds(idle_s),
                max,
            },
            ..AnalyzerConfig::default()
        }
    }

    #[test]
    fn an_idle_partition_closes_from_its_newest_event_plus_the_quiet_time() {
        let mut a = Analyzer::new(AnalyzerConfig::default()); // windows 10 s and 60 s, lateness 5 s
        // Readings at +1 s .. +7 s of a minute-aligned base (1_800_000_000 is a multiple of 60).
        for s in 1..=7 {
            assert!(a.process(0, s, &reading("d", s, 1.0)).aggregates.is_empty());
        }
        let q = chrono::Duration::seconds;
        // Newest event at +7 s: the 10 s window [0,10) needs the clock at 15 s, i.e. 8 s of quiet.
        assert!(!a.idle_would_close(0, q(7)));
        assert!(a.advance_idle(0, q(7)).is_empty());
        let out = a.advance_idle(0, q(8));
        assert_eq!(
            out.iter().map(|g| (g.window_seconds, g.count)).collect::<Vec<_>>(),
            vec![(10, 7)]
        );
        // The minute window needs 65 s: the clock is computed from the newest event, not compounded.
        assert!(a.advance_idle(0, q(57)).is_empty());
        assert_eq!(
            a.advance_idle(0, q(58))
                .iter()
                .map(|g| (g.window_seconds, g.count))
                .collect::<Vec<_>>(),
            vec![(60, 7)]
        );
        assert_eq!(a.committable_offset(0), Some(8));
        assert!(
            !a.idle_would_close(1, q(1_000_000)) && a.advance_idle(1, q(1_000_000)).is_empty(),
            "unknown partition"
        );
        // The checkpoint carries the advanced clock (newest 7 s + 58 s).
        assert_eq!(
            a.checkpoint(0),
            Some(format!(
                "maxEvent={}",
                reading("d", 65, 0.0).event_time.timestamp_millis()
            ))
        );
        // A late reading after the idle close is counted late, not added.
        let late_before = a.late_values();
        assert!(a.process(0, 8, &reading("d", 9, 5.0)).aggregates.is_empty());
        assert_eq!(a.late_values() - late_before, 2);
        assert_eq!(a.open_windows(), 0);
    }

    #[test]
    fn idle_series_are_evicted_once_the_watermark_is_far_enough_past_them() {
        let mut a = Analyzer::new(limits(120, 0));
        a.process(0, 0, &reading_of("quiet", 0, &[("temp", 1.0), ("rpm", 2.0)]));
        a.process(1, 0, &reading_of("other-partition", 0, &[("temp", 1.0)]));
        for s in 1..=124 {
            a.process(0, s, &reading_of("busy", s, &[("temp", 1.0)]));
        }
        // Watermark of partition 0 is 124 - 5 = 119 s < 0 + 120 s: not yet.
        assert!(a.evict_idle_series().is_empty());
        assert_eq!((a.series_count(), a.evictions().idle), (4, 0));
        a.process(0, 125, &reading_of("busy", 125, &[("temp", 1.0)]));
        a.evict_idle_series();
        // "quiet" (2 series) goes; partition 1's watermark has not moved, so its series stays.
        assert_eq!((a.series_count(), a.evictions().idle), (2, 2));
        assert!(a.series.contains("other-partition", "temp"));
        // An idle advance moves the quiet partition's watermark, and its series goes too.
        a.advance_idle(1, chrono::Duration::seconds(125));
        a.evict_idle_series();
        assert_eq!((a.series_count(), a.evictions().idle), (1, 3));
        // Off when the limit is zero.
        let mut off = Analyzer::new(limits(0, 0));
        off.process(0, 0, &reading_of("x", 0, &[("temp", 1.0)]));
        off.process(0, 1, &reading_of("y", 100_000, &[("temp", 1.0)]));
        assert!(off.evict_idle_series().is_empty());
        assert_eq!(off.series_count(), 2);
    }

    #[test]
    fn a_series_back_after_the_idle_limit_starts_cold_and_its_open_incident_is_resolved() {
        let mut rng = Rng::new(4);
        let mut a = Analyzer::new(limits(600, 0));
        let mut alerts = Vec::new();
        for s in 0..1500 {
            alerts.extend(a.process(0, s, &reading("d", s, 20.0 + rng.normal())).alerts);
        }
        alerts.extend(a.process(0, 1500, &reading("d", 1500, 90.0)).alerts);
        let opened = alerts
            .iter()
            .find(|x| x.state == AlertState::Opened)
            .expect("the spike opened an incident")
            .clone();
        // Silent for 10 minutes of event time: the next reading finds the series evicted.
        let out = a.process(0, 2100, &reading("d", 2100, 20.0));
        let resolved: Vec<_> = out.alerts.iter().filter(|x| x.state == AlertState::Resolved).collect();
        assert_eq!(resolved.len(), 1, "{:?}", out.alerts);
        assert_eq!(
            (&resolved[0].id, resolved[0].updated_at),
            (&opened.id, input_time(1500))
        );
        assert!(resolved[0].reason.contains("evicted"), "{}", resolved[0].reason);
        assert_eq!(a.evictions().idle, 1);
        // Cold: the same spike right after the return scores nothing (the models need their warm-up again).
        let cold = a.process(0, 2101, &reading("d", 2101, 90.0));
        assert!(cold.alerts.is_empty());
        // Within the limit the series is kept (and would have scored the spike).
        let mut b = Analyzer::new(limits(600, 0));
        for s in 0..1500 {
            b.process(0, s, &reading("d", s, 20.0 + rng.normal()));
        }
        b.process(0, 2000, &reading("d", 2000, 20.0));
        assert_eq!(b.evictions().idle, 0);
    }

    fn input_time(s: i64) -> chrono::DateTime<Utc> {
        reading("d", s, 0.0).event_time
    }

    #[test]
    fn the_cap_evicts_the_least_recently_updated_series_and_frees_their_state() {
        let max = 128; // evicts max / 64 + 1 = 3 at a time
        let mut a = Analyzer::new(limits(0, max));
        let mut ten_s_counts = 0;
        let mut run = |a: &mut Analyzer, o: i64, r: &Reading| {
            ten_s_counts += a
                .process(0, o, r)
                .aggregates
                .iter()
                .filter(|g| g.window_seconds == 10)
                .map(|g| g.count)
                .sum::<u64>();
        };
        for d in 0..max {
            run(&mut a, d as i64, &reading(&format!("d{d}"), d as i64, 1.0));
        }
        assert_eq!((a.series_count(), a.evictions()), (max, Evictions::default()));
        // Touch d0 and d1 again: now d2, d3, d4 are the least recently updated.
        run(&mut a, 200, &reading("d0", 200, 1.0));
        run(&mut a, 201, &reading("d1", 201, 1.0));
        run(&mut a, 202, &reading("new", 202, 1.0));
        assert_eq!(a.series_count(), max - 2);
        assert_eq!(
            a.evictions(),
            Evictions {
                idle: 0,
                cap: 3,
                cap_rounds: 1
            }
        );
        for gone in ["d2", "d3", "d4"] {
            assert!(!a.series.contains(gone, "temp"), "{gone}");
        }
        for kept in ["d0", "d1", "d5", "new"] {
            assert!(a.series.contains(kept, "temp"), "{kept}");
        }
        // Never above the cap however many devices come and go.
        let mut tiny = Analyzer::new(AnalyzerConfig {
            series: SeriesLimits {
                max: 1,
                ..SeriesLimits::default()
            },
            ..AnalyzerConfig::default()
        });
        // Each metric evicts the one before it, of the same reading: every value still counts
        // in its window (the name is taken before the next metric makes room).
        let mut three = reading("t", 0, 1.0);
        three.metrics.extend([("a".to_owned(), 2.0), ("b".to_owned(), 3.0)]);
        tiny.process(0, 0, &three);
        let windows: Vec<Aggregate> = tiny.flush().into_iter().filter(|g| g.window_seconds == 10).collect();
        assert_eq!(windows.len(), 3, "{windows:?}");
        assert!(windows.iter().all(|g| g.count == 1), "{windows:?}");
        assert_eq!(tiny.series_count(), 1);
        for d in 0..10_000 {
            run(&mut a, 300 + d, &reading(&format!("churn{d}"), 300 + d, 1.0));
            assert!(a.series_count() <= max);
        }
        assert!(a.evictions().cap >= 10_000);
        // Windows are not model state: every window still completes with all its values.
        ten_s_counts += a
            .flush()
            .iter()
            .filter(|g| g.window_seconds == 10)
            .map(|g| g.count)
            .sum::<u64>();
        assert_eq!((ten_s_counts, a.late_values()), (max as u64 + 3 + 10_000, 0));
    }

    #[test]
    fn the_cap_resolves_an_open_incident_of_an_evicted_series() {
        let mut rng = Rng::new(8);
        let mut a = Analyzer::new(limits(0, 2));
        let mut alerts = Vec::new();
        for s in 0..1500 {
            alerts.extend(a.process(0, s, &reading("d", s, 20.0 + rng.normal())).alerts);
        }
        alerts.extend(a.process(0, 1500, &reading("d", 1500, 90.0)).alerts);
        assert!(alerts.iter().any(|x| x.state == AlertState::Opened));
        a.process(0, 1501, &reading("e", 1501, 1.0));
        let out = a.process(0, 1502, &reading("f", 1502, 1.0));
        assert_eq!(
            out.alerts
                .iter()
                .map(|x| (x.device_id.as_str(), x.state))
                .collect::<Vec<_>>(),
            vec![("d", AlertState::Resolved)]
        );
        assert!(out.alerts[0].reason.contains("cap"));
    }

    #[test]
    fn rules_apply_per_group_from_the_next_reading_and_defaults_fill_in() {
        use tributary_shared::eventlog::follow::TopicView;
        use tributary_shared::registry::view::DeviceChange;
        use tributary_shared::rules::{AlertRule, Condition, RuleSpec};
        let mut config = AnalyzerConfig::default();
        config.detectors.rules = vec![Rule::parse("temp > 1000").expect("valid")];
        let mut a = Analyzer::new(config);
        let groups = Arc::new(GroupView::new());
        let rec = |id: &str, group: &str| {
            let r = DeviceChange {
                id: id.into(),
                status: tributary_shared::registry::DeviceStatus::Active,
                key_version: 0,
                revision: 1,
                group: group.into(),
            }
            .to_record();
            (r.key, r.value)
        };
        groups.apply(&[rec("f-1", "freezers"), rec("t-1", "trucks")]);
        a.set_groups(groups);
        let threshold_alerts = |out: &Output| {
            out.alerts
                .iter()
                .filter(|al| al.model == Rule::NAME)
                .map(|al| (al.device_id.clone(), al.severity, al.reason.clone()))
                .collect::<Vec<_>>()
        };
        // Defaults only: -5 is calm everywhere.
        let mut offset = 0;
        let mut feed = |a: &mut Analyzer, device: &str, s: i64, x: f64| {
            offset += 1;
            a.process(0, offset, &reading(device, s, x))
        };
        assert!(threshold_alerts(&feed(&mut a, "f-1", 0, -5.0)).is_empty());
        let stored = AlertRule {
            id: "freezer-warm".into(),
            spec: RuleSpec {
                metric: "temp".into(),
                condition: Condition::Above,
                threshold: -10.0,
                hold_seconds: 0,
                severity: Severity::Critical,
                group: Some("freezers".into()),
                device: None,
                description: None,
            },
            revision: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            deleted: false,
        };
        a.set_rules(Arc::new(RuleBook::new(&a.config().detectors.rules.clone(), &[stored])));
        // The next reading of the freezer meets the group's rule...
        let out = feed(&mut a, "f-1", 1, -5.0);
        let found = threshold_alerts(&out);
        assert_eq!(found.len(), 1, "{out:?}");
        assert_eq!((found[0].0.as_str(), found[0].1), ("f-1", Severity::Critical));
        assert!(
            found[0].2.starts_with("rule 'freezer-warm' (temp > -10) holds"),
            "{}",
            found[0].2
        );
        // ...a truck's does not, and trucks keep the default; so does a
        // device the registry does not know (the default group).
        assert!(threshold_alerts(&feed(&mut a, "t-1", 1, -5.0)).is_empty());
        let t = threshold_alerts(&feed(&mut a, "t-1", 2, 2000.0));
        assert_eq!((t.len(), t[0].1), (1, Severity::Warning));
        assert_eq!(threshold_alerts(&feed(&mut a, "stranger", 2, 2000.0)).len(), 1);
        // The freezers have a rule, so the default no longer applies to them.
        let mut b = Analyzer::new(a.config().clone());
        b.set_groups(a.groups.clone().expect("groups"));
        b.set_rules(a.rules.clone());
        assert!(
            threshold_alerts(&b.process(0, 0, &reading("f-1", 0, 2000.0)))
                .iter()
                .all(|(_, _, why)| why.contains("freezer-warm"))
        );
    }

    #[test]
    fn a_series_fits_the_allocators_512_byte_class() {
        // Each series is boxed: at 513 bytes mimalloc would give it 640.
        assert!(size_of::<Series>() <= 512, "{} bytes", size_of::<Series>());
    }
}
