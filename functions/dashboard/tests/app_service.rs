//! The dashboard behind Azure App Service authentication
//! (`TRIBUTARY_AUTH=app-service`), reached through a local reverse proxy that
//! behaves like App Service's front end: it drops any `X-MS-CLIENT-PRINCIPAL*`
//! header a client sends, sets them for the signed-in user (here: the user a
//! session cookie names), sends everyone else to the sign-in page, and closes
//! a response that sends nothing for its idle timeout (230 s on App Service;
//! 2 s here). Against the real PostgreSQL (`#[sqlx::test]`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use sqlx::PgPool;
use tributary_dashboard::auth::AuthMode;
use tributary_dashboard::live::Live;
use tributary_dashboard::{Dashboard, app};
use tributary_shared::results::PgStore;
use tributary_shared::service::Ops;
use tributary_shared::service::readiness::ResultStoreReady;
use tributary_shared::telemetry::MetricsRegistry;

const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Headers of one connection, not of the request: each side sets its own.
const HOP_BY_HOP: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

async fn seed(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO devices (device_id, first_seen, last_seen, last_values) VALUES
         ('truck-1', now() - interval '2 hours', now() - interval '10 seconds', '{}')",
    )
    .execute(pool)
    .await
    .expect("devices");
    sqlx::query(
        "INSERT INTO alerts (id, device_id, metric, model, score, value, reason, state, opened_at, updated_at) VALUES
         ('al-1', 'truck-1', 'speed', 'spike', 0.95, 130, 'speed spike', 'open', now() - interval '70 seconds', now() - interval '60 seconds')",
    )
    .execute(pool)
    .await
    .expect("alerts");
}

/// The dashboard on a port of its own, as App Service runs the container.
async fn dashboard(pool: &PgPool, keepalive: Duration) -> String {
    dashboard_with(pool, keepalive, None).await
}

/// The same, reading only for the holders of `viewer_role` (and operators).
async fn dashboard_with(pool: &PgPool, keepalive: Duration, viewer_role: Option<&str>) -> String {
    let state = Arc::new(Dashboard {
        store: Arc::new(PgStore::new(pool.clone())),
        cache: None,
        raw: None,
        registry: None,
        rules: None,
        channels: None,
        live: Live::new(),
        auth: AuthMode::AppService {
            operator_role: "Tributary.Operator".into(),
            viewer_role: viewer_role.map(str::to_owned),
        },
        sse_keepalive: keepalive,
        offline_after_secs: 300,
    });
    let ops = Ops::new(
        MetricsRegistry::new(),
        Arc::new(ResultStoreReady(Arc::new(PgStore::new(pool.clone())))),
    );
    serve(app(state).merge(ops.router())).await
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// App Service's principal header for a user: base64 of its JSON.
fn principal(name: &str, roles: &[&str]) -> String {
    let mut claims = vec![
        json!({"typ": "name", "val": name}),
        json!({"typ": "preferred_username", "val": name}),
    ];
    claims.extend(roles.iter().map(|r| json!({"typ": "roles", "val": r})));
    let body = json!({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"});
    base64::engine::general_purpose::STANDARD.encode(body.to_string())
}

struct FrontEnd {
    upstream: String,
    client: reqwest::Client,
    /// Session cookie value -> (name, app roles).
    sessions: HashMap<&'static str, (&'static str, Vec<&'static str>)>,
}

/// One request through the front end.
async fn front_end(State(fe): State<Arc<FrontEnd>>, req: Request) -> Result<Response, Infallible> {
    let session = req
        .headers()
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("AppServiceAuthSession="))
        })
        .and_then(|s| fe.sessions.get(s));
    let Some((name, roles)) = session else {
        // requireAuthentication with RedirectToLoginPage.
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/.auth/login/aad")
            .body(Body::empty())
            .unwrap_or_default());
    };
    let url = format!(
        "{}{}",
        fe.upstream,
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut out = fe.client.request(req.method().clone(), url);
    for (k, v) in req.headers() {
        // A client's own X-MS-* headers never pass: only the front end sets them.
        if !k.as_str().starts_with("x-ms-") && !HOP_BY_HOP.contains(&k.as_str()) && k != "cookie" {
            out = out.header(k, v);
        }
    }
    out = out
        .header("x-ms-client-principal", principal(name, roles))
        .header("x-ms-client-principal-name", *name)
        .header("x-ms-client-principal-idp", "aad");
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let mut resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(_) => return Ok(Response::builder().status(502).body(Body::empty()).unwrap_or_default()),
    };
    let mut builder = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            builder = builder.header(k, v);
        }
    }
    // The idle timeout: the response ends when nothing came for IDLE_TIMEOUT.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    let _ = tx
                        .send(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")))
                        .await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(builder.body(Body::from_stream(stream)).unwrap_or_default())
}

