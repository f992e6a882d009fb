//! `tributary-process` as deployed: consumes aggregates and alerts from a real
//! Kafka-protocol broker into PostgreSQL and Redis, commits, and stops
//! cleanly on SIGTERM. Needs `TRIBUTARY_TEST_KAFKA_BROKERS` and `DATABASE_URL`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{TimeZone, Utc};
use sqlx::PgPool;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::records::{Aggregate, Alert, AlertState};
use tributary_testkit::{test_brokers, unique_topic};

#[sqlx::test(migrations = false)]
async fn consumes_from_kafka_into_postgres_and_stops_on_sigterm(pool: PgPool) {
    // The test database's URL: the binary migrates it itself.
    let db: (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("db name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!("{}/{}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base), db.0);
    // Passwords in the connection strings (trust auth ignores this one): none may reach the logs.
    let url = url.replacen("://postgres@", "://postgres:pg-s3cret-pw@", 1);
    assert!(
        url.contains("pg-s3cret-pw"),
        "DATABASE_URL is expected as postgres://postgres@host/db: {base}"
    );

    let brokers = test_brokers();
    let (aggs_topic, alerts_topic, dead_topic) =
        (unique_topic("p-aggs"), unique_topic("p-alerts"), unique_topic("p-dead"));
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "process-test",
    )
    .expect("connect");
    log.ensure_topics(&[aggs_topic.clone(), alerts_topic.clone(), dead_topic.clone()], 3)
        .await
        .expect("topics");
    let start = Utc
        .timestamp_opt(Utc::now().timestamp() / 10 * 10 - 300, 0)
        .single()
        .expect("t");
    let aggs: Vec<Record> = (0..60)
        .map(|i| {
            let a = Aggregate {
                device_id: format!("kdev-{}", i % 6),
                metric: "temp".into(),
                window_seconds: 10,
                window_start: start + chrono::Duration::seconds((i / 6) * 10),
                window_end: start + chrono::Duration::seconds((i / 6) * 10 + 10),
                count: 3,
                min: 1.0,
                max: 3.0,
                mean: 2.0,
                stddev: 0.8,
                p50: 2.0,
                p95: 3.0,
                p99: 3.0,
                anomaly_score: 0.0,
                model: "none".into(),
                expected_low: None,
                expected_high: None,
                warming: false,
                sketch: None,
            };
            Record::new(a.device_id.clone(), serde_json::to_vec(&a).expect("json"))
        })
        .collect();
    let alert = Alert {
        id: "k-alert".into(),
        device_id: "kdev-1".into(),
        metric: "temp".into(),
        model: "spike".into(),
        score: 0.97,
        value: 40.0,
        reason: "spike".into(),
        severity: Default::default(),
        state: AlertState::Opened,
        opened_at: start,
        updated_at: start,
    };
    let p = log.publisher();
    for r in p.publish(&aggs_topic, aggs).await {
        r.expect("published");
    }
    p.publish(
        &alerts_topic,
        vec![Record::new("kdev-1", serde_json::to_vec(&alert).expect("json"))],
    )
    .await
    .remove(0)
    .expect("published");
    p.publish(&aggs_topic, vec![Record::new("kdev-9", b"garbage".to_vec())])
        .await
        .remove(0)
        .expect("published");

    // A role of this test's own, standing in for the dashboard's (roles are per
    // server: other tests must not see its password change).
    let role = format!(
        "tributary_bin_test_{}_{}",
        std::process::id(),
        Utc::now().timestamp_subsec_nanos()
    );
    sqlx::raw_sql(&format!("CREATE ROLE {role} NOLOGIN"))
        .execute(&pool)
        .await
        .expect("create role");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary-process"))
        .env("PORT", port.to_string())
        .env("TRIBUTARY_BIND", "127.0.0.1")
        .env("DATABASE_URL", &url)
        // No Redis there: the function must still write to PostgreSQL.
        .env("REDIS_URL", format!("redis://:redis-s3cret-pw@127.0.0.1:{redis_port}"))
        .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
        .env("TRIBUTARY_AGGREGATES_TOPIC", &aggs_topic)
        .env("TRIBUTARY_ALERTS_TOPIC", &alerts_topic)
        .env("TRIBUTARY_DEADLETTER_TOPIC", &dead_topic)
        .env("TRIBUTARY_CONSUMER_GROUP", unique_topic("p-group"))
        .env("TRIBUTARY_ROLLUP_INTERVAL_SECS", "1")
        .env("TRIBUTARY_READONLY_ROLE", &role)
        .env("TRIBUTARY_READONLY_PASSWORD", "ro-s3cret-pw")
        // Debug for Tributary's own crates: the most a support case would turn on.
        .env("RUST_LOG", "info,tributary_process=debug,tributary_shared=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tributary-process");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: Result<(i64,), _> = sqlx::query_as("SELECT count(*) FROM aggregates").fetch_one(&pool).await;
        let a: Result<(i64,), _> = sqlx::query_as("SELECT count(*) FROM alerts").fetch_one(&pool).await;
        if matches!((&n, &a), (Ok((60,)), Ok((1,)))) {
            break;
        }
        if let Some(s) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            panic!("exited early ({s}): {}", String::from_utf8_lossy(&out.stdout));
        }
        assert!(
            Instant::now() < deadline,
            "not all records reached PostgreSQL: {n:?} {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At start, after migrating, it let the dashboard's role log in with the configured password.
    let (login, stored): (bool, String) =
        sqlx::query_as("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&pool)
            .await
            .expect("role");
    let salt = stored
        .split_once(':')
        .and_then(|(_, rest)| rest.split_once('$'))
        .map(|(salt, _)| salt)
        .expect("a SCRAM verifier");
    let salt = base64::engine::general_purpose::STANDARD.decode(salt).expect("salt");
    assert!(login, "the role may log in");
    assert_eq!(
        stored,
        tributary_shared::results::roles::scram_verifier("ro-s3cret-pw", &salt, 4096),
        "the role's password is the configured one"
    );
    sqlx::raw_sql(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await
        .expect("drop role");

    // The rollup job runs in the binary: every window's readings reach the day tier, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (windows, day): (i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT sum(count)::bigint FROM aggregates),
                    (SELECT sum(count)::bigint FROM rollups WHERE window_seconds = 86400)",
        )
        .fetch_one(&pool)
        .await
        .expect("counts");
        if day == Some(windows) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollup job did not roll the windows up: {windows} readings in windows, {day:?} in the day tier"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(
        ready.status().as_u16(),
        200,
        "ready with PostgreSQL up even though Redis is down"
    );
    // The rows can be in PostgreSQL before the batch that holds the garbage
    // record has sent it to the dead-letter topic and counted it: the
    // counters are updated when the batch is done, so poll them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let rolled_up = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tributary_process_rollup_buckets_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let visible = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tributary_process_window_visible_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if metrics.contains("tributary_process_deadletter_records_total 1")
            && rolled_up.is_some_and(|n| n >= 6.0)
            && visible.is_some_and(|n| n >= 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the garbage record was not dead-lettered, no rollup was counted, or no window's visibility was timed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("process stopped"));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!logs.contains("postgres://"), "no connection strings in logs");
    assert!(
        logs.contains("redis") || logs.contains("cache"),
        "the Redis outage was logged: {logs}"
    );
    for secret in ["pg-s3cret-pw", "redis-s3cret-pw", "ro-s3cret-pw"] {
        assert!(!logs.contains(secret), "a password reached the logs: {secret}");
    }
}
