//! Test scaffolding for Tributary, kept out of the production crates: every
//! crate lists it under `[dev-dependencies]` only, so no function binary links
//! it (`cargo tree -e normal -p tributary-ingest` does not show it).
//!
//! # Layout
//!
//! - [`eventlog`]: the contract every [`EventLog`](tributary_shared::eventlog::EventLog)
//!   backend must meet, run against Kafka (tansu) and the in-process log;
//! - [`results`]: the contract of the [`ResultStore`](tributary_shared::results::ResultStore)
//!   backends, run against PostgreSQL and SQLite;
//! - [`listing`]: the contract of the fleet list (paging, search, filters,
//!   order), run against the same two;
//! - [`registry`]: the contract of the device registry, run against
//!   PostgreSQL and SQLite;
//! - [`rules`]: the contract of the alert rule store, run against the same two;
//! - [`notify`]: the contract of the notification channel store, the same two;
//! - [`cache`]: the contract of the [`KvCache`](tributary_shared::cache::KvCache)
//!   backends, run against Redis and the in-process cache;
//! - [`rng`]: a seeded PRNG for reproducible property tests;
//! - [`azurite`]: Azure's Storage emulator as a process of a test's own;
//! - [`delta`]: Delta tables read back with delta-rs;
//! - [`broker`]: a tansu broker of a test's own that it can kill and restart;
//! - [`process`]: function binaries and servers as processes of a test's own;
//! - this file: where the tests find the services `scripts/test` starts.
//!
//! A test that needs a service and does not find it fails with the variable
//! to set; none skips.

pub mod azurite;
pub mod broker;
pub mod cache;
pub mod delta;
pub mod eventlog;
pub mod listing;
pub mod notify;
pub mod process;
pub mod registry;
pub mod results;
pub mod rng;
pub mod rules;

/// The broker the integration tests use, from `TRIBUTARY_TEST_KAFKA_BROKERS`.
/// Panics when it is not set: a test that needs Kafka fails loudly, never skips.
pub fn test_brokers() -> String {
    std::env::var("TRIBUTARY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("TRIBUTARY_TEST_KAFKA_BROKERS is not set: these tests need a Kafka-protocol broker. Run them with scripts/test, which installs and starts one.")
    })
}

/// A topic name no other test run uses.
pub fn unique_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("test.{name}.{}.{nanos}", std::process::id())
}

/// The Cosmos DB stand-in the integration tests use: endpoint and key, from
/// `TRIBUTARY_TEST_COSMOS_ENDPOINT` and `TRIBUTARY_TEST_COSMOS_KEY`. Panics
/// when they are not set: a test that needs Cosmos DB fails loudly, never skips.
pub fn test_cosmos() -> (String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: these tests need the Cosmos DB stand-in. Run them with scripts/test, which installs and starts it (scripts/cosmos/start.js).")
        })
    };
    (var("TRIBUTARY_TEST_COSMOS_ENDPOINT"), var("TRIBUTARY_TEST_COSMOS_KEY"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
