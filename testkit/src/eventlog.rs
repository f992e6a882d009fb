//! The behaviour every [`EventLog`] backend must show, written once and run
//! against each backend by the integration tests (`shared/tests/eventlog_*.rs`).
//! Each check panics with a message naming what broke.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use tributary_shared::eventlog::runner::{Handler, HandlerError, RunnerConfig, run_consumer};
use tributary_shared::eventlog::{Committed, Event, EventLog, Message, Record, Subscription, TopicPartition};

const DEADLINE: Duration = Duration::from_secs(60);

/// Poll `sub` until `n` records arrived (handling rebalance events), or panic after a minute.
pub async fn drain(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Message> {
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} records arrived within {DEADLINE:?}",
            out.len()
        );
        match sub.next(1000, Duration::from_millis(500)).await {
            Ok(Event::Messages(b)) => out.extend(b),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "poll failed during drain"),
        }
    }
    out
}

/// Records for `keys` devices, `per_key` each, values `key:i`.
fn records(keys: usize, per_key: usize) -> Vec<Record> {
    let mut v = Vec::new();
    for i in 0..per_key {
        for k in 0..keys {
            v.push(Record::new(format!("dev-{k}"), format!("dev-{k}:{i}")));
        }
    }
    v
}

fn by_key(msgs: &[Message]) -> BTreeMap<Vec<u8>, Vec<(i32, String)>> {
    let mut m: BTreeMap<Vec<u8>, Vec<(i32, String)>> = BTreeMap::new();
    for msg in msgs {
        m.entry(msg.key.clone().unwrap_or_default())
            .or_default()
            .push((msg.partition, String::from_utf8_lossy(&msg.value).into_owned()));
    }
    m
}

/// Published records are acknowledged with their position, consumed back
/// unchanged, and one key's records share a partition and keep their order.
pub async fn publish_and_consume_in_key_order(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 3).await.expect("create topic");
    let input = records(5, 40);
    let results = log.publisher().publish(topic, input.clone()).await;
    assert_eq!(results.len(), input.len());
    let delivered: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every record acknowledged"))
        .collect();

    let mut sub = log
        .subscribe(&format!("{topic}-g"), &[topic.to_owned()])
        .await
        .expect("subscribe");
    let got = drain(&mut sub, input.len()).await;
    assert_eq!(got.len(), input.len(), "no record twice");
    for (rec, d) in input.iter().zip(&delivered) {
        let m = got
            .iter()
            .find(|m| m.partition == d.partition && m.offset == d.offset)
            .expect("acknowledged position holds the record");
        assert_eq!(m.value, rec.value);
        assert_eq!(m.key.as_deref(), Some(rec.key.as_slice()));
    }
    for (key, seq) in by_key(&got) {
        let parts: BTreeSet<i32> = seq.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            parts.len(),
            1,
            "key {} spread over partitions {parts:?}",
            String::from_utf8_lossy(&key)
        );
        let expected: Vec<String> = (0..40)
            .map(|i| format!("{}:{i}", String::from_utf8_lossy(&key)))
            .collect();
        let values: Vec<String> = seq.into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, expected, "per-key order");
    }
    sub.close().await;
}

/// Headers survive the round trip, in order.
pub async fn headers_round_trip(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 1).await.expect("create topic");
    let mut r = Record::new("k", "v");
    r.headers = vec![
        ("source-topic".into(), b"telemetry.raw".to_vec()),
        ("error".into(), b"bad".to_vec()),
    ];
    log.publisher()
        .publish(topic, vec![r.clone()])
        .await
        .remove(0)
        .expect("acknowledged");
    let mut sub = log
        .subscribe(&format!("{topic}-g"), &[topic.to_owned()])
        .await
        .expect("subscribe");
    let got = drain(&mut sub, 1).await;
    assert_eq!(got[0].headers, r.headers);
    sub.close().await;
}

