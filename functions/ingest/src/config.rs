//! The ingest function's settings: [`Config::default`] works on a laptop;
//! the binary's flags and environment variables override it field by field.

use clap::Parser;
use tributary_shared::config::{KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::registry::view::EnrollmentMode;

/// The fleet key used when none is configured: fine on a laptop, never in
/// production (the function logs a warning when it is in use).
pub const DEV_FLEET_KEY: &str = "tributary-development-fleet-key-do-not-use-in-production";

/// Configuration of the ingest function.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(
    name = "tributary-ingest",
    about = "Accepts device readings over HTTP and publishes them to telemetry.raw",
    version
)]
pub struct Config {
    /// Where the API and the ops endpoints listen.
    #[command(flatten)]
    pub listen: ListenArgs<8080>,

    /// Broker connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The pipeline's topics.
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Secret every device key derives from (HMAC-SHA256 of the device id).
    #[arg(
        long,
        env = "TRIBUTARY_FLEET_KEY",
        hide_env_values = true,
        hide_default_value = true,
        default_value_t = Config::default().fleet_key
    )]
    pub fleet_key: String,

    /// Devices the registry does not know: `open` admits any with a key
    /// derived from the fleet key (version 0), `registered` refuses them
    /// (403 `device_unknown`). Disabled devices and rotated keys are refused
    /// in both.
    #[arg(long, env = "TRIBUTARY_ENROLLMENT", value_enum, default_value_t = Config::default().enrollment)]
    pub enrollment: EnrollmentMode,

    /// Longest token lifetime accepted, in seconds (bounds replay of a leaked token).
    #[arg(long, env = "TRIBUTARY_TOKEN_MAX_TTL_SECS", default_value_t = Config::default().token_max_ttl_secs)]
    pub token_max_ttl_secs: u64,

    /// Largest request body as sent (possibly gzip), in bytes.
    #[arg(long, env = "TRIBUTARY_MAX_BODY_BYTES", default_value_t = Config::default().max_body_bytes)]
    pub max_body_bytes: usize,

    /// Most bytes of an oversized body read and dropped so the client can
    /// read its 413 (past this, or 10 s, the connection is closed instead).
    #[arg(long, env = "TRIBUTARY_OVERSIZE_DRAIN_BYTES", default_value_t = Config::default().oversize_drain_bytes)]
    pub oversize_drain_bytes: usize,

    /// Largest request body after gzip decoding, in bytes (guards against zip bombs).
    #[arg(long, env = "TRIBUTARY_MAX_DECODED_BYTES", default_value_t = Config::default().max_decoded_bytes)]
    pub max_decoded_bytes: usize,

    /// Most readings in one request.
    #[arg(long, env = "TRIBUTARY_MAX_BATCH", default_value_t = Config::default().max_batch)]
    pub max_batch: usize,

    /// Sustained readings per second allowed per device.
    #[arg(long, env = "TRIBUTARY_DEVICE_RATE", default_value_t = Config::default().device_rate)]
    pub device_rate: f64,

    /// Readings a device may send in a burst above its rate (at least `max_batch`).
    #[arg(long, env = "TRIBUTARY_DEVICE_BURST", default_value_t = Config::default().device_burst)]
    pub device_burst: u32,

    /// Longest wait, in ms (fractions allowed), for more readings to share a
    /// produce request before it is sent. 0 sends at once when no request
    /// is in flight to the broker; under load readings still share requests,
    /// those that arrive while earlier ones are in flight. `linger.ms` in
    /// `TRIBUTARY_KAFKA_OPTIONS` overrides it.
    #[arg(long, env = "TRIBUTARY_LINGER_MS", default_value_t = Config::default().linger_ms)]
    pub linger_ms: f64,

    /// Seconds to flush the producer after the last request was answered at shutdown.
    #[arg(long, env = "TRIBUTARY_SHUTDOWN_GRACE_SECS", default_value_t = Config::default().shutdown_grace_secs)]
    pub shutdown_grace_secs: u64,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ListenArgs::default(),
            kafka: KafkaArgs::default(),
            topics: TopicArgs::default(),
            fleet_key: DEV_FLEET_KEY.into(),
            enrollment: EnrollmentMode::Open,
            token_max_ttl_secs: 7 * 86_400,
            max_body_bytes: 1 << 20,
            oversize_drain_bytes: 64 << 20,
            max_decoded_bytes: 8 << 20,
            max_batch: 1000,
            device_rate: 100.0,
            device_burst: 2000,
            // Measured with `scripts/bench ingest` (README): single readings
            // at 16 connections answered in 1.5 ms instead of 6.5 ms at 5 ms,
            // and as many readings/s at 256 connections.
            linger_ms: 0.0,
            shutdown_grace_secs: 20,
            log: LogArgs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default() {
        let mut parsed = Config::parse_from(["tributary-ingest"]);
        // Whoever runs the tests may set RUST_LOG; everything else must come from `Default`.
        parsed.log = LogArgs::default();
        assert_eq!(parsed, Config::default());
    }
}
