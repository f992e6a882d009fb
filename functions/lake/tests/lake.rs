//! The lake against a local directory, read back by delta-rs (the Python
//! `deltalake` package `scripts/test` installs, an implementation of the
//! Delta protocol independent of ours): what a data scientist's Spark job or
//! notebook would see. Covers: both tables with their columns and
//! partitions, dead letters, rolls by size and by age, what is committable
//! when, a replay after a crash between the table commit and the offset
//! commit (no row twice), a lost commit race, compaction, checkpoints (read
//! from alone, with the commits they cover removed) and a protocol this
//! writer lacks. A missing `python3` or
//! `deltalake` fails the tests; none skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use serde_json::Value;
use tributary_lake::rows::{Row, TableKind};
use tributary_lake::writer::TableWriter;
use tributary_lake::{LakeHandler, LakeMetrics, RollPolicy};
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{Handler, HandlerError, Offsets, RunnerConfig, next_offsets, run_consumer};
use tributary_shared::eventlog::{Committed, EventLog, Message, Record, TopicPartition};
use tributary_shared::model::{Location, Reading, SCHEMA_VERSION};
use tributary_shared::records::Aggregate;

const RAW: &str = "telemetry.raw";
const AGGREGATES: &str = "telemetry.aggregates";
const DEADLETTER: &str = "telemetry.deadletter";
const GROUP: &str = "tributary-lake";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0)
        .single()
        .expect("a valid time")
}

fn reading(i: usize) -> Reading {
    let mut metrics = BTreeMap::from([("temperature".to_owned(), 20.0 + i as f64 / 10.0)]);
    // A metric that appears halfway: a new map key, not a new column.
    if i >= 150 {
        metrics.insert("battery".to_owned(), 100.0 - i as f64 / 10.0);
    }
    let mut tags = BTreeMap::new();
    if i.is_multiple_of(3) {
        tags.insert("site".to_owned(), format!("site-{}", i % 4));
    }
    Reading {
        schema_version: SCHEMA_VERSION,
        id: format!("r-{i:04}"),
        device_id: format!("dev-{}", i % 10),
        // 300 readings 30 s apart: 10:00 to 12:29, three hours.
        event_time: t0() + chrono::Duration::seconds(30 * i as i64),
        received_time: t0() + chrono::Duration::seconds(30 * i as i64 + 1),
        metrics,
        tags,
        location: i.is_multiple_of(5).then_some(Location {
            lat: 47.5 + i as f64 / 1000.0,
            lon: 8.5,
            alt: i.is_multiple_of(10).then_some(400.0),
        }),
    }
}

fn aggregate(i: usize) -> Aggregate {
    let start = t0() + chrono::Duration::seconds(60 * i as i64);
    Aggregate {
        device_id: format!("dev-{}", i % 4),
        metric: "temperature".into(),
        window_seconds: 60,
        window_start: start,
        window_end: start + chrono::Duration::seconds(60),
        count: 6,
        min: 19.0,
        max: 23.0 + i as f64,
        mean: 21.0,
        stddev: 1.25,
        p50: 21.0,
        p95: 22.5,
        p99: 22.9,
        anomaly_score: if i == 7 { 0.97 } else { 0.1 },
        model: if i == 7 { "spike".into() } else { "none".into() },
        expected_low: (i > 2).then_some(19.5),
        expected_high: (i > 2).then_some(22.5),
        warming: i <= 2,
        sketch: None,
    }
}

fn record(key: &str, value: Vec<u8>) -> Record {
    Record::new(key, value)
}

/// 300 readings and 40 aggregates, and a record of each topic that is not one.
async fn fill(log: &MemoryLog) -> usize {
    let mut raw: Vec<Record> = (0..300)
        .map(|i| {
            let r = reading(i);
            record(&r.device_id, serde_json::to_vec(&r).expect("serializes"))
        })
        .collect();
    raw.insert(120, record("dev-3", b"{\"not\": \"a reading\"}".to_vec()));
    let mut aggs: Vec<Record> = (0..40)
        .map(|i| {
            let a = aggregate(i);
            record(&a.device_id, serde_json::to_vec(&a).expect("serializes"))
        })
        .collect();
    aggs.push(record("dev-1", b"not json".to_vec()));
    let n = raw.len() + aggs.len();
    for r in log.publisher().publish(RAW, raw).await {
        r.expect("published");
    }
    for r in log.publisher().publish(AGGREGATES, aggs).await {
        r.expect("published");
    }
    n
}

