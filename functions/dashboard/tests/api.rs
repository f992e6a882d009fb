//! The dashboard API against the real PostgreSQL (`#[sqlx::test]`, a database
//! per test) and a real Redis of the test's own; data is written the way the
//! process function writes it (the shared migrations and the same tables).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use tributary_dashboard::auth::AuthMode;
use tributary_dashboard::live::Live;
use tributary_dashboard::{Dashboard, app};
use tributary_shared::cache::{KvCache, RedisCache};
use tributary_shared::registry::PgRegistry;
use tributary_shared::results::{PgStore, ResultStore};
use tributary_shared::service::Ops;
use tributary_shared::service::readiness::ResultStoreReady;
use tributary_shared::telemetry::MetricsRegistry;

struct TestRedis(u16, Child);

impl TestRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed; these tests need a real Redis");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(port, child)
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

async fn seed(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO devices (device_id, first_seen, last_seen, last_values) VALUES
         ('truck-1', now() - interval '2 hours', now() - interval '10 seconds', '{\"speed\": {\"value\": 80.5, \"windowSeconds\": 10}}'),
         ('sensor-9', now() - interval '3 days', now() - interval '2 days', '{\"temp\": {\"value\": 21.0, \"windowSeconds\": 10}}')",
    )
    .execute(pool)
    .await
    .expect("devices");
    sqlx::query(
        "INSERT INTO aggregates (device_id, metric, window_seconds, window_start, window_end, count, min, max, mean, stddev, p50, p95, p99, anomaly_score, model)
         SELECT 'truck-1', 'speed', 10, date_trunc('minute', now()) - make_interval(secs => 10 * g), date_trunc('minute', now()) - make_interval(secs => 10 * g - 10),
                5, 70, 90, 80 + g % 3, 2, 80, 88, 90, CASE WHEN g = 7 THEN 0.95 ELSE 0.1 END, 'spike'
         FROM generate_series(1, 30) g",
    )
    .execute(pool)
    .await
    .expect("aggregates");
    // Windows written by SQL, not by a batch: mark their minutes as a batch would, and roll up.
    sqlx::query(
        "INSERT INTO rollup_dirty (window_seconds, device_id, metric, window_start)
         SELECT DISTINCT 60, device_id, metric, date_trunc('minute', window_start) FROM aggregates",
    )
    .execute(pool)
    .await
    .expect("marks");
    PgStore::new(pool.clone()).roll_up(1000).await.expect("roll up");
    sqlx::query(
        "INSERT INTO alerts (id, device_id, metric, model, score, value, reason, state, opened_at, updated_at) VALUES
         ('al-1', 'truck-1', 'speed', 'spike', 0.95, 130, 'speed spike', 'open', now() - interval '70 seconds', now() - interval '60 seconds'),
         ('al-2', 'truck-1', 'speed', 'threshold', 0.8, 95, 'speed > 90 for 30s', 'resolved', now() - interval '1 hour', now() - interval '50 minutes')",
    )
    .execute(pool)
    .await
    .expect("alerts");
}

fn router(pool: &PgPool, redis: Option<&TestRedis>, token: Option<&str>) -> (axum::Router, Live) {
    router_with(
        pool,
        redis,
        AuthMode::Token {
            operator: token.map(str::to_owned),
            viewer: None,
        },
    )
}

fn router_with(pool: &PgPool, redis: Option<&TestRedis>, auth: AuthMode) -> (axum::Router, Live) {
    let live = Live::new();
    let state = Arc::new(Dashboard {
        store: Arc::new(PgStore::new(pool.clone())),
        cache: redis.map(|r| Arc::new(RedisCache::new(&r.url()).expect("client")) as Arc<dyn KvCache>),
        raw: None,
        registry: Some(Arc::new(PgRegistry::new(pool.clone()))),
        rules: Some(Arc::new(tributary_shared::rules::PgRules::new(pool.clone()))),
        channels: Some(Arc::new(tributary_shared::notify::postgres::PgChannels::new(
            pool.clone(),
        ))),
        live: live.clone(),
        auth,
        sse_keepalive: std::time::Duration::from_secs(15),
        offline_after_secs: 300,
    });
    let ops = Ops::new(
        MetricsRegistry::new(),
        Arc::new(ResultStoreReady(Arc::new(PgStore::new(pool.clone())))),
    );
    (app(state).merge(ops.router()), live)
}

