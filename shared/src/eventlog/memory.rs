//! The in-process event log: topics, partitions, consumer groups and
//! committed offsets in memory, for the all-in-one local mode and tests.
//!
//! It keeps Kafka's semantics where the functions rely on them: keyed
//! partitioning, per-partition order, per-group committed offsets, and
//! partitions split among a group's members (reassigned when one joins or
//! leaves, announced as revoke-then-assign). Everything is lost when the
//! process exits; each partition keeps at most `retention` records (older ones
//! are dropped, as Kafka's retention would).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    Committed, Delivered, Event, EventLog, EventLogError, KeyValues, Message, Publisher, Record, Subscription, Tail,
    TopicPartition, partition_for,
};

#[derive(Default)]
struct PartitionLog {
    /// Offset of `records[0]`.
    base: i64,
    records: std::collections::VecDeque<(Record, i64)>,
}

#[derive(Default)]
struct Group {
    committed: HashMap<TopicPartition, (i64, String)>,
    /// The offset after the newest record handed to a member, per partition.
    delivered: HashMap<TopicPartition, i64>,
    topics: Vec<String>,
    /// Member id to its assignment.
    members: BTreeMap<u64, Vec<TopicPartition>>,
    generation: u64,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<PartitionLog>>,
    /// Topics created compacted: exempt from the retention count.
    compacted: std::collections::HashSet<String>,
    groups: HashMap<String, Group>,
    next_member: u64,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    default_partitions: i32,
    retention: usize,
}

/// The in-process backend. Cheap to clone; clones share the same log.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

impl MemoryLog {
    /// A log whose topics get `default_partitions` when first written to,
    /// each keeping the newest `retention` records.
    pub fn new(default_partitions: i32, retention: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                notify: Notify::new(),
                default_partitions: default_partitions.max(1),
                retention: retention.max(1),
            }),
        }
    }

    /// Every record currently held in `topic`, partition by partition (for tests and `verify`).
    pub fn snapshot(&self, topic: &str) -> Vec<Message> {
        let st = self.shared.lock();
        let mut out = Vec::new();
        if let Some(parts) = st.topics.get(topic) {
            for (p, log) in parts.iter().enumerate() {
                for (i, (r, ts)) in log.records.iter().enumerate() {
                    out.push(to_message(topic, p as i32, log.base + i as i64, r, *ts));
                }
            }
        }
        out
    }
}

