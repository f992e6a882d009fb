//! The behaviour every [`ResultStore`] backend must show, written once and run
//! against PostgreSQL and SQLite by `shared/tests/results_*.rs`. Each check
//! takes a freshly migrated, empty store and panics naming what broke.

use chrono::{DateTime, Duration, TimeZone, Utc};

use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_shared::results::{
    AlertFilter, DeviceQuery, Resolution, ResultStore, SeriesPoint, StoreError, Transition, TransitionOutcome,
    merge_points, rollup,
};
use tributary_shared::sketch::QuantileSketch;

/// A fixed "now" (whole minute), so no check depends on the clock.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// `secs` seconds after "now - 10 min".
pub fn t(secs: i64) -> DateTime<Utc> {
    now() - Duration::minutes(10) + Duration::seconds(secs)
}

/// A 10 s window of `metric` for `device` starting `start` seconds after "now - 10 min".
pub fn agg(device: &str, metric: &str, start: i64, mean: f64) -> Aggregate {
    Aggregate {
        device_id: device.into(),
        metric: metric.into(),
        window_seconds: 10,
        window_start: t(start),
        window_end: t(start + 10),
        count: 5,
        min: mean - 1.0,
        max: mean + 1.0,
        mean,
        stddev: 0.5,
        p50: mean,
        p95: mean + 0.9,
        p99: mean + 1.0,
        anomaly_score: 0.1,
        model: "spike".into(),
        expected_low: None,
        expected_high: None,
        warming: false,
        sketch: None,
    }
}

/// The first `limit` devices of the fleet list, most recently seen first.
pub fn listing(limit: i64, online_since: DateTime<Utc>) -> DeviceQuery {
    DeviceQuery {
        limit,
        online_since,
        ..DeviceQuery::default()
    }
}

/// An alert record of `device`'s temperature, opened at t(0), last changed at `updated`.
pub fn alert(id: &str, device: &str, state: AlertState, updated: i64) -> Alert {
    Alert {
        id: id.into(),
        device_id: device.into(),
        metric: "temp".into(),
        model: "threshold".into(),
        score: 0.9,
        value: 95.0 + updated as f64,
        reason: "temp > 90 for 30s".into(),
        severity: Default::default(),
        state,
        opened_at: t(0),
        updated_at: t(updated),
    }
}

/// Everything a reader can see, for before/after comparisons.
async fn view(s: &dyn ResultStore) -> String {
    let devices = s
        .device_listing(&listing(100, now() - Duration::minutes(5)))
        .await
        .expect("device_listing")
        .devices;
    let alerts = s.alert_list(AlertFilter::All, None, 100).await.expect("alert_list");
    let mut series = Vec::new();
    for d in &devices {
        for m in ["temp", "speed"] {
            series.push(format!(
                "{:?}",
                s.series(&d.device_id, m, Resolution::Windows(10), t(-600), now(), 1)
                    .await
                    .expect("series")
                    .points
            ));
        }
    }
    format!("{devices:?}\n{alerts:?}\n{series:?}")
}

