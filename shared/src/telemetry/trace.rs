//! Traces: OpenTelemetry spans exported over OTLP/HTTP, and the W3C trace
//! context carried from a device's request through every Kafka hop.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set and `OTEL_SDK_DISABLED` is not `true`. Then [`super::init`] adds a
//! `tracing-opentelemetry` layer for Tributary's own spans, and the SDK reads
//! the rest from its standard variables: `OTEL_SERVICE_NAME` (default: the
//! binary's name, `tributary-ingest`...), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default: parent-based, always on),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`.
//!
//! What it guarantees:
//! - Off, nothing is added to a request or a record and nothing is
//!   allocated for traces: every hook starts with one atomic load ([`enabled`]).
//! - On, the context of a *sampled* span travels as a `traceparent` header
//!   (with `tracestate` when there is one) on every record it produced; an
//!   unsampled or malformed context is dropped, never forwarded.
//! - Each consumer hop ([`consume_spans`]) opens one span per traced record,
//!   a child of the record's context, that ends when the handler's write is
//!   durable; the record's header is rewritten to that span, so outputs
//!   derived from the record (analyze's aggregates and alerts) continue the
//!   same trace one level down.
//! - Export never blocks a request or a batch: the SDK queues finished spans
//!   (2,048 by default, dropped beyond that) and sends them from its own
//!   thread through the process's reqwest client on its tokio runtime, so no
//!   second HTTP or TLS stack comes in.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::eventlog::Message;

/// The W3C header that carries a span's context, on HTTP requests and on records.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendors' trace state, forwarded with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Set once the OpenTelemetry layer is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why traces could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The OTLP exporter refused its configuration (an endpoint that is not a URL...).
    #[error("configuring the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The HTTP client for the exporter could not be built.
    #[error("building the OTLP exporter's HTTP client")]
    Client(#[source] reqwest::Error),
    /// Traces need a tokio runtime to send from.
    #[error("traces are on (OTEL_EXPORTER_OTLP_ENDPOINT) but telemetry was set up outside a tokio runtime")]
    NoRuntime,
}

/// Whether spans are exported (the OTLP layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment asks for traces.
pub(super) fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// A tracer provider exporting to the configured OTLP endpoint, named after
/// `default_service` unless `OTEL_SERVICE_NAME` says otherwise.
pub(super) fn provider(default_service: &str) -> Result<SdkTracerProvider, TraceError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(TraceError::Client)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(ExportClient { client, runtime })
        .build()
        .map_err(TraceError::Exporter)?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(default_service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The layer that turns Tributary's spans into OpenTelemetry spans.
pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + 'static
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    // Tributary's spans (and its events inside them, as span events), and
    // warnings and errors of any crate; not the libraries' spans (hyper,
    // sqlx...). A static filter, so what it refuses is decided once per
    // callsite: a dynamic one would make every disabled `debug!` cost a
    // check per call.
    let wanted = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("tributary", tracing::Level::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tributary"))
        .with_filter(wanted)
}

pub(super) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Make `span` a child of the context a device sent (`traceparent`), if it
/// sent a valid one; otherwise `span` starts a trace of its own.
pub fn set_parent_from_http(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HttpHeaders(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The headers that carry `span`'s context to the next hop: `traceparent`
/// (and `tracestate`), or nothing when traces are off or the span is not sampled.
pub fn context_headers(span: &tracing::Span) -> Vec<(String, Vec<u8>)> {
    if !enabled() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_sampled() {
        return Vec::new();
    }
    let mut headers = RecordHeaders(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    headers.0
}

/// The trace headers a record carries (`traceparent`, `tracestate`), for
/// records derived from it; `None` when traces are off or it carries no
/// sampled context.
pub fn carried(headers: &[(String, Vec<u8>)]) -> Option<Vec<(String, Vec<u8>)>> {
    if !enabled() {
        return None;
    }
    sampled_parent(headers)?;
    Some(
        headers
            .iter()
            .filter(|(k, _)| k == TRACEPARENT || k == TRACESTATE)
            .cloned()
            .collect(),
    )
}

/// The sampled context in a record's headers, if any.
fn sampled_parent(headers: &[(String, Vec<u8>)]) -> Option<Context> {
    if !headers.iter().any(|(k, _)| k == TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&RecordHeadersRef(headers));
    cx.span().span_context().is_sampled().then_some(cx)
}

/// One span per traced record of `batch` (in `group`), each a child of the
/// context its record carries; the record's headers are rewritten to carry
/// its span instead, so what the handler derives from it continues the
/// trace. The spans end when the returned vector is dropped: the runner
/// keeps it until the handler's write is durable. Empty when traces are off.
pub fn consume_spans(batch: &mut [Message], group: &str) -> Vec<tracing::Span> {
    if !enabled() {
        return Vec::new();
    }
    let mut spans = Vec::new();
    for m in batch.iter_mut() {
        let Some(parent) = sampled_parent(&m.headers) else {
            continue;
        };
        let span = tracing::info_span!(
            target: "tributary::consume",
            "consume",
            otel.name = %format_args!("{} process", m.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %m.topic,
            messaging.destination.partition.id = m.partition,
            messaging.kafka.offset = m.offset,
            messaging.consumer.group.name = group,
        );
        let _ = span.set_parent(parent);
        m.headers.retain(|(k, _)| k != TRACEPARENT && k != TRACESTATE);
        m.headers.extend(context_headers(&span));
        spans.push(span);
    }
    spans
}

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct RecordHeaders(Vec<(String, Vec<u8>)>);

impl Injector for RecordHeaders {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value.into_bytes()));
    }
}

struct RecordHeadersRef<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for RecordHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The exporter's HTTP client: the process's reqwest, run on its tokio
/// runtime. The SDK exports from a thread of its own, which has no reactor,
/// so each request is spawned onto the runtime and awaited through its handle.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: axum::http::Request<Bytes>) -> Result<axum::http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response.bytes().await?;
            let mut answer = axum::http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok::<_, HttpError>(answer)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn record_with(headers: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_sampled_traceparent_is_read_from_record_headers() {
        let headers = record_with(&[("source", "x"), (TRACEPARENT, PARENT)]);
        let cx = sampled_parent(&headers).expect("a sampled parent");
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn unsampled_malformed_and_missing_contexts_are_not_parents() {
        let unsampled = PARENT.replace("-01", "-00");
        assert!(sampled_parent(&record_with(&[(TRACEPARENT, &unsampled)])).is_none());
        assert!(sampled_parent(&record_with(&[(TRACEPARENT, "00-nothex-00f067aa0ba902b7-01")])).is_none());
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(sampled_parent(&record_with(&[(TRACEPARENT, zero)])).is_none());
        assert!(sampled_parent(&record_with(&[("source", "x")])).is_none());
    }

    #[test]
    fn off_nothing_is_carried_or_opened() {
        // Unit tests never install the layer: this is the default, off.
        assert!(!enabled());
        let mut batch = vec![Message {
            topic: "telemetry.raw".into(),
            partition: 0,
            offset: 7,
            key: None,
            value: Vec::new(),
            headers: record_with(&[(TRACEPARENT, PARENT)]),
            timestamp_ms: None,
        }];
        assert!(consume_spans(&mut batch, "g").is_empty());
        assert_eq!(batch[0].headers, record_with(&[(TRACEPARENT, PARENT)]));
        assert!(carried(&batch[0].headers).is_none());
        assert!(context_headers(&tracing::Span::current()).is_empty());
    }
}