impl MemoryLog {
    /// Each partition's end offset in `topic` (the offset its next record
    /// gets); empty for a topic never written.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map(|p| p.iter().map(|l| l.base + l.records.len() as i64).collect())
            .unwrap_or_default()
    }

    /// Start `topic` with one partition per entry of `next`, whose next
    /// record gets that offset: a log that outlives its process (the
    /// all-in-one mode with a data directory) continues its offsets as Kafka
    /// would, so a consumer that remembers offsets (the lake's tables) never
    /// sees an offset again for another record. False, and nothing changed,
    /// when `topic` was written already or `next` is empty.
    pub fn resume(&self, topic: &str, next: &[i64]) -> bool {
        let mut st = self.shared.lock();
        if next.is_empty() || st.topics.contains_key(topic) {
            return false;
        }
        let parts = next
            .iter()
            .map(|&base| PartitionLog {
                base: base.max(0),
                records: Default::default(),
            })
            .collect();
        st.topics.insert(topic.to_owned(), parts);
        true
    }

    /// Records currently held in `topic` (all partitions).
    pub fn len(&self, topic: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map(|p| p.iter().map(|l| l.records.len()).sum())
            .unwrap_or(0)
    }

    /// Whether `topic` holds no records.
    pub fn is_empty(&self, topic: &str) -> bool {
        self.len(topic) == 0
    }

    /// Records ever published to `topic` (the sum of its partitions' end offsets).
    pub fn end_offsets_total(&self, topic: &str) -> i64 {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map(|p| p.iter().map(|l| l.base + l.records.len() as i64).sum())
            .unwrap_or(0)
    }

    /// Records of `topic` that `group` has not committed yet (its lag).
    pub fn lag(&self, group: &str, topic: &str) -> i64 {
        let st = self.shared.lock();
        let Some(parts) = st.topics.get(topic) else { return 0 };
        let committed = st.groups.get(group).map(|g| &g.committed);
        parts
            .iter()
            .enumerate()
            .map(|(p, l)| {
                let end = l.base + l.records.len() as i64;
                let from = committed
                    .and_then(|c| c.get(&TopicPartition::new(topic, p as i32)))
                    .map(|c| c.0)
                    .unwrap_or(0)
                    .max(l.base);
                (end - from).max(0)
            })
            .sum()
    }

    /// Records of `topic` not yet handed to any member of `group` (nor
    /// committed by it): once this is 0, every record published so far is in
    /// a batch the group's runner handles before it stops.
    pub fn undelivered(&self, group: &str, topic: &str) -> i64 {
        let st = self.shared.lock();
        let Some(parts) = st.topics.get(topic) else { return 0 };
        let g = st.groups.get(group);
        parts
            .iter()
            .enumerate()
            .map(|(p, l)| {
                let tp = TopicPartition::new(topic, p as i32);
                let committed = g.and_then(|g| g.committed.get(&tp)).map_or(0, |c| c.0);
                let delivered = g.and_then(|g| g.delivered.get(&tp)).copied().unwrap_or(0);
                let end = l.base + l.records.len() as i64;
                (end - committed.max(delivered).max(l.base)).max(0)
            })
            .sum()
    }

    /// The records of `topic` at or after the lowest committed offset of any
    /// of `groups`, partition by partition: what a restart must replay so no
    /// group misses anything (the all-in-one mode saves these at shutdown).
    pub fn uncommitted(&self, groups: &[&str], topic: &str) -> Vec<Message> {
        let st = self.shared.lock();
        let Some(parts) = st.topics.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (p, log) in parts.iter().enumerate() {
            let tp = TopicPartition::new(topic, p as i32);
            let from = groups
                .iter()
                .map(|g| {
                    st.groups
                        .get(*g)
                        .and_then(|g| g.committed.get(&tp))
                        .map(|c| c.0)
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(0)
                .max(log.base);
            for (i, (r, ts)) in log.records.iter().enumerate().skip((from - log.base) as usize) {
                out.push(to_message(topic, p as i32, log.base + i as i64, r, *ts));
            }
        }
        out
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new(crate::topics::DEFAULT_PARTITIONS, 1_000_000)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn to_message(topic: &str, partition: i32, offset: i64, r: &Record, ts: i64) -> Message {
    Message {
        topic: topic.to_owned(),
        partition,
        offset,
        key: Some(r.key.clone()),
        value: r.value.clone(),
        headers: r.headers.clone(),
        timestamp_ms: Some(ts),
    }
}

fn rebalance(state: &mut State, group: &str) {
    let State { topics, groups, .. } = state;
    let Some(g) = groups.get_mut(group) else { return };
    let mut all: Vec<TopicPartition> = Vec::new();
    for t in &g.topics {
        let n = topics.get(t).map(|p| p.len()).unwrap_or(0);
        all.extend((0..n as i32).map(|p| TopicPartition::new(t.clone(), p)));
    }
    let ids: Vec<u64> = g.members.keys().copied().collect();
    for a in g.members.values_mut() {
        a.clear();
    }
    if !ids.is_empty() {
        for (i, tp) in all.into_iter().enumerate() {
            if let Some(a) = g.members.get_mut(&ids[i % ids.len()]) {
                a.push(tp);
            }
        }
    }
    g.generation += 1;
}

#[async_trait]
impl Publisher for MemoryLog {
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Vec<Result<Delivered, EventLogError>> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Vec::with_capacity(records.len());
        {
            let mut st = self.shared.lock();
            let created = !st.topics.contains_key(topic);
            // Kept whole: a compacted topic keeps every key's newest record,
            // which a count limit would not (and state topics are small here).
            let compacted = st.compacted.contains(topic);
            let parts = st.topics.entry(topic.to_owned()).or_insert_with(|| {
                (0..self.shared.default_partitions)
                    .map(|_| PartitionLog::default())
                    .collect()
            });
            let n = parts.len() as i32;
            for r in records {
                let p = match r.partition {
                    None => partition_for(&r.key, n),
                    Some(p) if (0..n).contains(&p) => p,
                    Some(p) => {
                        out.push(Err(EventLogError::Rejected(format!(
                            "{topic} has {n} partitions, no partition {p}"
                        ))));
                        continue;
                    }
                };
                let log = &mut parts[p as usize];
                let offset = log.base + log.records.len() as i64;
                log.records.push_back((r, now));
                if log.records.len() > self.shared.retention && !compacted {
                    log.records.pop_front();
                    log.base += 1;
                }
                out.push(Ok(Delivered { partition: p, offset }));
            }
            if created {
                let groups: Vec<String> = st
                    .groups
                    .iter()
                    .filter(|(_, g)| g.topics.iter().any(|t| t == topic))
                    .map(|(k, _)| k.clone())
                    .collect();
                for g in groups {
                    rebalance(&mut st, &g);
                }
            }
        }
        self.shared.notify.notify_waiters();
        out
    }

    async fn check_ready(&self) -> Result<(), EventLogError> {
        Ok(())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), EventLogError> {
        Ok(())
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.clone())
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, EventLogError> {
        let member = {
            let mut st = self.shared.lock();
            st.next_member += 1;
            let id = st.next_member;
            let g = st.groups.entry(group.to_owned()).or_default();
            for t in topics {
                if !g.topics.contains(t) {
                    g.topics.push(t.clone());
                }
            }
            g.members.insert(id, Vec::new());
            rebalance(&mut st, group);
            id
        };
        self.shared.notify.notify_waiters();
        Ok(Box::new(MemorySubscription {
            log: self.clone(),
            group: group.to_owned(),
            member,
            generation: 0,
            assigned: Vec::new(),
            positions: HashMap::new(),
            pending_assign: None,
        }))
    }

    async fn ensure_topics(&self, topics: &[String], partitions: i32) -> Result<(), EventLogError> {
        let mut st = self.shared.lock();
        for t in topics {
            st.topics
                .entry(t.clone())
                .or_insert_with(|| (0..partitions.max(1)).map(|_| PartitionLog::default()).collect());
        }
        let groups: Vec<String> = st.groups.keys().cloned().collect();
        for g in groups {
            rebalance(&mut st, &g);
        }
        Ok(())
    }
    async fn ensure_compacted_topic(&self, topic: &str, partitions: i32) -> Result<(), EventLogError> {
        self.shared.lock().compacted.insert(topic.to_owned());
        self.ensure_topics(&[topic.to_owned()], partitions).await
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Tail>, EventLogError> {
        let st = self.shared.lock();
        let parts = st
            .topics
            .get(topic)
            .ok_or_else(|| EventLogError::NoSuchTopic(topic.to_owned()))?;
        let targets: Vec<i64> = parts.iter().map(|l| l.base + l.records.len() as i64).collect();
        Ok(Box::new(MemoryTail {
            log: self.clone(),
            topic: topic.to_owned(),
            positions: parts.iter().map(|l| l.base).collect(),
            targets,
        }))
    }

    async fn read_partition(&self, topic: &str, partition: i32) -> Result<KeyValues, EventLogError> {
        let st = self.shared.lock();
        let Some(log) = st
            .topics
            .get(topic)
            .and_then(|parts| parts.get(usize::try_from(partition).ok()?))
        else {
            return Ok(Vec::new());
        };
        Ok(log
            .records
            .iter()
            .map(|(r, _)| (r.key.clone(), r.value.clone()))
            .collect())
    }
}

/// A [`Tail`] of the in-process log: a position per partition.
struct MemoryTail {
    log: MemoryLog,
    topic: String,
    /// Next offset to return, per partition.
    positions: Vec<i64>,
    /// End of each partition when the tail was opened.
    targets: Vec<i64>,
}

impl MemoryTail {
    fn take(&mut self, max: usize) -> KeyValues {
        let st = self.log.shared.lock();
        let mut out = Vec::new();
        let Some(parts) = st.topics.get(&self.topic) else {
            return out;
        };
        for (p, log) in parts.iter().enumerate() {
            if p >= self.positions.len() {
                // Partitions added since the tail opened are read from their start.
                self.positions.resize(p + 1, 0);
            }
            let from = usize::try_from((self.positions[p] - log.base).max(0)).unwrap_or(0);
            for (r, _) in log.records.iter().skip(from) {
                if out.len() >= max {
                    return out;
                }
                out.push((r.key.clone(), r.value.clone()));
                self.positions[p] = self.positions[p].max(log.base) + 1;
            }
        }
        out
    }
}

#[async_trait]
impl Tail for MemoryTail {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<KeyValues, EventLogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let shared = self.log.shared.clone();
            let notified = shared.notify.notified();
            let batch = self.take(max.max(1));
            if !batch.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(batch);
            }
        }
    }

    fn caught_up(&self) -> bool {
        self.targets
            .iter()
            .zip(&self.positions)
            .all(|(target, position)| position >= target)
    }
}

