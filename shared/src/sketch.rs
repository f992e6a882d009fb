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
//! and both signs share one vector. A sketch of few values keeps their
//! bucket keys, sorted, 4 bytes a value (a window of one series holds a few
//! dozen values, mostly in distinct buckets); past [`RAW_KEYS`] values, or
//! once most values repeat a key, it keeps (key, count) pairs instead, 8
//! bytes per non-empty bucket. Either store grows by half its length rather
//! than doubling. Which store a sketch uses never changes what it answers:
//! equality, quantiles and merges depend only on the buckets' counts. A
//! bucket's count saturates at `u32::MAX` (4.3 billion values of one series
//! in one bucket of one window, far past what ingest admits).
//!
//! Encoding: [`QuantileSketch::to_bytes`] is what an aggregate carries on
//! `telemetry.aggregates` (base64 in JSON) and what the results store keeps
//! per window and per rollup row, so rollups merge windows with the same
//! guarantee. It holds the non-empty buckets only (a window of a few values
//! is a few dozen bytes; a day of one series at most a few KB) and
//! [`QuantileSketch::from_bytes`] checks everything it reads: a damaged
//! encoding is an error, never a panic or a sketch that breaks the
//! invariants above.

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

/// Keys a sketch keeps one by one before it counts them per bucket.
pub const RAW_KEYS: usize = 64;

/// A quantile sketch with a relative-error guarantee (see the module docs).
#[derive(Clone, Debug)]
pub struct QuantileSketch {
    store: Store,
    /// At most 32,768 (the negatives' count fits 16 bits before a fold).
    max_buckets: u16,
    zero: u32,
    count: u64,
    min: f64,
    max: f64,
}

/// The non-zero values' buckets, in key order (the negative values' first).
#[derive(Clone, Debug)]
enum Store {
    /// One key per value, sorted; `distinct` of them differ. Never more than
    /// [`RAW_KEYS`] or `max_buckets` keys, so nothing is ever folded here.
    Keys { keys: Vec<i32>, distinct: u16 },
    /// (key, count) of the non-empty buckets, sorted by key: the negative
    /// values' buckets (`negatives` of them), then the positive ones.
    Buckets { buckets: Vec<(i32, u32)>, negatives: u16 },
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BUCKETS)
    }
}

impl PartialEq for QuantileSketch {
    /// Same buckets with the same counts, whichever store holds them.
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.zero, self.min, self.max, self.max_buckets)
            == (other.count, other.zero, other.min, other.max, other.max_buckets)
            && self.buckets().eq(other.buckets())
    }
}

/// Grow `v` by half its length (at least `min` entries) when it is full: a
/// few more reallocations than doubling, a third less spare room in every
/// window.
fn reserve_half<T>(v: &mut Vec<T>, min: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 2).max(min));
    }
}

fn is_negative(key: i32) -> bool {
    key < -2 * MAX_INDEX
}

