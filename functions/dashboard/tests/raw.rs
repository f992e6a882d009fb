//! A device's raw readings through the dashboard API (`/api/devices/{id}/raw`),
//! written once and run against both raw-store backends: the Cosmos DB
//! stand-in that `scripts/test` starts (`TRIBUTARY_TEST_COSMOS_ENDPOINT`),
//! reached through the lazily connecting store the dashboard binary uses, and
//! the SQLite store of the all-in-one mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Duration, DurationRound, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tributary_dashboard::auth::AuthMode;
use tributary_dashboard::live::Live;
use tributary_dashboard::{Dashboard, app};
use tributary_shared::model::Reading;
use tributary_shared::raw::cosmos::{CosmosSettings, CosmosStore, LazyCosmosStore};
use tributary_shared::raw::{LocalRawStore, RawStore};
use tributary_shared::results::{ResultStore, SqliteStore};
use tributary_shared::service::Ops;
use tributary_shared::service::readiness::ResultStoreReady;
use tributary_shared::telemetry::MetricsRegistry;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-dash-raw-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn cosmos_settings(database: &str) -> CosmosSettings {
    let (endpoint, key) = tributary_testkit::test_cosmos();
    CosmosSettings::with_key(endpoint, key, database, "raw")
}

fn reading(device: &str, id: String, t: DateTime<Utc>, metrics: &[(&str, f64)]) -> Reading {
    Reading {
        schema_version: 1,
        id,
        device_id: device.into(),
        event_time: t,
        received_time: t,
        metrics: metrics
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>(),
        tags: BTreeMap::new(),
        location: None,
    }
}

async fn router(raw: Option<Arc<dyn RawStore>>, name: &str) -> axum::Router {
    let dir = temp_dir(name);
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("results.db").display()))
        .await
        .expect("results store");
    store.migrate().await.expect("migrate");
    let store: Arc<dyn ResultStore> = Arc::new(store);
    let state = Arc::new(Dashboard {
        store: store.clone(),
        cache: None,
        raw,
        registry: None,
        rules: None,
        channels: None,
        live: Live::new(),
        auth: AuthMode::Token {
            operator: None,
            viewer: None,
        },
        sse_keepalive: std::time::Duration::from_secs(15),
        offline_after_secs: 300,
    });
    let ops = Ops::new(MetricsRegistry::new(), Arc::new(ResultStoreReady(store)));
    app(state).merge(ops.router())
}

