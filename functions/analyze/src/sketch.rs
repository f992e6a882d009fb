//! A deterministic, mergeable quantile sketch (DDSketch-style log buckets).
//!
//! Guarantee: with relative accuracy `alpha`, for any `q` the estimate
//! returned by [`QuantileSketch::quantile`] is within `alpha * |x|` of `x`,
//! the exact value of rank `floor(q * (n - 1))` of the inserted values
//! (the "lower" quantile), as long as no bucket has been collapsed. Values
//! with `|x| < MIN_INDEXABLE` are counted as zero (absolute error below
//! `MIN_INDEXABLE`). Memory is bounded: each sign keeps at most `max_buckets`
//! buckets; past that the buckets of smallest magnitude are folded into the
//! smallest kept one, so the guarantee still holds for values whose magnitude
//! is among the `max_buckets` largest buckets (with `alpha = 0.01` and 1024
//! buckets that is a dynamic range of about 10^8.8 per sign before any
//! folding happens).
//!
//! Determinism: counts live in index-sorted stores and folding depends only
//! on the set of bucket indices seen, so `merge(a, b)` is identical to the
//! sketch of the concatenated input, in any order and any split.
//!
//! Memory: a store is a sorted vector of (index, count) pairs, 8 bytes per
//! non-empty bucket (a window of one series holds a few dozen); an ordered
//! map cost about three times that in node overhead. A bucket's count
//! saturates at `u32::MAX` (4.3 billion values of one series in one bucket
//! of one window, far past what ingest admits).

use serde::{Deserialize, Serialize};

/// Magnitudes below this are counted in the zero bucket.
pub const MIN_INDEXABLE: f64 = 1e-9;

/// Default relative accuracy: 1%.
pub const DEFAULT_ALPHA: f64 = 0.01;

/// Default bucket cap per sign.
pub const DEFAULT_MAX_BUCKETS: usize = 1024;

/// A quantile sketch with a relative-error guarantee (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    alpha: f64,
    gamma_ln: f64,
    max_buckets: usize,
    positive: Store,
    negative: Store,
    zero: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA, DEFAULT_MAX_BUCKETS)
    }
}

impl QuantileSketch {
    /// A sketch with relative accuracy `alpha` (clamped to 1e-4..=0.5) and
    /// at most `max_buckets` (at least 2) buckets per sign.
    pub fn new(alpha: f64, max_buckets: usize) -> Self {
        let alpha = alpha.clamp(1e-4, 0.5);
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Self {
            alpha,
            gamma_ln: gamma.ln(),
            max_buckets: max_buckets.max(2),
            positive: Store::default(),
            negative: Store::default(),
            zero: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The relative accuracy this sketch guarantees.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Number of values inserted (or merged in).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Number of non-empty buckets, over both signs (at most `2 * max_buckets`).
    pub fn bucket_count(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    /// Bucket `k` holds magnitudes in `(gamma^(k-1), gamma^k]`.
    fn index(&self, magnitude: f64) -> i32 {
        // Clamped so absurd magnitudes cannot overflow the index type.
        (magnitude.ln() / self.gamma_ln).ceil().clamp(-1e9, 1e9) as i32
    }

    /// The representative of bucket `k`: the point whose relative distance to
    /// both bucket edges is `alpha`.
    fn value(&self, k: i32) -> f64 {
        let gamma = self.gamma_ln.exp();
        2.0 * (self.gamma_ln * k as f64).exp() / (gamma + 1.0)
    }

    /// Add one value. Non-finite values are ignored (readings are finite by contract).
    pub fn insert(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if x.abs() < MIN_INDEXABLE {
            self.zero += 1;
        } else if x > 0.0 {
            let k = self.index(x);
            self.positive.add(k, 1);
            self.positive.collapse(self.max_buckets);
        } else {
            let k = self.index(-x);
            self.negative.add(k, 1);
            self.negative.collapse(self.max_buckets);
        }
    }

    /// Add all of `other` (which must have the same `alpha`; otherwise its
    /// values are re-inserted at their bucket representatives, losing the guarantee).
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            return;
        }
        let same = (self.gamma_ln - other.gamma_ln).abs() < 1e-15;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.zero += other.zero;
        if same {
            self.positive.merge(&other.positive);
            self.negative.merge(&other.negative);
        } else {
            for &(k, c) in &other.positive.0 {
                let k = self.index(other.value(k));
                self.positive.add(k, c);
            }
            for &(k, c) in &other.negative.0 {
                let k = self.index(other.value(k));
                self.negative.add(k, c);
            }
        }
        self.positive.collapse(self.max_buckets);
        self.negative.collapse(self.max_buckets);
    }

    /// Bytes this sketch holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        (self.positive.0.capacity() + self.negative.0.capacity()) * size_of::<(i32, u32)>()
    }