/// A batch is readable through every query, and writing it again changes nothing.
pub async fn batch_is_written_and_replay_changes_nothing(s: &dyn ResultStore) {
    let aggs: Vec<Aggregate> = ["truck-1", "truck-2"]
        .iter()
        .flat_map(|d| {
            ["temp", "speed"]
                .iter()
                .flat_map(move |m| (0..3).map(move |w| agg(d, m, w * 10, 20.0 + w as f64)))
        })
        .collect();
    let alerts = vec![
        alert("a-1", "truck-1", AlertState::Opened, 5),
        alert("a-1", "truck-1", AlertState::Updated, 25),
    ];
    s.write_batch(&aggs, &alerts).await.expect("write");
    let first = view(s).await;

    let series = s
        .series("truck-1", "temp", Resolution::Windows(10), t(0), t(30), 1)
        .await
        .expect("series");
    assert_eq!(series.points.len(), 3, "one point per window in [from, to)");
    assert_eq!(
        series.points.iter().map(|p| p.mean).collect::<Vec<_>>(),
        vec![20.0, 21.0, 22.0],
        "oldest first"
    );
    assert_eq!(
        series.points[0].window_start,
        t(0),
        "times round-trip to the millisecond"
    );
    assert_eq!(series.available_windows, vec![10]);
    assert_eq!(series.alerts.len(), 1, "the alert overlaps the range");
    assert_eq!(series.alerts[0].updated_at, t(25), "the newest record of a batch wins");
    assert!(
        s.series("truck-1", "temp", Resolution::Windows(10), t(10), t(20), 1)
            .await
            .expect("series")
            .points
            .len()
            == 1,
        "'to' is exclusive"
    );

    let devices = s.devices(&["truck-1".into(), "nobody".into()]).await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!((devices[0].first_seen, devices[0].last_seen), (t(0), t(30)));
    assert_eq!(
        devices[0].last_values["temp"]["value"], 22.0,
        "latest window's mean: {:?}",
        devices[0].last_values
    );
    assert_eq!(devices[0].last_values["speed"]["windowSeconds"], 10);

    let summary = s.fleet_summary(t(0)).await.expect("summary");
    assert_eq!(
        (summary.devices, summary.devices_online, summary.alerts_open),
        (2, 2, 1)
    );
    let offline = s.fleet_summary(t(30)).await.expect("summary");
    assert_eq!(offline.devices_online, 0, "no window ended after 'online since'");

    let page = s.device_listing(&listing(1, t(0))).await.expect("listing");
    assert_eq!(
        (page.devices.len(), page.total),
        (1, 2),
        "limit applies; the total does not"
    );
    let all = s.device_listing(&listing(10, t(0))).await.expect("listing").devices;
    let t1 = all.iter().find(|d| d.device_id == "truck-1").expect("truck-1 listed");
    assert_eq!((t1.open_alerts, t1.online), (1, true));

    // 2 devices x 2 metrics x 3 windows of 5 readings (60 values) end within
    // the minute before t(30): one value per second.
    let rate = s.values_per_second(t(30)).await.expect("rate");
    assert!((rate - 1.0).abs() < 1e-9, "values per second: {rate}");
    assert_eq!(
        s.values_per_second(t(200)).await.expect("rate"),
        0.0,
        "nothing ended in the minute before"
    );

    s.write_batch(&aggs, &alerts).await.expect("replay");
    assert_eq!(view(s).await, first, "a replayed batch changes nothing");
}