/// State kept per input partition: a record sent to an explicit partition
/// lands there whatever its key, and a compacted topic's partition reads
/// back whole, oldest first, up to its end; a missing topic reads as empty.
pub async fn a_partition_reads_back_what_was_written_to_it(log: &dyn EventLog, topic: &str) {
    assert!(
        log.read_partition(topic, 0)
            .await
            .expect("read a missing topic")
            .is_empty(),
        "a missing topic reads as empty"
    );
    log.ensure_compacted_topic(topic, 3).await.expect("create topic");
    log.ensure_compacted_topic(topic, 3)
        .await
        .expect("creating it again is fine");
    // Every fifth record is a tombstone: read back with an empty value.
    let tombstone = |i: i32| i % 5 == 4;
    let records: Vec<Record> = (0..20)
        .map(|i| {
            let key = format!("key-{}", i % 7);
            let r = if tombstone(i) {
                Record::tombstone(key)
            } else {
                Record::new(key, format!("v{i}"))
            };
            r.to_partition(i % 3)
        })
        .collect();
    let delivered = log.publisher().publish(topic, records).await;
    for (i, d) in delivered.into_iter().enumerate() {
        let d = d.expect("acknowledged");
        assert_eq!(d.partition, (i % 3) as i32, "record {i} went to its partition");
    }
    for p in 0..3 {
        let got = log.read_partition(topic, p).await.expect("read back");
        let want: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
            .filter(|i| i % 3 == p)
            .map(|i| {
                let value = if tombstone(i) {
                    Vec::new()
                } else {
                    format!("v{i}").into_bytes()
                };
                (format!("key-{}", i % 7).into_bytes(), value)
            })
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
    assert!(
        log.read_partition(topic, 7).await.expect("read").is_empty(),
        "no such partition"
    );
}

/// A tail returns the topic's history from every partition, says when it
/// has caught up with what was there at open, then returns what is appended;
/// a missing topic is an error, not an empty view.
pub async fn a_tail_reads_history_then_follows(log: &dyn EventLog, topic: &str) {
    assert!(log.tail(topic).await.is_err(), "a missing topic cannot be followed");
    log.ensure_compacted_topic(topic, 3).await.expect("create topic");
    let history: Vec<Record> = (0..30)
        .map(|i| Record::new(format!("k{i}"), format!("v{i}")).to_partition(i % 3))
        .collect();
    for d in log.publisher().publish(topic, history).await {
        d.expect("acknowledged");
    }
    let mut tail = log.tail(topic).await.expect("open a tail");
    assert!(!tail.caught_up(), "nothing read yet");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !tail.caught_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up in 30 s: {} records",
            seen.len()
        );
        // Small batches: catching up takes several calls.
        seen.extend(tail.next(7, Duration::from_millis(500)).await.expect("next"));
    }
    assert_eq!(seen.len(), 30, "the history, once");
    let mut keys: Vec<String> = seen
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort_unstable();
    let mut want: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    // Within a partition, in the order written.
    let p0: Vec<&[u8]> = seen
        .iter()
        .filter(|(k, _)| (0..30).step_by(3).any(|i| k.as_slice() == format!("k{i}").as_bytes()))
        .map(|(_, v)| v.as_slice())
        .collect();
    let want_p0: Vec<String> = (0..30).step_by(3).map(|i| format!("v{i}")).collect();
    assert_eq!(p0, want_p0.iter().map(String::as_bytes).collect::<Vec<_>>());
    assert!(
        tail.next(100, Duration::from_millis(300))
            .await
            .expect("idle")
            .is_empty(),
        "nothing new"
    );

    // What is appended later arrives, tombstones as empty values.
    let later = vec![
        Record::new("k1", "v1-new").to_partition(1),
        Record::tombstone("k2").to_partition(2),
    ];
    for d in log.publisher().publish(topic, later).await {
        d.expect("acknowledged");
    }
    let mut appended = Vec::new();
    while appended.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "appended records did not arrive: {appended:?}"
        );
        appended.extend(tail.next(100, Duration::from_secs(1)).await.expect("next"));
    }
    appended.sort();
    assert_eq!(
        appended,
        vec![(b"k1".to_vec(), b"v1-new".to_vec()), (b"k2".to_vec(), Vec::new())]
    );
    assert!(tail.caught_up());
}

struct FlakyHandler {
    failures_left: AtomicUsize,
    seen: Mutex<Vec<Message>>,
    calls: AtomicUsize,
}

#[async_trait]
impl Handler for FlakyHandler {
    async fn handle(&self, batch: &[Message]) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError::msg("injected failure"));
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(batch);
        Ok(())
    }
}

