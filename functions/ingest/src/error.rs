//! The errors of ingest: [`ApiError`], why a request was refused, with its
//! HTTP answer (bodies are JSON `{"error": {"code": "...", "message": "..."}}`;
//! messages describe the request, never the server's internals), and
//! [`Error`], why [`crate::run`] could not start or stopped.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tributary_shared::registry::view::Refusal;

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read as the declared format.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials (a token of a rotated key among them).
    #[error("{0}")]
    Unauthorized(String),
    /// The registry refuses the device: disabled, or unknown where only
    /// registered devices may send. Sending again will not help.
    #[error("{0}")]
    DeviceRefused(Refusal),
    /// Too many bytes or readings.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Unsupported Content-Type or Content-Encoding.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The device exceeded its rate; retry after the duration.
    #[error("rate limit exceeded for device '{device}'")]
    RateLimited {
        /// The device.
        device: String,
        /// How long until enough budget has built up.
        retry_after: Duration,
    },
    /// The event log cannot take records now; retry after the duration.
    #[error("{0}")]
    Unavailable(String),
}

/// Why ingest could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable fleet key is configured.
    #[error(transparent)]
    FleetKey(#[from] crate::config::FleetKeyError),
    /// The Kafka client could not be created from the settings.
    #[error("connecting to the event log")]
    EventLog(#[source] tributary_shared::eventlog::EventLogError),
    /// The thread that follows the device registry could not start.
    #[error("starting the device registry's follower")]
    Follower(#[source] std::io::Error),
    /// Binding, serving or the Lambda runtime failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::DeviceRefused(r)
    }
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::DeviceRefused(Refusal::Disabled(_)) => (StatusCode::FORBIDDEN, "device_disabled"),
            Self::DeviceRefused(Refusal::Unknown(_)) => (StatusCode::FORBIDDEN, "device_unknown"),
            Self::DeviceRefused(Refusal::StaleKey { .. }) => (StatusCode::UNAUTHORIZED, "key_rotated"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

/// `Retry-After` in whole seconds, at least one.
pub fn retry_after(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs_f64().ceil().max(1.0) as u64)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut resp = (
            status,
            Json(json!({"error": {"code": code, "message": self.to_string()}})),
        )
            .into_response();
        match &self {
            Self::RateLimited { retry_after: d, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, retry_after(*d));
            }
            Self::Unavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(Duration::from_secs(1)));
            }
            Self::Unauthorized(_) | Self::DeviceRefused(Refusal::StaleKey { .. }) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("SharedAccessSignature"),
                );
            }
            _ => {}
        }
        resp
    }
}