/// Alerts only move forward in event time and keep an operator's acknowledgement.
pub async fn alerts_move_forward_and_keep_acknowledgement(s: &dyn ResultStore) {
    s.write_batch(&[], &[alert("a-2", "d", AlertState::Opened, 5)])
        .await
        .expect("open");
    assert_eq!(
        s.transition("missing", Transition::Acknowledge, "op", now())
            .await
            .expect("ack"),
        TransitionOutcome::NotFound
    );
    let acked = match s
        .transition("a-2", Transition::Acknowledge, "op", now())
        .await
        .expect("ack")
    {
        TransitionOutcome::Done(a) => a,
        other => panic!("acknowledging an open alert: {other:?}"),
    };
    assert_eq!(
        (
            acked.state.as_str(),
            acked.acknowledged_by.as_deref(),
            acked.acknowledged_at
        ),
        ("acknowledged", Some("op"), Some(now()))
    );
    assert_eq!(
        s.transition("a-2", Transition::Acknowledge, "op", now())
            .await
            .expect("ack"),
        TransitionOutcome::Conflict("acknowledged".into())
    );

    s.write_batch(&[], &[alert("a-2", "d", AlertState::Updated, 15)])
        .await
        .expect("update");
    let a = &s.alerts(&["a-2".into()]).await.expect("alerts")[0];
    assert_eq!(
        (a.state.as_str(), a.acknowledged_by.as_deref(), a.value),
        ("acknowledged", Some("op"), 110.0),
        "an update keeps the acknowledgement"
    );
    assert_eq!(
        s.alert_list(AlertFilter::Acknowledged, None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(s.alert_list(AlertFilter::Open, None, 10).await.expect("list").len(), 0);

    s.write_batch(&[], &[alert("a-2", "d", AlertState::Resolved, 30)])
        .await
        .expect("resolve");
    s.write_batch(&[], &[alert("a-2", "d", AlertState::Updated, 15)])
        .await
        .expect("replay of an older record");
    let a = &s.alerts(&["a-2".into()]).await.expect("alerts")[0];
    assert_eq!(
        (a.state.as_str(), a.resolved_at),
        ("resolved", Some(t(30))),
        "an older record does not reopen it"
    );
    assert_eq!(
        s.transition("a-2", Transition::Resolve, "op", now())
            .await
            .expect("resolve"),
        TransitionOutcome::Conflict("resolved".into())
    );

    // An operator may resolve an open alert directly.
    s.write_batch(&[], &[alert("a-3", "e", AlertState::Opened, 5)])
        .await
        .expect("open");
    match s
        .transition("a-3", Transition::Resolve, "op", now())
        .await
        .expect("resolve")
    {
        TransitionOutcome::Done(a) => assert_eq!((a.state.as_str(), a.resolved_at), ("resolved", Some(now()))),
        other => panic!("resolving an open alert: {other:?}"),
    }
    assert_eq!(
        s.alert_list(AlertFilter::Unresolved, None, 10)
            .await
            .expect("list")
            .len(),
        0
    );
    assert_eq!(
        s.alert_list(AlertFilter::All, Some("e"), 10).await.expect("list").len(),
        1,
        "filter by device"
    );
    assert_eq!(s.recent_alerts(1).await.expect("recent").len(), 1, "limit applies");
}

/// Per metric, newer data wins and older data only fills metrics not seen yet.
pub async fn device_values_merge_by_recency(s: &dyn ResultStore) {
    s.write_batch(&[agg("d", "temp", 100, 5.0)], &[]).await.expect("newer");
    s.write_batch(&[agg("d", "temp", 0, 1.0), agg("d", "rpm", 0, 900.0)], &[])
        .await
        .expect("older");
    let d = &s.devices(&["d".into()]).await.expect("devices")[0];
    assert_eq!(
        d.last_values["temp"]["value"], 5.0,
        "older data does not overwrite: {:?}",
        d.last_values
    );
    assert_eq!(
        d.last_values["rpm"]["value"], 900.0,
        "older data fills a new metric: {:?}",
        d.last_values
    );
    assert_eq!((d.first_seen, d.last_seen), (t(0), t(110)));
    let recent = s.recent_devices(t(105), 10).await.expect("recent");
    assert_eq!(recent.len(), 1);
    assert!(s.recent_devices(t(111), 10).await.expect("recent").is_empty());
}

/// Bad rows are refused as [`StoreError::Rejected`] and nothing of their batch is written.
pub async fn bad_rows_are_rejected_and_the_batch_is_atomic(s: &dyn ResultStore) {
    let mut bad = agg("d", "temp", 10, 1.0);
    bad.anomaly_score = 2.0;
    match s
        .write_batch(
            &[agg("d", "temp", 0, 1.0), bad],
            &[alert("x", "d", AlertState::Opened, 1)],
        )
        .await
    {
        Err(StoreError::Rejected(_)) => {}
        other => panic!("a score above 1 must be rejected, got {other:?}"),
    }
    assert!(
        s.devices(&["d".into()]).await.expect("devices").is_empty(),
        "nothing of a refused batch is written"
    );
    assert!(s.alerts(&["x".into()]).await.expect("alerts").is_empty());
}

/// Retention deletes by window start.
pub async fn retention_deletes_old_windows(s: &dyn ResultStore) {
    s.write_batch(&(0..5).map(|i| agg("d", "temp", i * 10, 1.0)).collect::<Vec<_>>(), &[])
        .await
        .expect("write");
    assert_eq!(s.delete_aggregates_before(t(20)).await.expect("delete"), 2);
    assert_eq!(
        s.series("d", "temp", Resolution::Windows(10), t(-600), now(), 1)
            .await
            .expect("series")
            .points
            .len(),
        3
    );
    s.ping().await.expect("ping");
}

/// Many rows in one batch (more than one statement's worth on SQLite).
pub async fn large_batches_are_written(s: &dyn ResultStore) {
    let aggs: Vec<Aggregate> = (0..2500)
        .map(|i| agg(&format!("dev-{}", i % 50), "temp", (i / 50) * 10 - 500, i as f64))
        .collect();
    s.write_batch(&aggs, &[]).await.expect("write");
    let page = s.device_listing(&listing(1000, now())).await.expect("listing");
    assert_eq!((page.devices.len(), page.total), (50, 50));
    let series = s
        .series("dev-7", "temp", Resolution::Windows(10), t(-600), now(), 1)
        .await
        .expect("series");
    assert_eq!(series.points.len(), 50);
}

/// Merged points (`per_point` > 1) are exactly [`merge_points`]
/// over the epoch-aligned slots, computed by the database; the sizes on offer
/// are listed whatever size is asked for.
pub async fn merged_series_match_the_reference(s: &dyn ResultStore) {
    // Large means with a small spread: a one-pass E[x²] - E[x]² would lose the deviation.
    let windows: Vec<Aggregate> = (0..120i64)
        .map(|i| {
            let mut a = agg("dev-m", "temp", i * 10, 1.0e6 + (i % 5) as f64);
            a.count = 1 + (i % 7) as u64;
            a.stddev = 0.25 * (i % 3) as f64;
            a.min = a.mean - 2.0 - (i % 4) as f64;
            a.max = a.mean + 1.0 + (i % 6) as f64;
            a.p50 = a.mean + 0.1 * (i % 2) as f64;
            a.p95 = a.mean + 0.5 + 0.01 * i as f64;
            a.p99 = a.mean + 0.9 + 0.02 * (i % 9) as f64;
            a.anomaly_score = ((i * 37) % 120) as f64 / 200.0; // distinct: no ties for the model
            a.model = format!("m{i}");
            // The first 15 windows were scored while the models warmed up; the
            // rest carry a band of their own.
            a.warming = i < 15;
            a.expected_low = (i >= 15).then_some(a.mean - 3.0 - (i % 11) as f64);
            a.expected_high = (i >= 15).then_some(a.mean + 2.0 + (i % 13) as f64);
            a
        })
        .collect();
    let mut minute = agg("dev-m", "temp", 0, 5.0);
    minute.window_seconds = 60;
    minute.window_end = t(60);
    s.write_batch(&windows, &[]).await.expect("write");
    s.write_batch(&[minute], &[]).await.expect("write");
    let stored: Vec<_> = s
        .series("dev-m", "temp", Resolution::Windows(10), t(0), t(1200), 1)
        .await
        .expect("series")
        .points;
    assert_eq!(stored.len(), 120);
    for (p, w) in stored.iter().zip(&windows) {
        assert_eq!(
            (p.expected_low, p.expected_high, p.warming),
            (w.expected_low, w.expected_high, w.warming),
            "the band and the warming flag are stored as written"
        );
    }
    for per_point in [6u32, 7, 200] {
        let got = s
            .series("dev-m", "temp", Resolution::Windows(10), t(0), t(1200), per_point)
            .await
            .expect("merged series");
        assert_eq!(got.available_windows, vec![10, 60], "sizes on offer");
        let slot = |p: &SeriesPoint| p.window_start.timestamp() / (10 * i64::from(per_point));
        let mut expected = Vec::new();
        let mut i = 0;
        while i < stored.len() {
            let j = stored[i..]
                .iter()
                .position(|p| slot(p) != slot(&stored[i]))
                .map_or(stored.len(), |k| i + k);
            expected.push(merge_points(&stored[i..j]).expect("non-empty"));
            i = j;
        }
        assert_eq!(
            got.points.len(),
            expected.len(),
            "one point per epoch-aligned slot of {per_point} windows"
        );
        assert_eq!(
            got.points.iter().map(|p| p.count).sum::<i64>(),
            stored.iter().map(|p| p.count).sum::<i64>(),
            "no reading lost or doubled"
        );
        for (g, e) in got.points.iter().zip(&expected) {
            let close = |a: f64, b: f64, what: &str| {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{what}: {a} vs {b} (per_point {per_point}, slot at {})",
                    e.window_start
                )
            };
            assert_eq!((g.window_start, g.count), (e.window_start, e.count));
            assert_eq!((g.min, g.max), (e.min, e.max), "extremes are exact");
            close(g.mean, e.mean, "mean");
            close(g.stddev, e.stddev, "pooled deviation");
            close(g.p50, e.p50, "p50");
            assert_eq!((g.p95, g.p99), (e.p95, e.p99));
            assert_eq!(
                (g.anomaly_score, g.model.as_str()),
                (e.anomaly_score, e.model.as_str()),
                "the top window's score and model"
            );
            assert_eq!(
                (g.expected_low, g.expected_high, g.warming),
                (e.expected_low, e.expected_high, e.warming),
                "the band spans the windows' bands; warming if any window was"
            );
        }
    }
    assert!(stored.iter().any(|p| p.stddev > 0.0));
    let merged = s
        .series("dev-m", "temp", Resolution::Windows(10), t(0), t(1200), 6)
        .await
        .expect("series");
    assert!(
        merged.points.iter().any(|p| p.stddev > 1.0),
        "between-window spread is in the pooled deviation"
    );
    let empty = s
        .series("dev-m", "temp", Resolution::Windows(10), t(5000), t(6000), 6)
        .await
        .expect("series");
    assert!(
        empty.points.is_empty() && empty.available_windows.is_empty(),
        "nothing stored since 'from'"
    );
}

/// Two hours of 10 s windows from `start` (seconds after "now - 10 min"),
/// with varied counts, values, scores, bands and warming, `shift` added to
/// every mean (so a rewrite of the same windows differs).
fn hours_of_windows(device: &str, start: i64, hours: i64, shift: f64) -> Vec<Aggregate> {
    (0..hours * 360)
        .map(|i| {
            let mut a = agg(
                device,
                "temp",
                start + i * 10,
                20.0 + (i as f64 * 0.05).sin() * 5.0 + shift,
            );
            a.count = 1 + (i % 7) as u64;
            a.stddev = 0.1 * (i % 4) as f64;
            a.min = a.mean - 1.0 - (i % 3) as f64;
            a.max = a.mean + 1.0 + (i % 5) as f64;
            a.p95 = a.mean + 0.5 + 0.01 * (i % 50) as f64;
            a.p99 = a.p95 + 0.3;
            a.anomaly_score = ((i * 37) % 1000) as f64 / 1000.0;
            a.model = format!("m{i}");
            a.warming = i % 500 == 3;
            a.expected_low = (i % 4 != 0).then_some(a.mean - 2.0 - (i % 11) as f64);
            a.expected_high = (i % 4 != 0).then_some(a.mean + 2.0 + (i % 13) as f64);
            a
        })
        .collect()
}

/// Run the rollup job until nothing is left to recompute.
async fn roll_up_all(s: &dyn ResultStore) {
    for _ in 0..100 {
        if s.roll_up(500).await.expect("roll up") == 0 {
            return;
        }
    }
    panic!("the rollup job never ran out of marked buckets");
}

/// Every tier of `device`'s temperature over `[from, to)` equals
/// [`merge_points`] of the stored 10 s windows under each of its buckets.
async fn assert_tiers_match_windows(s: &dyn ResultStore, device: &str, from: DateTime<Utc>, to: DateTime<Utc>) {
    let windows = s
        .series(device, "temp", Resolution::Windows(10), from, to, 1)
        .await
        .expect("windows")
        .points;
    assert!(!windows.is_empty());
    for tier in rollup::TIERS {
        let got = s
            .series(
                device,
                "temp",
                Resolution::Rollup(tier),
                rollup::bucket_of(from, tier),
                to,
                1,
            )
            .await
            .expect("rollup series")
            .points;
        let mut expected = Vec::new();
        let mut i = 0;
        while i < windows.len() {
            let b = rollup::bucket_of(windows[i].window_start, tier);
            let j = windows[i..]
                .iter()
                .position(|w| rollup::bucket_of(w.window_start, tier) != b)
                .map_or(windows.len(), |k| i + k);
            let mut m = merge_points(&windows[i..j]).expect("non-empty");
            m.window_start = b;
            expected.push(m);
            i = j;
        }
        assert_eq!(got.len(), expected.len(), "tier {tier}: one row per bucket");
        for (g, e) in got.iter().zip(&expected) {
            let close = |a: f64, b: f64, what: &str| {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "tier {tier} at {}: {what} {a} vs {b}",
                    e.window_start
                )
            };
            assert_eq!((g.window_start, g.count), (e.window_start, e.count), "tier {tier}");
            assert_eq!(
                (g.min, g.max, g.p95, g.p99),
                (e.min, e.max, e.p95, e.p99),
                "tier {tier}"
            );
            close(g.mean, e.mean, "mean");
            close(g.stddev, e.stddev, "pooled deviation");
            close(g.p50, e.p50, "p50");
            assert_eq!(
                (
                    g.anomaly_score,
                    g.model.as_str(),
                    g.expected_low,
                    g.expected_high,
                    g.warming
                ),
                (
                    e.anomaly_score,
                    e.model.as_str(),
                    e.expected_low,
                    e.expected_high,
                    e.warming
                ),
                "tier {tier} at {}",
                e.window_start
            );
        }
    }
}