    /// Estimate of the `q`-quantile (`q` clamped to [0, 1]), or `None` when empty.
    /// The result is clamped to the exact [min, max] seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        // Most negative first: largest magnitude of the negative store.
        for &(k, c) in self.negative.0.iter().rev() {
            seen += u64::from(c);
            if seen > rank {
                return Some((-self.value(k)).clamp(self.min, self.max));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0_f64.clamp(self.min, self.max));
        }
        for &(k, c) in &self.positive.0 {
            seen += u64::from(c);
            if seen > rank {
                return Some(self.value(k).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Non-empty buckets of one sign, sorted by index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Store(Vec<(i32, u32)>);

impl Store {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn add(&mut self, k: i32, c: u32) {
        match self.0.binary_search_by_key(&k, |&(i, _)| i) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(c),
            Err(i) => self.0.insert(i, (k, c)),
        }
    }

    /// Add every bucket of `other` (the same indexing), in one linear pass.
    fn merge(&mut self, other: &Store) {
        if other.0.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(i, c)), Some(&&(j, d))) if i == j => {
                    a.next();
                    b.next();
                    (i, c.saturating_add(d))
                }
                (Some(&&x), Some(&&y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            out.push(next);
        }
        self.0 = out;
    }

    /// Fold the buckets of smallest magnitude into the smallest kept one so
    /// at most `cap` remain. Every value ends in bucket `max(own, lowest kept)`,
    /// which depends only on the set of indices seen: hence order independence.
    fn collapse(&mut self, cap: usize) {
        if self.0.len() <= cap || cap == 0 {
            return;
        }
        let extra = self.0.len() - cap;
        let folded = self.0[..=extra].iter().fold(0u32, |sum, &(_, c)| sum.saturating_add(c));
        let kept = self.0[extra].0;
        self.0.drain(..extra);
        self.0[0] = (kept, folded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_the_relative_error_on_random_data() {
        let mut rng = Rng::new(7);
        for trial in 0..20 {
            let n = 1 + rng.below(5000) as usize;
            let mut s = QuantileSketch::default();
            let mut xs = Vec::with_capacity(n);
            for _ in 0..n {
                // Mix of signs, zeros and a wide dynamic range.
                let x = match rng.below(4) {
                    0 => 0.0,
                    1 => -rng.unit() * 1e3,
                    2 => rng.unit() * 1e-3,
                    _ => (rng.unit() * 20.0).exp(),
                };
                s.insert(x);
                xs.push(x);
            }
            xs.sort_by(f64::total_cmp);
            for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0] {
                let want = exact(&xs, q);
                let got = s.quantile(q).expect("non-empty");
                assert!(
                    (got - want).abs() <= s.alpha() * want.abs() + MIN_INDEXABLE,
                    "trial {trial} q {q}: got {got}, exact {want}"
                );
            }
        }
    }

    #[test]
    fn merge_equals_the_sketch_of_the_concatenation_even_when_folding() {
        let mut rng = Rng::new(11);
        for cap in [8usize, 1024] {
            let xs: Vec<f64> = (0..3000)
                .map(|_| (rng.unit() - 0.3) * 10f64.powi(rng.below(12) as i32 - 4))
                .collect();
            let mut whole = QuantileSketch::new(0.01, cap);
            xs.iter().for_each(|&x| whole.insert(x));
            for split in [0usize, 1, 1500, 2999, 3000] {
                let mut a = QuantileSketch::new(0.01, cap);
                let mut b = QuantileSketch::new(0.01, cap);
                xs[..split].iter().for_each(|&x| a.insert(x));
                xs[split..].iter().for_each(|&x| b.insert(x));
                let mut ba = b.clone();
                a.merge(&b);
                ba.merge(&xs[..split].iter().fold(QuantileSketch::new(0.01, cap), |mut s, &x| {
                    s.insert(x);
                    s
                }));
                assert_eq!(a, whole, "cap {cap} split {split}");
                assert_eq!(ba.positive, whole.positive);
                assert_eq!(ba.negative, whole.negative);
                assert_eq!(ba.count, whole.count);
            }
        }
    }

    #[test]
    fn size_is_bounded_and_top_quantiles_stay_accurate_after_folding() {
        let mut s = QuantileSketch::new(0.01, 64);
        let mut xs = Vec::new();
        for i in 0..100_000 {
            // Spans 1e-6 .. 1e6 (far more than 64 buckets) with both signs.
            let x = 10f64.powf(-6.0 + 12.0 * (i as f64 / 100_000.0)) * if i % 3 == 0 { -1.0 } else { 1.0 };
            s.insert(x);
            xs.push(x);
            assert!(s.bucket_count() <= 128);
        }
        xs.sort_by(f64::total_cmp);
        for q in [0.0, 0.99, 1.0] {
            let want = exact(&xs, q);
            let got = s.quantile(q).expect("non-empty");
            assert!(
                (got - want).abs() <= 0.01 * want.abs(),
                "q {q}: got {got}, exact {want}"
            );
        }
    }

    #[test]
    fn a_bucket_costs_eight_bytes_and_folding_caps_the_store() {
        // A minute of one reading per second, every value in its own bucket.
        let mut s = QuantileSketch::default();
        (0..60).for_each(|i| s.insert(1.05f64.powi(i)));
        assert_eq!(s.bucket_count(), 60);
        assert!(s.heap_bytes() <= 64 * 8, "{} bytes", s.heap_bytes());
        // Folding keeps the highest `cap` buckets and every count.
        let mut capped = QuantileSketch::new(0.01, 16);
        (0..60).for_each(|i| capped.insert(1.05f64.powi(i)));
        assert_eq!((capped.bucket_count(), capped.count()), (16, 60));
        assert_eq!(capped.positive.0.iter().map(|&(_, c)| u64::from(c)).sum::<u64>(), 60);
        assert!(capped.positive.0.windows(2).all(|w| w[0].0 < w[1].0), "sorted by index");
    }

    #[test]
    fn empty_and_single() {
        let mut s = QuantileSketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.insert(-3.5);
        assert_eq!(s.quantile(0.0), Some(-3.5));
        assert_eq!(s.quantile(1.0), Some(-3.5));
        s.insert(f64::NAN);
        assert_eq!(s.count(), 1);
    }
}
