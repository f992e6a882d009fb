//! A deterministic, mergeable quantile sketch (DDSketch-style log buckets).
//!
//! Guarantee: with relative accuracy [`DEFAULT_ALPHA`], for any `q` the
//! estimate returned by [`QuantileSketch::quantile`] is within `alpha * |x|`
//! of `x`, the exact value of rank `floor(q * (n - 1))` of the inserted values
//! (the "lower" quantile), as long as no bucket has been collapsed. Values
//! with `|x| < MIN_INDEXABLE` are counted as zero (absolute error below
//! `MIN_INDEXABLE`). Memory is bounded: each sign keeps at most `max_buckets`
//! buckets; past that the buckets of smallest magnitude are folded into the
//! smallest kept one, so the guarantee still holds for values whose magnitude
//! is among the `max_buckets` largest buckets (with 1024 buckets that is a
//! dynamic range of about 10^8.8 per sign before any folding happens).
//!
//! Determinism: counts live in one key-sorted vector and folding depends
//! only on the set of bucket indices seen, so `merge(a, b)` is identical to
//! the sketch of the concatenated input, in any order and any split.
//!
//! Memory: every window of every series holds one of these, so it is small.
//! Inline it is 64 bytes: the accuracy is a constant rather than a field,
//! and both signs share one vector. The vector holds (key, count) pairs in
//! value order, 8 bytes per non-empty bucket (a window of one series holds a
//! few dozen), and grows by half its length rather than doubling. A
//! bucket's count saturates at
//! `u32::MAX` (4.3 billion values of one series in one bucket of one window,
//! far past what ingest admits).

/// Magnitudes below this are counted in the zero bucket.
pub const MIN_INDEXABLE: f64 = 1e-9;

/// Relative accuracy: 1%.
pub const DEFAULT_ALPHA: f64 = 0.01;

/// Default bucket cap per sign.
pub const DEFAULT_MAX_BUCKETS: usize = 1024;

/// `ln(gamma)`, `gamma = (1 + alpha) / (1 - alpha)`: bucket `k` holds
/// magnitudes in `(gamma^(k-1), gamma^k]`.
fn gamma_ln() -> f64 {
    ((1.0 + DEFAULT_ALPHA) / (1.0 - DEFAULT_ALPHA)).ln()
}

/// Indices are clamped to this magnitude: with 1% accuracy every finite
/// magnitude from `MIN_INDEXABLE` to `f64::MAX` has an index within
/// -1,037..=35,491, so the clamp only guards the key arithmetic.
const MAX_INDEX: i32 = 100_000;

/// Keys of negative values' buckets: `NEGATIVE_BASE - k` for index `k`, all
/// below every positive key, and larger magnitudes lower, so the one sorted
/// vector is in value order.
const NEGATIVE_BASE: i32 = -4 * MAX_INDEX;

/// A quantile sketch with a relative-error guarantee (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileSketch {
    /// (key, count) of the non-empty buckets, sorted by key: the negative
    /// values' buckets (`negatives` of them), then the positive ones.
    buckets: Vec<(i32, u32)>,
    negatives: u32,
    max_buckets: u32,
    zero: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BUCKETS)
    }
}

impl QuantileSketch {
    /// A sketch with at most `max_buckets` (at least 2) buckets per sign.
    pub fn new(max_buckets: usize) -> Self {
        Self {
            buckets: Vec::new(),
            negatives: 0,
            max_buckets: max_buckets.clamp(2, u32::MAX as usize) as u32,
            zero: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The relative accuracy this sketch guarantees.
    pub fn alpha(&self) -> f64 {
        DEFAULT_ALPHA
    }

    /// Number of values inserted (or merged in).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value inserted (`+inf` when empty).
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest value inserted (`-inf` when empty).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Number of non-empty buckets, over both signs (at most `2 * max_buckets`).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn index(magnitude: f64) -> i32 {
        (magnitude.ln() / gamma_ln())
            .ceil()
            .clamp(-f64::from(MAX_INDEX), f64::from(MAX_INDEX)) as i32
    }

    /// The representative of bucket `k`: the point whose relative distance to
    /// both bucket edges is `alpha`.
    fn value(k: i32) -> f64 {
        let g = gamma_ln();
        2.0 * (g * f64::from(k)).exp() / (g.exp() + 1.0)
    }

    /// The signed value a key stands for.
    fn value_of_key(key: i32) -> f64 {
        if key < -2 * MAX_INDEX {
            -Self::value(NEGATIVE_BASE - key)
        } else {
            Self::value(key)
        }
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
            self.add(Self::index(x), 1);
            self.collapse();
        } else {
            self.add(NEGATIVE_BASE - Self::index(-x), 1);
            self.collapse();
        }
    }

    fn add(&mut self, key: i32, c: u32) {
        match self.buckets.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(c),
            Err(i) => {
                if self.buckets.len() == self.buckets.capacity() {
                    // Grow by half its length (at least 3 entries) rather
                    // than doubling: a few more reallocations, a third less
                    // spare room in every window.
                    let grow = (self.buckets.len() / 2).max(3);
                    self.buckets.reserve_exact(grow);
                }
                self.buckets.insert(i, (key, c));
                if key < -2 * MAX_INDEX {
                    self.negatives += 1;
                }
            }
        }
    }