async fn call(r: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = r.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(r: &axum::Router, uri: &str) -> (StatusCode, Value) {
    call(r, Request::get(uri).body(Body::empty()).expect("request")).await
}

/// `GET uri` as the operator of [`router`]'s `op-secret`.
async fn get_op(r: &axum::Router, uri: &str) -> (StatusCode, Value) {
    call(
        r,
        Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer op-secret")
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

/// `POST uri` with no body as the operator.
fn op_post(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::AUTHORIZATION, "Bearer op-secret")
        .body(Body::empty())
        .expect("request")
}

/// `POST uri` with a JSON body as the operator.
fn op_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::AUTHORIZATION, "Bearer op-secret")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

/// With a viewer token, every read needs a credential (the page's files and
/// the sign-in excepted): the viewer or operator token as a bearer token, or
/// a session cookie from `POST /api/session`, which reads (the live stream
/// too) but cannot act unless it is the operator's; a forged cookie or a
/// wrong token gets nothing.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn with_a_viewer_token_reading_needs_a_credential_or_a_session(pool: PgPool) {
    seed(&pool).await;
    let (r, _) = router_with(
        &pool,
        None,
        AuthMode::Token {
            operator: Some("op-secret".into()),
            viewer: Some("view-secret".into()),
        },
    );
    let with = |uri: &str, name: &str, value: &str| {
        Request::get(uri)
            .header(name, value.to_owned())
            .body(Body::empty())
            .expect("request")
    };
    for uri in [
        "/api/fleet",
        "/api/devices",
        "/api/alerts",
        "/api/me",
        "/api/events",
        "/api/devices/truck-1",
    ] {
        let (s, body) = get(&r, uri).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("sign_in_required")),
            "{uri} without a credential"
        );
    }
    for uri in ["/", "/app.js", "/registry.js", "/api/openapi.json"] {
        let resp = r
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{uri}: the page's files, so a browser can sign in"
        );
    }
    let (s, fleet) = call(&r, with("/api/fleet", "authorization", "Bearer view-secret")).await;
    assert_eq!((s, fleet["devices"].as_i64()), (StatusCode::OK, Some(2)));
    let (s, _) = call(&r, with("/api/fleet", "authorization", "Bearer wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let ack_as = |name: &str, value: &str| {
        Request::post("/api/alerts/al-1/ack")
            .header(name, value.to_owned())
            .body(Body::empty())
            .expect("request")
    };
    let (s, _) = call(&r, ack_as("authorization", "Bearer view-secret")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a viewer does not act");

    // Sign in: a wrong token, then the viewer's.
    let sign_in = |token: &str| {
        Request::post("/api/session")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::json!({ "token": token }).to_string()))
            .expect("request")
    };
    let (s, body) = call(&r, sign_in("guess")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("wrong_token"))
    );
    let cookie_of = |resp: &axum::response::Response| -> String {
        let set = resp.headers()[header::SET_COOKIE].to_str().expect("ascii").to_owned();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        assert!(
            !set.contains("view-secret") && !set.contains("op-secret"),
            "no token in the cookie: {set}"
        );
        set.split(';').next().expect("name=value").to_owned()
    };
    let resp = r.clone().oneshot(sign_in("view-secret")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let viewer = cookie_of(&resp);
    for uri in ["/api/fleet", "/api/alerts", "/api/me"] {
        let (s, body) = call(&r, with(uri, "cookie", &viewer)).await;
        assert_eq!(s, StatusCode::OK, "{uri} with the viewer's session: {body}");
    }
    let events = r
        .clone()
        .oneshot(with("/api/events", "cookie", &viewer))
        .await
        .expect("infallible");
    assert_eq!(
        events.status(),
        StatusCode::OK,
        "the live stream reads with the session"
    );
    let (_, me) = call(&r, with("/api/me", "cookie", &viewer)).await;
    assert_eq!(
        (me["name"].as_str(), me["operator"].as_bool()),
        (Some("viewer"), Some(false))
    );
    let (s, _) = call(&r, ack_as("cookie", &viewer)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a viewer's session does not act");
    let (s, _) = call(&r, with("/api/registry/devices", "cookie", &viewer)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "nor read the registry");
    let forged = viewer.replacen("viewer", "operator", 1);
    let (s, _) = call(&r, with("/api/fleet", "cookie", &forged)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a cookie promoted by hand is worth nothing"
    );

    // The operator's session acts.
    let resp = r.clone().oneshot(sign_in("op-secret")).await.expect("infallible");
    let operator = cookie_of(&resp);
    let (s, body) = call(&r, ack_as("cookie", &operator)).await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("acknowledged")),
        "{body}"
    );
    let (s, _) = call(&r, with("/api/registry/devices", "cookie", &operator)).await;
    assert_eq!(s, StatusCode::OK);

    let out = r
        .clone()
        .oneshot(Request::delete("/api/session").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(
        out.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
}

/// The registry's operator API: only for the operator, reads included;
/// add (and the conflicts and bad input it refuses, writing nothing), list
/// with search, group, state and pages, disable, enable and rotate, each
/// change recorded in the outbox the relay publishes from.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn the_registry_api_manages_devices_for_operators_only(pool: PgPool) {
    use tributary_shared::registry::DeviceRegistry;
    let (r, _) = router(&pool, None, Some("op-secret"));
    let (s, body) = get(&r, "/api/registry/devices").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "reads need the operator too"
    );
    let (s, _) = call(
        &r,
        Request::get("/api/registry/devices")
            .header(header::AUTHORIZATION, "Bearer wrong")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (read_only, _) = router(&pool, None, None);
    let (s, body) = call(&read_only, op_post("/api/registry/devices/x/disable")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("read_only"))
    );

    let (s, van) = call(
        &r,
        op_json(
            "/api/registry/devices",
            r#"{"id":"van-1","name":"Van 1","group":"vans","tags":{"site":"north"}}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{van}");
    assert_eq!(
        (
            van["id"].as_str(),
            van["group"].as_str(),
            van["status"].as_str(),
            van["keyVersion"].as_u64(),
            van["enrolledBy"].as_str(),
            van["tags"]["site"].as_str()
        ),
        (
            Some("van-1"),
            Some("vans"),
            Some("active"),
            Some(0),
            Some("operator"),
            Some("north")
        )
    );
    let (s, body) = call(&r, op_json("/api/registry/devices", r#"{"id":"van-1"}"#)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{body}"
    );
    let (s, body) = call(&r, op_json("/api/registry/devices", r#"{"id":"van 2","group":"vans"}"#)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_device"), Some("id")),
        "{body}"
    );
    let (s, body) = call(&r, op_json("/api/registry/devices", r#"{"id":"van-3","colour":"red"}"#)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_body"))
    );
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("colour")),
        "names the field: {body}"
    );
    let (s, _) = call(&r, op_json("/api/registry/devices", "not json")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for id in ["van-2", "freezer-1", "freezer-2"] {
        let group = if id.starts_with("van") { "vans" } else { "freezers" };
        let (s, body) = call(
            &r,
            op_json(
                "/api/registry/devices",
                &format!(r#"{{"id":"{id}","group":"{group}"}}"#),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }

    let (s, all) = get_op(&r, "/api/registry/devices").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let ids = |v: &Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        ids(&all),
        ["freezer-1", "freezer-2", "van-1", "van-2"],
        "by id; nothing of the refused adds"
    );
    assert_eq!((all["registered"].as_u64(), all["next"].as_str()), (Some(4), None));
    let (_, vans) = get_op(&r, "/api/registry/devices?group=vans").await;
    assert_eq!(ids(&vans), ["van-1", "van-2"]);
    let (_, found) = get_op(&r, "/api/registry/devices?q=VAN%201").await;
    assert_eq!(ids(&found), ["van-1"], "the name is searched too");
    let (_, page) = get_op(&r, "/api/registry/devices?limit=3").await;
    assert_eq!((ids(&page).len(), page["next"].as_str()), (3, Some("van-1")));
    let (_, rest) = get_op(&r, "/api/registry/devices?limit=3&after=van-1").await;
    assert_eq!((ids(&rest), rest["next"].as_str()), (vec!["van-2".to_owned()], None));
    for (uri, param) in [
        ("/api/registry/devices?status=frozen", "status"),
        ("/api/registry/devices?limit=0", "limit"),
        ("/api/registry/devices?group=a%20b", "group"),
        ("/api/registry/devices?after=a%20b", "after"),
    ] {
        let (s, body) = get_op(&r, uri).await;
        assert_eq!(
            (s, body["error"]["parameter"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{uri}: {body}"
        );
    }

    let registry = PgRegistry::new(pool.clone());
    let before = registry.last_change().await.expect("last change");
    let (s, body) = call(&r, op_post("/api/registry/devices/van-1/disable")).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (StatusCode::OK, Some("disabled")),
        "{body}"
    );
    let (_, disabled) = get_op(&r, "/api/registry/devices?status=disabled").await;
    assert_eq!(ids(&disabled), ["van-1"]);
    let (s, body) = call(&r, op_post("/api/registry/devices/van-1/enable")).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("active")));
    let (s, body) = call(&r, op_post("/api/registry/devices/van-1/rotate-key")).await;
    assert_eq!(
        (s, body["keyVersion"].as_u64(), body["revision"].as_i64()),
        (StatusCode::OK, Some(1), Some(4))
    );
    let (s, shown) = get_op(&r, "/api/registry/devices/van-1").await;
    assert_eq!((s, shown["keyVersion"].as_u64()), (StatusCode::OK, Some(1)));
    let changes = registry.changes_after(before, 100).await.expect("changes");
    assert_eq!(changes.len(), 3, "one outbox row per change, for the relay");

    let (s, body) = call(&r, op_post("/api/registry/devices/nobody/disable")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    let (s, _) = get_op(&r, "/api/registry/devices/nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = call(&r, op_post("/api/registry/devices/bad%20id/rotate-key")).await;
    assert_eq!(
        (s, body["error"]["parameter"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn fleet_devices_and_series(pool: PgPool) {
    seed(&pool).await;
    let redis = TestRedis::start();
    let (r, _) = router(&pool, Some(&redis), None);
    let (s, fleet) = get(&r, "/api/fleet").await;
    assert_eq!(s, StatusCode::OK, "{fleet}");
    assert_eq!(
        (
            fleet["devices"].as_i64(),
            fleet["devicesOnline"].as_i64(),
            fleet["alertsOpen"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(
        fleet["source"], "postgres",
        "nothing cached yet: falls back to PostgreSQL"
    );

    // Once the process function has cached a summary, it is served from Redis.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");
    let _: () = redis::cmd("SET")
        .arg("tributary:fleet:summary")
        .arg(r#"{"devices":7,"devicesOnline":5,"alertsOpen":3}"#)
        .query_async(&mut conn)
        .await
        .expect("set");
    let (_, fleet) = get(&r, "/api/fleet").await;
    assert_eq!(
        (fleet["devices"].as_i64(), fleet["source"].as_str()),
        (Some(7), Some("redis"))
    );

    let (_, devs) = get(&r, "/api/devices").await;
    let list = devs["devices"].as_array().expect("list");
    assert_eq!(list[0]["deviceId"], "truck-1", "most recently seen first");
    assert_eq!(
        (list[0]["online"].as_bool(), list[1]["online"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(list[0]["openAlerts"], 1);
    assert_eq!(
        (
            devs["total"].as_i64(),
            devs["limit"].as_i64(),
            devs["sort"].as_str(),
            devs["order"].as_str()
        ),
        (Some(2), Some(50), Some("lastSeen"), Some("desc")),
        "the defaults are named in the answer"
    );
    // The page's requests: a second page, a search, a status, an order.
    let (_, second) = get(&r, "/api/devices?limit=1&offset=1").await;
    assert_eq!(
        (second["devices"][0]["deviceId"].as_str(), second["total"].as_i64()),
        (Some("sensor-9"), Some(2))
    );
    let (_, found) = get(&r, "/api/devices?q=SENSOR").await;
    assert_eq!(
        (found["total"].as_i64(), found["devices"][0]["deviceId"].as_str()),
        (Some(1), Some("sensor-9"))
    );
    let (_, alerting) = get(&r, "/api/devices?status=alerting").await;
    assert_eq!(
        (alerting["total"].as_i64(), alerting["status"].as_str()),
        (Some(1), Some("alerting"))
    );
    // Groups come from the device registry: truck-1 is a truck, sensor-9 is
    // not registered, and a registered truck that never sent counts in its group.
    {
        use tributary_shared::registry::{DeviceRegistry, NewDevice};
        let trucks = ["truck-1", "truck-2"].map(|id| NewDevice {
            group: Some("trucks".into()),
            ..NewDevice::new(id)
        });
        PgRegistry::new(pool.clone())
            .import(&trucks, chrono::Utc::now())
            .await
            .expect("register");
    }
    let (s, groups) = get(&r, "/api/groups").await;
    assert_eq!(s, StatusCode::OK, "{groups}");
    assert_eq!(
        groups["groups"],
        json!([{"name": "trucks", "devices": 2, "online": 1}]),
        "readers see the groups"
    );
    let (_, in_group) = get(&r, "/api/devices?group=trucks").await;
    assert_eq!(
        (
            in_group["total"].as_i64(),
            in_group["group"].as_str(),
            in_group["devices"][0]["group"].as_str()
        ),
        (Some(1), Some("trucks"), Some("trucks"))
    );
    let (_, all) = get(&r, "/api/devices?sort=deviceId").await;
    assert_eq!(
        all["devices"][0]["group"],
        Value::Null,
        "an unregistered device has no group: {all}"
    );
    let (_, by_id) = get(&r, "/api/devices?sort=deviceId").await;
    assert_eq!(
        (by_id["order"].as_str(), by_id["devices"][0]["deviceId"].as_str()),
        (Some("asc"), Some("sensor-9")),
        "ids read A to Z unless asked otherwise"
    );

    let (s, dev) = get(&r, "/api/devices/truck-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(dev["lastValues"]["speed"]["value"], 80.5);
    assert_eq!(get(&r, "/api/devices/nobody").await.0, StatusCode::NOT_FOUND);

    let (s, series) = get(&r, "/api/devices/truck-1/series?metric=speed&from=24h&maxPoints=10000").await;
    assert_eq!(s, StatusCode::OK, "{series}");
    assert_eq!(
        (&series["windowsPerPoint"], &series["source"]),
        (&serde_json::json!(1), &serde_json::json!("windows")),
        "8,640 windows fit in 10,000 points: the windows, none merged"
    );
    let pts = series["points"].as_array().expect("points");
    assert_eq!(pts.len(), 30);
    let starts: Vec<&str> = pts.iter().map(|p| p["windowStart"].as_str().expect("t")).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "oldest first");
    assert_eq!(pts.iter().filter(|p| p["anomalyScore"].as_f64() > Some(0.9)).count(), 1);
    assert_eq!(series["availableWindows"], serde_json::json!([10]));
    let alert_ids: Vec<&str> = series["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(alert_ids, vec!["al-2", "al-1"]);

    // The default of at most 1,500 points: a day of 10 s windows is 8,640 rows,
    // of minutes 1,440, so the 1-minute tier is read, a row a point (the seeded
    // windows are minute-aligned).
    let (_, merged) = get(&r, "/api/devices/truck-1/series?metric=speed&from=24h").await;
    assert_eq!(
        (&merged["source"], &merged["windowSeconds"], &merged["windowsPerPoint"]),
        (
            &serde_json::json!("rollup"),
            &serde_json::json!(60),
            &serde_json::json!(1)
        ),
        "{merged}"
    );
    assert_eq!(
        merged["availableWindows"],
        serde_json::json!([10]),
        "the window sizes, as before"
    );
    let mpts = merged["points"].as_array().expect("points");
    assert_eq!(mpts.len(), 5, "30 windows, 6 a minute");
    assert!(mpts.iter().all(|p| p["count"] == 30), "counts add: {merged}");
    assert_eq!(
        mpts.iter().filter(|p| p["anomalyScore"].as_f64() > Some(0.9)).count(),
        1,
        "the anomaly survives the merge"
    );
    assert!(
        mpts.iter().all(|p| p["min"] == 70.0 && p["max"] == 90.0),
        "extremes are exact"
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn bad_parameters_get_a_400_naming_them(pool: PgPool) {
    let (r, _) = router(&pool, None, None);
    let long_search = format!("/api/devices?q={}", "x".repeat(129));
    for (uri, param) in [
        ("/api/devices/truck-1/series", "metric"),
        ("/api/devices/truck-1/series?metric=speed&window=abc", "window"),
        ("/api/devices/truck-1/series?metric=speed&window=0", "window"),
        ("/api/devices/truck-1/series?metric=speed&maxPoints=5", "maxPoints"),
        ("/api/devices/truck-1/series?metric=speed&from=yesterday", "from"),
        ("/api/devices/truck-1/series?metric=speed&from=1h&to=2h", "from"),
        ("/api/devices/truck-1/series?metric=sp%20eed", "metric"),
        ("/api/devices/bad%20id", "deviceId"),
        ("/api/alerts?state=maybe", "state"),
        ("/api/alerts?limit=0", "limit"),
        ("/api/devices?limit=lots", "limit"),
        ("/api/devices?offset=-1", "offset"),
        ("/api/devices?sort=last_seen", "sort"),
        ("/api/devices?order=up", "order"),
        ("/api/devices?status=sleeping", "status"),
        ("/api/devices?group=a%20b", "group"),
        (long_search.as_str(), "q"),
        // A multi-byte character where a duration's unit goes: a 400, not a panic.
        ("/api/devices/truck-1/series?metric=speed&from=1%F3%90%92%B0", "from"),
        ("/api/devices/truck-1/series?metric=speed&to=%C3%A9", "to"),
        // What axum itself would refuse in plain text is the API's JSON 400.
        ("/api/alerts?state=open&state=open", "query"),
        ("/api/devices/%FF/series?metric=speed", "path"),
    ] {
        let (s, body) = get(&r, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["parameter"], param, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter");
    }
    // An empty value is a value: refused where the description asks for one
    // (an id, a time), taken as no search where it allows it.
    for (uri, param) in [
        ("/api/alerts?device=", "device"),
        ("/api/devices/truck-1/series?metric=speed&to=", "to"),
    ] {
        let (s, body) = get(&r, uri).await;
        assert_eq!(
            (s, body["error"]["parameter"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{uri}: {body}"
        );
    }
    let (s, body) = get(&r, "/api/devices?q=").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Long ranges are read from the rollup tier that fits the chart, and a
/// short range whose windows are past their retention from the finest tier
/// that still has it.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn long_and_expired_ranges_are_read_from_rollup_tiers(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    // 40 days of 60 s windows of one metric, ending 10 days ago, rolled up.
    let end = (chrono::Utc::now() - chrono::Duration::days(10)).timestamp() / 86_400 * 86_400;
    let windows: Vec<tributary_shared::records::Aggregate> = (0..40 * 1440)
        .map(|i| {
            let start = chrono::DateTime::from_timestamp(end - 40 * 86_400 + i * 60, 0).expect("time");
            tributary_shared::records::Aggregate {
                device_id: "old-1".into(),
                metric: "temp".into(),
                window_seconds: 60,
                window_start: start,
                window_end: start + chrono::Duration::seconds(60),
                count: 6,
                min: 10.0,
                max: 30.0,
                mean: 20.0,
                stddev: 1.0,
                p50: 20.0,
                p95: 28.0,
                p99: 29.0,
                anomaly_score: if i == 1000 { 0.97 } else { 0.1 },
                model: "spike".into(),
                expected_low: None,
                expected_high: None,
                warming: false,
                sketch: None,
            }
        })
        .collect();
    for chunk in windows.chunks(5000) {
        store.write_batch(chunk, &[]).await.expect("write");
    }
    while store.roll_up(5000).await.expect("roll up") > 0 {}
    let (r, _) = router(&pool, None, None);

    let (s, month) = get(&r, "/api/devices/old-1/series?metric=temp&from=60d&maxPoints=800").await;
    assert_eq!(s, StatusCode::OK, "{month}");
    // 60 days: 1,440 hours is too many, 240 six-hour rows are not.
    assert_eq!(
        (&month["source"], &month["windowSeconds"]),
        (&Value::from("rollup"), &Value::from(21_600))
    );
    let pts = month["points"].as_array().expect("points");
    assert_eq!(pts.len(), 40 * 4, "the 40 days of data, 4 rows a day");
    assert_eq!(
        pts.iter().map(|p| p["count"].as_i64().expect("count")).sum::<i64>(),
        40 * 1440 * 6
    );
    assert_eq!(pts.iter().filter(|p| p["anomalyScore"].as_f64() > Some(0.9)).count(), 1);

    // The windows are gone; an hour of them, 20 days ago, comes from the minutes.
    store
        .delete_aggregates_before(chrono::Utc::now())
        .await
        .expect("retention");
    let at = chrono::DateTime::from_timestamp(end - 10 * 86_400, 0).expect("time");
    let uri = format!(
        "/api/devices/old-1/series?metric=temp&from={}&to={}",
        tributary_shared::model::fmt_millis(&at),
        tributary_shared::model::fmt_millis(&(at + chrono::Duration::hours(1)))
    );
    let (s, hour) = get(&r, &uri).await;
    assert_eq!(s, StatusCode::OK, "{hour}");
    assert_eq!(
        (&hour["source"], &hour["windowSeconds"]),
        (&Value::from("rollup"), &Value::from(60))
    );
    assert_eq!(hour["points"].as_array().map(Vec::len), Some(60));
    // A recent empty range is just empty.
    let (_, quiet) = get(&r, "/api/devices/old-1/series?metric=temp&from=1h").await;
    assert_eq!(
        (&quiet["source"], quiet["points"].as_array().map(Vec::len)),
        (&Value::from("windows"), Some(0))
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn acknowledging_needs_the_operator_token_and_notifies_browsers(pool: PgPool) {
    seed(&pool).await;
    let redis = TestRedis::start();
    let post = |uri: &str, auth: Option<&str>| {
        let mut b = Request::post(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::empty()).expect("request")
    };

    let (read_only, _) = router(&pool, Some(&redis), None);
    assert_eq!(
        call(&read_only, post("/api/alerts/al-1/ack", Some("Bearer x"))).await.0,
        StatusCode::FORBIDDEN
    );

    let (r, live) = router(&pool, Some(&redis), Some("op-secret"));
    assert_eq!(
        call(&r, post("/api/alerts/al-1/ack", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&r, post("/api/alerts/al-1/ack", Some("Bearer wrong"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Browsers follow the change channel; start following before acting.
    let follower = tokio::spawn(
        live.clone()
            .follow(Arc::new(RedisCache::new(&redis.url()).expect("client"))),
    );
    let mut rx = live.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (s, a) = call(&r, post("/api/alerts/al-1/ack", Some("Bearer op-secret"))).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["state"], "acknowledged");
    assert_eq!(a["acknowledgedBy"], "operator");
    // The follower announces each (re)subscription with a "reload"; the change itself follows.
    let msg = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change notification")
            .expect("message");
        if !m.contains("reload") {
            break m;
        }
    };
    assert!(msg.contains("al-1"), "{msg}");
    follower.abort();

    assert_eq!(
        call(&r, post("/api/alerts/al-1/ack", Some("Bearer op-secret"))).await.0,
        StatusCode::CONFLICT,
        "already acknowledged"
    );
    assert_eq!(
        call(&r, post("/api/alerts/al-2/resolve", Some("Bearer op-secret")))
            .await
            .0,
        StatusCode::CONFLICT,
        "already resolved"
    );
    assert_eq!(
        call(&r, post("/api/alerts/none/ack", Some("Bearer op-secret"))).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, a) = call(&r, post("/api/alerts/al-1/resolve", Some("Bearer op-secret"))).await;
    assert_eq!((s, a["state"].as_str()), (StatusCode::OK, Some("resolved")));
    let (_, list) = get(&r, "/api/alerts").await;
    assert!(
        list["alerts"].as_array().expect("alerts").is_empty(),
        "nothing unresolved left"
    );
    let (_, list) = get(&r, "/api/alerts?state=all&device=truck-1").await;
    assert_eq!(list["alerts"].as_array().expect("alerts").len(), 2);
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn the_page_and_its_assets_are_served_and_sse_says_hello(pool: PgPool) {
    let (r, live) = router(&pool, None, None);
    for (uri, ct) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/charts.js", "text/javascript"),
        ("/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/vendor/uPlot.min.css", "text/css"),
        ("/vendor/uPlot.LICENSE", "text/plain"),
        ("/api/openapi.json", "application/json"),
    ] {
        let resp = r
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ct")
                .starts_with(ct),
            "{uri}"
        );
    }
    let (_, spec) = get(&r, "/api/openapi.json").await;
    assert!(spec["paths"]["/api/devices/{id}/series"]["get"].is_object());

    let resp = r
        .clone()
        .oneshot(Request::get("/api/events").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert!(String::from_utf8_lossy(&first).contains("event: hello"));
    live.send(r#"{"kind":"batch","devices":["d1"]}"#.into());
    let next = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("in time")
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    let text = String::from_utf8_lossy(&next);
    assert!(text.contains("event: change") && text.contains("d1"), "{text}");
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn redis_down_still_serves_from_postgres(pool: PgPool) {
    seed(&pool).await;
    let redis = TestRedis::start();
    let url = redis.url();
    drop(redis);
    let live = Live::new();
    let state = Arc::new(Dashboard {
        store: Arc::new(PgStore::new(pool.clone())),
        cache: Some(Arc::new(RedisCache::new(&url).expect("client"))),
        raw: None,
        registry: None,
        rules: None,
        channels: None,
        live,
        auth: AuthMode::Token {
            operator: None,
            viewer: None,
        },
        sse_keepalive: std::time::Duration::from_secs(15),
        offline_after_secs: 300,
    });
    let ops = Ops::new(
        MetricsRegistry::new(),
        Arc::new(ResultStoreReady(Arc::new(PgStore::new(pool.clone())))),
    );
    let r = app(state).merge(ops.router());
    let (s, fleet) = get(&r, "/api/fleet").await;
    assert_eq!(
        (s, fleet["source"].as_str(), fleet["devices"].as_i64()),
        (StatusCode::OK, Some("postgres"), Some(2))
    );
    let (s, dev) = get(&r, "/api/devices/truck-1").await;
    assert_eq!((s, dev["deviceId"].as_str()), (StatusCode::OK, Some("truck-1")));
}

/// The dashboard's least-privilege PostgreSQL role, as the migrations create
/// it (`tributary_readonly`), serves every endpoint, acknowledging and
/// resolving included, and may not write results.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn the_migrated_read_only_role_serves_every_endpoint_and_writes_no_results(pool: PgPool) {
    seed(&pool).await;
    // The dashboard's role comes from the migrations, without a login (process gives it
    // one in production); a login role of this test's own that is a member of it has
    // exactly its privileges. Roles are per cluster: drop a leftover of an interrupted run.
    let role = format!("tributary_ro_{}", std::process::id());
    let db: (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("db");
    let _ = sqlx::query(&format!("DROP OWNED BY {role}")).execute(&pool).await;
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(&pool).await;
    sqlx::query(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'test-only' IN ROLE tributary_readonly"
    ))
    .execute(&pool)
    .await
    .expect("a member of the migrated role");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let host = base
        .split_once('@')
        .map(|(_, h)| h)
        .and_then(|h| h.rsplit_once('/'))
        .map(|(h, _)| h)
        .expect("DATABASE_URL is postgres://user@host:port/db");
    let ro = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&format!("postgres://{role}:test-only@{host}/{}", db.0))
        .await
        .expect("connect as the dashboard role");

    let (r, _) = router(&ro, None, Some("op-secret"));
    for uri in [
        "/api/fleet",
        "/api/devices",
        "/api/devices/truck-1",
        "/api/devices/truck-1/series?metric=speed&from=24h",
        "/api/alerts",
        "/api/alerts?state=open",
    ] {
        let (s, body) = get(&r, uri).await;
        assert_eq!(s, StatusCode::OK, "{uri} as {role}: {body}");
    }
    let (_, fleet) = get(&r, "/api/fleet").await;
    assert_eq!(fleet["devices"], 2, "{fleet}");
    let post = |uri: &str| {
        Request::post(uri)
            .header(header::AUTHORIZATION, "Bearer op-secret")
            .body(Body::empty())
            .expect("request")
    };
    let (s, body) = call(&r, post("/api/alerts/al-1/ack")).await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("acknowledged")),
        "{body}"
    );
    let (s, body) = call(&r, post("/api/alerts/al-1/resolve")).await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("resolved")),
        "{body}"
    );
    // Operators manage devices as this role too, each change with its outbox row.
    let (s, body) = call(
        &r,
        op_json("/api/registry/devices", r#"{"id":"van-ro","group":"vans"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    for action in ["disable", "enable", "rotate-key"] {
        let (s, body) = call(&r, op_post(&format!("/api/registry/devices/van-ro/{action}"))).await;
        assert_eq!(s, StatusCode::OK, "{action} as {role}: {body}");
    }
    let (s, body) = get_op(&r, "/api/registry/devices?group=vans").await;
    assert_eq!((s, body["registered"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let readyz = r
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(readyz.status(), StatusCode::OK);

    // And it is read-only where it matters: no results written, no alert rewritten.
    for stmt in [
        "INSERT INTO devices (device_id, first_seen, last_seen) VALUES ('x', now(), now())",
        "UPDATE aggregates SET mean = 0",
        "UPDATE alerts SET reason = 'tampered'",
        "DELETE FROM alerts",
        "DELETE FROM device_registry",
        "UPDATE device_registry SET created_at = now()",
        "DELETE FROM device_registry_changes",
    ] {
        let err = sqlx::query(stmt).execute(&ro).await.expect_err(stmt);
        assert!(err.to_string().contains("permission denied"), "{stmt}: {err}");
    }
    ro.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&pool)
        .await
        .expect("drop owned");
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await
        .expect("drop role");
}

/// `PUT uri` with a JSON body, as the operator when `op`.
fn put_json(uri: &str, body: &str, op: bool) -> Request<Body> {
    let mut b = Request::put(uri).header(header::CONTENT_TYPE, "application/json");
    if op {
        b = b.header(header::AUTHORIZATION, "Bearer op-secret");
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

/// The rules API: anyone who reads reads the rules; only the operator
/// creates (201), replaces (200, a new revision; the same rule again: 200,
/// the same revision) and deletes (204) them; bad ids and bodies are 400s,
/// an invalid rule a 422 naming the field; without a rule store, 501.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn the_rules_api_reads_for_everyone_and_writes_for_operators(pool: PgPool) {
    let (r, _) = router(&pool, None, Some("op-secret"));
    let (s, body) = get(&r, "/api/rules").await;
    assert_eq!(
        (s, body["rules"].as_array().map(Vec::len), body["max"].as_u64()),
        (StatusCode::OK, Some(0), Some(1000))
    );
    let rule = r#"{"metric":"temperature","condition":">","threshold":-10,"holdSeconds":300,"severity":"critical","group":"freezers","description":"too warm"}"#;
    let (s, body) = call(&r, put_json("/api/rules/freezer-warm", rule, false)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (read_only, _) = router(&pool, None, None);
    let (s, body) = call(&read_only, put_json("/api/rules/freezer-warm", rule, true)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("read_only"))
    );

    let (s, created) = call(&r, put_json("/api/rules/freezer-warm", rule, true)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        (
            created["id"].as_str(),
            created["condition"].as_str(),
            created["holdSeconds"].as_u64(),
            created["group"].as_str(),
            created["revision"].as_i64()
        ),
        (Some("freezer-warm"), Some(">"), Some(300), Some("freezers"), Some(1))
    );
    assert!(
        created.get("device").is_none() && created.get("deleted").is_none(),
        "{created}"
    );
    let (s, same) = call(&r, put_json("/api/rules/freezer-warm", rule, true)).await;
    assert_eq!((s, same["revision"].as_i64()), (StatusCode::OK, Some(1)), "unchanged");
    let changed = rule.replace("-10", "-12");
    let (s, body) = call(&r, put_json("/api/rules/freezer-warm", &changed, true)).await;
    assert_eq!(
        (s, body["revision"].as_i64(), body["threshold"].as_f64()),
        (StatusCode::OK, Some(2), Some(-12.0))
    );
    let (s, one) = get(&r, "/api/rules/freezer-warm").await;
    assert_eq!((s, one["revision"].as_i64()), (StatusCode::OK, Some(2)));

    for (uri, body, status, field) in [
        ("/api/rules/bad%20id", rule.to_owned(), StatusCode::BAD_REQUEST, None),
        ("/api/rules/x", "not json".to_owned(), StatusCode::BAD_REQUEST, None),
        (
            "/api/rules/x",
            rule.replace("\"group\"", "\"grp\""),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "/api/rules/x",
            rule.replace("\">\"", "\"=>\""),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "/api/rules/x",
            rule.replace("\"group\":\"freezers\"", "\"group\":\"freezers\",\"device\":\"d\""),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("group"),
        ),
        (
            "/api/rules/x",
            rule.replace("temperature", "temp erature"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metric"),
        ),
        (
            "/api/rules/x",
            rule.replace("300", "604801"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("holdSeconds"),
        ),
    ] {
        let (s, b) = call(&r, put_json(uri, &body, true)).await;
        assert_eq!((s, b["error"]["field"].as_str()), (status, field), "{uri} {body}: {b}");
    }
    let (s, _) = get(&r, "/api/rules/x").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing written by the refused ones");

    let del = |op: bool| {
        let mut b = Request::delete("/api/rules/freezer-warm");
        if op {
            b = b.header(header::AUTHORIZATION, "Bearer op-secret");
        }
        b.body(Body::empty()).expect("request")
    };
    assert_eq!(call(&r, del(false)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&r, del(true)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&r, del(true)).await.0, StatusCode::NOT_FOUND);
    let (s, body) = get(&r, "/api/rules").await;
    assert_eq!((s, body["rules"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));

    // No rule store: 501, named.
    let r = app(Arc::new(Dashboard {
        store: Arc::new(PgStore::new(pool.clone())),
        cache: None,
        raw: None,
        registry: None,
        rules: None,
        channels: None,
        live: Live::new(),
        auth: AuthMode::Token {
            operator: Some("op-secret".into()),
            viewer: None,
        },
        sse_keepalive: std::time::Duration::from_secs(15),
        offline_after_secs: 300,
    }));
    let (s, body) = get(&r, "/api/rules").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("not_configured"))
    );
}

/// The channels API: operators only, reads included; a channel's secret is
/// never answered (only hasSecret); an invalid channel is a 422 naming the
/// field; dead letters per channel, 404 for an unknown one.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn the_channels_api_is_for_operators_and_never_shows_a_secret(pool: PgPool) {
    use tributary_shared::notify::store::ChannelStore;
    let (r, _) = router(&pool, None, Some("op-secret"));
    let (s, body) = get(&r, "/api/channels").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, body) = get_op(&r, "/api/channels").await;
    assert_eq!(
        (s, body["channels"].as_array().map(Vec::len), body["max"].as_u64()),
        (StatusCode::OK, Some(0), Some(100))
    );
    let channel = r#"{"url":"https://hooks.example.com/ops","format":"generic","secret":"channel-secret-0123456789","groups":["freezers"],"minSeverity":"critical"}"#;
    let (s, created) = call(&r, put_json("/api/channels/ops", channel, true)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        (
            created["hasSecret"].as_bool(),
            created["minSeverity"].as_str(),
            created["enabled"].as_bool()
        ),
        (Some(true), Some("critical"), Some(true))
    );
    assert!(!created.to_string().contains("channel-secret"), "{created}");
    let (s, _) = call(&r, put_json("/api/channels/ops", channel, true)).await;
    assert_eq!(s, StatusCode::OK, "unchanged");
    let (s, listed) = get_op(&r, "/api/channels").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!listed.to_string().contains("channel-secret"), "{listed}");
    for (body, field) in [
        (channel.replace("https://hooks.example.com/ops", "ftp://x"), "url"),
        (
            channel.replace("\"secret\":\"channel-secret-0123456789\",", ""),
            "secret",
        ),
        (channel.replace("freezers", "no spaces"), "groups"),
    ] {
        let (s, b) = call(&r, put_json("/api/channels/other", &body, true)).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{b}"
        );
    }
    let (s, _) = call(
        &r,
        put_json(
            "/api/channels/other",
            r#"{"url":"https://x.example","format":"email"}"#,
            true,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let store = tributary_shared::notify::postgres::PgChannels::new(pool.clone());
    let a1 = tributary_testkit::notify::alert("a1", tributary_shared::records::AlertState::Opened, 0);
    store
        .dead_letter(&tributary_testkit::notify::dead_letter("ops", &a1, "freezers", false))
        .await
        .expect("letter");
    let (s, letters) = get_op(&r, "/api/channels/ops/dead-letters").await;
    assert_eq!(
        (
            s,
            letters["total"].as_u64(),
            letters["deadLetters"][0]["attempts"].as_u64()
        ),
        (StatusCode::OK, Some(1), Some(9))
    );
    assert_eq!(letters["deadLetters"][0]["resendable"], false, "{letters}");
    let (s, _) = get_op(&r, "/api/channels/nope/dead-letters").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let del = Request::delete("/api/channels/ops")
        .header(header::AUTHORIZATION, "Bearer op-secret")
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&r, del).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        get_op(&r, "/api/channels/ops/dead-letters").await.0,
        StatusCode::NOT_FOUND
    );
}

/// A test notification through the API reaches a local receiver, signed;
/// one to a receiver that is not there answers 200 with the failure.
/// Dead letters are sent again: the API says how many, the channel's
/// backlog then shows them queued; a letter without its record is left.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn channels_are_tested_and_dead_letters_sent_again_through_the_api(pool: PgPool) {
    use tributary_shared::notify::store::{ChannelStore, DeadLetter};
    use tributary_shared::records::AlertState;
    const SECRET: &str = "channel-secret-0123456789";
    let seen: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
    let receiver = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<std::sync::Mutex<Vec<serde_json::Value>>>>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let signed = headers
                        .get(tributary_shared::notify::sign::HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let now = chrono::Utc::now().timestamp();
                    if tributary_shared::notify::sign::verify(SECRET, signed, &body, now, 300).is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    seen.lock()
                        .expect("lock")
                        .push(serde_json::from_slice(&body).unwrap_or_default());
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let (r, _) = router(&pool, None, Some("op-secret"));
    let channel = format!(r#"{{"url":"http://{addr}/hook","format":"generic","secret":"{SECRET}"}}"#);
    let (s, _) = call(&r, put_json("/api/channels/ops", &channel, true)).await;
    assert_eq!(s, StatusCode::CREATED);
    let post = |path: &str, body: &str| {
        Request::post(path)
            .header(header::AUTHORIZATION, "Bearer op-secret")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let (s, outcome) = call(&r, post("/api/channels/ops/test", "")).await;
    assert_eq!(
        (s, outcome["delivered"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{outcome}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);
    assert_eq!(seen.lock().expect("lock")[0]["alert"]["deviceId"], "tributary-test");
    let unreachable = r#"{"url":"http://127.0.0.1:9/hook","format":"slack"}"#;
    let (s, _) = call(&r, put_json("/api/channels/gone", unreachable, true)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, outcome) = call(&r, post("/api/channels/gone/test", "")).await;
    assert_eq!(
        (s, outcome["delivered"].as_bool(), outcome["status"].is_null()),
        (StatusCode::OK, Some(false), true),
        "{outcome}"
    );
    assert!(outcome["error"].as_str().is_some_and(|e| !e.is_empty()), "{outcome}");
    assert_eq!(
        call(&r, post("/api/channels/nope/test", "")).await.0,
        StatusCode::NOT_FOUND
    );

    let store = tributary_shared::notify::postgres::PgChannels::new(pool.clone());
    let alert = tributary_testkit::notify::alert("a1", AlertState::Opened, 0);
    let letter = |key: &str, resendable: bool| DeadLetter {
        key: key.into(),
        ..tributary_testkit::notify::dead_letter("ops", &alert, "freezers", resendable)
    };
    store
        .dead_letter(&letter("old.opened.1", false))
        .await
        .expect("old letter");
    let key = tributary_shared::notify::idempotency_key(&alert);
    store.dead_letter(&letter(&key, true)).await.expect("letter");
    let (_, letters) = get_op(&r, "/api/channels/ops/dead-letters").await;
    let resendable: Vec<bool> = letters["deadLetters"]
        .as_array()
        .expect("letters")
        .iter()
        .map(|l| l["resendable"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(resendable.iter().filter(|r| **r).count(), 1, "{letters}");
    for bad in [
        r#"{"keys":[]}"#,
        r#"{"keys":["a\u0000b"]}"#,
        r#"{"keys":"a1"}"#,
        r#"{"all":true}"#,
    ] {
        let (s, b) = call(&r, post("/api/channels/ops/dead-letters/resend", bad)).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_body")),
            "{bad}"
        );
    }
    let (s, done) = call(&r, post("/api/channels/ops/dead-letters/resend", "")).await;
    assert_eq!(
        (s, done),
        (StatusCode::OK, serde_json::json!({"resent": 1, "notResendable": 1}))
    );
    let (_, listed) = get_op(&r, "/api/channels").await;
    assert_eq!(
        (
            listed["backlog"][0]["channelId"].as_str(),
            listed["backlog"][0]["queued"].as_u64()
        ),
        (Some("ops"), Some(1)),
        "{listed}"
    );
    let (s, _) = call(&r, post("/api/channels/nope/dead-letters/resend", "")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let viewer = Request::post("/api/channels/ops/dead-letters/resend")
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&r, viewer).await.0, StatusCode::UNAUTHORIZED);
}

/// An operator acknowledging or resolving an alert on the dashboard queues
/// that change for the channels that take the alert (PagerDuty then
/// acknowledges or resolves its incident), in order; a channel whose least
/// severity is above the alert's gets nothing.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn operators_acknowledging_and_resolving_queue_the_change_for_the_channels(pool: PgPool) {
    use tributary_shared::notify::queue::DeliveryQueue;
    use tributary_shared::notify::store::ChannelStore;
    use tributary_shared::records::AlertState;
    seed(&pool).await;
    let (r, _) = router(&pool, None, Some("op-secret"));
    for (id, body) in [
        (
            "pager",
            r#"{"url":"https://events.pagerduty.example/v2/enqueue","format":"pagerduty","secret":"routing-key-0123456789"}"#,
        ),
        (
            "crit-only",
            r#"{"url":"https://hooks.example.com/crit","format":"slack","minSeverity":"critical"}"#,
        ),
    ] {
        let (s, b) = call(&r, put_json(&format!("/api/channels/{id}"), body, true)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let post = |uri: &str| {
        Request::post(uri)
            .header(header::AUTHORIZATION, "Bearer op-secret")
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(call(&r, post("/api/alerts/al-1/ack")).await.0, StatusCode::OK);
    assert_eq!(call(&r, post("/api/alerts/al-1/resolve")).await.0, StatusCode::OK);

    let store = tributary_shared::notify::postgres::PgChannels::new(pool.clone());
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(
        backlog
            .iter()
            .map(|b| (b.channel_id.as_str(), b.queued))
            .collect::<Vec<_>>(),
        [("pager", 2)],
        "the critical-only channel does not take a warning"
    );
    let first = store.head("pager").await.expect("head").expect("queued");
    assert_eq!(
        (
            first.queued.alert.id.as_str(),
            first.queued.alert.state,
            first.queued.group.as_str()
        ),
        ("al-1", AlertState::Acknowledged, "default")
    );
    assert!(
        first
            .queued
            .alert
            .reason
            .starts_with("acknowledged by operator on the dashboard"),
        "{}",
        first.queued.alert.reason
    );
    let body = tributary_shared::notify::format::body(
        &store.get("pager").await.expect("get").expect("pager"),
        &first.queued.alert,
        &first.queued.group,
    );
    assert_eq!(
        (body["event_action"].as_str(), body["dedup_key"].as_str()),
        (Some("acknowledge"), Some("al-1"))
    );
    store.delivered(first.seq, chrono::Utc::now()).await.expect("delivered");
    let second = store.head("pager").await.expect("head").expect("queued");
    assert_eq!(
        second.queued.alert.state,
        AlertState::Resolved,
        "in the order they were made"
    );
}