/// Each rollup tier equals the merge of the windows under its buckets; the
/// 1-minute tier is computed from the finest windows only (60 s windows of
/// the same readings are not added twice); two jobs at once agree.
pub async fn rollups_equal_the_merge_of_their_windows(s: &dyn ResultStore) {
    let windows = hours_of_windows("dev-r", 0, 2, 0.0);
    for chunk in windows.chunks(250) {
        s.write_batch(chunk, &[]).await.expect("write");
    }
    let minutes: Vec<Aggregate> = (0..120)
        .map(|i| {
            let mut a = agg("dev-r", "temp", i * 60, 999.0);
            a.window_seconds = 60;
            a.window_end = t(i * 60 + 60);
            a
        })
        .collect();
    s.write_batch(&minutes, &[]).await.expect("write");
    // Nothing is rolled up until the job runs.
    let before = s
        .series("dev-r", "temp", Resolution::Rollup(60), t(-600), t(7200), 1)
        .await
        .expect("series");
    assert!(before.points.is_empty(), "rollups are computed by the job");
    let (a, b) = tokio::join!(s.roll_up(7), s.roll_up(7));
    assert!(a.expect("job") + b.expect("job") > 0);
    roll_up_all(s).await;
    assert_tiers_match_windows(s, "dev-r", t(0), t(7200)).await;
    let day = s
        .series("dev-r", "temp", Resolution::Rollup(86_400), t(-86_400), t(7200), 1)
        .await
        .expect("series");
    assert_eq!(
        day.points.iter().map(|p| p.count).sum::<i64>(),
        windows.iter().map(|w| w.count as i64).sum::<i64>(),
        "every reading counted once in the day tier"
    );
}