async fn get(r: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let resp = r
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The behaviour, whatever the backend: oldest first, the metric filter,
/// the limit with `truncated` (across store pages), the range bounds, and
/// other devices' readings never showing.
async fn raw_readings_contract(writer: &dyn RawStore, reader: Arc<dyn RawStore>, name: &str, source: &str) {
    let device = format!("raw-{name}-{}", std::process::id());
    let base = Utc::now().duration_trunc(Duration::seconds(1)).expect("trunc") - Duration::minutes(30);
    // 1,500 readings one second apart (more than one store page of 1,000);
    // every third also has `rpm`; an out-of-range one and another device's.
    let mut readings: Vec<Reading> = (0..1500)
        .map(|i| {
            let t = base + Duration::seconds(i);
            if i % 3 == 0 {
                reading(
                    &device,
                    format!("r{i:05}"),
                    t,
                    &[("temp", i as f64), ("rpm", 1000.0 + i as f64)],
                )
            } else {
                reading(&device, format!("r{i:05}"), t, &[("temp", i as f64)])
            }
        })
        .collect();
    readings.push(reading(
        &device,
        "old".into(),
        base - Duration::hours(3),
        &[("temp", -1.0)],
    ));
    readings.push(reading("someone-else", format!("x-{name}"), base, &[("temp", 99.0)]));
    for chunk in readings.chunks(500) {
        for r in writer.upsert_batch(chunk).await {
            r.expect("upsert");
        }
    }
    let r = router(Some(reader), name).await;

    let (s, all) = get(&r, &format!("/api/devices/{device}/raw?from=2h&limit=10000")).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["source"], source);
    assert_eq!(all["truncated"], false);
    let rows = all["readings"].as_array().expect("readings");
    assert_eq!(
        rows.len(),
        1500,
        "every reading in range, across store pages, nothing else"
    );
    assert_eq!(rows[0]["id"], "r00000");
    assert_eq!(rows[1499]["id"], "r01499");
    assert!(
        rows.windows(2)
            .all(|w| w[0]["eventTime"].as_str() < w[1]["eventTime"].as_str()),
        "oldest first"
    );
    assert_eq!(rows[3]["metrics"]["rpm"], 1003.0);
    assert_eq!(rows[3]["metrics"]["temp"], 3.0);

    let (_, rpm) = get(&r, &format!("/api/devices/{device}/raw?from=2h&metric=rpm&limit=10000")).await;
    let rpm_rows = rpm["readings"].as_array().expect("readings");
    assert_eq!(rpm_rows.len(), 500, "only readings with the metric");
    assert!(
        rpm_rows.iter().all(|r| r["metrics"]
            .as_object()
            .is_some_and(|m| m.len() == 1 && m.contains_key("rpm"))),
        "only that metric"
    );

    let (_, limited) = get(&r, &format!("/api/devices/{device}/raw?from=2h&limit=1200")).await;
    assert_eq!(
        (limited["readings"].as_array().map(Vec::len), &limited["truncated"]),
        (Some(1200), &Value::Bool(true))
    );
    let (_, exact) = get(&r, &format!("/api/devices/{device}/raw?from=2h&metric=rpm&limit=500")).await;
    assert_eq!(
        (exact["readings"].as_array().map(Vec::len), &exact["truncated"]),
        (Some(500), &Value::Bool(false)),
        "exactly the limit is not truncated"
    );

    let from = (base + Duration::seconds(10)).to_rfc3339();
    let to = (base + Duration::seconds(20)).to_rfc3339();
    let (_, slice) = get(
        &r,
        &format!(
            "/api/devices/{device}/raw?from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ),
    )
    .await;
    let ids: Vec<&str> = slice["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.first().copied(), Some("r00010"), "'from' is inclusive");
    assert_eq!(ids.len(), 10, "'to' is exclusive");

    let (_, old) = get(&r, &format!("/api/devices/{device}/raw?from=4h&to=2h")).await;
    assert_eq!(old["readings"].as_array().map(Vec::len), Some(1));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn raw_readings_from_cosmos_db() {
    let database = format!("dash-raw-{}", std::process::id());
    let writer = CosmosStore::connect(cosmos_settings(&database), true)
        .await
        .expect("Cosmos DB stand-in (started by scripts/test)");
    let reader: Arc<dyn RawStore> = Arc::new(LazyCosmosStore::new(cosmos_settings(&database), false));
    raw_readings_contract(&writer, reader, "cosmos", "cosmos").await;
}

#[tokio::test]
async fn raw_readings_from_the_local_store() {
    let dir = temp_dir("local-raw");
    let store = Arc::new(
        LocalRawStore::open(&format!("sqlite://{}", dir.join("raw.db").display()))
            .await
            .expect("local raw store"),
    );
    raw_readings_contract(store.as_ref(), store.clone(), "local", "sqlite").await;
}

#[tokio::test]
async fn raw_parameters_are_checked_and_a_missing_store_is_named() {
    let dir = temp_dir("params");
    let store: Arc<dyn RawStore> = Arc::new(
        LocalRawStore::open(&format!("sqlite://{}", dir.join("raw.db").display()))
            .await
            .expect("local raw store"),
    );
    let r = router(Some(store), "params").await;
    for (uri, param) in [
        ("/api/devices/bad%20id/raw", "deviceId"),
        ("/api/devices/d1/raw?metric=no%20spaces", "metric"),
        ("/api/devices/d1/raw?limit=0", "limit"),
        ("/api/devices/d1/raw?limit=10001", "limit"),
        ("/api/devices/d1/raw?from=yesterday", "from"),
        ("/api/devices/d1/raw?from=48h", "from"),
        ("/api/devices/d1/raw?from=1h&to=2h", "from"),
    ] {
        let (s, body) = get(&r, uri).await;
        assert_eq!(
            (s, body["error"]["parameter"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{uri}: {body}"
        );
    }
    let (s, empty) = get(&r, "/api/devices/nobody/raw").await;
    assert_eq!(
        (s, empty["readings"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "an unknown device has no readings"
    );

    let none = router(None, "none").await;
    let (s, body) = get(&none, "/api/devices/d1/raw").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("not_configured")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TRIBUTARY_COSMOS_ENDPOINT"))
    );
}

#[tokio::test]
async fn an_unreachable_cosmos_db_is_a_503_not_a_failed_start() {
    // Nothing listens on port 9 of loopback: the lazy store fails per request, and recovers later.
    let key = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
    let mut settings = CosmosSettings::with_key("http://127.0.0.1:9/", key, "tributary", "raw");
    settings.timeout = std::time::Duration::from_secs(2);
    let r = router(Some(Arc::new(LazyCosmosStore::new(settings, false))), "down").await;
    let (s, body) = get(&r, "/api/devices/d1/raw").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "{body}"
    );
    assert!(!body.to_string().contains("127.0.0.1:9"), "no internals leak: {body}");
}