struct MemorySubscription {
    log: MemoryLog,
    group: String,
    member: u64,
    generation: u64,
    assigned: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    pending_assign: Option<Vec<TopicPartition>>,
}

impl MemorySubscription {
    /// A rebalance event if the group changed since we last looked.
    fn poll_rebalance(&mut self) -> Option<Event> {
        if let Some(a) = self.pending_assign.take() {
            let committed = {
                let st = self.log.shared.lock();
                st.groups
                    .get(&self.group)
                    .map(|g| g.committed.clone())
                    .unwrap_or_default()
            };
            for tp in &a {
                let pos = committed.get(tp).map(|c| c.0).unwrap_or(0);
                self.positions.insert(tp.clone(), pos);
            }
            self.assigned = a.clone();
            return Some(Event::Assigned(a));
        }
        let st = self.log.shared.lock();
        let g = st.groups.get(&self.group)?;
        if g.generation == self.generation {
            return None;
        }
        self.generation = g.generation;
        let new = g.members.get(&self.member).cloned().unwrap_or_default();
        drop(st);
        if new == self.assigned {
            return None;
        }
        // Eager protocol, as Kafka's default: revoke everything, then assign the new set.
        self.pending_assign = Some(new);
        let old = std::mem::take(&mut self.assigned);
        self.positions.clear();
        if old.is_empty() {
            self.poll_rebalance()
        } else {
            Some(Event::Revoked(old))
        }
    }

