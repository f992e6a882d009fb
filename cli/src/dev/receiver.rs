//! The webhook receiver `tributary dev` starts so a notification channel
//! works with no setup: channel `dev-console` (generic format, a fresh
//! secret each start) points at it, and each delivery it gets is checked
//! (signature, replay window) and printed as one line:
//! `  notified: [CRITICAL] freezer-7 · temperature = -4.5 (opened): …`.
//! A delivery whose signature does not verify is answered 401 and printed
//! as such, so the line is also a live check of what real receivers get.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tributary_shared::notify::sign::{HEADER, REPLAY_WINDOW_SECS, verify};
use tributary_shared::records::Alert;
use tributary_shared::service::Shutdown;

async fn receive(State(secret): State<String>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signed = headers.get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(e) = verify(
        &secret,
        signed,
        &body,
        chrono::Utc::now().timestamp(),
        REPLAY_WINDOW_SECS,
    ) {
        println!("  notified: refused a delivery: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let alert = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value::<Alert>(v["alert"].clone()).ok());
    match alert {
        Some(a) => println!("  notified: {}", tributary_shared::notify::format::headline(&a)),
        None => println!("  notified: a delivery that is not an alert"),
    }
    StatusCode::NO_CONTENT
}

/// Serve the receiver on an ephemeral local port until `stop`; its URL.
pub async fn start(secret: String, stop: Shutdown) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/notify", axum::routing::post(receive))
        .with_state(secret);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
    });
    Ok(format!("http://{addr}/notify"))
}
