//! The load generator of `bench ingest`: a minimal HTTP/1.1 client on plain
//! sockets, so that the bench spends a few µs of CPU per request of its own
//! and ingest, not the client, is what the figures measure.
//!
//! Guarantees: every request is built before the clock starts (request line,
//! headers and body as one buffer, written with one call); each connection
//! has one request in flight, as a device waiting for its answer has; an
//! answer counts as accepted only when its status is 2xx and its whole body
//! (by `Content-Length`) was read; a broken connection is counted as an
//! error, and is reopened, never retried silently. All connections run on
//! one thread (a current-thread runtime), so the client can take at most
//! one of the machine's cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a simulated device uses its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Connection {
    /// One connection per device, kept open between readings (pooled
    /// gateways, API Management, the KEDA interceptor).
    KeepAlive,
    /// A new connection for every request, closed after the answer, as a
    /// device that sleeps between readings does.
    PerRequest,
}

/// One complete HTTP/1.1 `POST` (request line, headers, body), ready to write.
pub fn post(addr: SocketAddr, path: &str, authorization: &str, body: &[u8], connection: Connection) -> Vec<u8> {
    let close = match connection {
        Connection::KeepAlive => "",
        Connection::PerRequest => "Connection: close\r\n",
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// What to send: per simulated device, the requests it cycles through.
pub struct Plan {
    /// Where ingest listens.
    pub addr: SocketAddr,
    /// One entry per device (and connection); each cycles through its requests.
    pub requests: Vec<Vec<Vec<u8>>>,
    /// How devices use connections.
    pub connection: Connection,
    /// `None`: the next request as soon as the answer came (closed loop);
    /// `Some(i)`: one request per device every `i`, spread over the interval.
    pub interval: Option<Duration>,
    /// How long the load lasts once every device is connected.
    pub duration: Duration,
}

/// What the load saw.
pub struct Outcome {
    /// Requests answered 2xx.
    pub accepted: u64,
    /// Requests answered with another status.
    pub refused: u64,
    /// Connections that failed (connect, write, read or a malformed answer).
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Latency of the 2xx answers, in µs (connect included per request).
    pub latency_us: Histogram<u64>,
    /// Wall time from the start of the load to its end.
    pub elapsed: Duration,
}

/// Counters the connections share (one thread, so the lock is never contended).
struct Shared {
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl Shared {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Run `plan` on a thread of its own. With keep-alive connections, every
/// device connects and sends its first request before the clock starts,
/// half of them first: `when_connected(open)` is called with the number of
/// connections open after each half (to read the server's memory), and the
/// timed load begins after the last call.
pub fn drive(plan: Plan, when_connected: impl FnMut(usize) + Send + 'static) -> anyhow::Result<Outcome> {
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("the load generator's runtime")?
                .block_on(drive_on_this_thread(plan, when_connected))
        })
        .context("starting the load generator's thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator's thread panicked"))?
}

async fn drive_on_this_thread(plan: Plan, mut when_connected: impl FnMut(usize)) -> anyhow::Result<Outcome> {
    let shared = Arc::new(Shared {
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?),
    });
    let Plan {
        addr,
        requests,
        connection,
        interval,
        duration,
    } = plan;

    // Connect every keep-alive device first (a bounded number at a time, so
    // the listen backlog is not overrun), each sending one request; in two
    // halves, so the server's memory can be read at half and at all open.
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(requests.len());
    if connection == Connection::KeepAlive {
        let half = requests.len() / 2;
        for part in [&requests[..half], &requests[half..]] {
            let opened = futures::stream::iter(part.iter().map(|reqs| {
                let shared = shared.clone();
                let first = reqs.first().cloned().unwrap_or_default();
                async move {
                    let mut conn = Conn::open(addr)
                        .await
                        .map_err(|e| shared.error(format!("connect: {e}")))
                        .ok()?;
                    match conn.exchange(&first).await {
                        Ok(_) => Some(conn),
                        Err(e) => {
                            shared.error(e);
                            None
                        }
                    }
                }
            }))
            .buffered(256);
            conns.extend(opened.collect::<Vec<_>>().await);
            when_connected(conns.iter().flatten().count());
        }
    } else {
        conns.resize_with(requests.len(), || None);
        when_connected(0);
    }

    let started = Instant::now();
    let deadline = started + duration;
    let devices = requests.len().max(1) as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, (reqs, conn)) in requests.into_iter().zip(conns).enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut ticks = interval.map(|i| {
                // Devices start spread over the interval, not all at once; a
                // late tick is caught up (Burst), so the offered rate holds
                // even when this thread falls behind for a moment.
                let offset = i * (w as u32 % devices) / devices;
                let mut t = tokio::time::interval_at(tokio::time::Instant::from_std(started) + offset, i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut conn = conn;
            let mut k = 0usize;
            while Instant::now() < deadline {
                if let Some(t) = ticks.as_mut() {
                    // A tick due after the end is not waited for (the load would seem longer).
                    let end = tokio::time::Instant::from_std(deadline);
                    if tokio::time::timeout_at(end, t.tick()).await.is_err() {
                        break;
                    }
                }
                let req = &reqs[k % reqs.len()];
                k += 1;
                let t0 = Instant::now();
                let answer = async {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => Conn::open(addr).await.context("connect")?,
                    };
                    let a = c.exchange(req).await?;
                    if connection == Connection::KeepAlive && !a.close {
                        conn = Some(c);
                    }
                    anyhow::Ok(a)
                }
                .await;
                match answer {
                    Ok(a) if (200..300).contains(&a.status) => {
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = shared.latency_us.lock() {
                            let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                        }
                    }
                    Ok(_) => {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.error(format!("{e:#}"));
                        // Do not spin on a server that refuses connections.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            // Read before `conn` is dropped: closing thousands of sockets on
            // this thread takes a while and is not part of the load.
            Instant::now()
        });
    }
    let mut ended = started;
    while let Some(end) = tasks.join_next().await {
        ended = ended.max(end.context("a connection's task")?);
    }
    let elapsed = ended - started;
    let first_error = shared.first_error.lock().ok().and_then(|mut f| f.take());
    let latency_us = shared
        .latency_us
        .lock()
        .map(|h| h.clone())
        .map_err(|_| anyhow::anyhow!("latency histogram lock poisoned"))?;
    Ok(Outcome {
        accepted: shared.accepted.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        latency_us,
        elapsed,
    })
}

/// An answer's status, and whether the server closes the connection after it.
struct Answer {
    status: u16,
    close: bool,
}

/// One open connection and the buffer its answers are read into.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Write `request` and read its whole answer.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        self.stream.write_all(request).await.context("write")?;
        self.buf.clear();
        loop {
            if let Some((head, answer, body_len)) = parse_head(&self.buf)?
                && self.buf.len() >= head + body_len
            {
                return Ok(answer);
            }
            if self.stream.read_buf(&mut self.buf).await.context("read")? == 0 {
                anyhow::bail!("the server closed the connection before its answer was complete");
            }
        }
    }
}

