//! Per-device rate limiting: a token bucket per device, counted in readings.
//!
//! Memory is bounded: buckets live in a few shards and a shard that grows past
//! its cap forgets devices whose bucket has refilled (they are
//! indistinguishable from new devices).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
const SHARD_CAP: usize = 65_536;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by device id.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// `rate` readings per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Take `n` readings' worth for `device` at `now`; on refusal, how long to wait.
    pub fn check(&self, device: &str, n: usize, now: Instant) -> Result<(), Duration> {
        let n = n as f64;

        let shard = &self.shards[(self.hasher.hash_one(device) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SHARD_CAP && !map.contains_key(device) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry(device.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((n - b.tokens) / self.rate).max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_rate() {
        let rl = RateLimiter::new(10.0, 20);
        let t0 = Instant::now();
        assert!(rl.check("a", 20, t0).is_ok());
        let wait = rl.check("a", 5, t0).expect_err("bucket empty");
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        // Other devices are unaffected.
        assert!(rl.check("b", 20, t0).is_ok());
        assert!(rl.check("a", 5, t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check("a", 1, t0 + Duration::from_millis(500)).is_err());
        // Never refills above the burst.
        assert!(rl.check("a", 21, t0 + Duration::from_secs(3600)).is_err());
    }
}
