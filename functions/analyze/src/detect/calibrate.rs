//! Per-series calibration of a model's strength: each raw strength `z`
//! (robust z of a spike, size of a shift) is compared with the `quantile` of
//! that model's own past strengths on the series, `q`, and scored
//! `squash(max(0, z / q - 1), half)`. A series that is always jumpy thus
//! needs a bigger jump to score high than a calm one, and one threshold fits
//! every series.
//!
//! The past strengths live in a fixed log-scale histogram of [`BINS`] `u16`
//! counts (ratio [`GAMMA`] between bin edges, from [`Z_MIN`] up; smaller and
//! larger strengths fall in the end bins): 140 bytes per model and series
//! whatever the input, and the quantile is tracked incrementally, so a value
//! costs O(1) amortised. A count about to overflow halves every count, which
//! keeps the proportions (the quantile) while bounding the memory.

use super::squash;
use crate::state::codec::{Corrupt, Reader, Writer};

/// Bins of the histogram of past strengths: the top one starts at a
/// strength of about 970, far above any usual (0.99 quantile) strength of a
/// series that is not degenerate. 76 bins (top at 8,500) scored every NAB
/// value identically and cost 24 bytes more per model and series.
pub const BINS: usize = 64;
/// Lower edge of the second bin (the first holds everything below it).
pub const Z_MIN: f64 = 0.01;
/// Ratio between bin edges: a quantile is known to within about ±10%.
pub const GAMMA: f64 = 1.2;

/// Calibration settings, shared by every series.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Off: scores are `squash(z, z_half)` of each model's own config.
    pub enabled: bool,
    /// The quantile of past strengths that counts as "usual".
    pub quantile: f64,
    /// Excess over the usual (`z / q - 1`) at which the score is 0.5.
    pub half: f64,
    /// Strengths seen before any score above 0 is given.
    pub min_samples: u32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.99,
            half: 1.0,
            min_samples: 100,
        }
    }
}

impl Calibration {
    /// The strength at which a model scores 0.5 on a series whose usual
    /// strength is `usual` (`None` while calibrating), or with `z_half` if
    /// calibration is off: what the explanations call "expected".
    pub fn half_strength(&self, usual: Option<f64>, z_half: f64) -> Option<f64> {
        if self.enabled {
            usual.map(|q| q * (1.0 + self.half))
        } else {
            Some(z_half)
        }
    }
}

/// The calibration state of one model on one series.
#[derive(Clone, Debug)]
pub struct Calibrator {
    counts: [u16; BINS],
    total: u32,
    /// Bin of the tracked quantile, and the count of bins `0..=q_bin`.
    q_bin: u8,
    at_or_below: u32,
}

impl Default for Calibrator {
    fn default() -> Self {
        Self {
            counts: [0; BINS],
            total: 0,
            q_bin: 0,
            at_or_below: 0,
        }
    }
}

fn bin_of(z: f64) -> usize {
    if z.is_nan() || z < Z_MIN * GAMMA {
        return 0;
    }
    let i = ((z / Z_MIN).ln() / GAMMA.ln()).floor();
    if i >= (BINS - 1) as f64 {
        BINS - 1
    } else {
        i.max(0.0) as usize
    }
}

fn value_of(bin: usize) -> f64 {
    // Computed once: `powf` for every score of every model was 2% of
    // analyze's CPU. The same expression, so the same bits.
    static VALUES: std::sync::OnceLock<[f64; BINS]> = std::sync::OnceLock::new();
    VALUES.get_or_init(|| std::array::from_fn(|b| Z_MIN * GAMMA.powf(b as f64 + 0.5)))[bin.min(BINS - 1)]
}

impl Calibrator {
    /// Strengths remembered (after halvings, the halved count).
    pub fn count(&self) -> u32 {
        self.total
    }

    /// The usual strength: the calibration quantile of the past strengths
    /// (`None` before `min_samples`).
    pub fn usual(&self, c: &Calibration) -> Option<f64> {
        (self.total >= c.min_samples.max(1)).then(|| value_of(usize::from(self.q_bin)))
    }