fn writers(store: &Arc<dyn ObjectStore>, epoch: &str) -> Vec<(String, TableWriter)> {
    [(RAW, TableKind::Raw), (AGGREGATES, TableKind::Aggregates)]
        .into_iter()
        .map(|(topic, kind)| {
            let app = format!("tributary-lake/{topic}/{epoch}");
            (
                topic.to_owned(),
                TableWriter::new(kind, store.clone(), &Path::default(), app),
            )
        })
        .collect()
}

fn handler(log: &MemoryLog, store: &Arc<dyn ObjectStore>, policy: RollPolicy) -> (LakeHandler, LakeMetrics) {
    let metrics = LakeMetrics::default();
    let h = LakeHandler::new(
        writers(store, "0"),
        policy,
        log.publisher(),
        DEADLETTER,
        metrics.clone(),
    );
    (h, metrics)
}

fn local_store(dir: &FsPath) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("a local store"))
}

/// Counts the records handed to the inner handler; optionally drops every
/// offset the inner one makes committable (a crash after the table commit,
/// before the offset commit).
struct Counting<'a> {
    inner: &'a LakeHandler,
    handled: AtomicUsize,
    drop_offsets: bool,
}

#[async_trait]
impl Handler for Counting<'_> {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        self.inner.handle(batch).await?;
        self.handled.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(())
    }
    fn committable(&self, processed: Vec<(TopicPartition, i64)>) -> Vec<(TopicPartition, i64)> {
        if self.drop_offsets {
            Vec::new()
        } else {
            self.inner.committable(processed)
        }
    }
    async fn on_assigned(&self, p: &[TopicPartition], c: &[Committed]) {
        self.inner.on_assigned(p, c).await;
    }
    async fn on_revoked(&self, p: &[TopicPartition]) {
        self.inner.on_revoked(p).await;
    }
    async fn tick(&self) -> Offsets {
        let o = self.inner.tick().await;
        if self.drop_offsets { Vec::new() } else { o }
    }
    async fn on_stop(&self) -> Offsets {
        let o = self.inner.on_stop().await;
        if self.drop_offsets { Vec::new() } else { o }
    }
}

/// Run `h` on group [`GROUP`] until it has handled `n` records, then stop it cleanly.
async fn run_until(log: &MemoryLog, h: &LakeHandler, n: usize, drop_offsets: bool) {
    let counting = Counting {
        inner: h,
        handled: AtomicUsize::new(0),
        drop_offsets,
    };
    let sub = log
        .subscribe(GROUP, &[RAW.to_owned(), AGGREGATES.to_owned()])
        .await
        .expect("subscribed");
    let cfg = RunnerConfig {
        max_batch: 64,
        max_wait: Duration::from_millis(50),
        commit_every: Duration::ZERO,
        group: GROUP.into(),
        ..RunnerConfig::default()
    };
    let stop = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while counting.handled.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lake handled {} of {n} records",
                counting.handled.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    run_consumer(sub, &counting, &cfg, stop)
        .await
        .expect("the runner stops cleanly");
}

/// What delta-rs reads of the table at `dir`, with the `txn` versions of `apps`.
fn read_table(dir: &FsPath, apps: &[String]) -> Value {
    let uri = dir.display().to_string();
    tributary_testkit::delta::read(&uri, None, &[], apps)
        .unwrap_or_else(|e| panic!("delta-rs could not read {uri}: {e}"))
}

fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().expect("rows")
}

