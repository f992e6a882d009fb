//! Alert notifications through the real process binary on tansu (issue 19,
//! item 4): alert records on the alerts topic reach three channels served
//! by local receivers that check every signature.
//!
//! The generic receiver is down for a minute. Meanwhile the other channels
//! get every record (a channel that is down holds back only itself), the
//! notifier's offsets are committed (the deliveries are in the queue), the
//! channel's backlog shows the waiting deliveries, and process is stopped
//! and started again. When the receiver is back it gets every record it
//! wants, each once, signed, in order. A PagerDuty receiver gets one
//! incident per alert (trigger, then resolve); a receiver that answers 400
//! leaves every record in its channel's dead letters, with the status, and
//! once it accepts them, sending the letters again delivers them in order.
//! Needs `TRIBUTARY_TEST_KAFKA_BROKERS` (tansu).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::notify::queue::DeliveryQueue;
use tributary_shared::notify::sign::{HEADER, IDEMPOTENCY_HEADER, REPLAY_WINDOW_SECS, verify};
use tributary_shared::notify::sqlite::SqliteChannels;
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::notify::{ChannelSpec, Format};
use tributary_shared::records::{Alert, AlertState};
use tributary_shared::registry::{DeviceRegistry, SqliteRegistry};
use tributary_shared::results::SqliteStore;
use tributary_shared::rules::Severity;
use tributary_testkit::{free_port, test_brokers, unique_topic};

const SECRET: &str = "notify-test-secret-0123456789";
const ROUTING_KEY: &str = "pagerduty-routing-key-0123";
const OUTAGE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Receivers {
    /// `/ops` answers 503 until then.
    ops_down_until: Option<Instant>,
    /// `/refuse` answers 400 while this is false.
    refuse_fixed: bool,
    /// Per path: (idempotency key, body) of every request answered 2xx, in order.
    accepted: BTreeMap<String, Vec<(String, serde_json::Value)>>,
    /// Per path: requests answered 503.
    down: BTreeMap<String, usize>,
    bad_signatures: usize,
}

