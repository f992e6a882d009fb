//! The HEC client against a local HTTP receiver that checks the HEC format
//! (auth header, gzip, concatenated event objects) and fails on demand.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tributary_shared::splunk::{HecClient, HecConfig, HecError, HecEvent};

#[derive(Default)]
struct Receiver {
    events: Vec<Value>,
    /// Statuses to answer before accepting, in order.
    fail_with: Vec<u16>,
    requests: usize,
    acked: bool,
}

type Shared = Arc<Mutex<Receiver>>;

async fn collect(State(st): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, String) {
    let mut r = st.lock().expect("lock");
    r.requests += 1;
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Splunk secret-token") {
        return (StatusCode::UNAUTHORIZED, r#"{"text":"Invalid token","code":4}"#.into());
    }
    if !r.fail_with.is_empty() {
        let s = r.fail_with.remove(0);
        return (
            StatusCode::from_u16(s).expect("status"),
            r#"{"text":"Server is busy","code":9}"#.into(),
        );
    }
    if headers.get("content-encoding").and_then(|v| v.to_str().ok()) != Some("gzip") {
        return (StatusCode::BAD_REQUEST, "expected gzip".into());
    }
    let mut raw = String::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut raw)
        .is_err()
    {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"text":"Invalid data format","code":6}"#.into(),
        );
    }
    let mut got = Vec::new();
    for v in serde_json::Deserializer::from_str(&raw).into_iter::<Value>() {
        let Ok(v) = v else {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"text":"Invalid data format","code":6}"#.into(),
            );
        };
        if v.get("event").is_none() || !v["time"].is_number() {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"text":"Event field is required","code":12}"#.into(),
            );
        }
        got.push(v);
    }
    r.events.extend(got);
    let ack = headers.contains_key("x-splunk-request-channel");
    (
        StatusCode::OK,
        if ack {
            r#"{"text":"Success","code":0,"ackId":7}"#.into()
        } else {
            r#"{"text":"Success","code":0}"#.into()
        },
    )
}

async fn ack(State(st): State<Shared>, body: axum::body::Bytes) -> (StatusCode, String) {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(v["acks"], json!([7]));
    let mut r = st.lock().expect("lock");
    // Not indexed on the first poll, indexed on the second.
    let done = r.acked;
    r.acked = true;
    (StatusCode::OK, json!({"acks": {"7": done}}).to_string())
}

async fn start(st: Shared) -> String {
    let app = Router::new()
        .route("/services/collector/event", post(collect))
        .route("/services/collector/ack", post(ack))
        .with_state(st);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn events(n: usize) -> Vec<HecEvent> {
    (0..n)
        .map(|i| HecEvent {
            time: 1_795_608_000.5 + i as f64,
            host: format!("dev-{i}"),
            source: "tributary:analyze".into(),
            sourcetype: "tributary:aggregate".into(),
            event: json!({"n": i}),
        })
        .collect()
}

fn cfg(url: String) -> HecConfig {
    HecConfig {
        initial_backoff: Duration::from_millis(10),
        ..HecConfig::new(url, "secret-token")
    }
}

#[tokio::test]
async fn sends_a_gzip_batch_in_hec_format() {
    let st: Shared = Arc::default();
    let c = HecClient::new(cfg(start(st.clone()).await)).expect("client");
    c.send(&events(50)).await.expect("accepted");
    let r = st.lock().expect("lock");
    assert_eq!(r.requests, 1, "one request per batch");
    assert_eq!(r.events.len(), 50);
    assert_eq!(r.events[3]["host"], "dev-3");
    assert_eq!(r.events[3]["event"]["n"], 3);
    assert_eq!(r.events[0]["time"], 1_795_608_000.5);
}

#[tokio::test]
async fn retries_throttling_and_server_errors_then_succeeds() {
    let st: Shared = Arc::new(Mutex::new(Receiver {
        fail_with: vec![503, 429, 500],
        ..Default::default()
    }));
    let c = HecClient::new(cfg(start(st.clone()).await)).expect("client");
    c.send(&events(5)).await.expect("accepted after retries");
    let r = st.lock().expect("lock");
    assert_eq!(r.requests, 4);
    assert_eq!(r.events.len(), 5, "delivered once");
}

#[tokio::test]
async fn gives_up_as_unavailable_after_the_attempts_and_rejects_bad_tokens() {
    let st: Shared = Arc::new(Mutex::new(Receiver {
        fail_with: vec![503; 10],
        ..Default::default()
    }));
    let url = start(st.clone()).await;
    let c = HecClient::new(HecConfig {
        max_attempts: 3,
        ..cfg(url.clone())
    })
    .expect("client");
    assert!(matches!(c.send(&events(1)).await, Err(HecError::Unavailable(_))));
    assert_eq!(st.lock().expect("lock").requests, 3);

    let bad = HecClient::new(HecConfig {
        initial_backoff: Duration::from_millis(10),
        ..HecConfig::new(url, "wrong")
    })
    .expect("client");
    match bad.send(&events(1)).await {
        Err(HecError::Rejected { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn waits_for_the_indexer_acknowledgement() {
    let st: Shared = Arc::default();
    let c = HecClient::new(HecConfig {
        ack_channel: Some("0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba".into()),
        ..cfg(start(st.clone()).await)
    })
    .expect("client");
    c.send(&events(2)).await.expect("indexed");
    assert!(
        st.lock().expect("lock").acked,
        "the ack endpoint was polled until indexed"
    );
}

#[tokio::test]
async fn an_unreachable_collector_is_unavailable_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let c = HecClient::new(HecConfig {
        max_attempts: 2,
        ..cfg(format!("http://127.0.0.1:{port}"))
    })
    .expect("client");
    assert!(matches!(c.send(&events(1)).await, Err(HecError::Unavailable(_))));
}