#[tokio::test]
async fn readings_and_aggregates_land_in_delta_tables_that_delta_rs_reads() {
    let dir = tempdir("tables");
    let store = local_store(&dir);
    let log = MemoryLog::new(3, 1_000_000);
    let n = fill(&log).await;
    let (h, metrics) = handler(&log, &store, RollPolicy::default());
    run_until(&log, &h, n, false).await;

    // The clean stop committed everything buffered, then the offsets.
    assert_eq!(log.lag(GROUP, RAW), 0, "raw offsets committed after the table commit");
    assert_eq!(log.lag(GROUP, AGGREGATES), 0);
    assert_eq!(metrics.deadlettered(), 2, "one bad record of each topic");
    let dead = log.snapshot(DEADLETTER);
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|m| m.value == b"not json"));

    let apps: Vec<String> = (0..3).map(|p| format!("tributary-lake/{RAW}/0/{p}")).collect();
    let raw = read_table(&dir.join("raw"), &apps);
    assert_eq!(raw["partition_columns"], serde_json::json!(["date", "hour"]));
    let schema = &raw["schema"];
    assert_eq!(schema["event_time"], "timestamp[us, tz=UTC]");
    assert_eq!(schema["metrics"], "map<string, double>");
    assert_eq!(schema["tags"], "map<string, string>");
    assert_eq!(schema["date"], "date32[day]");
    assert_eq!(schema["hour"], "int32");
    let got = rows(&raw);
    assert_eq!(got.len(), 300, "every reading once, the bad record not");
    let ids: BTreeSet<&str> = got.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 300);
    let sources: BTreeSet<(i64, i64)> = got
        .iter()
        .map(|r| {
            (
                r["source_partition"].as_i64().unwrap_or(-1),
                r["source_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(sources.len(), 300, "no Kafka record twice");

    // One reading, field by field, as the device sent it.
    let r = got
        .iter()
        .find(|r| r["id"] == "r-0200")
        .expect("r-0200 is in the table");
    let want = reading(200);
    assert_eq!(r["device_id"], "dev-0");
    assert_eq!(r["event_time"], "2026-12-07T11:40:00+00:00");
    assert_eq!(r["received_time"], "2026-12-07T11:40:01+00:00");
    assert_eq!(
        r["metrics"]["temperature"].as_f64(),
        want.metrics.get("temperature").copied()
    );
    assert_eq!(r["metrics"]["battery"].as_f64(), want.metrics.get("battery").copied());
    assert_eq!(r["location"]["lat"].as_f64(), want.location.as_ref().map(|l| l.lat));
    assert_eq!(r["location"]["alt"].as_f64(), Some(400.0));
    assert_eq!(r["date"], "2026-12-07");
    assert_eq!(r["hour"], 11);
    let early = got.iter().find(|r| r["id"] == "r-0001").expect("r-0001");
    assert_eq!(
        early["metrics"].as_object().map(|m| m.len()),
        Some(1),
        "no battery before it appeared"
    );
    assert!(early["location"].is_null());
    assert_eq!(early["tags"], serde_json::json!({}));
    assert_eq!(
        got.iter().find(|r| r["id"] == "r-0003").map(|r| &r["tags"]["site"]),
        Some(&Value::from("site-3"))
    );
    // Hour partitions follow the event time.
    let hours: BTreeMap<i64, usize> = got.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["hour"].as_i64().unwrap_or(-1)).or_default() += 1;
        m
    });
    assert_eq!(hours, BTreeMap::from([(10, 120), (11, 120), (12, 60)]));
    // The table says up to which offset each partition is in it: its last record.
    let ends: BTreeMap<i32, i64> = log.snapshot(RAW).iter().fold(BTreeMap::new(), |mut m, msg| {
        let e = m.entry(msg.partition).or_insert(msg.offset);
        *e = (*e).max(msg.offset);
        m
    });
    for (p, app) in apps.iter().enumerate() {
        assert_eq!(raw["txn"][app].as_i64(), ends.get(&(p as i32)).copied(), "txn of {app}");
    }

    let aggs = read_table(&dir.join("aggregates"), &[]);
    let got = rows(&aggs);
    assert_eq!(got.len(), 40);
    let spike = got
        .iter()
        .find(|a| a["anomaly_score"].as_f64() == Some(0.97))
        .expect("the spike window");
    assert_eq!(spike["model"], "spike");
    assert_eq!(spike["window_start"], "2026-12-07T10:07:00+00:00");
    assert_eq!(spike["max"].as_f64(), Some(30.0));
    assert_eq!(spike["expected_high"].as_f64(), Some(22.5));
    assert_eq!(spike["warming"], false);
    let first = got
        .iter()
        .find(|a| a["window_start"] == "2026-12-07T10:00:00+00:00")
        .expect("the first window");
    assert!(first["expected_low"].is_null());
    assert_eq!(first["warming"], true);
    assert_eq!(aggs["schema"]["count"], "int64");
    assert_eq!(aggs["schema"]["window_seconds"], "int32");

    // The README's Python snippet, run as written against this table.
    let out = run_readme_snippet(&dir.join("raw"));
    let dev0_10h = out
        .lines()
        .find(|l| l.contains("dev-0") && l.contains("10:00:00"))
        .unwrap_or_default();
    assert!(dev0_10h.contains("25.5"), "dev-0's mean from 10:00 is 25.5:\n{out}");
}