    /// Add all of `other`, in one linear pass over both bucket vectors.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.zero += other.zero;
        let mut out = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (self.buckets.iter().peekable(), other.buckets.iter().peekable());
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
        self.negatives = out.iter().take_while(|&&(k, _)| k < -2 * MAX_INDEX).count() as u32;
        self.buckets = out;
        self.collapse();
    }

    /// Fold each sign's buckets of smallest magnitude into its smallest kept
    /// one so at most `max_buckets` remain per sign. Every value ends in
    /// bucket `max(own, lowest kept)`, which depends only on the set of
    /// indices seen: hence order independence.
    fn collapse(&mut self) {
        let cap = self.max_buckets as usize;
        let neg = self.negatives as usize;
        let pos = self.buckets.len() - neg;
        if pos > cap {
            // The positive buckets of smallest magnitude are the first ones.
            let extra = pos - cap;
            let folded = self.buckets[neg..=neg + extra]
                .iter()
                .fold(0u32, |sum, &(_, c)| sum.saturating_add(c));
            let kept = self.buckets[neg + extra].0;
            self.buckets.drain(neg..neg + extra);
            self.buckets[neg] = (kept, folded);
        }
        if neg > cap {
            // The negative buckets of smallest magnitude are the last ones.
            let extra = neg - cap;
            let last = neg - 1 - extra;
            let folded = self.buckets[last..neg]
                .iter()
                .fold(0u32, |sum, &(_, c)| sum.saturating_add(c));
            let kept = self.buckets[last].0;
            self.buckets.drain(last + 1..neg);
            self.buckets[last] = (kept, folded);
            self.negatives = cap as u32;
        }
    }

    /// Bytes this sketch holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<(i32, u32)>()
    }

    /// Estimate of the `q`-quantile (`q` clamped to [0, 1]), or `None` when empty.
    /// The result is clamped to the exact [min, max] seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let (negative, positive) = self.buckets.split_at(self.negatives as usize);
        let mut seen = 0u64;
        for &(k, c) in negative {
            seen += u64::from(c);
            if seen > rank {
                return Some(Self::value_of_key(k).clamp(self.min, self.max));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0_f64.clamp(self.min, self.max));
        }
        for &(k, c) in positive {
            seen += u64::from(c);
            if seen > rank {
                return Some(Self::value_of_key(k).clamp(self.min, self.max));
            }
        }
        Some(self.max)
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
            let mut whole = QuantileSketch::new(cap);
            xs.iter().for_each(|&x| whole.insert(x));
            for split in [0usize, 1, 1500, 2999, 3000] {
                let mut a = QuantileSketch::new(cap);
                let mut b = QuantileSketch::new(cap);
                xs[..split].iter().for_each(|&x| a.insert(x));
                xs[split..].iter().for_each(|&x| b.insert(x));
                let mut ba = b.clone();
                a.merge(&b);
                ba.merge(&xs[..split].iter().fold(QuantileSketch::new(cap), |mut s, &x| {
                    s.insert(x);
                    s
                }));
                assert_eq!(a, whole, "cap {cap} split {split}");
                assert_eq!(ba, whole, "cap {cap} split {split}, reversed");
            }
        }
    }

    #[test]
    fn size_is_bounded_and_top_quantiles_stay_accurate_after_folding() {
        let mut s = QuantileSketch::new(64);
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
        assert_eq!(size_of::<QuantileSketch>(), 64);
        // A minute of one reading per second, every value in its own bucket:
        // the vector grows by half, so at most a third of it is spare.
        let mut s = QuantileSketch::default();
        (0..60).for_each(|i| s.insert(1.05f64.powi(i)));
        assert_eq!(s.bucket_count(), 60);
        assert!(s.heap_bytes() <= 60 * 8 * 3 / 2, "{} bytes", s.heap_bytes());
        let mut one = QuantileSketch::default();
        one.insert(1.0);
        assert_eq!(one.heap_bytes(), 3 * 8, "a one-value window fills one small chunk");
        // Folding keeps the highest `cap` buckets and every count.
        let mut capped = QuantileSketch::new(16);
        (0..60).for_each(|i| capped.insert(1.05f64.powi(i)));
        assert_eq!((capped.bucket_count(), capped.count()), (16, 60));
        assert_eq!(capped.buckets.iter().map(|&(_, c)| u64::from(c)).sum::<u64>(), 60);
        assert!(capped.buckets.windows(2).all(|w| w[0].0 < w[1].0), "sorted by index");
        // Each sign is capped on its own, its smallest magnitudes folded.
        let mut both = QuantileSketch::new(16);
        (0..60).for_each(|i| {
            both.insert(1.05f64.powi(i));
            both.insert(-(1.05f64.powi(i)));
        });
        assert_eq!((both.bucket_count(), both.negatives, both.count()), (32, 16, 120));
        let top = 1.05f64.powi(59);
        for (q, want) in [(0.0, -top), (1.0, top)] {
            let got = both.quantile(q).expect("non-empty");
            assert!((got - want).abs() <= 0.01 * top, "q {q}: {got} vs {want}");
        }
        let small = both.quantile(0.49).expect("non-empty");
        assert!(
            small < 0.0 && small > -(1.05f64.powi(46)),
            "folded negatives hold the small magnitudes: {small}"
        );
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
