//! Serving a router over HTTP/1.1 on a TCP listener, until a stop signal,
//! then finishing what is in flight.
//!
//! Guarantees: every accepted connection is served until the client closes
//! it, or until stop, when each connection answers the request it is
//! reading or handling and then closes; [`serve`] returns once every
//! connection has closed. An error accepting one connection (a client that
//! went away, too many open files) never stops the server.
//!
//! Why not `axum::serve`: it detects HTTP/2 on every connection, and that
//! costs memory for as long as a connection is open: a hello-world server
//! measured 31.6 KB per open keep-alive connection with it and 19.3 KB with
//! hyper's HTTP/1.1 connection alone (5,000 connections, one request each).
//! A fleet keeps thousands of connections open, and everything that talks
//! to a function (devices, API Management, the KEDA interceptor, App
//! Service's front end, the probes) speaks HTTP/1.1 to it.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serve `router` on `listener` until `stop` resolves, then let open
/// connections finish their current request and wait until all are closed.
pub async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    let connections = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Answers are small and written at once; Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "an HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// After a failed accept: a connection the client dropped before it was
/// accepted is nothing; anything else (out of file descriptors, say) is
/// logged and waited out for a moment, as it will not clear at once.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    use super::*;

    async fn answer(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if n == 0 || text.ends_with("done") || text.ends_with("fast") {
                return text;
            }
        }
    }

    #[tokio::test]
    async fn a_stop_finishes_the_request_in_flight_closes_idle_connections_and_refuses_new_ones() {
        let release = Arc::new(Notify::new());
        let started = Arc::new(Notify::new());
        let (r, s) = (release.clone(), started.clone());
        let router = Router::new().route("/fast", get(|| async { "fast" })).route(
            "/slow",
            get(move || async move {
                s.notify_one();
                r.notified().await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let server = tokio::spawn(serve(listener, router, async move { stopped.notified().await }));

        // An idle keep-alive connection, after one answer.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(answer(&mut idle).await.starts_with("HTTP/1.1 200"));
        // A request in flight when the stop comes.
        let mut busy = TcpStream::connect(addr).await.expect("connect");
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        started.notified().await;

        stop.notify_one();
        // The idle connection is closed without an answer.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
            .await
            .expect("the idle connection is closed at stop")
            .expect("read");
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
        // The server waits for the request in flight, which is answered.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "returned with a request in flight");
        release.notify_one();
        let text = answer(&mut busy).await;
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("done"), "{text}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once every connection closed")
            .expect("join");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after stop");
    }
}
