//! The crate every Tributary function builds on: the contracts the
//! functions meet in, the backends behind traits, and the harness each
//! function runs in. Functions never import each other; they only share this
//! crate.
//!
//! # Layout
//!
//! - [`model`]: the reading as devices send it and as `telemetry.raw` carries
//!   it (schema 1), its validation and derived ids;
//! - [`records`]: what analyze publishes (aggregates, alerts);
//! - [`sketch`]: the mergeable quantile sketch windows carry, and its encoding;
//! - [`topics`]: topic names and consumer groups;
//! - [`auth`]: device keys derived from the fleet key, signed tokens;
//! - [`config`]: the argument groups every function's config flattens
//!   (listen address, Kafka, topic names, Cosmos DB, logging), each with a `Default`;
//! - [`telemetry`]: logging setup, the shared metrics registry, error chains;
//! - [`service`]: the harness: ops endpoints, readiness, shutdown, and the
//!   two ways a function runs (serving HTTP, consuming a group);
//! - [`eventlog`]: the event log trait with its Kafka and in-process
//!   backends, and the consumer runner that commits only after a handler
//!   succeeded;
//! - [`results`]: the results store (PostgreSQL, SQLite);
//! - [`registry`]: the device registry in the same database;
//! - [`rules`]: alert rules per device group or device, in the same database;
//! - [`notify`]: alert notification channels, their payload formats,
//!   signatures and retried deliveries;
//! - [`cache`]: the hot-data cache and change notifications (Redis, in-process);
//! - [`raw`]: the raw archive (Cosmos DB behind feature `cosmos`, SQLite);
//! - [`splunk`]: the Splunk HTTP Event Collector client.
//!
//! Every backend trait has an embedded implementation, so `tributary dev`
//! runs everything in one process; the contract suites all backends pass
//! live in `tributary-testkit`, outside the production crates.

pub mod auth;
pub mod cache;
pub mod config;
pub mod eventlog;
pub mod model;
pub mod notify;
pub mod raw;
pub mod records;
pub mod registry;
pub mod results;
pub mod rules;
pub mod service;
pub mod sketch;
pub mod splunk;
pub mod telemetry;
pub mod topics;
