//! The in-process backend of [`KvCache`] for the all-in-one mode: a map with
//! expiry times, sorted sets and a broadcast channel per pub/sub channel.
//! Bounded: expired entries are swept as writes arrive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{CacheError, CacheOp, KvCache};

#[derive(Default)]
struct State {
    strings: HashMap<String, (String, Instant)>,
    zsets: HashMap<String, (HashMap<String, i64>, Option<Instant>)>,
    writes: u64,
}

/// A cache in this process's memory.
pub struct MemoryCache {
    state: Mutex<State>,
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl MemoryCache {
    fn channel(&self, name: &str) -> broadcast::Sender<String> {
        let mut ch = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        ch.entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    /// Number of live string entries (for tests of the sweep).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .strings
            .values()
            .filter(|(_, exp)| *exp > now)
            .count()
    }

    /// Whether no live string entry exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl KvCache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn apply(&self, ops: Vec<CacheOp>) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut publish = Vec::new();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.writes += 1;
            if st.writes.is_multiple_of(256) {
                st.strings.retain(|_, (_, exp)| *exp > now);
                st.zsets.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
            }
            for op in ops {
                match op {
                    CacheOp::Set { key, value, ttl_secs } => {
                        st.strings.insert(key, (value, now + Duration::from_secs(ttl_secs)));
                    }
                    CacheOp::Delete(key) => {
                        st.strings.remove(&key);
                        st.zsets.remove(&key);
                    }
                    CacheOp::ZAdd { key, member, score } => {
                        let z = st.zsets.entry(key).or_default();
                        if z.1.is_some_and(|e| e <= now) {
                            *z = Default::default();
                        }
                        z.0.insert(member, score);
                    }
                    CacheOp::ZKeepHighest { key, keep } => {
                        if let Some((members, _)) = st.zsets.get_mut(&key)
                            && members.len() > keep
                        {
                            let mut v: Vec<(String, i64)> = members.drain().collect();
                            // Highest score first; ties by member, as Redis orders them.
                            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
                            v.truncate(keep);
                            members.extend(v);
                        }
                    }
                    CacheOp::Expire { key, ttl_secs } => {
                        let exp = now + Duration::from_secs(ttl_secs);
                        if let Some(s) = st.strings.get_mut(&key) {
                            s.1 = exp;
                        }
                        if let Some(z) = st.zsets.get_mut(&key) {
                            z.1 = Some(exp);
                        }
                    }
                    CacheOp::Publish { channel, message } => publish.push((channel, message)),
                }
            }
        }
        for (channel, message) in publish {
            // No subscriber is not an error (as in Redis).
            let _ = self.channel(&channel).send(message);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let now = Instant::now();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(st
            .strings
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    async fn members_newest_first(&self, key: &str) -> Result<Vec<String>, CacheError> {
        let now = Instant::now();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((members, exp)) = st.zsets.get(key) else {
            return Ok(Vec::new());
        };
        if exp.is_some_and(|e| e <= now) {
            return Ok(Vec::new());
        }
        let mut v: Vec<(&String, &i64)> = members.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| b.0.cmp(a.0)));
        Ok(v.into_iter().map(|(m, _)| m.clone()).collect())
    }

    async fn follow(&self, channel: &str, sink: broadcast::Sender<String>) {
        let mut rx = self.channel(channel).subscribe();
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    let _ = sink.send(msg);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = sink.send("{\"kind\":\"reload\"}".to_owned());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