/// Windows as analyze writes them, each with the sketch of its readings:
/// every tier's p50/p95/p99 are the quantiles of all the readings under the
/// bucket within the sketch's 1% relative error (the rank `floor(q * (n -
/// 1))` value), whatever the windows' own quantiles were. A replay of the
/// windows with other readings (analyze re-emitting after a takeover)
/// changes the tiers to the new readings' quantiles, exactly once.
pub async fn sketched_rollups_give_the_quantiles_of_the_readings(s: &dyn ResultStore) {
    let mut rng = crate::rng::Rng::new(3);
    let mut readings = |shift: f64| {
        let mut all: Vec<(i64, f64)> = Vec::new();
        let windows: Vec<Aggregate> = (0..360)
            .map(|i| {
                // A skewed, occasionally spiking metric: the windows' highest
                // p99 is far from the hour's.
                let xs: Vec<f64> = (0..1 + (i % 9))
                    .map(|_| {
                        50.0 + shift + rng.normal() * 2.0 + if rng.below(40) == 0 { 400.0 * rng.unit() } else { 0.0 }
                    })
                    .collect();
                let mut sk = QuantileSketch::default();
                xs.iter().for_each(|&x| sk.insert(x));
                all.extend(xs.iter().map(|&x| (i * 10, x)));
                let mut a = agg("dev-q", "temp", i * 10, xs.iter().sum::<f64>() / xs.len() as f64);
                a.count = xs.len() as u64;
                (a.min, a.max) = (sk.min(), sk.max());
                a.p50 = sk.quantile(0.5).unwrap_or(a.mean);
                a.p95 = sk.quantile(0.95).unwrap_or(a.mean);
                a.p99 = sk.quantile(0.99).unwrap_or(a.mean);
                a.sketch = Some(sk);
                a
            })
            .collect();
        (windows, all)
    };
    let check = |tiers: Vec<(u32, Vec<SeriesPoint>)>, all: &[(i64, f64)], what: &str| {
        for (tier, points) in tiers {
            assert!(!points.is_empty(), "{what}: tier {tier} has rows");
            for p in points {
                let mut xs: Vec<f64> = all
                    .iter()
                    .filter(|(at, _)| rollup::bucket_of(t(*at), tier) == p.window_start)
                    .map(|(_, x)| *x)
                    .collect();
                xs.sort_by(f64::total_cmp);
                assert_eq!(p.count, xs.len() as i64, "{what}: tier {tier} at {}", p.window_start);
                for (q, got) in [(0.5, p.p50), (0.95, p.p95), (0.99, p.p99)] {
                    let want = xs[(q * (xs.len() - 1) as f64).floor() as usize];
                    assert!(
                        (got - want).abs() <= 0.01 * want.abs(),
                        "{what}: tier {tier} at {}: q{q} is {got}, the readings' is {want}",
                        p.window_start
                    );
                }
            }
        }
    };
    let read = || async {
        let mut out = Vec::new();
        for tier in [60, 300, 3600, 86_400] {
            let from = rollup::bucket_of(t(0), tier);
            let points = s
                .series("dev-q", "temp", Resolution::Rollup(tier), from, t(3600), 1)
                .await
                .expect("series")
                .points;
            out.push((tier, points));
        }
        out
    };
    let (windows, all) = readings(0.0);
    s.write_batch(&windows, &[]).await.expect("write");
    roll_up_all(s).await;
    check(read().await, &all, "first write");
    let (again, all_again) = readings(7.0);
    s.write_batch(&again, &[]).await.expect("replay");
    roll_up_all(s).await;
    check(read().await, &all_again, "replay with other readings");
}