    /// Score `z` against the past strengths, then remember it.
    pub fn score(&mut self, c: &Calibration, z: Option<f64>, z_half: f64) -> f64 {
        let Some(z) = z.filter(|z| z.is_finite()) else {
            return 0.0;
        };
        if !c.enabled {
            return squash(z, z_half);
        }
        let s = self.usual(c).map_or(0.0, |q| squash((z / q - 1.0).max(0.0), c.half));
        self.insert(z, c.quantile);
        s
    }

    fn insert(&mut self, z: f64, quantile: f64) {
        let bin = bin_of(z);
        if self.counts[bin] == u16::MAX {
            self.halve();
        }
        self.counts[bin] += 1;
        self.total += 1;
        let mut q = usize::from(self.q_bin);
        if bin <= q {
            self.at_or_below += 1;
        }
        // The quantile is the smallest bin whose cumulative count exceeds the
        // rank floor(quantile * (n - 1)), as the exact lower quantile.
        let rank = (quantile.clamp(0.0, 1.0) * f64::from(self.total - 1)).floor() as u32;
        while q > 0 && self.at_or_below - u32::from(self.counts[q]) > rank {
            self.at_or_below -= u32::from(self.counts[q]);
            q -= 1;
        }
        while self.at_or_below <= rank && q + 1 < BINS {
            q += 1;
            self.at_or_below += u32::from(self.counts[q]);
        }
        self.q_bin = q as u8;
    }

    fn halve(&mut self) {
        // Rounding up keeps every seen bin non-empty.
        self.counts.iter_mut().for_each(|c| *c = c.div_ceil(2));
        self.total = self.counts.iter().map(|&c| u32::from(c)).sum();
        self.at_or_below = self.counts[..=usize::from(self.q_bin)]
            .iter()
            .map(|&c| u32::from(c))
            .sum();
    }
}

impl Calibrator {
    /// Write the state (see [`crate::state`]).
    pub(crate) fn save(&self, w: &mut Writer) {
        for &c in &self.counts {
            w.u16(c);
        }
        w.u32(self.total);
        w.u8(self.q_bin);
        w.u32(self.at_or_below);
    }

    /// Read what [`Calibrator::save`] wrote.
    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let mut counts = [0; BINS];
        for c in &mut counts {
            *c = r.u16()?;
        }
        let cal = Self {
            counts,
            total: r.u32()?,
            q_bin: r.u8()?,
            at_or_below: r.u32()?,
        };
        // The quantile's bin indexes the histogram: out of range is not ours.
        if usize::from(cal.q_bin) >= BINS {
            return Err(Corrupt);
        }
        Ok(cal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn exact_lower_quantile(xs: &mut [f64], q: f64) -> f64 {
        xs.sort_by(f64::total_cmp);
        xs[(q * (xs.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn the_quantile_is_within_a_bin_of_the_exact_one_through_halvings() {
        let c = Calibration::default();
        let mut cal = Calibrator::default();
        let mut rng = Rng::new(11);
        let mut seen = Vec::new();
        for i in 0..200_000 {
            let z = (rng.normal() * 0.15).exp();
            seen.push(z);
            cal.insert(z, c.quantile);
            if i % 20_000 == 19_999 {
                let got = cal.usual(&c).expect("calibrated");
                let want = exact_lower_quantile(&mut seen.clone(), c.quantile);
                assert!(
                    got / want < GAMMA * 1.01 && want / got < GAMMA * 1.01,
                    "{i}: {got} vs {want}"
                );
            }
        }
        assert!(cal.count() < 200_000, "counts were halved");
    }

    #[test]
    fn scores_need_min_samples_and_grow_with_the_excess() {
        let c = Calibration::default();
        let mut cal = Calibrator::default();
        for i in 0..99 {
            assert_eq!(cal.score(&c, Some(1.0 + f64::from(i % 3)), 4.0), 0.0);
        }
        assert_eq!(cal.score(&c, Some(1000.0), 4.0), 0.0, "still calibrating at 99");
        let usual = cal.usual(&c).expect("100 samples");
        let small = cal.score(&c, Some(usual), 4.0);
        let big = cal.score(&c, Some(usual * 10.0), 4.0);
        assert!(small < 0.05 && big > 0.9, "{small} {big}");
        assert_eq!(cal.score(&c, None, 4.0), 0.0);
        assert_eq!(cal.score(&c, Some(f64::NAN), 4.0), 0.0);
    }
}
