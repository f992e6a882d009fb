//! Logging, traces and metrics setup.
//!
//! Logs go to stdout through `tracing-subscriber`, as JSON by default (one
//! object per line with key/value fields; errors in a field named `error`,
//! with their causes: [`ErrorChain`]). Traces go over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and are off otherwise ([`trace`]).
//! Metrics live in a [`MetricsRegistry`] that [`crate::service`] serves on
//! `/metrics`; names follow `tributary_<thing>_<unit>_total` and labels stay
//! low-cardinality (never a device id).
//!
//! # Layout
//! - this file: [`init`] and its [`TelemetryGuard`], [`ErrorChain`], [`MetricsRegistry`];
//! - [`trace`]: the OTLP exporter and the W3C context on requests and records.

pub mod trace;

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Keeps traces flowing; dropping it sends the spans still queued (at most
/// the exporter's timeout), so a function's last spans are not lost at a clean stop.
#[must_use = "dropping the guard stops the trace exporter"]
#[derive(Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "sending the last spans at stop failed");
        }
    }
}

/// Install the global subscriber: logs filtered by `filter` in `format`,
/// and the OTLP trace layer when the environment asks for it (spans of
/// `service`, unless `OTEL_SERVICE_NAME` names another). Safe to call twice
/// (the second call changes nothing), so tests and the all-in-one mode can
/// share it. Fails only when traces are asked for and cannot be set up.
pub fn init(filter: &str, format: LogFormat, service: &str) -> Result<TelemetryGuard, trace::TraceError> {
    // One global filter, as before traces: what it refuses is decided once per
    // callsite. (An `Option` layer left `None` would make every callsite
    // "always" interesting, and each disabled `debug!` a check per call.)
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_target(true);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => logs.compact().boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(logs);
    if !trace::configured() {
        let _ = subscriber.try_init();
        return Ok(TelemetryGuard::default());
    }
    let provider = trace::provider(service)?;
    if subscriber.with(trace::layer(&provider)).try_init().is_err() {
        // Another subscriber is installed (a second call): keep it, export nothing.
        let _ = provider.shutdown();
        return Ok(TelemetryGuard::default());
    }
    trace::set_enabled();
    tracing::info!(service, "exporting traces over OTLP");
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// This binary's name (`tributary-ingest`...): the service name spans carry by default.
pub fn binary_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "tributary".to_owned())
}

/// An error with its causes, `outer: cause: root cause`: what a log line's
/// `error` field shows (`error = %ErrorChain(&e)`).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// A Prometheus registry shared by the functions of one process: each
/// registers its metrics when it starts, and the ops endpoints encode the
/// whole registry on every scrape. Clones share it.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<RwLock<Registry>>);

impl MetricsRegistry {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register metrics with `register` (a function's `Metrics::new`) and return them.
    pub fn register<M>(&self, register: impl FnOnce(&mut Registry) -> M) -> M {
        let mut registry = self.0.write().unwrap_or_else(|e| e.into_inner());
        register(&mut registry)
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let registry = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry)?;
        Ok(body)
    }

    /// The value of the sample `name` (with its `_total` suffix for
    /// counters) whose labels include `label` (`key="value"`), summed over
    /// the matching series; 0 when there is none. For status lines that show
    /// what `/metrics` shows.
    pub fn sample(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let Ok(text) = self.encode() else { return 0.0 };
        let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
        text.lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, labels) = match series.split_once('{') {
                    Some((m, l)) => (m, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                let matches = metric == name && wanted.as_deref().is_none_or(|w| labels.split(',').any(|l| l == w));
                if matches { value.parse::<f64>().ok() } else { None }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Outcome {
        outcome: &'static str,
        status: u16,
    }

    #[test]
    fn samples_are_read_back_by_name_and_label() {
        let registry = MetricsRegistry::new();
        let (family, plain) = registry.register(|r| {
            let family = Family::<Outcome, Counter>::default();
            let plain = Counter::<u64>::default();
            r.register("t_readings", "readings", family.clone());
            r.register("t_batches", "batches", plain.clone());
            (family, plain)
        });
        family
            .get_or_create(&Outcome {
                outcome: "accepted",
                status: 202,
            })
            .inc_by(5);
        family
            .get_or_create(&Outcome {
                outcome: "accepted",
                status: 207,
            })
            .inc_by(2);
        family
            .get_or_create(&Outcome {
                outcome: "rejected",
                status: 422,
            })
            .inc_by(3);
        plain.inc_by(4);
        assert_eq!(registry.sample("t_readings_total", Some(("outcome", "accepted"))), 7.0);
        assert_eq!(registry.sample("t_readings_total", Some(("outcome", "rejected"))), 3.0);
        assert_eq!(registry.sample("t_readings_total", None), 10.0);
        assert_eq!(registry.sample("t_batches_total", None), 4.0);
        assert_eq!(registry.sample("t_missing_total", None), 0.0);
        assert!(registry.encode().expect("encode").contains("# TYPE t_batches counter"));
    }

    #[test]
    fn an_error_chain_shows_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("joining the group")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("broker down"));
        assert_eq!(ErrorChain(&e).to_string(), "joining the group: broker down");
    }
}
