//! A takeover from a snapshot, in process: an analyzer that dies mid-stream
//! and a new one that restores its snapshot and replays from the committed
//! offset give what one uninterrupted analyzer gives.

use std::collections::HashMap;

use tributary_shared::model::Reading;

use super::*;
use crate::engine::{Analyzer, AnalyzerConfig, Output};
use crate::records::{Aggregate, Alert, AlertState};
use crate::testutil::{Rng, reading_of};

fn reading(device: &str, s: i64, metrics: &[(&str, f64)]) -> Reading {
    reading_of(device, s, metrics)
}

/// Two partitions, three devices with two metrics each, one reading per
/// device and second: noise, a spike that opens an incident shortly before
/// the cut, and a level shift after it.
fn input() -> Vec<(i32, Reading)> {
    let mut rng = Rng::new(23);
    let mut out = Vec::new();
    for s in 0..2400 {
        for (p, device) in [(0, "truck-1"), (0, "truck-2"), (1, "freezer-9")] {
            let mut temp = 20.0 + rng.normal();
            if device == "truck-1" && (1790..1800).contains(&s) {
                temp += 40.0;
            }
            if device == "freezer-9" && s >= 1900 {
                temp -= 15.0;
            }
            let rpm = 1000.0 + 30.0 * rng.normal();
            out.push((p, reading(device, s, &[("temp", temp), ("rpm", rpm)])));
        }
    }
    out
}

type Key = (String, String, u32, i64);

fn key(a: &Aggregate) -> Key {
    (
        a.device_id.clone(),
        a.metric.clone(),
        a.window_seconds,
        a.window_start.timestamp(),
    )
}

/// Offsets per partition, in input order.
fn offsets(input: &[(i32, Reading)]) -> Vec<i64> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    input
        .iter()
        .map(|(p, _)| {
            let o = next.entry(*p).or_default();
            *o += 1;
            *o - 1
        })
        .collect()
}

struct Crashed {
    /// The state topic's records, per partition.
    log: HashMap<i32, tributary_shared::eventlog::KeyValues>,
    /// The last commit per partition: offset and metadata.
    committed: HashMap<i32, (i64, String)>,
}

/// Run until input index `crash_at`, snapshotting and committing every
/// `every` readings the way the handler does (snapshot, then commit up to it).
fn run_until_crash(input: &[(i32, Reading)], crash_at: usize, every: usize) -> Crashed {
    let offs = offsets(input);
    let mut a = Analyzer::new(AnalyzerConfig::default());
    a.keep_snapshots();
    let mut applied: HashMap<i32, i64> = HashMap::new();
    let mut crashed = Crashed {
        log: HashMap::new(),
        committed: HashMap::new(),
    };
    for (i, ((p, r), &o)) in input.iter().zip(&offs).enumerate().take(crash_at) {
        a.process(*p, o, r);
        applied.insert(*p, o + 1);
        if (i + 1) % every == 0 {
            for (&p, &next) in &applied {
                let records = a.snapshot(p, next).expect("not replaying");
                a.snapshot_written(p, next);
                crashed.log.entry(p).or_default().extend(records);
                let safe = a.committable_offset(p).map_or(next, |c| c.min(next));
                let cap = a.snapshot_offset(p).expect("a snapshot was written");
                crashed
                    .committed
                    .insert(p, (safe.min(cap), a.checkpoint(p).unwrap_or_default()));
            }
        }
    }
    crashed
}

/// A new owner of every partition: restore, then replay from the commits to the end.
fn take_over(input: &[(i32, Reading)], crashed: &Crashed, warm: bool) -> (Vec<Output>, Vec<usize>, Analyzer) {
    let offs = offsets(input);
    let mut b = Analyzer::new(AnalyzerConfig::default());
    b.keep_snapshots();
    for (&p, (c, meta)) in &crashed.committed {
        assert!(b.restore(p, meta));
        if warm {
            let back = read_back(crashed.log[&p].iter().cloned());
            let r = b.restore_state(p, Some(*c), back);
            assert!(r.at.is_some() && r.series > 0 && r.refused == 0, "{r:?}");
        }
    }
    let mut out = Vec::new();
    let mut replayed = Vec::new();
    for (i, ((p, r), &o)) in input.iter().zip(&offs).enumerate() {
        if o >= crashed.committed[p].0 {
            out.push(b.process(*p, o, r));
            replayed.push(i);
        }
    }
    (out, replayed, b)
}