impl QuantileSketch {
    /// A sketch with at most `max_buckets` (2 to 32,768) buckets per sign.
    pub fn new(max_buckets: usize) -> Self {
        Self {
            store: Store::Keys {
                keys: Vec::new(),
                distinct: 0,
            },
            max_buckets: max_buckets.clamp(2, 1 << 15) as u16,
            zero: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The non-empty buckets as (key, count), in key order.
    fn buckets(&self) -> impl Iterator<Item = (i32, u32)> + '_ {
        let (keys, buckets) = match &self.store {
            Store::Keys { keys, .. } => (keys.as_slice(), &[][..]),
            Store::Buckets { buckets, .. } => (&[][..], buckets.as_slice()),
        };
        let mut keys = keys.iter().copied().peekable();
        let runs = std::iter::from_fn(move || {
            let k = keys.next()?;
            let mut c = 1u32;
            while keys.next_if_eq(&k).is_some() {
                c = c.saturating_add(1);
            }
            Some((k, c))
        });
        runs.chain(buckets.iter().copied())
    }

    /// How many keys the key store may hold.
    fn raw_limit(&self) -> usize {
        RAW_KEYS.min(usize::from(self.max_buckets))
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
        match &self.store {
            Store::Keys { distinct, .. } => usize::from(*distinct),
            Store::Buckets { buckets, .. } => buckets.len(),
        }
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
        if is_negative(key) {
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
            self.zero = self.zero.saturating_add(1);
            return;
        }
        let key = if x > 0.0 {
            Self::index(x)
        } else {
            NEGATIVE_BASE - Self::index(-x)
        };
        let limit = self.raw_limit();
        match &mut self.store {
            Store::Keys { keys, distinct } => {
                let (Ok(i) | Err(i)) = keys.binary_search(&key);
                let new = keys.get(i) != Some(&key);
                let distinct_after = *distinct + u16::from(new);
                // Keys stay while they are fewer than `limit` and cost less
                // than pairs would (4 bytes a key against 8 a bucket).
                if keys.len() < limit && keys.len() < 2 * usize::from(distinct_after) {
                    reserve_half(keys, 4);
                    keys.insert(i, key);
                    *distinct = distinct_after;
                    return;
                }
                self.count_per_bucket();
                self.add(key, 1);
            }
            Store::Buckets { .. } => self.add(key, 1),
        }
        self.collapse();
    }

    /// Move the key store's contents into the bucket store.
    fn count_per_bucket(&mut self) {
        if let Store::Keys { .. } = self.store {
            let mut buckets = Vec::with_capacity(self.bucket_count() + self.bucket_count() / 2 + 1);
            buckets.extend(self.buckets());
            let negatives = buckets.iter().take_while(|&&(k, _)| is_negative(k)).count() as u16;
            self.store = Store::Buckets { buckets, negatives };
        }
    }

    /// Add `c` to bucket `key` of the bucket store.
    fn add(&mut self, key: i32, c: u32) {
        let Store::Buckets { buckets, negatives } = &mut self.store else {
            return;
        };
        match buckets.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => buckets[i].1 = buckets[i].1.saturating_add(c),
            Err(i) => {
                reserve_half(buckets, 3);
                buckets.insert(i, (key, c));
                if is_negative(key) {
                    *negatives += 1;
                }
            }
        }
    }

