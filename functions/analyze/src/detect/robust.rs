//! A streaming robust estimate of a series' level and spread: a frugal
//! streaming median (the level steps towards each value by a fixed share of
//! the spread), a frugal streaming median absolute deviation (the spread
//! grows or shrinks by a factor as values fall outside or inside it), and
//! the recent range. This is what the models keep instead of sorted rings of
//! past values: O(1) time per value, 40 bytes per estimate, no scratch space.
//!
//! Robustness: after the first [`WARM_UP`] values, one value moves the level
//! by `alpha` spreads and the spread by a factor `e^alpha`, however far off
//! it is, so a spike hardly moves either, as it would not move a rolling
//! median. The price is speed of adaptation: a lasting step is followed at
//! `alpha` spreads per value while the spread grows by `e^alpha` per value,
//! so a step of many spreads takes a few spans (and a flat series that
//! steps, longer: its spread starts from its floor).

use crate::state::codec::{Corrupt, Reader, Writer};

/// Values taken as they come (running mean, unclipped) before the spread
/// means anything.
pub const WARM_UP: u32 = 8;
/// Standard deviations per median absolute deviation of a normal distribution.
const MAD_TO_SIGMA: f64 = 1.253_314;

/// The weight of a new value in an exponentially weighted average over about
/// `span` values (`2 / (span + 1)`, as pandas' `ewm(span=...)`).
pub fn alpha(span: usize) -> f64 {
    2.0 / (span.max(1) as f64 + 1.0)
}

/// Level, spread and range of one series (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RobustEw {
    loc: f64,
    hi: f64,
    lo: f64,
    dev: f64,
    n: u32,
}

impl RobustEw {
    /// Values seen (saturating).
    pub fn count(&self) -> u32 {
        self.n
    }

    /// The level.
    pub fn loc(&self) -> f64 {
        self.loc
    }

    /// The robust standard deviation, floored at 1% of the recent range and
    /// at 1e-6 of the level, so a flat series does not turn any wobble into
    /// an infinite z.
    pub fn sigma(&self) -> f64 {
        // 0.01 * hi - 0.01 * lo: no overflow when the range spans all of f64.
        (MAD_TO_SIGMA * self.dev)
            .max(0.01 * self.hi - 0.01 * self.lo)
            .max(1e-6 * (1.0 + self.loc.abs()))
    }

    /// How far `x` is from the level, in [`RobustEw::sigma`]s (signed).
    pub fn z(&self, x: f64) -> f64 {
        (x - self.loc) / self.sigma()
    }

    /// Take `x` in with weight `alpha` (at least `1 / count`, so the first
    /// values are averaged rather than the first one sticking for a span).
    pub fn update(&mut self, x: f64, alpha: f64) {
        let fresh = self.n == 0 || !(x - self.loc).is_finite();
        if fresh {
            // First value, or one so far from the level that the residual
            // overflows f64: start over from it rather than carry an
            // infinity in the state.
            *self = Self {
                loc: x,
                hi: x,
                lo: x,
                dev: 0.0,
                n: 1,
            };
            return;
        }
        let a = alpha.max(1.0 / (f64::from(self.n) + 1.0));
        let r = x - self.loc;
        if self.n < WARM_UP {
            // Running mean and mean absolute deviation until there is a
            // spread to step by.
            self.loc += a * r;
            self.dev += a * (r.abs() - self.dev);
        } else {
            // Frugal streaming median and MAD: the level steps by `alpha`
            // spreads towards the value, the spread by a factor `e^alpha`
            // up or down as the value falls outside or inside it, so both
            // settle where half the values are on either side, whatever
            // the other half does.
            // The step is the floored sigma: after a spike the range floor
            // makes it larger for about a span, so a level that had been
            // flat can follow a step sooner (capping it at a few MADs scored
            // 2-4 points lower on NAB).
            self.loc += a * self.sigma() * r.signum();
            let (grow, shrink) = steps(a);
            let factor = if r.abs() > self.dev { grow } else { shrink };
            self.dev = (self.dev * factor).max(1e-6 * (1.0 + self.loc.abs()));
        }
        // The range relaxes towards the level at the same rate, so a spike
        // widens it for about a span, as it would a window of that length.
        self.hi = x.max(self.hi - a * (self.hi - self.loc));
        self.lo = x.min(self.lo + a * (self.loc - self.lo));
        self.n = self.n.saturating_add(1);
    }
}