#[test]
fn a_warm_takeover_gives_what_an_uninterrupted_run_gives() {
    let input = input();
    let offs = offsets(&input);
    // The uninterrupted run.
    let mut a = Analyzer::new(AnalyzerConfig::default());
    let whole: Vec<Output> = input
        .iter()
        .zip(&offs)
        .map(|((p, r), &o)| a.process(*p, o, r))
        .collect();
    let whole_flush = a.flush();
    let mut by_key: HashMap<Key, Aggregate> = HashMap::new();
    for g in whole.iter().flat_map(|o| &o.aggregates).chain(&whole_flush) {
        assert!(by_key.insert(key(g), g.clone()).is_none(), "emitted once");
    }
    // The spike opened an incident before the crash that is still open after it.
    let crash_at = 3 * 1840;
    let crashed = run_until_crash(&input, crash_at, 250);
    let whole_alerts: Vec<&Alert> = whole.iter().flat_map(|o| &o.alerts).collect();
    assert!(
        whole_alerts
            .iter()
            .any(|x| x.state == AlertState::Opened && x.device_id == "truck-1"),
        "{whole_alerts:?}"
    );

    let (out, replayed, mut b) = take_over(&input, &crashed, true);
    let flushed = b.flush();
    // Every window the new owner emits equals the uninterrupted run's, scores and bands included.
    let mut emitted = 0;
    for g in out.iter().flat_map(|o| &o.aggregates).chain(&flushed) {
        assert_eq!(by_key.get(&key(g)), Some(g), "window {:?}", key(g));
        emitted += 1;
    }
    assert!(emitted > 100, "{emitted} windows re-emitted");
    // Alerts: none for readings before the snapshot (published already), and
    // from there on exactly the uninterrupted run's (same incident ids: no second incident).
    let mut got: Vec<&Alert> = Vec::new();
    for (o, &i) in out.iter().zip(&replayed) {
        let (p, _) = &input[i];
        let before_snapshot = offs[i] < read_back(crashed.log[p].iter().cloned()).at.expect("marker");
        if before_snapshot {
            assert!(o.alerts.is_empty(), "no alert re-raised from a replayed reading");
        }
        got.extend(&o.alerts);
    }
    let snapshot_index = |p: i32| {
        let at = read_back(crashed.log[&p].iter().cloned()).at.expect("marker");
        (0..input.len())
            .find(|&i| input[i].0 == p && offs[i] >= at)
            .unwrap_or(input.len())
    };
    let want: Vec<&Alert> = whole
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= snapshot_index(input[*i].0))
        .flat_map(|(_, o)| &o.alerts)
        .collect();
    assert_eq!(got, want);
    assert!(
        got.iter()
            .any(|x| x.device_id == "truck-1" && x.state != AlertState::Opened),
        "the incident open at the crash is continued: {got:?}"
    );

    // Cold (no snapshot): the same replay scores differently, so the test above can fail.
    let (cold, _, mut c) = take_over(&input, &crashed, false);
    let cold_flushed = c.flush();
    let differ = cold
        .iter()
        .flat_map(|o| &o.aggregates)
        .chain(&cold_flushed)
        .filter(|g| by_key.get(&key(g)) != Some(g))
        .count();
    assert!(differ > 0, "a cold takeover differs from the uninterrupted run");
}