    /// Add all of `other`, in one linear pass over both stores.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.zero = self.zero.saturating_add(other.zero);
        if let (Store::Keys { keys, .. }, Store::Keys { keys: more, .. }) = (&self.store, &other.store) {
            let mut merged = Vec::with_capacity(keys.len() + more.len());
            let (mut a, mut b) = (keys.iter().peekable(), more.iter().peekable());
            while let Some(&k) = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => None,
            } {
                merged.push(k);
            }
            let distinct = merged.len().min(1) + merged.windows(2).filter(|w| w[0] != w[1]).count();
            if merged.len() <= self.raw_limit() && merged.len() <= 2 * distinct {
                self.store = Store::Keys {
                    keys: merged,
                    distinct: distinct as u16,
                };
                return;
            }
        }
        let mut out = Vec::with_capacity(self.bucket_count() + other.bucket_count());
        {
            let (mut a, mut b) = (self.buckets().peekable(), other.buckets().peekable());
            loop {
                let next = match (a.peek(), b.peek()) {
                    (Some(&(i, c)), Some(&(j, d))) if i == j => {
                        a.next();
                        b.next();
                        (i, c.saturating_add(d))
                    }
                    (Some(&x), Some(&y)) if x.0 < y.0 => {
                        a.next();
                        x
                    }
                    (_, Some(&y)) => {
                        b.next();
                        y
                    }
                    (Some(&x), None) => {
                        a.next();
                        x
                    }
                    (None, None) => break,
                };
                out.push(next);
            }
        }
        let negatives = out.iter().take_while(|&&(k, _)| is_negative(k)).count() as u16;
        self.store = Store::Buckets {
            buckets: out,
            negatives,
        };
        self.collapse();
    }

    /// Fold each sign's buckets of smallest magnitude into its smallest kept
    /// one so at most `max_buckets` remain per sign. Every value ends in
    /// bucket `max(own, lowest kept)`, which depends only on the set of
    /// indices seen: hence order independence.
    fn collapse(&mut self) {
        let cap = usize::from(self.max_buckets);
        let Store::Buckets { buckets, negatives } = &mut self.store else {
            return;
        };
        let neg = usize::from(*negatives);
        let pos = buckets.len() - neg;
        if pos > cap {
            // The positive buckets of smallest magnitude are the first ones.
            let extra = pos - cap;
            let folded = buckets[neg..=neg + extra]
                .iter()
                .fold(0u32, |sum, &(_, c)| sum.saturating_add(c));
            let kept = buckets[neg + extra].0;
            buckets.drain(neg..neg + extra);
            buckets[neg] = (kept, folded);
        }
        if neg > cap {
            // The negative buckets of smallest magnitude are the last ones.
            let extra = neg - cap;
            let last = neg - 1 - extra;
            let folded = buckets[last..neg]
                .iter()
                .fold(0u32, |sum, &(_, c)| sum.saturating_add(c));
            let kept = buckets[last].0;
            buckets.drain(last + 1..neg);
            buckets[last] = (kept, folded);
            *negatives = cap as u16;
        }
    }

    /// Bytes this sketch holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        match &self.store {
            Store::Keys { keys, .. } => keys.capacity() * size_of::<i32>(),
            Store::Buckets { buckets, .. } => buckets.capacity() * size_of::<(i32, u32)>(),
        }
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
        let mut zero_counted = false;
        for (k, c) in self.buckets() {
            if !zero_counted && !is_negative(k) {
                zero_counted = true;
                seen += u64::from(self.zero);
                if seen > rank {
                    return Some(0.0_f64.clamp(self.min, self.max));
                }
            }
            seen += u64::from(c);
            if seen > rank {
                return Some(Self::value_of_key(k).clamp(self.min, self.max));
            }
        }
        if !zero_counted {
            seen += u64::from(self.zero);
            if seen > rank {
                return Some(0.0_f64.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// The encoding's version byte ([`QuantileSketch::to_bytes`]).
const ENCODING_V1: u8 = 1;

/// Why bytes are not a sketch's encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchDecodeError {
    /// The bytes end inside a field.
    #[error("the sketch's encoding ends early")]
    Truncated,
    /// A version this build does not read.
    #[error("the sketch's encoding has version {0}, this build reads version 1")]
    Version(u8),
    /// A field is out of its range.
    #[error("the sketch's encoding is invalid: {0}")]
    Invalid(&'static str),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads the encoding front to back.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Result<u8, SketchDecodeError> {
        let (&b, rest) = self.0.split_first().ok_or(SketchDecodeError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, SketchDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SketchDecodeError::Invalid("a number longer than 64 bits"))
    }

    fn f64(&mut self) -> Result<f64, SketchDecodeError> {
        let (head, rest) = self.0.split_at_checked(8).ok_or(SketchDecodeError::Truncated)?;
        self.0 = rest;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Ok(f64::from_le_bytes(b))
    }
}

fn valid_key(key: i64) -> bool {
    let (lo, hi) = (i64::from(-MAX_INDEX), i64::from(MAX_INDEX));
    let neg = i64::from(NEGATIVE_BASE);
    (lo..=hi).contains(&key) || (neg - hi..=neg - lo).contains(&key)
}

impl QuantileSketch {
    /// The compact encoding (see the module docs): version 1, then as
    /// LEB128 varints the bucket cap, the zero bucket's count and the
    /// number of non-empty buckets, min and max as little-endian f64, and
    /// per bucket its key (the first zigzag-encoded, then the gap to the
    /// previous one) and its count.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 3 * self.bucket_count());
        out.push(ENCODING_V1);
        put_varint(&mut out, u64::from(self.max_buckets));
        put_varint(&mut out, u64::from(self.zero));
        put_varint(&mut out, self.bucket_count() as u64);
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        let mut prev: Option<i32> = None;
        for (k, c) in self.buckets() {
            match prev {
                None => {
                    let k = i64::from(k);
                    put_varint(&mut out, ((k << 1) ^ (k >> 63)) as u64);
                }
                Some(p) => put_varint(&mut out, (i64::from(k) - i64::from(p)) as u64),
            }
            put_varint(&mut out, u64::from(c));
            prev = Some(k);
        }
        out
    }

    /// The sketch `to_bytes` encoded, checked: keys in range and strictly
    /// increasing, at most the cap of buckets per sign, no empty bucket,
    /// min and max consistent with the count, nothing after the last bucket.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchDecodeError> {
        use SketchDecodeError::Invalid;
        let mut r = Bytes(bytes);
        let version = r.byte()?;
        if version != ENCODING_V1 {
            return Err(SketchDecodeError::Version(version));
        }
        let cap = r.varint()?;
        if !(2..=1 << 15).contains(&cap) {
            return Err(Invalid("bucket cap out of range"));
        }
        let zero = u32::try_from(r.varint()?).map_err(|_| Invalid("zero count past 32 bits"))?;
        let n = r.varint()?;
        if n > 2 * cap {
            return Err(Invalid("more buckets than the cap allows"));
        }
        let (min, max) = (r.f64()?, r.f64()?);
        let mut buckets: Vec<(i32, u32)> = Vec::with_capacity(n as usize);
        let mut count = u64::from(zero);
        let mut prev: Option<i64> = None;
        for _ in 0..n {
            let v = r.varint()?;
            let key = match prev {
                None => ((v >> 1) as i64) ^ -((v & 1) as i64),
                Some(p) if v > 0 => p.checked_add_unsigned(v).ok_or(Invalid("key out of range"))?,
                Some(_) => return Err(Invalid("keys not increasing")),
            };
            if !valid_key(key) {
                return Err(Invalid("key out of range"));
            }
            let c = u32::try_from(r.varint()?).map_err(|_| Invalid("bucket count past 32 bits"))?;
            if c == 0 {
                return Err(Invalid("an empty bucket"));
            }
            buckets.push((key as i32, c));
            count += u64::from(c);
            prev = Some(key);
        }
        if !r.0.is_empty() {
            return Err(Invalid("bytes after the last bucket"));
        }
        let negatives = buckets.iter().take_while(|&&(k, _)| is_negative(k)).count();
        if negatives as u64 > cap || (buckets.len() - negatives) as u64 > cap {
            return Err(Invalid("more buckets of one sign than the cap"));
        }
        if count == 0 {
            if !(min == f64::INFINITY && max == f64::NEG_INFINITY) {
                return Err(Invalid("an empty sketch with a min or max"));
            }
        } else if !(min.is_finite() && max.is_finite() && min <= max) {
            return Err(Invalid("min and max"));
        }
        Ok(Self {
            store: Store::Buckets {
                buckets,
                negatives: negatives as u16,
            },
            max_buckets: cap as u16,
            zero,
            count,
            min,
            max,
        })
    }
}