/// The head of an answer in `buf`, once complete: its length, the answer,
/// and the body length it declares.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(usize, Answer, usize)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).context("malformed answer")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut body_len = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            anyhow::bail!("a chunked answer (the bench's client reads Content-Length bodies only)");
        }
    }
    let status = resp.code.unwrap_or(0);
    Ok(Some((
        head,
        Answer { status, close },
        body_len.context("an answer without Content-Length")?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts device `a` (202) and refuses everyone else
    /// (422), as ingest would, with hyper's own connection handling.
    async fn server() -> SocketAddr {
        use axum::http::{HeaderMap, StatusCode};
        let app = axum::Router::new().route(
            "/v1/telemetry",
            axum::routing::post(|h: HeaderMap, body: String| async move {
                let ok = h.get("authorization").is_some_and(|v| v == "a") && body == "{}";
                if ok {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn plan(addr: SocketAddr, connection: Connection, interval: Option<Duration>) -> Plan {
        let req = |auth: &str| vec![post(addr, "/v1/telemetry", auth, b"{}", connection)];
        Plan {
            addr,
            requests: vec![req("a"), req("a"), req("b")],
            connection,
            interval,
            duration: Duration::from_millis(600),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_counted_by_status_on_both_kinds_of_connection() {
        let addr = server().await;
        for connection in [Connection::KeepAlive, Connection::PerRequest] {
            let o = tokio::task::spawn_blocking(move || drive(plan(addr, connection, None), |_| {}))
                .await
                .expect("join")
                .expect("drive");
            assert_eq!(o.errors, 0, "{connection:?}: {:?}", o.first_error);
            assert!(
                o.accepted > 0 && o.refused > 0,
                "{connection:?}: {} / {}",
                o.accepted,
                o.refused
            );
            // Two of the three devices are accepted; each has one request in flight.
            assert!(o.accepted > o.refused, "{connection:?}: {} / {}", o.accepted, o.refused);
            assert_eq!(o.latency_us.len(), o.accepted);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paced_device_sends_at_most_once_per_interval() {
        let addr = server().await;
        let connected = Arc::new(Mutex::new(Vec::new()));
        let seen = connected.clone();
        let o = tokio::task::spawn_blocking(move || {
            drive(
                plan(addr, Connection::KeepAlive, Some(Duration::from_millis(100))),
                move |open| {
                    seen.lock().expect("lock").push(open);
                },
            )
        })
        .await
        .expect("join")
        .expect("drive");
        assert_eq!(
            *connected.lock().expect("lock"),
            [1, 3],
            "called after each half is open"
        );
        // 600 ms at one request per 100 ms: at most 6 ticks (7 with the first at 0) per device.
        assert!(o.accepted + o.refused <= 3 * 7, "{} requests", o.accepted + o.refused);
        assert!(o.accepted >= 2 && o.refused >= 1);
        assert_eq!(o.errors, 0, "{:?}", o.first_error);
    }

    #[test]
    fn a_head_is_complete_only_with_its_blank_line_and_declares_its_body() {
        assert!(
            parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n")
                .expect("partial")
                .is_none()
        );
        let (head, a, len) =
            parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{\"a\"")
                .expect("parses")
                .expect("complete");
        assert_eq!((head, a.status, a.close, len), (63, 202, true, 5));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn a_request_declares_its_body_and_closes_only_per_request() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let keep = String::from_utf8(post(addr, "/v1/telemetry", "t", b"{}", Connection::KeepAlive)).expect("utf8");
        assert!(keep.ends_with("Content-Length: 2\r\n\r\n{}"), "{keep}");
        assert!(!keep.contains("Connection: close"));
        let close = String::from_utf8(post(addr, "/v1/telemetry", "t", b"{}", Connection::PerRequest)).expect("utf8");
        assert!(close.contains("Connection: close\r\n"));
    }
}
