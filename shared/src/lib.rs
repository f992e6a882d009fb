//! The crate every Tributary function builds on.
//!
//! It holds the contracts the functions meet in (the record types of
//! [`model`], the topic names of [`topics`]), device authentication
//! ([`auth`]), configuration fragments ([`config`]), logging and metrics
//! ([`telemetry`]), the operational HTTP endpoints ([`ops`]) and the event log
//! ([`eventlog`]): a small trait with a Kafka backend and an in-process one,
//! plus the consumer-group runner that commits offsets only after a handler
//! succeeded. The results store ([`results`]) and the hot-data cache
//! ([`cache`]) are traits too, each with a production backend (PostgreSQL,
//! Redis) and an embedded one (SQLite, in-process) for the all-in-one mode.
//!
//! Functions never import each other; they only share this crate.

pub mod auth;
pub mod cache;
pub mod config;
pub mod eventlog;
pub mod model;
pub mod ops;
pub mod raw;
pub mod records;
pub mod results;
pub mod shutdown;
pub mod splunk;
pub mod telemetry;
pub mod topics;
