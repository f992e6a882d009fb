//! Logging and metrics setup.
//!
//! Logs go to stdout through `tracing-subscriber`, as JSON by default (one
//! object per line with key/value fields; errors in a field named `error`).
//! Metrics live in a `prometheus-client` registry that [`crate::ops`] serves
//! on `/metrics`; names follow `tributary_<thing>_<unit>_total` and labels stay
//! low-cardinality (never a device id).

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Install the global subscriber. Safe to call twice (the second call is a no-op),
/// so tests and the all-in-one mode can share it.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
