//! When retries go: exponential from [`Backoff::first`], doubling, capped
//! at [`Backoff::cap`], each delay drawn from its upper half ("equal
//! jitter"), so receivers that come back are not hit by every sender at the
//! same instant. The jitter is a hash of the delivery's key and the attempt:
//! spread across deliveries, repeatable for one (tests can reason about it).

use std::hash::Hasher;
use std::time::Duration;

/// The retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's delay, before jitter.
    pub first: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// How long a delivery is tried, from its first attempt, before it goes
    /// to the dead letters.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            // A receiver down for a few minutes (a deploy, a restart) still
            // gets everything.
            give_up_after: Duration::from_secs(15 * 60),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (1: the first retry) of the delivery `key`.
    pub fn delay(&self, key: &str, attempt: u32) -> Duration {
        let exp = self
            .first
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        // SipHash with fixed keys: the same for a key and attempt in every process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(key.as_bytes());
        h.write_u32(attempt);
        // In [exp/2, exp].
        let fraction = (h.finish() % 1_000_001) as f64 / 1_000_000.0;
        exp.mul_f64(0.5 + 0.5 * fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter() {
        let b = Backoff::default();
        for attempt in 1..=12 {
            let exp = Duration::from_secs(1u64 << (attempt - 1)).min(b.cap);
            let d = b.delay("alert-1.opened.0", attempt);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d:?} not in [{:?}, {exp:?}]",
                exp / 2
            );
        }
        assert_eq!(b.delay("k", 3), b.delay("k", 3), "repeatable");
        let spread: std::collections::HashSet<_> = (0..50).map(|i| b.delay(&format!("k{i}"), 4)).collect();
        assert!(spread.len() > 40, "deliveries retry at different instants");
        assert!(b.delay("k", u32::MAX) <= b.cap);
    }
}