#[test]
fn a_snapshot_holds_only_changed_series_and_tombstones_evicted_ones() {
    let mut a = Analyzer::new(AnalyzerConfig::default());
    a.keep_snapshots();
    a.process(0, 0, &reading("d1", 0, &[("temp", 1.0)]));
    a.process(0, 1, &reading("d2", 0, &[("temp", 1.0)]));
    assert_eq!(
        a.snapshot_cap(0),
        crate::engine::SnapshotCap::Hold,
        "no commit before a snapshot"
    );
    let first = a.snapshot(0, 2).expect("snapshot");
    a.snapshot_written(0, 2);
    assert_eq!(first.len(), 3, "two entries and the marker");
    assert_eq!(first[2], (marker_key(), marker_value(2)));
    a.process(0, 2, &reading("d1", 1, &[("temp", 2.0)]));
    let second = a.snapshot(0, 3).expect("snapshot");
    a.snapshot_written(0, 3);
    let keys: Vec<_> = second.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![series_key("d1", "temp"), marker_key()]);
    assert_eq!(a.snapshot_cap(0).cap(10), Some(3), "commits held to the snapshot");
    // A snapshot that was not written: the next one holds every series again.
    a.snapshot(0, 3);
    a.snapshot_lost(0);
    assert_eq!(a.snapshot(0, 3).expect("snapshot").len(), 3);
    // Another partition's snapshot does not take this one's series.
    assert_eq!(a.snapshot(1, 0).expect("snapshot").len(), 1);
    // An evicted series is written as a tombstone, before any entry.
    let mut capped = Analyzer::new(AnalyzerConfig {
        series: crate::engine::SeriesLimits {
            max: 1,
            ..Default::default()
        },
        ..AnalyzerConfig::default()
    });
    capped.keep_snapshots();
    capped.process(0, 0, &reading("d1", 0, &[("temp", 1.0)]));
    capped.snapshot(0, 1);
    capped.snapshot_written(0, 1);
    capped.process(0, 1, &reading("d2", 0, &[("temp", 1.0)]));
    let records = capped.snapshot(0, 2).expect("snapshot");
    assert_eq!(
        records
            .iter()
            .map(|(k, v)| (k.clone(), v.is_empty()))
            .collect::<Vec<_>>(),
        vec![
            (series_key("d1", "temp"), true),
            (series_key("d2", "temp"), false),
            (marker_key(), false)
        ]
    );
}

#[test]
fn a_snapshot_that_cannot_be_used_starts_cold_and_is_overwritten() {
    let mut a = Analyzer::new(AnalyzerConfig::default());
    a.keep_snapshots();
    for s in 0..10 {
        a.process(0, s, &reading("d", s, &[("temp", 1.0)]));
    }
    let mut log = a.snapshot(0, 10).expect("snapshot");
    // A snapshot cut short after its first entry.
    a.process(0, 10, &reading("e", 10, &[("temp", 1.0)]));
    a.process(0, 11, &reading("d", 11, &[("temp", 1.0)]));
    let cut = a.snapshot(0, 12).expect("snapshot");
    log.push(cut[0].clone());

    // The commit is past the marker (the snapshot is too old): cold, and every key is tombstoned.
    let mut b = Analyzer::new(AnalyzerConfig::default());
    b.keep_snapshots();
    let r = b.restore_state(0, Some(11), read_back(log.clone()));
    assert_eq!((r.series, r.at), (0, None));
    assert_eq!(b.snapshot_offset(0), None, "no commit before the first snapshot");
    b.process(0, 11, &reading("d", 11, &[("temp", 1.0)]));
    let records = b.snapshot(0, 12).expect("snapshot");
    let tombstones: std::collections::BTreeSet<_> = records
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    let logged: std::collections::BTreeSet<_> = log
        .iter()
        .filter(|(k, _)| *k != marker_key())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(tombstones, logged, "every old key is overwritten");
    assert!(tombstones.contains(&series_key("d", "temp")));

    // Usable: restored warm, and the cut snapshot's key is written again next time.
    let mut c = Analyzer::new(AnalyzerConfig::default());
    c.keep_snapshots();
    let r = c.restore_state(0, Some(5), read_back(log.clone()));
    assert_eq!((r.series, r.refused, r.at), (1, 0, Some(10)));
    assert_eq!(
        c.snapshot(0, 7),
        None,
        "no snapshot while replaying before the restored one"
    );
    let records = c.snapshot(0, 10).expect("snapshot");
    let cut_key = &cut[0].0;
    assert!(records.iter().any(|(k, _)| k == cut_key), "{records:?}");

    // A corrupt entry is refused (that series starts cold), the rest is used.
    let mut corrupt = log.clone();
    corrupt.insert(0, (series_key("x", "temp"), vec![VERSION, 1, 2]));
    let mut d = Analyzer::new(AnalyzerConfig::default());
    d.keep_snapshots();
    let r = d.restore_state(0, Some(5), read_back(corrupt));
    assert_eq!((r.series, r.refused), (1, 1));
}
