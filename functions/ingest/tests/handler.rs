//! Handler tests through `Router::oneshot`, on the in-process event log: every
//! answer the HTTP edge gives, without a network.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tributary_ingest::{Config, Ingest, app};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::config::TopicArgs;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::model::Reading;
use tributary_shared::registry::DeviceStatus;
use tributary_shared::registry::view::{DeviceChange, EnrollmentMode};
use tributary_shared::service::Ops;
use tributary_shared::service::readiness::PublisherReady;
use tributary_shared::telemetry::MetricsRegistry;

struct Harness {
    state: Arc<Ingest>,
    router: Router,
    log: MemoryLog,
    cfg: Config,
}

fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    let mut cfg = Config {
        topics: TopicArgs {
            raw: "raw".into(),
            ..TopicArgs::default()
        },
        ..Config::default()
    };
    tweak(&mut cfg);
    let log = MemoryLog::new(4, 100_000);
    let metrics = MetricsRegistry::new();
    let state = Arc::new(Ingest::new(&cfg, log.publisher(), &metrics).expect("a fleet key"));
    // No registry topic here: the view is filled by the tests that need it.
    state.devices().mark_caught_up();
    let ops = Ops::new(metrics, Arc::new(PublisherReady(log.publisher())));
    Harness {
        state: state.clone(),
        router: app(state).merge(ops.router()),
        log,
        cfg,
    }
}

