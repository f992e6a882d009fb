//! Following a compacted topic into memory: the device registry in ingest
//! and analyze, the alert rules in analyze. A [`TopicView`] is what the
//! records are applied to; [`follow`] reads the topic from its start, says
//! when the view has caught up (the topic as it was at start is read), then
//! applies what is appended until shutdown.
//!
//! Guarantees: a broken tail is reopened from the start after 1 s (views
//! keep the highest revision per key, so reading a record twice is
//! harmless); a topic that does not exist is an empty one (the view is
//! caught up, and the tail is opened again every second until the topic
//! exists), so a deployment that did not create it yet does not hold up
//! whoever waits for the view; a view never goes back from caught up;
//! waiters are woken as soon as it catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{EventLog, EventLogError};
use crate::service::Shutdown;
use crate::service::readiness::{NotReady, Readiness};
use crate::telemetry::ErrorChain;

/// Whether a view has read its topic as it was at start, and a way to wait for it.
#[derive(Debug, Default)]
pub struct CatchUp {
    done: AtomicBool,
    reached: tokio::sync::Notify,
}

impl CatchUp {
    /// Whether it has caught up.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Say it has caught up, and wake every waiter.
    pub fn mark(&self) {
        self.done.store(true, Ordering::Release);
        self.reached.notify_waiters();
    }

    /// Wait until it has caught up, at most `timeout`; whether it has.
    pub async fn wait(&self, timeout: Duration) -> bool {
        if self.is_done() {
            return true;
        }
        let reached = self.reached.notified();
        tokio::pin!(reached);
        // Registered before looking again, so a catch-up in between is not missed.
        reached.as_mut().enable();
        if self.is_done() {
            return true;
        }
        tokio::time::timeout(timeout, reached).await.is_ok() || self.is_done()
    }
}

/// What a followed topic's records are applied to.
pub trait TopicView: Send + Sync + 'static {
    /// What the topic holds, for logs ("device registry", "alert rules").
    fn what(&self) -> &'static str;
    /// Apply records (key, value; a tombstone's value is empty) in order;
    /// returns how many could not be read (skipped, never fatal).
    fn apply(&self, records: &[(Vec<u8>, Vec<u8>)]) -> usize;
    /// Entries held, for logs.
    fn len(&self) -> usize;
    /// Whether it holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its catch-up state.
    fn catch_up(&self) -> &CatchUp;
}

fn caught_up<V: TopicView + ?Sized>(view: &V, topic: &str) {
    if !view.catch_up().is_done() {
        view.catch_up().mark();
        tracing::info!(topic = %topic, entries = view.len(), "{} read", view.what());
    }
}

/// Ready once every view has caught up with its topic: a consumer that
/// applies what the views hold waits for this before it joins its group.
pub struct ViewsCaughtUp(pub Vec<(String, Arc<dyn TopicView>)>);

#[async_trait]
impl Readiness for ViewsCaughtUp {
    async fn check(&self) -> Result<(), NotReady> {
        for (topic, view) in &self.0 {
            if !view.catch_up().is_done() {
                return Err(NotReady::unavailable(
                    format!("topic {topic}"),
                    format!("still reading the {}", view.what()),
                ));
            }
        }
        Ok(())
    }
}

/// Keep `view` up to date from `topic` until `shutdown` (see the module docs).
pub async fn follow<V: TopicView + ?Sized>(log: Arc<dyn EventLog>, topic: String, view: Arc<V>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let opened = tokio::select! {
            _ = &mut stop => return,
            t = log.tail(&topic) => t,
        };
        let mut tail = match opened {
            Ok(t) => {
                if t.caught_up() {
                    // An empty topic: nothing to wait for.
                    caught_up(view.as_ref(), &topic);
                }
                t
            }
            Err(e) => {
                if matches!(e, EventLogError::NoSuchTopic(_)) {
                    if !view.catch_up().is_done() {
                        tracing::info!(topic = %topic, "the topic does not exist yet: no {} so far", view.what());
                    }
                    caught_up(view.as_ref(), &topic);
                } else {
                    tracing::warn!(topic = %topic, error = %ErrorChain(&e), "cannot follow the {}; retrying in 1 s", view.what());
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = &mut stop => return,
                n = tail.next(10_000, Duration::from_millis(500)) => n,
            };
            match next {
                Ok(records) => {
                    let bad = view.apply(&records);
                    if bad > 0 {
                        tracing::warn!(topic = %topic, skipped = bad, "{} records that cannot be read were skipped", view.what());
                    }
                    if tail.caught_up() {
                        caught_up(view.as_ref(), &topic);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %ErrorChain(&e), "following the {} failed; reopening in 1 s", view.what());
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::memory::MemoryLog;
    use crate::registry::view::{DeviceChange, GroupView};

    #[tokio::test]
    async fn a_topic_nobody_created_yet_is_empty_and_followed_once_it_exists() {
        let log = Arc::new(MemoryLog::new(1, 1000));
        let view = Arc::new(GroupView::new());
        let stop = Shutdown::new();
        let following = tokio::spawn(follow(log.clone(), "devices".into(), view.clone(), stop.clone()));
        assert!(
            view.catch_up().wait(Duration::from_secs(5)).await,
            "a missing topic does not hold up the view"
        );
        log.ensure_compacted_topic("devices", 1).await.expect("topic");
        let change = DeviceChange {
            id: "f-1".into(),
            status: crate::registry::DeviceStatus::Active,
            key_version: 0,
            revision: 1,
            group: "freezers".into(),
        };
        for r in log.publisher().publish("devices", vec![change.to_record()]).await {
            r.expect("published");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while view.group_of("f-1").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the topic was not followed once it existed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.trigger();
        following.await.expect("follower");
    }

    #[tokio::test]
    async fn a_waiter_is_woken_when_the_view_catches_up() {
        let c = Arc::new(CatchUp::default());
        assert!(!c.wait(Duration::from_millis(20)).await, "times out");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.mark();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken at once, not at the timeout")
                .expect("task"),
            "caught up"
        );
        assert!(c.wait(Duration::ZERO).await);
    }
}