async fn receive(
    State(r): State<Arc<Mutex<Receivers>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
    if path != "pd" {
        let signed = headers.get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if verify(SECRET, signed, &body, Utc::now().timestamp(), REPLAY_WINDOW_SECS).is_err() {
            r.bad_signatures += 1;
            return StatusCode::UNAUTHORIZED;
        }
    }
    match path.as_str() {
        "refuse" if !r.refuse_fixed => return StatusCode::BAD_REQUEST,
        "ops" if r.ops_down_until.is_some_and(|t| Instant::now() < t) => {
            *r.down.entry(path).or_default() += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        _ => {}
    }
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.accepted
        .entry(path)
        .or_default()
        .push((key, serde_json::from_slice(&body).unwrap_or_default()));
    StatusCode::OK
}

async fn start_receivers() -> (SocketAddr, Arc<Mutex<Receivers>>) {
    let state = Arc::new(Mutex::new(Receivers::default()));
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

fn alert(id: &str, state: AlertState, severity: Severity, at_s: i64) -> Alert {
    Alert {
        severity,
        ..tributary_testkit::notify::alert(id, state, at_s)
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The notifier group's committed offset of partition 0 (`None`: none yet).
fn committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("offsets");
    match got.elements().first().map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_minute_holds_back_only_its_channel_and_gets_everything_after_a_restart() {
    let brokers = test_brokers();
    let dir = std::env::temp_dir().join(format!("tributary-notify-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let database_url = format!("sqlite://{}", dir.join("results.db").display());
    let results = SqliteStore::open(&database_url).await.expect("results");
    SqliteRegistry::new(results.pool().clone())
        .migrate()
        .await
        .expect("migrate");
    let channels = SqliteChannels::new(results.pool().clone());

    let (addr, receivers) = start_receivers().await;
    let channel = |path: &str, format: Format, secret: &str, min: Severity| ChannelSpec {
        url: format!("http://{addr}/{path}"),
        format,
        secret: Some(secret.into()),
        groups: vec![],
        min_severity: min,
        enabled: true,
    };
    channels
        .put(
            "ops",
            &channel("ops", Format::Generic, SECRET, Severity::Warning),
            Utc::now(),
        )
        .await
        .expect("ops");
    channels
        .put(
            "pager",
            &channel("pd", Format::PagerDuty, ROUTING_KEY, Severity::Info),
            Utc::now(),
        )
        .await
        .expect("pager");
    channels
        .put(
            "refusing",
            &channel("refuse", Format::Generic, SECRET, Severity::Info),
            Utc::now(),
        )
        .await
        .expect("refusing");

    // The records: a1 opened and resolved, a2 opened, a3 (info) opened.
    let topic = unique_topic("notify-alerts");
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "notify-test",
    )
    .expect("kafka");
    log.ensure_topics(std::slice::from_ref(&topic), 1).await.expect("topic");
    let records = [
        alert("a1", AlertState::Opened, Severity::Critical, 0),
        alert("a2", AlertState::Opened, Severity::Warning, 1),
        alert("a1", AlertState::Resolved, Severity::Critical, 2),
        alert("a3", AlertState::Opened, Severity::Info, 3),
    ];
    for r in log
        .publisher()
        .publish(
            &topic,
            records
                .iter()
                .map(|a| Record::new(a.device_id.clone(), serde_json::to_vec(a).expect("json")))
                .collect(),
        )
        .await
    {
        r.expect("published");
    }
    receivers.lock().expect("lock").ops_down_until = Some(Instant::now() + OUTAGE);

    let group = unique_topic("notify-group");
    let (aggs, dead) = (unique_topic("notify-aggs"), unique_topic("notify-dead"));
    let start = |log_name: &str| {
        Command::new(env!("CARGO_BIN_EXE_tributary-process"))
            .env_clear()
            .env("PORT", free_port().to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
            .env("DATABASE_URL", &database_url)
            // Nothing listens: process writes its results without a cache.
            .env("REDIS_URL", "redis://127.0.0.1:9")
            .env("TRIBUTARY_ALERTS_TOPIC", &topic)
            .env("TRIBUTARY_AGGREGATES_TOPIC", &aggs)
            .env("TRIBUTARY_DEADLETTER_TOPIC", &dead)
            .env("TRIBUTARY_CONSUMER_GROUP", format!("{group}-results"))
            .env("TRIBUTARY_NOTIFY_GROUP", &group)
            .env("TRIBUTARY_REGISTRY_RELAY_MS", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log_name)).expect("log"))
            .spawn()
            .expect("start tributary-process")
    };
    let mut first = Killed(start("process-1.log"));
    let log_tail = || {
        ["process-1.log", "process-2.log"]
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
            .join("\n--- restarted ---\n")
    };

    // While the generic receiver is down: the others get every record (the
    // refusals kept as dead letters), the offsets are committed, and the
    // generic channel's backlog shows its waiting deliveries.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let pd = receivers.lock().expect("lock").accepted.get("pd").map_or(0, Vec::len);
        let (_, letters) = channels.dead_letters("refusing", 10).await.expect("letters");
        if pd == 4 && letters == 4 && committed(&brokers, &group, &topic) == Some(4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pd got {pd}, refusing kept {letters}, committed {:?}:\n{}",
            committed(&brokers, &group, &topic),
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let backlog = loop {
        let backlog = channels.backlog().await.expect("backlog");
        if backlog.iter().any(|b| b.channel_id == "ops" && b.attempts >= 2) {
            break backlog;
        }
        assert!(Instant::now() < deadline, "ops is not retried: {backlog:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(backlog.len(), 1, "only the channel that is down waits: {backlog:?}");
    assert_eq!(backlog[0].queued, 3, "{backlog:?}");
    assert!(
        backlog[0].last_error.as_deref().is_some_and(|e| e.starts_with("503")),
        "{backlog:?}"
    );
    assert!(!receivers.lock().expect("lock").accepted.contains_key("ops"));

    // A restart while the receiver is down: the queue outlives the process.
    assert!(
        receivers
            .lock()
            .expect("lock")
            .ops_down_until
            .is_some_and(|t| Instant::now() + Duration::from_secs(5) < t),
        "the restart comes while the receiver is down"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &first.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "did not stop within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _process = Killed(start("process-2.log"));

    // The generic receiver comes back: every record it wants arrives, signed.
    let deadline = Instant::now() + OUTAGE + Duration::from_secs(90);
    let want: BTreeSet<String> = records
        .iter()
        .filter(|a| a.severity >= Severity::Warning)
        .map(tributary_shared::notify::idempotency_key)
        .collect();
    loop {
        let got: BTreeSet<String> = receivers
            .lock()
            .expect("lock")
            .accepted
            .get("ops")
            .map(|v| v.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ops got {got:?} of {want:?}:\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The others got everything too: PagerDuty one incident per alert, in
    // order; every refusal is a dead letter with its status.
    let (letters, _) = channels.dead_letters("refusing", 10).await.expect("letters");
    assert!(
        letters.iter().all(|l| l.status == Some(400) && l.attempts == 1),
        "{letters:?}"
    );
    {
        let r = receivers.lock().expect("lock");
        assert_eq!(r.bad_signatures, 0);
        let ops = &r.accepted["ops"];
        assert_eq!(ops.len(), 3, "each record once: {ops:?}");
        assert_eq!(ops[0].1["alert"]["id"], "a1");
        assert_eq!(ops[2].1["alert"]["state"], "resolved", "an incident's records in order");
        let pd: Vec<(&str, &str)> = r.accepted["pd"]
            .iter()
            .map(|(_, b)| {
                (
                    b["dedup_key"].as_str().unwrap_or(""),
                    b["event_action"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            pd,
            [
                ("a1", "trigger"),
                ("a2", "trigger"),
                ("a1", "resolve"),
                ("a3", "trigger")
            ],
            "in order, one incident per alert"
        );
        assert!(r.accepted["pd"].iter().all(|(_, b)| b["routing_key"] == ROUTING_KEY));
    }
    assert!(
        channels.backlog().await.expect("backlog").is_empty(),
        "nothing is left queued"
    );

    // The refusing receiver is fixed: its dead letters, sent again, arrive in order.
    receivers.lock().expect("lock").refuse_fixed = true;
    let resent = channels.resend("refusing", None, Utc::now()).await.expect("resend");
    assert_eq!((resent.resent, resent.not_resendable), (4, 0));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = receivers
            .lock()
            .expect("lock")
            .accepted
            .get("refuse")
            .map_or(0, Vec::len);
        if got == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "refuse got {got} of 4:\n{}", log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order: Vec<(String, String)> = receivers.lock().expect("lock").accepted["refuse"]
        .iter()
        .map(|(_, b)| {
            (
                b["alert"]["id"].as_str().unwrap_or("").to_owned(),
                b["alert"]["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let order: Vec<(&str, &str)> = order.iter().map(|(a, s)| (a.as_str(), s.as_str())).collect();
    assert_eq!(
        order,
        [("a1", "opened"), ("a2", "opened"), ("a1", "resolved"), ("a3", "opened")],
        "sent again in the order they first came"
    );
    assert!(
        channels
            .dead_letters("refusing", 10)
            .await
            .expect("letters")
            .0
            .is_empty()
    );
}