/// In JSON a sketch is the base64 (standard alphabet, padded) of
/// [`QuantileSketch::to_bytes`].
impl serde::Serialize for QuantileSketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.to_bytes()))
    }
}

impl<'de> serde::Deserialize<'de> for QuantileSketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("the sketch is not base64: {e}")))?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_testkit::rng::Rng;

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

    fn negatives(s: &QuantileSketch) -> usize {
        s.buckets().filter(|&(k, _)| is_negative(k)).count()
    }

    #[test]
    fn few_values_cost_four_bytes_each_many_eight_a_bucket_and_folding_caps_the_store() {
        assert_eq!(size_of::<QuantileSketch>(), 64);
        // A minute of one reading per second, every value in its own bucket:
        // kept as keys, and the vector grows by half, so at most a third of
        // it is spare.
        let mut s = QuantileSketch::default();
        (0..60).for_each(|i| s.insert(1.05f64.powi(i)));
        assert_eq!(s.bucket_count(), 60);
        assert!(s.heap_bytes() <= 60 * 4 * 3 / 2, "{} bytes", s.heap_bytes());
        let mut one = QuantileSketch::default();
        one.insert(1.0);
        assert_eq!(one.heap_bytes(), 4 * 4, "a one-value window fills one small chunk");
        // Past RAW_KEYS values: a bucket each, 8 bytes.
        (60..100).for_each(|i| s.insert(1.05f64.powi(i)));
        assert_eq!(s.bucket_count(), 100);
        assert!(
            s.heap_bytes() >= 100 * 8 && s.heap_bytes() <= 100 * 8 * 3 / 2,
            "{} bytes",
            s.heap_bytes()
        );
        // Values that mostly repeat a bucket are counted per bucket early.
        let mut flat = QuantileSketch::default();
        (0..40).for_each(|i| flat.insert(20.0 + f64::from(i % 3) * 0.5));
        assert_eq!(flat.bucket_count(), 3);
        assert!(flat.heap_bytes() <= 8 * 8, "{} bytes", flat.heap_bytes());
        // Folding keeps the highest `cap` buckets and every count.
        let mut capped = QuantileSketch::new(16);
        (0..60).for_each(|i| capped.insert(1.05f64.powi(i)));
        assert_eq!((capped.bucket_count(), capped.count()), (16, 60));
        assert_eq!(capped.buckets().map(|(_, c)| u64::from(c)).sum::<u64>(), 60);
        let keys: Vec<i32> = capped.buckets().map(|(k, _)| k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted by index");
        // Each sign is capped on its own, its smallest magnitudes folded.
        let mut both = QuantileSketch::new(16);
        (0..60).for_each(|i| {
            both.insert(1.05f64.powi(i));
            both.insert(-(1.05f64.powi(i)));
        });
        assert_eq!((both.bucket_count(), negatives(&both), both.count()), (32, 16, 120));
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
    fn either_store_answers_the_same() {
        // The same values through the key store (inserted one by one, few)
        // and through the bucket store (merged into a sketch that already
        // counts per bucket) give equal sketches and equal quantiles.
        let mut rng = Rng::new(5);
        for n in [1usize, 2, 7, 33, 63, 64, 65, 200] {
            let xs: Vec<f64> = (0..n).map(|_| (rng.unit() - 0.4) * 100.0).collect();
            let mut keys = QuantileSketch::default();
            xs.iter().for_each(|&x| keys.insert(x));
            let mut counted = QuantileSketch::default();
            (0..100).for_each(|_| counted.insert(7.0));
            counted.merge(&keys);
            let mut via_keys = keys.clone();
            (0..100).for_each(|_| via_keys.insert(7.0));
            assert_eq!(counted, via_keys, "n {n}");
            for q in [0.0, 0.3, 0.5, 0.99, 1.0] {
                assert_eq!(counted.quantile(q), via_keys.quantile(q), "n {n} q {q}");
            }
        }
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

        // Zeros live outside the key store: merging only zeros into an empty
        // sketch leaves it without buckets.
        let mut zeros = QuantileSketch::default();
        zeros.insert(0.0);
        let mut empty = QuantileSketch::default();
        empty.merge(&zeros);
        assert_eq!(
            (empty.bucket_count(), empty.count(), empty.quantile(0.5)),
            (0, 1, Some(0.0))
        );
    }

    /// Sketches of every shape: empty, zeros only, one value, both signs,
    /// few values (key store), many (bucket store), folded, a small cap.
    fn shapes() -> Vec<QuantileSketch> {
        let mut rng = Rng::new(23);
        let mut out = vec![QuantileSketch::default()];
        let mut zeros = QuantileSketch::default();
        (0..5).for_each(|_| zeros.insert(0.0));
        out.push(zeros);
        for (n, cap, spread) in [
            (1usize, 1024usize, 1.0),
            (9, 1024, 50.0),
            (500, 1024, 1e4),
            (3000, 64, 1e6),
            (40, 2, 1e3),
        ] {
            let mut s = QuantileSketch::new(cap);
            for _ in 0..n {
                s.insert((rng.unit() - 0.3) * spread * rng.unit().powi(4));
            }
            s.insert(0.0);
            out.push(s);
        }
        out
    }

    #[test]
    fn the_encoding_round_trips_exactly_and_is_compact() {
        for s in shapes() {
            let bytes = s.to_bytes();
            let back = QuantileSketch::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, s);
            assert_eq!(back.count(), s.count());
            for q in [0.0, 0.01, 0.5, 0.95, 0.99, 1.0] {
                assert_eq!(back.quantile(q), s.quantile(q));
            }
            // Merging a decoded sketch is merging the original.
            let (mut a, mut b) = (shapes()[3].clone(), shapes()[3].clone());
            a.merge(&s);
            b.merge(&back);
            assert_eq!(a, b);
            // Header (at most 24 bytes) and at most 8 bytes a bucket, usually 2 or 3.
            assert!(
                bytes.len() <= 24 + 8 * s.bucket_count(),
                "{} bytes for {} buckets",
                bytes.len(),
                s.bucket_count()
            );
        }
        let mut window = QuantileSketch::default();
        (0..10).for_each(|i| window.insert(20.0 + f64::from(i) * 0.1));
        assert!(
            window.to_bytes().len() <= 48,
            "a 10-value window takes {} bytes",
            window.to_bytes().len()
        );
    }

    #[test]
    fn json_is_base64_of_the_encoding() {
        let s = shapes().remove(3);
        let json = serde_json::to_string(&s).expect("serialises");
        use base64::Engine as _;
        let text: String = serde_json::from_str(&json).expect("a JSON string");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(text).expect("base64"),
            s.to_bytes()
        );
        assert_eq!(serde_json::from_str::<QuantileSketch>(&json).expect("parses"), s);
        let err = serde_json::from_str::<QuantileSketch>("\"not base64!\"").expect_err("refused");
        assert!(err.to_string().contains("not base64"), "{err}");
        let err = serde_json::from_str::<QuantileSketch>("\"AgA=\"").expect_err("refused");
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn damaged_encodings_are_errors_never_panics_or_broken_sketches() {
        let mut rng = Rng::new(99);
        for s in shapes() {
            let bytes = s.to_bytes();
            // Every proper prefix ends early.
            for len in 0..bytes.len() {
                assert_eq!(
                    QuantileSketch::from_bytes(&bytes[..len]),
                    Err(SketchDecodeError::Truncated),
                    "prefix {len}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(QuantileSketch::from_bytes(&longer).is_err());
            // Random damage: either an error or a sketch that keeps the invariants.
            for _ in 0..300 {
                let mut b = bytes.clone();
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
                if let Ok(d) = QuantileSketch::from_bytes(&b) {
                    let total: u64 = d.buckets().map(|(_, c)| u64::from(c)).sum::<u64>() + u64::from(d.zero);
                    assert_eq!(total, d.count());
                    assert!(d.buckets().zip(d.buckets().skip(1)).all(|(a, b)| a.0 < b.0));
                    if d.count() > 0 {
                        let (lo, hi) = (d.quantile(0.0).expect("some"), d.quantile(1.0).expect("some"));
                        assert!(d.min() <= lo && hi <= d.max());
                    }
                    assert_eq!(QuantileSketch::from_bytes(&d.to_bytes()), Ok(d));
                }
            }
        }
        for (bytes, want) in [
            (vec![1, 2, 0, 0], SketchDecodeError::Truncated),
            (vec![1, 1, 0, 0], SketchDecodeError::Invalid("bucket cap out of range")),
            (
                vec![1, 0x80, 0x80, 0x04, 0, 0],
                SketchDecodeError::Invalid("bucket cap out of range"),
            ),
        ] {
            assert_eq!(QuantileSketch::from_bytes(&bytes), Err(want));
        }
    }
}
