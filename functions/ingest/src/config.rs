//! The ingest function's one typed configuration, from flags and environment.

use std::net::IpAddr;

use clap::Parser;
use tributary_shared::config::{KafkaArgs, LogArgs};

/// The fleet key used when none is configured: fine on a laptop, never in
/// production (the function logs a warning when it is in use).
pub const DEV_FLEET_KEY: &str = "tributary-development-fleet-key-do-not-use-in-production";

/// Configuration of the ingest function.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tributary-ingest",
    about = "Accepts device readings over HTTP and publishes them to telemetry.raw",
    version
)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, env = "TRIBUTARY_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Topic readings are published to.
    #[arg(long, env = "TRIBUTARY_RAW_TOPIC", default_value = tributary_shared::topics::RAW)]
    pub raw_topic: String,

    /// Secret every device key derives from (HMAC-SHA256 of the device id).
    #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, hide_default_value = true, default_value = DEV_FLEET_KEY)]
    pub fleet_key: String,

    /// Longest token lifetime accepted, in seconds (bounds replay of a leaked token).
    #[arg(long, env = "TRIBUTARY_TOKEN_MAX_TTL_SECS", default_value_t = 7 * 86_400)]
    pub token_max_ttl_secs: u64,

    /// Largest request body as sent (possibly gzip), in bytes.
    #[arg(long, env = "TRIBUTARY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Largest request body after gzip decoding, in bytes (guards against zip bombs).
    #[arg(long, env = "TRIBUTARY_MAX_DECODED_BYTES", default_value_t = 8 << 20)]
    pub max_decoded_bytes: usize,

    /// Most readings in one request.
    #[arg(long, env = "TRIBUTARY_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,

    /// Sustained readings per second allowed per device.
    #[arg(long, env = "TRIBUTARY_DEVICE_RATE", default_value_t = 100.0)]
    pub device_rate: f64,

    /// Readings a device may send in a burst above its rate (at least `max_batch`).
    #[arg(long, env = "TRIBUTARY_DEVICE_BURST", default_value_t = 2000)]
    pub device_burst: u32,

    /// Seconds to finish in-flight requests and flush the producer after SIGTERM.
    #[arg(long, env = "TRIBUTARY_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// The defaults, as if started with no flags and no environment
    /// (for tests and the all-in-one mode).
    pub fn defaults() -> Self {
        let mut c = Self::parse_from(["tributary-ingest"]);
        // parse_from still reads the environment; start from the documented defaults.
        c.kafka = KafkaArgs::default();
        c.raw_topic = tributary_shared::topics::RAW.into();
        c.fleet_key = DEV_FLEET_KEY.into();
        c
    }
}