impl Harness {
    fn token(&self, device: &str) -> String {
        let t = FleetKey::new(&self.cfg.fleet_key)
            .device_key(device)
            .token(device, now_unix() + 600);
        format!("SharedAccessSignature {t}")
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, v)
    }

    async fn post(
        &self,
        device: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let req = Request::post("/v1/telemetry")
            .header(header::AUTHORIZATION, self.token(device))
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        self.send(req).await
    }

    fn stored(&self) -> Vec<(String, Reading)> {
        self.log
            .snapshot("raw")
            .into_iter()
            .map(|m| {
                (
                    String::from_utf8(m.key.unwrap_or_default()).expect("utf8 key"),
                    serde_json::from_slice(&m.value).expect("a Reading"),
                )
            })
            .collect()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

#[tokio::test]
async fn one_reading_is_accepted_and_stored_as_sent() {
    let h = harness(|_| {});
    let ts = now_ms();
    let body = json!({"id": "r-1", "deviceId": "truck-1", "timestamp": ts, "metrics": {"speed": 88.5}, "tags": {"fw": "2.1"}, "location": {"lat": 1.5, "lon": 2.5}});
    let (status, _, resp) = h.post("truck-1", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(resp["accepted"], 1);
    assert_eq!(resp["items"][0], json!({"status": "accepted", "index": 0, "id": "r-1"}));
    let stored = h.stored();
    assert_eq!(stored.len(), 1);
    let (key, r) = &stored[0];
    assert_eq!(key, "truck-1");
    assert_eq!(r.id, "r-1");
    assert_eq!(r.event_time.timestamp_millis(), ts);
    assert_eq!(r.metrics["speed"], 88.5);
    assert_eq!(r.tags["fw"], "2.1");
    assert_eq!(r.location.map(|l| (l.lat, l.lon)), Some((1.5, 2.5)));
}

#[tokio::test]
async fn a_batch_reports_each_item_and_stores_only_the_valid_ones() {
    let h = harness(|_| {});
    let ts = now_ms();
    let body = json!([
        {"timestamp": ts, "metrics": {"t": 1}},
        {"timestamp": ts, "metrics": {"t": "warm"}},
        {"timestamp": ts + 1, "metrics": {"t": 2}},
        {"metrics": {"t": 3}},
    ]);
    let (status, _, resp) = h.post("s-1", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(
        (resp["accepted"].as_u64(), resp["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(resp["items"][1]["status"], "rejected");
    assert_eq!(resp["items"][1]["index"], 1);
    assert_eq!(resp["items"][1]["field"], "metrics.t");
    assert_eq!(resp["items"][3]["field"], "timestamp");
    let stored = h.stored();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|(k, r)| k == "s-1" && r.device_id == "s-1"));
}

#[tokio::test]
async fn ndjson_and_gzip_are_accepted() {
    let h = harness(|_| {});
    let ts = now_ms();
    let lines: String = (0..50)
        .map(|i| format!("{{\"timestamp\":{},\"metrics\":{{\"v\":{i}}}}}\n", ts + i))
        .collect();
    let req = Request::post("/v1/telemetry")
        .header(header::AUTHORIZATION, h.token("m-1"))
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(lines.as_bytes())))
        .expect("request");
    let (status, _, resp) = h.send(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(resp["accepted"], 50);
    let mut values: Vec<f64> = h.stored().iter().map(|(_, r)| r.metrics["v"]).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, (0..50).map(f64::from).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_retry_without_an_id_gets_the_same_id() {
    let h = harness(|_| {});
    let body = json!({"timestamp": now_ms(), "metrics": {"x": 1}}).to_string();
    let (_, _, a) = h.post("d", "application/json", body.clone()).await;
    let (_, _, b) = h.post("d", "application/json", body).await;
    assert_eq!(a["items"][0]["id"], b["items"][0]["id"]);
    assert!(a["items"][0]["id"].as_str().is_some_and(|s| s.len() == 36));
}

#[tokio::test]
async fn all_invalid_is_422_and_other_devices_are_403() {
    let h = harness(|_| {});
    let (status, _, resp) = h
        .post(
            "d",
            "application/json",
            json!([{"timestamp": now_ms(), "metrics": {}}]).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(resp["items"][0]["field"], "metrics");

    let (status, _, resp) = h
        .post(
            "d",
            "application/json",
            json!({"deviceId": "e", "timestamp": now_ms(), "metrics": {"x": 1}}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert_eq!(resp["items"][0]["field"], "deviceId");
    assert!(h.stored().is_empty(), "nothing of another device's is stored");
}

#[tokio::test]
async fn malformed_bodies_get_clear_4xx() {
    let h = harness(|c| {
        c.max_body_bytes = 10_000;
        c.max_decoded_bytes = 50_000;
        c.max_batch = 10;
    });
    // (content type, content encoding, body, status, error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "application/json",
            None,
            b"{\"timestamp\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "application/json",
            None,
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "application/json",
            None,
            b"\"hello\"".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "text/plain",
            None,
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            Some("br"),
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            Some("gzip"),
            b"definitely not gzip".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "application/json",
            None,
            vec![b' '; 10_001],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "application/json",
            Some("gzip"),
            gzip(&vec![b' '; 60_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "application/json",
            None,
            serde_json::to_vec(&vec![json!({}); 11]).expect("json"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (ct, enc, body, want, code) in cases {
        let mut req = Request::post("/v1/telemetry")
            .header(header::AUTHORIZATION, h.token("d"))
            .header(header::CONTENT_TYPE, ct);
        if let Some(e) = enc {
            req = req.header(header::CONTENT_ENCODING, e);
        }
        let (status, _, resp) = h.send(req.body(Body::from(body)).expect("request")).await;
        assert_eq!(status, want, "{ct} {enc:?}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{resp}");
        assert!(resp["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A body with no Content-Length that streams past the limit is cut off too.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))));
    let req = Request::post("/v1/telemetry")
        .header(header::AUTHORIZATION, h.token("d"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("request");
    let (status, _, _) = h.send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// A streamed body of `chunks` KB whose every chunk marks `read` when taken.
fn counted_stream(chunks: usize, read: Arc<std::sync::atomic::AtomicUsize>) -> Body {
    Body::from_stream(futures::stream::iter((0..chunks).map(move |_| {
        read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))
    })))
}

#[tokio::test]
async fn an_oversized_body_is_read_to_its_end_within_the_drain_limit_before_the_413() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let h = harness(|c| {
        c.max_body_bytes = 10_000;
        c.oversize_drain_bytes = 15_000;
    });
    let post = |body: Body| {
        Request::post("/v1/telemetry")
            .header(header::AUTHORIZATION, h.token("d"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request")
    };
    // 12 KB: over the limit, within the drain: every chunk is read, and the
    // connection stays usable (no `Connection: close`).
    let read = Arc::new(AtomicUsize::new(0));
    let (status, headers, resp) = h.send(post(counted_stream(12, read.clone()))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp["error"]["code"], "payload_too_large");
    assert!(
        resp["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("split the batch")),
        "{resp}"
    );
    assert_eq!(read.load(Ordering::SeqCst), 12, "the whole body was read");
    assert!(headers.get(header::CONNECTION).is_none(), "{headers:?}");

    // 40 KB: the drain stops past 15 KB and the connection is closed.
    let read = Arc::new(AtomicUsize::new(0));
    let (status, headers, _) = h.send(post(counted_stream(40, read.clone()))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        read.load(Ordering::SeqCst),
        16,
        "read up to the drain limit, no further"
    );
    assert_eq!(
        headers.get(header::CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // A declared length over the limit (with or without a wait for `100
    // Continue`): 12 KB, streamed.
    let declared = |expect: bool, read: &Arc<AtomicUsize>| {
        let mut req = Request::post("/v1/telemetry")
            .header(header::AUTHORIZATION, h.token("d"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, "12000");
        if expect {
            req = req.header(header::EXPECT, "100-continue");
        }
        req.body(counted_stream(12, read.clone())).expect("request")
    };
    // Drained too.
    let read = Arc::new(AtomicUsize::new(0));
    let (status, headers, _) = h.send(declared(false, &read)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read.load(Ordering::SeqCst), 12);
    assert!(headers.get(header::CONNECTION).is_none(), "{headers:?}");

    // A client waiting for `100 Continue` is answered without asking for its body.
    let read = Arc::new(AtomicUsize::new(0));
    let (status, headers, _) = h.send(declared(true, &read)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read.load(Ordering::SeqCst), 0, "the body was never asked for");
    assert_eq!(
        headers.get(header::CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // Only a device that authenticated gets its body drained: anyone else is
    // answered 401 without a byte read.
    let read = Arc::new(AtomicUsize::new(0));
    let req = Request::post("/v1/telemetry")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "12000")
        .body(counted_stream(12, read.clone()))
        .expect("request");
    let (status, _, _) = h.send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(read.load(Ordering::SeqCst), 0, "an unauthenticated body is not read");
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let h = harness(|_| {});
    let body = json!({"timestamp": now_ms(), "metrics": {"x": 1}}).to_string();
    let fleet = FleetKey::new(&h.cfg.fleet_key);
    let expired = format!(
        "SharedAccessSignature {}",
        fleet.device_key("d").token("d", now_unix() - 1)
    );
    let too_long = format!(
        "SharedAccessSignature {}",
        fleet.device_key("d").token("d", now_unix() + 365 * 86_400)
    );
    let wrong_key = format!(
        "SharedAccessSignature {}",
        FleetKey::new("another fleet")
            .device_key("d")
            .token("d", now_unix() + 60)
    );
    for auth in [
        None,
        Some("Bearer nonsense".to_owned()),
        Some(expired),
        Some(too_long),
        Some(wrong_key),
    ] {
        let mut req = Request::post("/v1/telemetry").header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = &auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (status, headers, resp) = h.send(req.body(Body::from(body.clone())).expect("request")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(resp["error"]["code"], "unauthorized");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    }
    assert!(h.stored().is_empty());
}

/// A request with a token of `device` at `key_version`: (status, headers, body).
async fn send_as(h: &Harness, device: &str, key_version: u32) -> (StatusCode, axum::http::HeaderMap, Value) {
    let token = FleetKey::new(&h.cfg.fleet_key)
        .device_key_at(device, key_version)
        .token(device, now_unix() + 600);
    let body = json!({"timestamp": now_ms(), "metrics": {"x": 1}}).to_string();
    let req = Request::post("/v1/telemetry")
        .header(header::AUTHORIZATION, format!("SharedAccessSignature {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    h.send(req).await
}

fn change(id: &str, status: DeviceStatus, key_version: u32, revision: i64) -> (Vec<u8>, Vec<u8>) {
    let r = DeviceChange {
        id: id.into(),
        status,
        key_version,
        revision,
        group: "g".into(),
    }
    .to_record();
    (r.key, r.value)
}

#[tokio::test]
async fn the_registry_refuses_disabled_devices_and_rotated_keys() {
    let h = harness(|_| {});
    h.state.devices().apply(&[
        change("off", DeviceStatus::Disabled, 0, 2),
        change("rotated", DeviceStatus::Active, 2, 3),
    ]);
    let (status, headers, resp) = send_as(&h, "off", 0).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(resp["error"]["code"], "device_disabled");
    assert!(
        resp["error"]["message"].as_str().is_some_and(|m| m.contains("\"off\"")),
        "{resp}"
    );
    assert!(
        !headers.contains_key(header::WWW_AUTHENTICATE),
        "a new token will not help"
    );

    let (status, headers, resp) = send_as(&h, "rotated", 1).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp["error"]["code"], "key_rotated");
    assert!(
        resp["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("key version 1") && m.contains("is 2")),
        "{resp}"
    );
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(send_as(&h, "rotated", 2).await.0, StatusCode::ACCEPTED);
    // Open enrollment: a device nobody registered sends with its version-0 key only.
    assert_eq!(send_as(&h, "newcomer", 0).await.0, StatusCode::ACCEPTED);
    assert_eq!(send_as(&h, "newcomer", 1).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.stored().len(), 2, "only the accepted readings are in the log");
}

#[tokio::test]
async fn registered_enrollment_refuses_unknown_devices() {
    let h = harness(|c| c.enrollment = EnrollmentMode::Registered);
    h.state.devices().apply(&[change("known", DeviceStatus::Active, 0, 1)]);
    assert_eq!(send_as(&h, "known", 0).await.0, StatusCode::ACCEPTED);
    let (status, _, resp) = send_as(&h, "stranger", 0).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(resp["error"]["code"], "device_unknown");
}

/// Paused time: the 5 s wait for the registry passes at once when nothing else is due.
#[tokio::test(start_paused = true)]
async fn nothing_is_admitted_before_the_registry_is_read() {
    let cfg = Config {
        topics: TopicArgs {
            raw: "raw".into(),
            ..TopicArgs::default()
        },
        ..Config::default()
    };
    let log = MemoryLog::new(1, 1000);
    let state = Arc::new(Ingest::new(&cfg, log.publisher(), &MetricsRegistry::new()).expect("a fleet key"));
    let h = Harness {
        state: state.clone(),
        router: app(state),
        log,
        cfg,
    };
    // Never read: 503 once the wait is over.
    let started = tokio::time::Instant::now();
    let (status, headers, resp) = send_as(&h, "early", 0).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp["error"]["code"], "unavailable");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() >= tributary_ingest::api::REGISTRY_WAIT,
        "it waited first"
    );
    assert!(h.stored().is_empty());

    // Read while the request waits (a replica that just started): admitted.
    let state = h.state.clone();
    let marker = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state.devices().mark_caught_up();
    });
    let started = tokio::time::Instant::now();
    assert_eq!(send_as(&h, "early", 0).await.0, StatusCode::ACCEPTED);
    assert!(started.elapsed() < tributary_ingest::api::REGISTRY_WAIT);
    marker.await.expect("marker");
}

#[tokio::test]
async fn a_device_over_its_rate_gets_429_with_retry_after() {
    let h = harness(|c| {
        c.device_rate = 1.0;
        c.device_burst = 5;
        c.max_batch = 5;
    });
    let batch = |n: usize| {
        json!(
            (0..n)
                .map(|i| json!({"timestamp": now_ms() + i as i64, "metrics": {"x": 1}}))
                .collect::<Vec<_>>()
        )
        .to_string()
    };
    let (status, _, _) = h.post("fast", "application/json", batch(5)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, resp) = h.post("fast", "application/json", batch(2)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{resp}");
    assert_eq!(
        headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(resp["error"]["code"], "rate_limited");
    // Another device has its own budget.
    let (status, _, _) = h.post("slow", "application/json", batch(2)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn ops_endpoints_answer_and_count() {
    let h = harness(|_| {});
    let get = |p: &str| Request::get(p).body(Body::empty()).expect("request");
    assert_eq!(h.send(get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(h.send(get("/readyz")).await.0, StatusCode::OK);
    h.post(
        "d",
        "application/json",
        json!([{"timestamp": now_ms(), "metrics": {"x": 1}}, {"metrics": {}}]).to_string(),
    )
    .await;
    let (status, _, text) = h.send(get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text").to_owned();
    assert!(
        text.contains("tributary_ingest_readings_total{outcome=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tributary_ingest_readings_total{outcome=\"rejected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tributary_ingest_requests_total{status=\"202\"} 1"),
        "{text}"
    );
    assert!(!text.contains("\"d\""), "no device ids in labels");
}

#[tokio::test]
async fn arbitrary_bytes_never_cause_a_5xx() {
    // A cheap, deterministic stand-in for fuzzing the edge: the real fuzz target comes with the reliability suite.
    let h = harness(|c| c.max_batch = 50);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fragments: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"metrics\":",
        b"\"timestamp\":",
        b"1e999",
        b"-0",
        b",",
        b"\"x\"",
        b"\n",
        b"{\"t\":1}",
    ];
    for i in 0..400 {
        let mut body = Vec::new();
        for _ in 0..(next() % 12) {
            if next() % 3 == 0 {
                body.push((next() % 256) as u8);
            } else {
                body.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
            }
        }
        let ct = if i % 2 == 0 {
            "application/json"
        } else {
            "application/x-ndjson"
        };
        let (status, _, resp) = h.post("fz", ct, body.clone()).await;
        assert!(
            status.is_success() || status.is_client_error(),
            "{status} for {:?}: {resp}",
            String::from_utf8_lossy(&body)
        );
    }
}
