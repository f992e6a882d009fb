//! Tributary's analyze function, pure logic: event-time tumbling windows with
//! mergeable statistics ([`window`], [`sketch`]), online anomaly models, the
//! combiner and the alert state machine ([`detect`]), the published records
//! ([`records`]), the wiring of all of it per consumer ([`engine`]), the rule
//! that closes the windows of quiet partitions ([`idle`]) and an evaluation on
//! the Numenta Anomaly Benchmark ([`nab`]).
//!
//! Nothing here does I/O except [`nab::evaluate`] (which reads CSV files and
//! writes results) and [`handler`] (the consumer side): a Kafka consumer
//! runner feeds readings in, publishes what comes out and commits the offsets
//! [`engine::Analyzer`] says are safe.
//! Everything is deterministic: the same input gives the same output.

pub mod config;
pub mod detect;
pub mod engine;
pub mod handler;
pub mod idle;
pub mod metrics;
pub mod nab;
/// The records analyze publishes: the contract lives in the shared crate.
pub mod records {
    pub use tributary_shared::records::{Aggregate, Alert, AlertState};
}
pub mod sketch;
pub mod window;

#[cfg(test)]
pub(crate) mod testutil {
    //! A tiny seeded PRNG (SplitMix64) so property tests are reproducible
    //! without extra dependencies.

    /// SplitMix64.
    pub struct Rng(u64);

    impl Rng {
        /// Seeded generator.
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }
        /// Next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Uniform in 0..n (n > 0).
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
        /// Standard normal (Box-Muller).
        pub fn normal(&mut self) -> f64 {
            let u = self.unit().max(1e-300);
            let v = self.unit();
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }
}
