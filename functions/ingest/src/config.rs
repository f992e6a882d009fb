//! The ingest function's settings: [`Config::default`] works on a laptop;
//! the binary's flags and environment variables override it field by field.

use clap::Parser;
use tributary_shared::config::{KafkaArgs, ListenArgs, LogArgs, TopicArgs};
use tributary_shared::registry::view::EnrollmentMode;

/// The built-in development fleet key: public (it is in this source), so
/// the binary uses it only when told to (`--insecure-dev-fleet-key`), and
/// logs a warning when it does.
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
    /// Required: without it (or with the public development key) ingest
    /// refuses to start unless `--insecure-dev-fleet-key` is given.
    #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, default_value = "")]
    pub fleet_key: String,

    /// Accept devices signed with the built-in, public development fleet key
    /// when no fleet key is set: for a laptop, never for a deployment.
    #[arg(long, env = "TRIBUTARY_INSECURE_DEV_FLEET_KEY")]
    pub insecure_dev_fleet_key: bool,

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
            // In-process use (`tributary dev`, tests, benches) is a laptop's;
            // the binary's flags start from an empty key and no permission.
            fleet_key: DEV_FLEET_KEY.into(),
            insecure_dev_fleet_key: true,
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

/// Why ingest will not start with the fleet key it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FleetKeyError {
    /// No key, and no permission to use the development one.
    #[error(
        "no fleet key: set TRIBUTARY_FLEET_KEY (the secret device keys derive from), or pass --insecure-dev-fleet-key \
         (TRIBUTARY_INSECURE_DEV_FLEET_KEY=true) to accept the public development key on a laptop"
    )]
    Missing,
    /// The public development key, without permission to use it.
    #[error(
        "TRIBUTARY_FLEET_KEY is the public development key: set a secret of your own, or pass --insecure-dev-fleet-key on a laptop"
    )]
    Public,
}

impl Config {
    /// The fleet key to verify tokens with: the one configured, or the
    /// development key when allowed; never a public key by accident.
    pub fn effective_fleet_key(&self) -> Result<&str, FleetKeyError> {
        match (self.fleet_key.as_str(), self.insecure_dev_fleet_key) {
            ("", true) => Ok(DEV_FLEET_KEY),
            ("", false) => Err(FleetKeyError::Missing),
            (DEV_FLEET_KEY, false) => Err(FleetKeyError::Public),
            (key, _) => Ok(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_config_default_but_the_fleet_key() {
        let mut parsed = Config::parse_from(["tributary-ingest"]);
        // Whoever runs the tests may set RUST_LOG and the fleet key settings;
        // everything else must come from `Default`.
        parsed.log = LogArgs::default();
        let (key, insecure) = (parsed.fleet_key.clone(), parsed.insecure_dev_fleet_key);
        parsed.fleet_key = DEV_FLEET_KEY.into();
        parsed.insecure_dev_fleet_key = true;
        assert_eq!(parsed, Config::default());
        if std::env::var_os("TRIBUTARY_FLEET_KEY").is_none()
            && std::env::var_os("TRIBUTARY_INSECURE_DEV_FLEET_KEY").is_none()
        {
            assert_eq!(
                (key.as_str(), insecure),
                ("", false),
                "the binary starts with no key and no permission"
            );
        }
    }

    #[test]
    fn the_binary_needs_a_key_of_its_own_or_the_development_flag() {
        let with = |key: &str, insecure: bool| Config {
            fleet_key: key.into(),
            insecure_dev_fleet_key: insecure,
            ..Config::default()
        };
        assert_eq!(with("", false).effective_fleet_key(), Err(FleetKeyError::Missing));
        assert_eq!(
            with(DEV_FLEET_KEY, false).effective_fleet_key(),
            Err(FleetKeyError::Public)
        );
        assert_eq!(with("", true).effective_fleet_key(), Ok(DEV_FLEET_KEY));
        assert_eq!(with("s3cret", false).effective_fleet_key(), Ok("s3cret"));
        assert_eq!(
            with("s3cret", true).effective_fleet_key(),
            Ok("s3cret"),
            "a key set wins over the flag"
        );
        let parsed = Config::try_parse_from(["tributary-ingest", "--insecure-dev-fleet-key"]).expect("flag");
        assert!(parsed.insecure_dev_fleet_key);
    }
}
