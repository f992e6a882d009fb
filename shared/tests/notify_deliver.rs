//! Deliveries against a real local HTTP receiver that checks every
//! signature and can be down, refuse, or be slow on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{TimeZone, Utc};
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::deliver::{Deliverer, Outcome};
use tributary_shared::notify::sign::{HEADER, IDEMPOTENCY_HEADER, REPLAY_WINDOW_SECS, verify};
use tributary_shared::notify::{Channel, ChannelSpec, Format};
use tributary_shared::records::{Alert, AlertState};
use tributary_shared::rules::Severity;
use tributary_shared::service::Shutdown;

const SECRET: &str = "receiver-test-secret-0123";

#[derive(Default)]
struct Receiver {
    /// Answer 503 until then.
    down_until: Option<Instant>,
    /// Answer this instead of 200.
    refuse: Option<u16>,
    /// Requests seen, by answer.
    answered: Vec<u16>,
    /// Accepted bodies, by idempotency key.
    accepted: HashMap<String, Vec<serde_json::Value>>,
    bad_signatures: usize,
}

async fn receive(State(r): State<Arc<Mutex<Receiver>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
    let signed = headers.get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if verify(SECRET, signed, &body, Utc::now().timestamp(), REPLAY_WINDOW_SECS).is_err() {
        r.bad_signatures += 1;
        r.answered.push(401);
        return StatusCode::UNAUTHORIZED;
    }
    let status = match (r.down_until, r.refuse) {
        (Some(t), _) if Instant::now() < t => 503,
        (_, Some(code)) => code,
        _ => 200,
    };
    r.answered.push(status);
    if status == 200 {
        let key = headers
            .get(IDEMPOTENCY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        r.accepted
            .entry(key)
            .or_default()
            .push(serde_json::from_slice(&body).unwrap_or_default());
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn start_receiver() -> (SocketAddr, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

fn channel(url: String) -> Channel {
    Channel {
        id: "ops".into(),
        spec: ChannelSpec {
            url,
            format: Format::Generic,
            secret: Some(SECRET.into()),
            groups: vec![],
            min_severity: Severity::Info,
            enabled: true,
        },
    }
}

fn alert() -> Alert {
    let t = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
    Alert {
        id: "a1".into(),
        device_id: "freezer-7".into(),
        metric: "temperature".into(),
        model: "threshold".into(),
        score: 1.0,
        value: -4.5,
        reason: "rule 'freezer-warm' (temperature > -10) holds (value -4.5)".into(),
        severity: Severity::Critical,
        state: AlertState::Opened,
        opened_at: t,
        updated_at: t,
    }
}

fn quick(give_up_after: Duration) -> Deliverer {
    Deliverer::new(
        Backoff {
            first: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            give_up_after,
        },
        Duration::from_secs(2),
    )
    .expect("client")
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_the_record_once_signed() {
    let (addr, r) = start_receiver().await;
    r.lock().expect("lock").down_until = Some(Instant::now() + Duration::from_millis(700));
    let outcome = quick(Duration::from_secs(10))
        .deliver(
            &channel(format!("http://{addr}/hook")),
            &alert(),
            "freezers",
            &Shutdown::new(),
        )
        .await;
    let r = r.lock().expect("lock");
    let Outcome::Delivered { attempts } = outcome else {
        panic!("not delivered: {outcome:?}");
    };
    assert!(attempts > 2, "it was retried through the outage: {attempts} attempts");
    assert_eq!(r.answered.iter().filter(|s| **s == 503).count() as u32, attempts - 1);
    assert_eq!(r.bad_signatures, 0, "every attempt is signed for its own time");
    assert_eq!(r.accepted.len(), 1);
    let (key, bodies) = r.accepted.iter().next().expect("one");
    assert_eq!((key.as_str(), bodies.len()), ("a1.opened.1800000000000", 1));
    assert_eq!(bodies[0]["alert"]["severity"], "critical");
    assert_eq!(bodies[0]["group"], "freezers");
}

#[tokio::test]
async fn a_refusal_is_final_and_an_unreachable_receiver_is_given_up_on() {
    let (addr, r) = start_receiver().await;
    r.lock().expect("lock").refuse = Some(422);
    let d = quick(Duration::from_secs(10));
    let outcome = d
        .deliver(&channel(format!("http://{addr}/hook")), &alert(), "g", &Shutdown::new())
        .await;
    assert!(
        matches!(
            &outcome,
            Outcome::Refused {
                attempts: 1,
                status: 422,
                ..
            }
        ),
        "{outcome:?}"
    );
    // 429 is retried, not refused.
    r.lock().expect("lock").refuse = Some(429);
    let outcome = quick(Duration::from_millis(300))
        .deliver(&channel(format!("http://{addr}/hook")), &alert(), "g", &Shutdown::new())
        .await;
    assert!(
        matches!(&outcome, Outcome::GaveUp { attempts, last_status: Some(429), .. } if *attempts > 1),
        "{outcome:?}"
    );

    // Nothing listens on port 9: every attempt fails to connect.
    let started = Instant::now();
    let outcome = quick(Duration::from_millis(500))
        .deliver(
            &channel("http://127.0.0.1:9/hook".into()),
            &alert(),
            "g",
            &Shutdown::new(),
        )
        .await;
    let Outcome::GaveUp {
        attempts,
        last_error,
        last_status: None,
    } = &outcome
    else {
        panic!("{outcome:?}");
    };
    assert!(
        *attempts > 2 && started.elapsed() < Duration::from_secs(2),
        "{attempts} attempts in {:?}",
        started.elapsed()
    );
    assert!(
        !last_error.contains("127.0.0.1:9/hook"),
        "the URL (a secret for Slack and Teams) is not in the error: {last_error}"
    );
}

#[tokio::test]
async fn a_stop_ends_the_retries_at_once() {
    let (addr, r) = start_receiver().await;
    r.lock().expect("lock").down_until = Some(Instant::now() + Duration::from_secs(60));
    let stop = Shutdown::new();
    let d = quick(Duration::from_secs(60));
    let ch = channel(format!("http://{addr}/hook"));
    let running = {
        let stop = stop.clone();
        tokio::spawn(async move { d.deliver(&ch, &alert(), "g", &stop).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    stop.trigger();
    let outcome = running.await.expect("task");
    assert!(matches!(outcome, Outcome::Stopped { .. }), "{outcome:?}");
    assert!(asked.elapsed() < Duration::from_millis(500));
}
