//! Fuzz what process reads from `telemetry.aggregates`: the aggregate record
//! (`tributary_shared::records::Aggregate`) and the quantile sketch it
//! carries (`tributary_shared::sketch::QuantileSketch`).
//!
//! Two modes, chosen by the parity of byte 0:
//! - even (seeds start with `R`): the rest is tried as a sketch's encoding
//!   and, as text, as an aggregate's JSON. A sketch that decodes keeps its
//!   invariants (the count is the zero bucket plus every bucket, quantiles
//!   are ordered and within [min, max]) and re-encodes to the same sketch;
//!   an aggregate that parses serialises and parses back equal.
//! - odd (seeds start with `S`): the rest is a list of f64 values (8 bytes
//!   each, non-finite ones skipped, as the sketch does) split in two at byte
//!   1. The sketch of all of them equals the merge of the two halves'
//!   sketches, round-trips through its encoding and through JSON, and every
//!   quantile is within the sketch's relative error of the exact one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_shared::records::Aggregate;
use tributary_shared::sketch::QuantileSketch;

fn check_invariants(s: &QuantileSketch) {
    let mut last = f64::NEG_INFINITY;
    for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0] {
        match s.quantile(q) {
            None => assert_eq!(s.count(), 0),
            Some(v) => {
                assert!(
                    s.min() <= v && v <= s.max(),
                    "q{q} = {v} outside [{}, {}]",
                    s.min(),
                    s.max()
                );
                assert!(v >= last, "quantiles out of order at q{q}");
                last = v;
            }
        }
    }
    assert_eq!(QuantileSketch::from_bytes(&s.to_bytes()).as_ref(), Ok(s));
}

fn raw(data: &[u8]) {
    if let Ok(s) = QuantileSketch::from_bytes(data) {
        check_invariants(&s);
    }
    if let Ok(a) = serde_json::from_slice::<Aggregate>(data) {
        let json = serde_json::to_vec(&a).expect("serialises");
        let back: Aggregate = serde_json::from_slice(&json).expect("parses back");
        assert_eq!(back.sketch, a.sketch);
        if let Some(s) = &a.sketch {
            check_invariants(s);
        }
    }
}

fn structured(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let values: Vec<f64> = rest
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .filter(|x| x.is_finite())
        .collect();
    let cut = usize::from(split).min(values.len());
    let (mut all, mut a, mut b) = (
        QuantileSketch::default(),
        QuantileSketch::default(),
        QuantileSketch::default(),
    );
    values.iter().for_each(|&x| all.insert(x));
    values[..cut].iter().for_each(|&x| a.insert(x));
    values[cut..].iter().for_each(|&x| b.insert(x));
    a.merge(&b);
    assert_eq!(a, all, "merge differs from the sketch of the concatenation");
    check_invariants(&all);
    let json = serde_json::to_string(&all).expect("serialises");
    assert_eq!(serde_json::from_str::<QuantileSketch>(&json).expect("parses"), all);
    // Up to 1,024 values never fold (1,024 buckets a sign), so the
    // relative-error guarantee holds for every quantile.
    if values.len() > 1024 {
        return;
    }
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    for q in [0.0, 0.5, 0.9, 1.0] {
        let Some(got) = all.quantile(q) else { continue };
        let want = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
        if want.abs() >= 1e-9 && want.abs() < 1e300 {
            assert!(
                (got - want).abs() <= 0.0101 * want.abs(),
                "q{q}: {got} for {want} of {sorted:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        structured(rest);
    }
});