/// The README's `lake-python` block with its table path pointed at `table`: what it prints.
fn run_readme_snippet(table: &FsPath) -> String {
    let readme =
        std::fs::read_to_string(FsPath::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).expect("README.md");
    let after = readme
        .split("<!-- lake-python")
        .nth(1)
        .expect("the README marks its lake snippet");
    let code = after
        .split("```python\n")
        .nth(1)
        .and_then(|c| c.split("```").next())
        .expect("a python block after the marker");
    assert!(
        code.contains("\"data/lake/raw\""),
        "the snippet reads data/lake/raw:\n{code}"
    );
    let code = code.replace("\"data/lake/raw\"", &format!("{:?}", table.display().to_string()));
    // Past the snippet, leave without the interpreter's teardown (see testkit/read_delta.py).
    let code = format!("{code}\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n");
    let out = std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the README snippet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_replay_after_a_crash_between_the_table_commit_and_the_offset_commit_adds_no_row() {
    let dir = tempdir("replay");
    let store = local_store(&dir);
    let log = MemoryLog::new(3, 1_000_000);
    let n = fill(&log).await;
    let (first, _) = handler(&log, &store, RollPolicy::default());
    // The table commit happens; the offsets never reach the group.
    run_until(&log, &first, n, true).await;
    assert_eq!(log.lag(GROUP, RAW), 301, "no offset committed");
    let before = read_table(&dir.join("raw"), &[]);
    assert_eq!(rows(&before).len(), 300);

    // The next owner reads everything again.
    let (second, metrics) = handler(&log, &store, RollPolicy::default());
    run_until(&log, &second, n, false).await;
    assert_eq!(metrics.skipped(), 342, "every record is recognised as in the table");
    assert_eq!(metrics.deadlettered(), 0, "and the bad ones as dead-lettered already");
    let after = read_table(&dir.join("raw"), &[]);
    assert_eq!(rows(&after), rows(&before), "not a row more");
    assert_eq!(after["version"], before["version"], "and no empty commit");
    assert_eq!(log.lag(GROUP, RAW), 0, "now the offsets are committed");
    assert_eq!(rows(&read_table(&dir.join("aggregates"), &[])).len(), 40);
}

#[tokio::test]
async fn offsets_are_committable_only_once_their_rows_are_in_a_commit() {
    let dir = tempdir("committable");
    let store = local_store(&dir);
    let log = MemoryLog::new(1, 1_000_000);
    let policy = RollPolicy {
        max_bytes: 5_000,
        max_age: Duration::from_millis(300),
    };
    let (h, metrics) = handler(&log, &store, policy);
    let msg = |offset: i64, i: usize| Message {
        topic: RAW.into(),
        partition: 0,
        offset,
        key: None,
        value: serde_json::to_vec(&reading(i)).expect("serializes"),
        headers: Vec::new(),
        timestamp_ms: None,
    };
    let tp = TopicPartition::new(RAW, 0);

    // A small batch is buffered: its offsets are held back.
    let batch: Vec<Message> = (0..5).map(|i| msg(i as i64, i)).collect();
    h.handle(&batch).await.expect("handled");
    assert_eq!(h.committable(next_offsets(&batch)), vec![(tp.clone(), 0)]);
    assert!(h.tick().await.is_empty(), "not due yet");
    assert!(!dir.join("raw/_delta_log").exists(), "nothing written yet");

    // Once the oldest row is old enough, the tick commits the table and the offsets.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(h.tick().await, vec![(tp.clone(), 5, String::new())]);
    assert_eq!(metrics.rows("raw"), 5);
    assert_eq!(h.committable(next_offsets(&batch)), vec![(tp.clone(), 5)]);
    assert_eq!(rows(&read_table(&dir.join("raw"), &[])).len(), 5);

    // The same batch again (a retry): nothing new.
    h.handle(&batch).await.expect("handled");
    assert!(h.tick().await.is_empty());

    // Past the size limit the batch itself rolls.
    let big: Vec<Message> = (5..60).map(|i| msg(i as i64, i)).collect();
    h.handle(&big).await.expect("handled");
    assert_eq!(h.committable(next_offsets(&big)), vec![(tp.clone(), 60)]);
    let table = read_table(&dir.join("raw"), &[format!("tributary-lake/{RAW}/0/0")]);
    assert_eq!(rows(&table).len(), 60);
    assert_eq!(table["txn"][format!("tributary-lake/{RAW}/0/0")], 59);
    assert_eq!(table["version"], 1, "two commits: by age, then by size");
}

#[tokio::test]
async fn a_commit_that_loses_a_race_drops_what_the_winner_wrote() {
    let dir = tempdir("race");
    let store = local_store(&dir);
    let app = format!("tributary-lake/{RAW}/0");
    // The old and the new owner of partition 0 during a rebalance, both with overlapping records.
    let mut old = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    let mut new = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    // And a third whose records the others' commits hold entirely.
    let mut late = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    old.refresh().await.expect("read");
    new.refresh().await.expect("read");
    late.refresh().await.expect("read");
    for i in 3..9 {
        late.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
    }
    for i in 0..10 {
        old.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
    }
    for i in 5..16 {
        new.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
    }
    let won = old.roll(None, 1).await.expect("the first commit");
    assert_eq!(won.committable, vec![(0, 10)]);
    let lost = new.roll(None, 2).await.expect("decided again and committed");
    assert_eq!(lost.rows, 6, "only offsets 10 to 15");
    assert_eq!(lost.committable, vec![(0, 16)]);

    let covered = late.roll(None, 3).await.expect("nothing to add");
    assert_eq!(
        (covered.files, covered.rows, covered.committable.clone()),
        (0, 0, vec![(0, 9)])
    );

    let table = read_table(&dir.join("raw"), &[format!("{app}/0")]);
    assert_eq!(table["version"], 1, "no empty commit, and no txn going back");
    let offsets: Vec<i64> = rows(&table)
        .iter()
        .filter_map(|r| r["source_offset"].as_i64())
        .collect();
    assert_eq!(offsets, (0..16).collect::<Vec<_>>(), "each offset once");
    assert_eq!(table["txn"][format!("{app}/0")], 15);
    assert_eq!(table["files"], 2, "the lost attempt's file is not in the table");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tributary-lake-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[tokio::test]
async fn the_small_files_of_a_finished_hour_are_merged_into_one_with_the_same_rows() {
    use tributary_lake::compact::{CompactPolicy, compact_one};
    use tributary_lake::delta::Table;
    use tributary_lake::rows::PARTITION_COLUMNS;

    let dir = tempdir("compact");
    let store = local_store(&dir);
    let app = format!("tributary-lake/{RAW}/0");
    let mut w = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    w.refresh().await.expect("read");
    // Ten rolls of six readings each, all in the 10:00 hour: ten small files.
    for roll in 0..10 {
        for i in roll * 6..roll * 6 + 6 {
            w.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
        }
        w.roll(None, roll as i64).await.expect("rolled");
    }
    let before = read_table(&dir.join("raw"), &[]);
    assert_eq!(before["files"], 10);
    let policy = CompactPolicy {
        min_files: 4,
        target_bytes: 1 << 20,
    };

    // While it is the current hour, it is left alone.
    let during = t0() + chrono::Duration::minutes(30);
    assert_eq!(w.compact(&policy, during).await.expect("compaction"), None);

    // A writer that read the table now, and compacts after another one did.
    let mut stale = Table::new(
        store.clone(),
        Path::from("raw"),
        TableKind::Raw.table_schema(),
        PARTITION_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
    );
    stale.refresh().await.expect("read");

    let later = t0() + chrono::Duration::hours(2);
    let done = w
        .compact(&policy, later)
        .await
        .expect("compaction")
        .expect("one partition compacted");
    assert_eq!((done.removed, done.rows), (10, 60));
    let after = read_table(&dir.join("raw"), &[format!("{app}/0")]);
    assert_eq!(after["files"], 1, "one file for the hour");
    assert_eq!(rows(&after), rows(&before), "the same rows");
    assert_eq!(after["txn"][format!("{app}/0")], 59, "and the same offsets recorded");

    // The stale writer loses the race and changes nothing, leaving no file behind.
    let lost = compact_one(&mut stale, &store, &policy, &[], 99)
        .await
        .expect("no error");
    assert_eq!(lost, None);
    let last = read_table(&dir.join("raw"), &[]);
    assert_eq!(last["version"], after["version"]);
    assert_eq!(rows(&last), rows(&before));
    let parquet_files = walk(&dir.join("raw"))
        .into_iter()
        .filter(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
        .count();
    assert_eq!(
        parquet_files, 11,
        "the ten small files (until a vacuum) and the merged one; not the loser's"
    );

    // New rows for the hour after the compaction are added as usual.
    w.add(0, 60, Some(Row::Raw(reading(60))), 100);
    w.roll(None, 100).await.expect("rolled");
    assert_eq!(rows(&read_table(&dir.join("raw"), &[])).len(), 61);
}

fn walk(dir: &FsPath) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn every_tenth_version_is_checkpointed_and_the_table_is_read_from_its_newest_checkpoint() {
    use tributary_lake::compact::CompactPolicy;

    let dir = tempdir("checkpoint");
    let store = local_store(&dir);
    let app = format!("tributary-lake/{RAW}/0");
    let mut w = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    w.refresh().await.expect("read");
    // Versions 0..=23: 24 rolls of five readings, all in the 10:00 hour.
    for roll in 0..24 {
        for i in roll * 5..roll * 5 + 5 {
            w.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
        }
        w.roll(None, roll as i64).await.expect("rolled");
    }
    // Version 24: the hour's 24 files merged into one (24 tombstones).
    let policy = CompactPolicy {
        min_files: 4,
        target_bytes: 1 << 20,
    };
    let later = t0() + chrono::Duration::hours(3);
    let merged = w.compact(&policy, later).await.expect("compaction").expect("compacted");
    assert_eq!(merged.removed, 24);
    // Versions 25..=30: the 11:00 hour, one file each.
    for roll in 24..30 {
        for i in roll * 5..roll * 5 + 5 {
            w.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
        }
        w.roll(None, roll as i64).await.expect("rolled");
    }
    assert_eq!(w.version(), Some(30));

    let log = dir.join("raw").join("_delta_log");
    for v in [10, 20, 30] {
        assert!(
            log.join(format!("{v:020}.checkpoint.parquet")).is_file(),
            "no checkpoint of version {v}"
        );
    }
    assert!(!log.join(format!("{:020}.checkpoint.parquet", 25)).exists());
    let last: Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).expect("_last_checkpoint")).expect("JSON");
    assert_eq!(last["version"], 30);
    let checkpoint = std::fs::read(log.join(format!("{:020}.checkpoint.parquet", 30))).expect("checkpoint");
    let actions = tributary_lake::checkpoint::from_parquet(checkpoint.into()).expect("a readable checkpoint");
    let count = |kind: &str| actions.iter().filter(|a| a.get(kind).is_some()).count();
    assert_eq!(
        (
            count("protocol"),
            count("metaData"),
            count("txn"),
            count("add"),
            count("remove")
        ),
        (1, 1, 1, 7, 24),
        "the state at version 30: one txn, the merged file and six new ones, the 24 merged files' tombstones"
    );

    // Commits a checkpoint covers may be removed (Delta's log cleanup does):
    // delta-rs and a new writer must then read the table from the checkpoint.
    for v in 0..=30 {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).expect("a commit removed");
    }
    let read = read_table(&dir.join("raw"), &[format!("{app}/0")]);
    assert_eq!(read["version"], 30);
    assert_eq!(read["files"], 7);
    assert_eq!(read["txn"][format!("{app}/0")], 149);
    let ids: Vec<&str> = rows(&read).iter().filter_map(|r| r["id"].as_str()).collect();
    let expected: Vec<String> = (0..150).map(|i| format!("r-{i:04}")).collect();
    assert_eq!(ids, expected, "every reading once, from the checkpoint alone");

    let mut fresh = TableWriter::new(TableKind::Raw, store.clone(), &Path::default(), app.clone());
    fresh
        .refresh()
        .await
        .expect("a new writer reads the table from its checkpoint");
    assert_eq!(fresh.version(), Some(30));
    assert_eq!(fresh.written_through(0), Some(149));
    assert_eq!(fresh.files(), 7);
    assert!(!fresh.is_new(0, 149), "what the checkpoint holds is not written again");
    for i in 150..155 {
        assert_eq!(
            fresh.add(0, i as i64, Some(Row::Raw(reading(i))), 100),
            tributary_lake::writer::Added::Buffered
        );
    }
    fresh.roll(None, 31).await.expect("rolled after the checkpoint");
    let after = read_table(&dir.join("raw"), &[format!("{app}/0")]);
    assert_eq!(after["version"], 31);
    assert_eq!(rows(&after).len(), 155);
    assert_eq!(after["txn"][format!("{app}/0")], 154);

    // Versions 32..=40 eight days after the compaction: the tombstones have
    // expired (a week), and checkpoint 40 no longer carries them.
    let week_later = (later + chrono::Duration::days(8)).timestamp_millis();
    for roll in 31..40 {
        for i in roll * 5..roll * 5 + 5 {
            fresh.add(0, i as i64, Some(Row::Raw(reading(i))), 100);
        }
        fresh.roll(None, week_later).await.expect("rolled");
    }
    assert_eq!(fresh.version(), Some(40));
    let checkpoint = std::fs::read(log.join(format!("{:020}.checkpoint.parquet", 40))).expect("checkpoint 40");
    let actions = tributary_lake::checkpoint::from_parquet(checkpoint.into()).expect("a readable checkpoint");
    let count = |kind: &str| actions.iter().filter(|a| a.get(kind).is_some()).count();
    assert_eq!(
        (count("add"), count("remove")),
        (17, 0),
        "17 files, no expired tombstone"
    );
    assert_eq!(rows(&read_table(&dir.join("raw"), &[])).len(), 200);
}

#[tokio::test]
async fn a_table_needing_delta_features_this_writer_lacks_is_refused_not_misread() {
    let dir = tempdir("protocol");
    let log = dir.join("raw").join("_delta_log");
    std::fs::create_dir_all(&log).expect("a log directory");
    // Deletion vectors: rows a reader must skip, which this writer would not see.
    let protocol = serde_json::json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
        "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"]}});
    std::fs::write(log.join(format!("{:020}.json", 0)), format!("{protocol}\n")).expect("a commit");
    let mut w = TableWriter::new(
        TableKind::Raw,
        local_store(&dir),
        &Path::default(),
        format!("tributary-lake/{RAW}/0"),
    );
    let err = w.refresh().await.expect_err("refused");
    assert!(
        matches!(err, tributary_lake::delta::DeltaError::Unsupported { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "waiting does not help");
    assert!(err.to_string().contains("reader 3"), "{err}");
}