async fn front(upstream: String) -> String {
    let fe = Arc::new(FrontEnd {
        upstream,
        client: reqwest::Client::new(),
        sessions: HashMap::from([
            ("ada-session", ("ada@example.com", vec!["Tributary.Operator"])),
            ("bob-session", ("bob@example.com", vec![])),
            ("vi-session", ("vi@example.com", vec!["Tributary.Viewer"])),
        ]),
    });
    serve(axum::Router::new().fallback(front_end).with_state(fe)).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("send");
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn without_app_services_sign_in_nothing_is_served(pool: PgPool) {
    seed(&pool).await;
    let direct = dashboard(&pool, Duration::from_secs(15)).await;
    let c = client();
    for path in ["/", "/api/fleet", "/api/alerts", "/api/me", "/api/events"] {
        let (s, body) = send(c.get(format!("{direct}{path}"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        if path.starts_with("/api/") {
            assert_eq!(body["error"]["code"], "sign_in_required", "{path}");
        }
    }
    // A principal header that is not App Service's shape is no sign-in either.
    let (s, _) = send(
        c.get(format!("{direct}/api/fleet"))
            .header("x-ms-client-principal", "bm90IGpzb24="),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The platform's probes still reach the ops endpoints.
    assert_eq!(send(c.get(format!("{direct}/healthz"))).await.0, StatusCode::OK);

    // Through the front end, without a session: off to sign in, the dashboard never asked.
    let fe = front(direct).await;
    let resp = c.get(format!("{fe}/api/fleet")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 302);
    assert_eq!(
        resp.headers().get("location"),
        Some(&HeaderValue::from_static("/.auth/login/aad"))
    );
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn readers_read_and_only_the_operator_role_changes_alerts(pool: PgPool) {
    seed(&pool).await;
    let fe = front(dashboard(&pool, Duration::from_secs(15)).await).await;
    let c = client();
    let as_user =
        |req: reqwest::RequestBuilder, session: &str| req.header("cookie", format!("AppServiceAuthSession={session}"));

    let (s, me) = send(as_user(c.get(format!("{fe}/api/me")), "bob-session")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        me,
        json!({"auth": "app-service", "name": "bob@example.com", "operator": false, "writable": true})
    );
    let (s, alerts) = send(as_user(c.get(format!("{fe}/api/alerts")), "bob-session")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(alerts["alerts"][0]["id"], "al-1");
    let page = as_user(c.get(format!("{fe}/")), "bob-session")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);

    let (s, body) = send(as_user(c.post(format!("{fe}/api/alerts/al-1/ack")), "bob-session")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "not_operator");
    // Claiming the role in a header of one's own changes nothing: the front end drops it.
    let forged = principal("bob@example.com", &["Tributary.Operator"]);
    let (s, _) = send(
        as_user(c.post(format!("{fe}/api/alerts/al-1/ack")), "bob-session").header("x-ms-client-principal", forged),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, me) = send(as_user(c.get(format!("{fe}/api/me")), "ada-session")).await;
    assert_eq!((s, me["operator"].clone()), (StatusCode::OK, json!(true)));
    let (s, alert) = send(as_user(c.post(format!("{fe}/api/alerts/al-1/ack")), "ada-session")).await;
    assert_eq!(s, StatusCode::OK, "{alert}");
    assert_eq!(alert["state"], "acknowledged");
    assert_eq!(
        alert["acknowledgedBy"], "ada@example.com",
        "the change is the signed-in operator's"
    );
}

/// Reads the event stream until `want` appears in an event, the stream ends, or `deadline`.
async fn read_events(resp: &mut reqwest::Response, want: &str, deadline: Instant) -> Result<String, String> {
    let mut seen = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(want) {
                    return Ok(seen);
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => return Err(format!("the stream ended: {seen:?}")),
            Err(_) => break,
        }
    }
    Err(format!("no {want:?} before the deadline: {seen:?}"))
}

/// The live event stream through the front end, as a signed-in reader, once it said hello.
async fn open_events(c: &reqwest::Client, fe: &str) -> reqwest::Response {
    let mut events = c
        .get(format!("{fe}/api/events"))
        .header("cookie", "AppServiceAuthSession=bob-session")
        .send()
        .await
        .expect("events");
    assert_eq!(events.status().as_u16(), 200);
    read_events(&mut events, "event: hello", Instant::now() + Duration::from_secs(5))
        .await
        .expect("hello");
    events
}

#[sqlx::test(migrations = "../../shared/migrations")]
async fn live_updates_outlast_the_front_ends_idle_timeout(pool: PgPool) {
    seed(&pool).await;
    let c = client();
    let cookie = |s: &str| format!("AppServiceAuthSession={s}");

    // Keep-alives more often than the idle timeout: the stream stays open through quiet
    // stretches of several timeouts, and a change made later still arrives.
    let fe = front(dashboard(&pool, Duration::from_secs(1)).await).await;
    let mut events = open_events(&c, &fe).await;
    tokio::time::sleep(IDLE_TIMEOUT * 3).await;
    let (s, _) = send(
        c.post(format!("{fe}/api/alerts/al-1/ack"))
            .header("cookie", cookie("ada-session")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let seen = read_events(&mut events, "al-1", Instant::now() + Duration::from_secs(5))
        .await
        .expect("the change");
    assert!(seen.contains("event: change"), "{seen}");

    // The same stream with keep-alives rarer than the idle timeout is cut by the front end:
    // what the setting prevents (App Service: keep TRIBUTARY_SSE_KEEPALIVE_SECS under 230).
    let fe = front(dashboard(&pool, Duration::from_secs(30)).await).await;
    let mut events = open_events(&c, &fe).await;
    let cut = read_events(&mut events, "never", Instant::now() + IDLE_TIMEOUT * 4).await;
    assert!(
        cut.as_ref().is_err_and(|e| e.starts_with("the stream ended")),
        "{cut:?}"
    );
}

/// With a viewer role, a signed-in user of the tenant without it (nor the
/// operator role) reads nothing, not even the page: 403 `not_viewer`
/// naming the role; a viewer reads and cannot act; an operator does both.
#[sqlx::test(migrations = "../../shared/migrations")]
async fn with_a_viewer_role_only_viewers_and_operators_read(pool: PgPool) {
    seed(&pool).await;
    let fe = front(dashboard_with(&pool, Duration::from_secs(15), Some("Tributary.Viewer")).await).await;
    let c = client();
    let as_user =
        |req: reqwest::RequestBuilder, session: &str| req.header("cookie", format!("AppServiceAuthSession={session}"));
    for path in ["/", "/api/fleet", "/api/alerts", "/api/me"] {
        let (s, body) = send(as_user(c.get(format!("{fe}{path}")), "bob-session")).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("not_viewer")),
            "{path}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Tributary.Viewer")),
            "{body}"
        );
    }
    let (s, alerts) = send(as_user(c.get(format!("{fe}/api/alerts")), "vi-session")).await;
    assert_eq!((s, alerts["alerts"][0]["id"].as_str()), (StatusCode::OK, Some("al-1")));
    let (s, body) = send(as_user(c.post(format!("{fe}/api/alerts/al-1/ack")), "vi-session")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_operator"))
    );
    let (s, _) = send(as_user(c.get(format!("{fe}/api/fleet")), "ada-session")).await;
    assert_eq!(s, StatusCode::OK, "an operator reads");
    let (s, alert) = send(as_user(c.post(format!("{fe}/api/alerts/al-1/ack")), "ada-session")).await;
    assert_eq!((s, alert["state"].as_str()), (StatusCode::OK, Some("acknowledged")));
}