    fn take(&mut self, max: usize) -> Vec<Message> {
        let mut st = self.log.shared.lock();
        let State { topics, groups, .. } = &mut *st;
        let mut delivered = groups.get_mut(&self.group).map(|g| &mut g.delivered);
        let mut out = Vec::new();
        for tp in &self.assigned {
            if out.len() >= max {
                break;
            }
            let Some(log) = topics.get(&tp.topic).and_then(|p| p.get(tp.partition as usize)) else {
                continue;
            };
            let pos = self.positions.get(tp).copied().unwrap_or(0).max(log.base);
            let start = (pos - log.base) as usize;
            let n = (max - out.len()).min(log.records.len().saturating_sub(start));
            for (i, (r, ts)) in log.records.iter().skip(start).take(n).enumerate() {
                out.push(to_message(&tp.topic, tp.partition, pos + i as i64, r, *ts));
            }
            self.positions.insert(tp.clone(), pos + n as i64);
            if let Some(d) = delivered.as_deref_mut() {
                d.insert(tp.clone(), pos + n as i64);
            }
        }
        out
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Event, EventLogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let shared = self.log.shared.clone();
            let notified = shared.notify.notified();
            if let Some(ev) = self.poll_rebalance() {
                return Ok(ev);
            }
            let batch = self.take(max.max(1));
            if !batch.is_empty() {
                return Ok(Event::Messages(batch));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Event::Messages(Vec::new()));
            }
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, i64, String)]) -> Result<(), EventLogError> {
        let mut st = self.log.shared.lock();
        let g = st.groups.entry(self.group.clone()).or_default();
        let owned = g.members.get(&self.member).cloned().unwrap_or_default();
        for (tp, off, meta) in offsets {
            // As in Kafka, a member may not commit for a partition it no longer owns.
            if !owned.contains(tp) {
                return Err(EventLogError::Other(format!(
                    "partition {}/{} is not assigned to this member",
                    tp.topic, tp.partition
                )));
            }
            g.committed.insert(tp.clone(), (*off, meta.clone()));
        }
        Ok(())
    }

    async fn committed(&mut self, partitions: &[TopicPartition]) -> Result<Vec<Committed>, EventLogError> {
        let st = self.log.shared.lock();
        let g = st.groups.get(&self.group);
        Ok(partitions
            .iter()
            .map(|tp| {
                let c = g.and_then(|g| g.committed.get(tp));
                Committed {
                    tp: tp.clone(),
                    offset: c.map(|c| c.0),
                    metadata: c.map(|c| c.1.clone()).unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn close(self: Box<Self>) {
        {
            let mut st = self.log.shared.lock();
            if let Some(g) = st.groups.get_mut(&self.group) {
                g.members.remove(&self.member);
            }
            rebalance(&mut st, &self.group);
        }
        self.log.shared.notify.notify_waiters();
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        // A member that goes away without close() (a crashed task) still leaves the group.
        let mut st = self.log.shared.lock();
        let present = st
            .groups
            .get(&self.group)
            .is_some_and(|g| g.members.contains_key(&self.member));
        if present {
            if let Some(g) = st.groups.get_mut(&self.group) {
                g.members.remove(&self.member);
            }
            rebalance(&mut st, &self.group);
            drop(st);
            self.log.shared.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resumed_topic_continues_its_offsets() {
        let log = MemoryLog::new(2, 100);
        assert!(log.resume("t", &[40, 7]));
        assert!(!log.resume("t", &[0, 0]), "only a topic not written yet");
        let mut r = Record::new("k", "v");
        r.partition = Some(1);
        let delivered = log.publisher().publish("t", vec![r.clone(), r]).await;
        let offsets: Vec<i64> = delivered
            .into_iter()
            .map(|d| d.map(|d| d.offset).unwrap_or(-1))
            .collect();
        assert_eq!(offsets, vec![7, 8]);
        assert_eq!(log.end_offsets("t"), vec![40, 9]);
        assert_eq!(
            log.lag("g", "t"),
            2,
            "a group with no commit starts at the resumed offsets"
        );
        assert!(log.end_offsets("unknown").is_empty());
    }

    #[tokio::test]
    async fn undelivered_counts_what_no_member_was_handed() {
        let log = MemoryLog::new(1, 100);
        let records = (0..5).map(|i| Record::new("k", format!("{i}"))).collect();
        for d in log.publisher().publish("t", records).await {
            d.expect("published");
        }
        let mut sub = log.subscribe("g", &["t".to_owned()]).await.expect("subscribed");
        assert_eq!(log.undelivered("g", "t"), 5);
        let mut handed = 0;
        while handed < 3 {
            match sub.next(3 - handed, Duration::from_millis(50)).await.expect("polled") {
                Event::Messages(b) => handed += b.len(),
                _ => continue,
            }
        }
        assert_eq!(log.undelivered("g", "t"), 2);
        assert_eq!(log.lag("g", "t"), 5, "handed is not committed");
    }
}