/// `(e^a, e^-a)`: the factors the spread steps by at weight `a`.
///
/// The weights in use are few (one per span setting once an estimate has
/// seen a span of values), and two `exp`s per value of every estimate were
/// 1.5% of analyze's CPU, so they are kept per thread in a small
/// direct-mapped table. A miss computes them as before and takes the slot:
/// the results are the same bits either way.
fn steps(a: f64) -> (f64, f64) {
    use std::cell::Cell;
    const SLOTS: usize = 8;
    thread_local! {
        // Key 0 is the weight 0.0, whose factors are (1, 1): a valid entry.
        static MEMO: [Cell<(u64, f64, f64)>; SLOTS] = const { [const { Cell::new((0, 1.0, 1.0)) }; SLOTS] };
    }
    let bits = a.to_bits();
    // Weights of nearby spans differ in their low mantissa bits too: mix them in.
    let slot = ((bits ^ (bits >> 17) ^ (bits >> 41)) as usize) % SLOTS;
    MEMO.with(|memo| {
        let (key, grow, shrink) = memo[slot].get();
        if key == bits {
            return (grow, shrink);
        }
        let fresh = (a.exp(), (-a).exp());
        memo[slot].set((bits, fresh.0, fresh.1));
        fresh
    })
}

impl RobustEw {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.f64(self.loc);
        w.f64(self.hi);
        w.f64(self.lo);
        w.f64(self.dev);
        w.u32(self.n);
    }

    /// Read what [`RobustEw::save`] wrote.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Self {
            loc: r.f64()?,
            hi: r.f64()?,
            lo: r.f64()?,
            dev: r.f64()?,
            n: r.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn level_and_spread_of_noise_ignore_spikes() {
        let mut e = RobustEw::default();
        let mut rng = Rng::new(3);
        for i in 0..5000 {
            let x = if i % 97 == 50 { 1e3 } else { 10.0 + 2.0 * rng.normal() };
            e.update(x, alpha(512));
        }
        assert!((e.loc() - 10.0).abs() < 0.5, "level {}", e.loc());
        // The median absolute deviation of N(10, 2) is 0.6745 * 2; 1% of
        // spikes do not move it.
        assert!((e.dev - 1.349).abs() < 0.3, "dev {}", e.dev);
    }

    #[test]
    fn memoised_steps_are_the_same_bits_as_computed_ones() {
        let weights: Vec<f64> = (0..3000)
            .map(|n| 1.0 / (f64::from(n) + 1.0))
            .chain([alpha(768), alpha(36), alpha(432), alpha(2016), 0.0])
            .collect();
        // Twice: the second pass hits whatever the first left in the table.
        for _ in 0..2 {
            for &a in &weights {
                let (grow, shrink) = steps(a);
                assert_eq!(grow.to_bits(), a.exp().to_bits(), "{a}");
                assert_eq!(shrink.to_bits(), (-a).exp().to_bits(), "{a}");
            }
        }
    }

    #[test]
    fn a_step_is_followed_within_a_few_spans() {
        let mut e = RobustEw::default();
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            e.update(5.0 + 0.1 * rng.normal(), alpha(100));
        }
        for _ in 0..400 {
            e.update(50.0 + 0.1 * rng.normal(), alpha(100));
        }
        assert!((e.loc() - 50.0).abs() < 1.0, "level {}", e.loc());
        // A flat series steps too, more slowly: its spread grows from the floor.
        let mut flat = RobustEw::default();
        (0..1000).for_each(|_| flat.update(1.0, alpha(100)));
        assert!((flat.loc() - 1.0).abs() < 1e-9);
        (0..1500).for_each(|_| flat.update(2.0, alpha(100)));
        assert!((flat.loc() - 2.0).abs() < 0.05, "flat level {}", flat.loc());
    }
}
