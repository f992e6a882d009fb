//! The idle rule: windows of a partition that went quiet still close.
//!
//! A partition's watermark comes from its own event times
//! ([`crate::window`]), so without a rule a partition whose devices stop
//! sending would keep its last windows open forever: nothing emitted, its
//! offsets never committed past them, and every restart re-reading them.
//!
//! # The rule
//!
//! When a partition has been **quiet for `TRIBUTARY_IDLE_TIMEOUT_SECS`**
//! (default 30; 0 turns the rule off), its event clock runs on at wall-clock
//! speed from its newest event time: at every tick while it stays quiet,
//!
//! ```text
//! event clock = newest event time seen on the partition + time quiet
//! watermark   = event clock - allowed lateness
//! ```
//!
//! and the windows that watermark passes close and are published, exactly as
//! if a reading that late had arrived. The clock never goes back; the next
//! reading resets "time quiet" to zero, and the event clock is the larger of
//! the advanced clock and the newest event time from then on.
//!
//! "Quiet" is measured in **poll time**: the time the consumer spent waiting
//! for records without getting one from that partition ([`IdleClock`]). Time
//! spent handling batches, retrying a failed publish, or not polling at all
//! does not count, so a consumer that stalled (a Splunk outage, a slow
//! broker) and then finds a backlog does not mistake its own stall for the
//! partition's silence. And an advance that would close a window is only made
//! after the broker answered a metadata request: while it cannot be reached,
//! quiet and cut off look the same.
//!
//! # Why this rule and not the others
//!
//! - *Wall clock − allowed lateness* (Apache Beam's Kafka reader when caught
//!   up) assumes device clocks agree with the server. Ingest accepts event
//!   times up to 10 minutes ahead and 30 days behind the server clock, so a
//!   device whose clock is a few minutes behind, or one uploading a buffered
//!   backlog, would see every reading after a quiet spell counted late. The
//!   rule above counts quiet time from the partition's own newest event, so
//!   it only assumes event time advances about as fast as the wall clock
//!   *within* a partition, which the per-partition watermark assumes
//!   already. With correct clocks and prompt delivery the two agree (this one
//!   trails by the delivery delay, i.e. it is slightly more conservative).
//! - *The largest watermark of the other partitions* (Flink's `withIdleness`
//!   takes an idle input out of the minimum, which amounts to this for
//!   per-partition windows) never advances when every partition is quiet
//!   (a fleet asleep at night, a one-partition topic, an instance that owns a
//!   single partition after a scale-out), and it would make a partition's
//!   windows depend on which other partitions KEDA happened to place on the
//!   same instance.
//!
//! # Determinism and commits
//!
//! Closing by idleness does not depend on the order of the data: a window
//! closed by an advance holds exactly the readings accepted before it, and a
//! reading that arrives for it afterwards is counted late
//! (`tributary_analyze_late_values`), as for any closed window. The advanced
//! clock is part of the partition's checkpoint (`maxEvent=` commit metadata),
//! so a new owner resuming from that commit keeps those windows closed.
//!
//! A quiet partition has no batch to commit after; so before each poll the
//! consumer runner calls the handler's tick hook
//! ([`Handler::tick`](tributary_shared::eventlog::runner::Handler::tick)),
//! which runs the rule, publishes what closed, and once that is acknowledged
//! returns the partition's new safe offset with its checkpoint for the runner
//! to commit, between two batches (never during one). Nothing is lost: offsets are committed only after the windows they
//! released were published. Nothing is counted twice: if the process dies
//! between that publish and that commit, the next owner re-reads the same
//! readings and closes the same windows again (by data or by idleness) with
//! the same contents, an overwrite downstream, unless readings for those
//! windows arrived meanwhile, in which case the re-emitted window includes
//! them (each reading still counted once; they had not been counted late
//! either, since the first process never saw them). If a publish fails the
//! outputs stay pending and nothing is committed until they are out.
//!
//! Without the wrapper (a plain `run_consumer`) the rule simply does not run:
//! quiet windows stay open as before, and the handler is otherwise unchanged.
//!
//! # Trade-offs
//!
//! - A device that sends in bursts separated by more than the timeout, with
//!   event times older than the partition's newest one plus the quiet time
//!   (e.g. uploading minutes-old readings after a gap), has those readings
//!   counted late; raise the timeout, or set it to 0 for historical
//!   backfills.
//! - A consumer busy most of the time accrues poll time slowly, so it sees
//!   idleness later than the timeout in wall time (by design: it likely has a
//!   backlog).