/// The runner retries a failing batch (nothing skipped), commits after
/// success, and a new member of the group resumes after the committed offsets.
pub async fn runner_commits_only_after_success(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 3).await.expect("create topic");
    let group = format!("{topic}-g");
    let input = records(4, 25);
    for r in log.publisher().publish(topic, input.clone()).await {
        r.expect("acknowledged");
    }

    let handler = FlakyHandler {
        failures_left: AtomicUsize::new(2),
        seen: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
    };
    let sub = log.subscribe(&group, &[topic.to_owned()]).await.expect("subscribe");
    let cfg = RunnerConfig {
        max_batch: 30,
        max_wait: Duration::from_millis(200),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let done = async {
        let start = tokio::time::Instant::now();
        while handler.seen.lock().unwrap_or_else(|e| e.into_inner()).len() < input.len() {
            assert!(start.elapsed() < DEADLINE, "runner did not deliver every record");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the commit of the last batch go through before shutting down.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    run_consumer(sub, &handler, &cfg, done).await.expect("runner");
    assert!(
        handler.calls.load(Ordering::SeqCst) >= 3,
        "the failed batch was retried"
    );
    let seen = handler.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), input.len(), "each record handled once after the retries");
    for (key, seq) in by_key(&seen) {
        let values: Vec<String> = seq.into_iter().map(|(_, v)| v).collect();
        let expected: Vec<String> = (0..25)
            .map(|i| format!("{}:{i}", String::from_utf8_lossy(&key)))
            .collect();
        assert_eq!(values, expected, "no gaps: the failed batch was not skipped");
    }

    let extra = records(2, 3);
    for r in log.publisher().publish(topic, extra.clone()).await {
        r.expect("acknowledged");
    }
    let mut sub = log.subscribe(&group, &[topic.to_owned()]).await.expect("resubscribe");
    let got = drain(&mut sub, extra.len()).await;
    // Give any wrongly replayed record a moment to show up.
    if let Ok(Event::Messages(more)) = sub.next(1000, Duration::from_secs(1)).await {
        assert!(
            more.is_empty(),
            "records past the committed offsets were redelivered: {more:?}"
        );
    }
    let mut vals: Vec<Vec<u8>> = got.iter().map(|m| m.value.clone()).collect();
    let mut want: Vec<Vec<u8>> = extra.iter().map(|r| r.value.clone()).collect();
    vals.sort();
    want.sort();
    assert_eq!(vals, want, "the new member resumed exactly after the committed offsets");
    sub.close().await;
}

/// Records a member read but did not commit are delivered again to the next member.
pub async fn uncommitted_records_are_redelivered(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 2).await.expect("create topic");
    let group = format!("{topic}-g");
    let input = records(3, 5);
    for r in log.publisher().publish(topic, input.clone()).await {
        r.expect("acknowledged");
    }
    let mut sub = log.subscribe(&group, &[topic.to_owned()]).await.expect("subscribe");
    let first = drain(&mut sub, input.len()).await;
    sub.close().await;
    let mut sub = log.subscribe(&group, &[topic.to_owned()]).await.expect("resubscribe");
    let second = drain(&mut sub, input.len()).await;
    let key = |m: &Message| (m.partition, m.offset);
    let a: BTreeSet<_> = first.iter().map(key).collect();
    let b: BTreeSet<_> = second.iter().map(key).collect();
    assert_eq!(a, b, "uncommitted records come back");
    sub.close().await;
}

/// Two members of one group split the partitions between them with no
/// overlap, and together read every record exactly once.
pub async fn group_members_split_partitions(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 4).await.expect("create topic");
    let group = format!("{topic}-g");
    let mut a = log.subscribe(&group, &[topic.to_owned()]).await.expect("subscribe a");
    let mut b = log.subscribe(&group, &[topic.to_owned()]).await.expect("subscribe b");
    let mut owned: [BTreeSet<TopicPartition>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut got: Vec<(usize, Message)> = Vec::new();
    let all: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new(topic, p)).collect();
    let start = tokio::time::Instant::now();
    let mut published = false;
    let input = records(8, 10);
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "group never settled: a={:?} b={:?}, got {} records",
            owned[0],
            owned[1],
            got.len()
        );
        for (i, sub) in [&mut a, &mut b].into_iter().enumerate() {
            match sub.next(1000, Duration::from_millis(200)).await {
                Ok(Event::Assigned(p)) => owned[i].extend(p),
                Ok(Event::Revoked(p)) => {
                    for tp in p {
                        owned[i].remove(&tp);
                    }
                }
                Ok(Event::Messages(m)) => got.extend(m.into_iter().map(|m| (i, m))),
                Err(_) => {}
            }
        }
        let settled = !owned[0].is_empty()
            && !owned[1].is_empty()
            && owned[0].is_disjoint(&owned[1])
            && owned[0].union(&owned[1]).cloned().collect::<BTreeSet<_>>() == all;
        if settled && !published {
            for r in log.publisher().publish(topic, input.clone()).await {
                r.expect("acknowledged");
            }
            published = true;
        }
        if published && got.len() >= input.len() {
            break;
        }
    }
    for (i, m) in &got {
        assert!(
            owned[*i].contains(&m.topic_partition()),
            "member {i} got a record of a partition it does not own"
        );
    }
    let positions: BTreeSet<(i32, i64)> = got.iter().map(|(_, m)| (m.partition, m.offset)).collect();
    assert_eq!(
        positions.len(),
        input.len(),
        "every record exactly once across the group"
    );
    a.close().await;
    b.close().await;
}