/// Replayed, rewritten and late windows leave every tier as if each window
/// had been written once, in order.
pub async fn rollups_count_replays_and_late_windows_once(s: &dyn ResultStore) {
    let windows = hours_of_windows("dev-l", 0, 1, 0.0);
    let (early, late) = windows.split_at(200);
    s.write_batch(early, &[]).await.expect("write");
    roll_up_all(s).await;
    // Replays of what was rolled up, the rest late and out of order, then a
    // rewrite of some windows with other values (analyze re-emitting after a
    // takeover): the last write of a window wins, as for the windows.
    for chunk in early.chunks(64).rev() {
        s.write_batch(chunk, &[]).await.expect("replay");
    }
    let mut reversed = late.to_vec();
    reversed.reverse();
    s.write_batch(&reversed, &[]).await.expect("late");
    let rewritten = hours_of_windows("dev-l", 0, 1, 3.0);
    s.write_batch(&rewritten[100..150], &[]).await.expect("rewrite");
    s.write_batch(early, &[]).await.expect("replay again");
    roll_up_all(s).await;
    roll_up_all(s).await;
    assert_tiers_match_windows(s, "dev-l", t(0), t(3600)).await;
}

/// Retention per tier: deleting windows keeps the rollups made from them
/// (and a later job does not recompute them from nothing); deleting one
/// tier's old rows leaves the others.
pub async fn rollup_retention_is_per_tier(s: &dyn ResultStore) {
    let windows = hours_of_windows("dev-k", 0, 1, 0.0);
    s.write_batch(&windows, &[]).await.expect("write");
    roll_up_all(s).await;
    let read = |tier: u32| async move {
        s.series("dev-k", "temp", Resolution::Rollup(tier), t(-86_400), t(7200), 1)
            .await
            .expect("series")
            .points
    };
    let hours = read(3600).await;
    assert!(!hours.is_empty());
    assert_eq!(s.delete_aggregates_before(t(7200)).await.expect("delete"), 360);
    // A window of a new bucket after the old ones are gone: only its own buckets change.
    s.write_batch(&[agg("dev-k", "temp", 3600, 50.0)], &[])
        .await
        .expect("write");
    roll_up_all(s).await;
    let minutes = read(60).await;
    assert_eq!(minutes.len(), 61, "the minutes of deleted windows are kept");
    assert!(minutes[..60].iter().all(|m| m.mean < 30.0));
    let cut = rollup::bucket_of(t(3600), 60);
    let deleted = s.delete_rollups_before(60, cut).await.expect("delete");
    assert_eq!(deleted, 60);
    assert_eq!(read(60).await.len(), 1);
    let after = read(86_400).await;
    assert_eq!(
        after.iter().map(|p| p.count).sum::<i64>(),
        windows.iter().map(|w| w.count as i64).sum::<i64>() + 5,
        "coarser tiers keep what the finer one no longer has"
    );
}