use std::collections::BTreeMap;
use std::time::Duration;

use tributary_shared::eventlog::TopicPartition;

/// Per-partition quiet time, in poll time (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct IdleClock {
    timeout: Option<Duration>,
    /// Total time spent waiting in polls.
    polled: Duration,
    /// Per owned partition, `polled` at its last record (or assignment).
    last: BTreeMap<TopicPartition, Duration>,
}

impl IdleClock {
    /// A clock for `timeout` (`None` or zero: the rule is off).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout: timeout.filter(|t| !t.is_zero()),
            ..Self::default()
        }
    }

    /// Whether the rule is on.
    pub fn enabled(&self) -> bool {
        self.timeout.is_some()
    }

    /// The consumer waited `waited` in a poll.
    pub fn polled(&mut self, waited: Duration) {
        self.polled += waited;
    }

    /// A record of `tp` arrived (or `tp` was just assigned): it is not quiet.
    pub fn active(&mut self, tp: &TopicPartition) {
        match self.last.get_mut(tp) {
            Some(at) => *at = self.polled,
            None => {
                self.last.insert(tp.clone(), self.polled);
            }
        }
    }

    /// `tp` was revoked.
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.last.remove(tp);
    }

    /// Partitions quiet for at least the timeout, with how long they have been
    /// quiet (poll time), in partition order. Empty when the rule is off.
    pub fn quiet(&self) -> Vec<(TopicPartition, Duration)> {
        let Some(timeout) = self.timeout else { return Vec::new() };
        self.last
            .iter()
            .filter_map(|(tp, &at)| {
                let q = self.polled.saturating_sub(at);
                (q >= timeout).then(|| (tp.clone(), q))
            })
            .collect()
    }

    /// The partitions it tracks (assigned or seen, not revoked).
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.last.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_poll_time_without_a_record_counts_as_quiet() {
        let (a, b) = (TopicPartition::new("raw", 0), TopicPartition::new("raw", 1));
        let mut c = IdleClock::new(Some(Duration::from_secs(30)));
        c.active(&a);
        c.active(&b);
        c.polled(Duration::from_secs(20));
        c.active(&b);
        c.polled(Duration::from_secs(9));
        assert!(c.quiet().is_empty());
        c.polled(Duration::from_secs(1));
        assert_eq!(c.quiet(), vec![(a.clone(), Duration::from_secs(30))]);
        // Time not spent polling (a stalled handler) is not counted: nothing moves without polls.
        assert_eq!(c.quiet(), vec![(a.clone(), Duration::from_secs(30))]);
        c.polled(Duration::from_secs(25));
        assert_eq!(
            c.quiet(),
            vec![
                (a.clone(), Duration::from_secs(55)),
                (b.clone(), Duration::from_secs(35))
            ]
        );
        c.active(&a);
        c.forget(&b);
        assert!(c.quiet().is_empty());
        assert_eq!(c.partitions().collect::<Vec<_>>(), vec![&a]);
    }

    #[test]
    fn a_zero_or_missing_timeout_turns_the_rule_off() {
        for t in [None, Some(Duration::ZERO)] {
            let mut c = IdleClock::new(t);
            c.active(&TopicPartition::new("raw", 0));
            c.polled(Duration::from_secs(3600));
            assert!(!c.enabled() && c.quiet().is_empty());
        }
    }
}