/// Committed offsets come back on the next assignment, and so does the
/// metadata committed with them (handlers keep watermarks there across
/// rebalances). tansu 0.6 answers OffsetFetch with
/// empty metadata (tansu-broker's group administrator); the Kafka backend
/// then keeps it in a mirror topic (see `tributary_shared::eventlog::kafka`).
pub async fn committed_offsets_round_trip(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 1).await.expect("create topic");
    let group = format!("{topic}-g");
    for r in log.publisher().publish(topic, records(1, 5)).await {
        r.expect("acknowledged");
    }
    let mut sub = log.subscribe(&group, &[topic.to_owned()]).await.expect("subscribe");
    let got = drain(&mut sub, 5).await;
    let tp = got[0].topic_partition();
    sub.commit(&[(tp.clone(), got[2].offset + 1, "watermark=1795608000000".into())])
        .await
        .expect("commit");
    sub.close().await;

    let (mut sub, mine) = assigned_committed(log, &group, topic, &tp).await;
    assert_eq!(mine.offset, Some(got[2].offset + 1));
    assert_eq!(mine.metadata, "watermark=1795608000000");
    let rest = drain(&mut sub, 2).await;
    assert_eq!(rest[0].offset, got[3].offset, "resumes at the committed offset");
    sub.close().await;
}

/// The metadata that comes back is the latest commit's, and belongs to its
/// offset: after commits (2, "a") and (3, "b") a new member reads (3, "b");
/// after a further commit (4) without metadata it reads (4, "") — never an
/// older commit's checkpoint for a newer position.
pub async fn committed_metadata_belongs_to_the_latest_commit(log: &dyn EventLog, topic: &str) {
    log.ensure_topics(&[topic.to_owned()], 1).await.expect("create topic");
    let group = format!("{topic}-g");
    for r in log.publisher().publish(topic, records(1, 5)).await {
        r.expect("acknowledged");
    }
    let tp = TopicPartition::new(topic, 0);
    let (mut sub, first) = assigned_committed(log, &group, topic, &tp).await;
    assert_eq!(
        (first.offset, first.metadata.as_str()),
        (None, ""),
        "a new group has committed nothing"
    );
    sub.commit(&[(tp.clone(), 2, "a".into())]).await.expect("commit 2");
    sub.commit(&[(tp.clone(), 3, "b".into())]).await.expect("commit 3");
    sub.close().await;

    let (mut sub, c) = assigned_committed(log, &group, topic, &tp).await;
    assert_eq!((c.offset, c.metadata.as_str()), (Some(3), "b"));
    sub.commit(&[(tp.clone(), 4, String::new())]).await.expect("commit 4");
    sub.close().await;

    let (sub, c) = assigned_committed(log, &group, topic, &tp).await;
    assert_eq!(
        (c.offset, c.metadata.as_str()),
        (Some(4), ""),
        "the checkpoint of offset 3 is not offset 4's"
    );
    sub.close().await;
}

/// Subscribe `group` to `topic`, wait for `tp` to be assigned, and return
/// the subscription with what the group has committed for `tp`.
async fn assigned_committed(
    log: &dyn EventLog,
    group: &str,
    topic: &str,
    tp: &TopicPartition,
) -> (Box<dyn Subscription>, Committed) {
    let mut sub = log.subscribe(group, &[topic.to_owned()]).await.expect("subscribe");
    let start = tokio::time::Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "never assigned");
        if let Ok(Event::Assigned(parts)) = sub.next(100, Duration::from_millis(200)).await {
            assert!(parts.contains(tp));
            let c = sub.committed(&parts).await.expect("committed");
            let mine = c.into_iter().find(|c| &c.tp == tp).expect("the partition");
            return (sub, mine);
        }
    }
}
