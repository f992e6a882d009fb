//! Reading a request body within the size limit, and refusing one over it
//! so that every client reads the 413.
//!
//! Answering early and closing while a client is still sending leaves
//! unread bytes at the close, and the kernel then resets the connection. A
//! client that sends its whole body before it reads the answer (Python's
//! `urllib`, many device HTTP stacks) sees that reset instead of the 413, and
//! a device that retries on network errors resends the same oversized batch
//! for ever, when the 413's message would have told it to split the batch.
//! So the rest of an oversized body is read and dropped before the answer,
//! within [`DrainLimits`] (bytes and time). Past those, the 413 goes out with
//! `Connection: close`: a client sending that much more, or that slowly, is
//! not a device with a batch a little too big.
//!
//! Only a device that authenticated gets this courtesy: the handler checks
//! the token first, and answers anyone else 401 without reading the body.
//!
//! A client that sent `Expect: 100-continue` has not sent its body yet and
//! waits for an answer: it gets the 413 at once, and its body is never asked
//! for (reading it would tell the client to go on).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// How much of an oversized body is read and dropped so the client can read
/// its 413 (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainLimits {
    /// Most bytes read past the limit.
    pub max_bytes: usize,
    /// Longest time spent reading them.
    pub max_time: Duration,
}

impl Default for DrainLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_time: Duration::from_secs(10),
        }
    }
}

/// The body as bytes if it is at most `limit` long. Over it, the rest is
/// drained and the 413 is the error, with `Connection: close` when the
/// drain stopped short. A body that breaks off is a 400.
pub async fn read_limited(body: Body, limit: usize, drain: DrainLimits) -> Result<Bytes, Refusal> {
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::from(ApiError::BadRequest("could not read the request body".into())))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > limit {
            let read = buf.len() + data.len();
            drop(buf);
            return Err(too_large(limit, Some(body), read, drain).await);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// The 413 for a request whose declared `Content-Length` is over `limit`,
/// after draining its body unless the client waits for a go-ahead.
pub async fn refuse_declared(headers: &HeaderMap, body: Body, limit: usize, drain: DrainLimits) -> Refusal {
    let waits_for_go_ahead = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    // Reading only to give up half-way gains nothing: close at once.
    let body = (!waits_for_go_ahead && declared <= drain.max_bytes).then_some(body);
    too_large(limit, body, 0, drain).await
}

/// A refused request: the error, and whether the connection must close
/// because part of the body is still unread.
#[derive(Debug)]
pub struct Refusal {
    /// Why.
    pub error: ApiError,
    /// Unread body bytes may follow: the connection cannot be reused.
    pub close: bool,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self { error, close: false }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = self.error.into_response();
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Drain what is left of `body` (`None`: do not read it) within `drain`,
/// `read` bytes having been read already, and build the 413.
async fn too_large(limit: usize, body: Option<Body>, read: usize, drain: DrainLimits) -> Refusal {
    let drained = match body {
        Some(body) => tokio::time::timeout(drain.max_time, drain_all(body, read, drain.max_bytes))
            .await
            .unwrap_or(false),
        None => false,
    };
    tracing::debug!(limit, drained, "refusing an oversized body");
    Refusal {
        error: ApiError::PayloadTooLarge(format!(
            "body exceeds {limit} bytes; split the batch into smaller requests"
        )),
        close: !drained,
    }
}

/// Read `body` to its end, dropping it; false if it breaks off or runs past
/// `max_bytes` in all.
async fn drain_all(mut body: Body, mut read: usize, max_bytes: usize) -> bool {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Ok(data) = frame.into_data() {
            read += data.len();
            if read > max_bytes {
                return false;
            }
        }
    }
    true
}
