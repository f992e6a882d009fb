//! KEDA's scaling of a Kafka consumer, simulated with real processes: while
//! load runs, a controller applies KEDA's kafka-scaler formula
//! (replicas = ceil(total lag / lagThreshold), capped at the partition count,
//! 0 when lag <= activationLagThreshold) by starting `tributary-process`
//! instances and stopping them with SIGTERM; one instance is killed with
//! SIGKILL mid-stream. Afterwards every aggregate is in PostgreSQL exactly
//! once, the lag is back to 0 and no instance runs.
//! Needs `TRIBUTARY_TEST_KAFKA_BROKERS`, `DATABASE_URL` and Redis on `REDIS_URL`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::{EventLog, Record};
use tributary_shared::records::Aggregate;
use tributary_testkit::{test_brokers, unique_topic};

const PARTITIONS: i32 = 6;
const LAG_THRESHOLD: i64 = 150;
const ACTIVATION: i64 = 0;
const TOTAL: usize = 3000;

fn keda_replicas(lag: i64) -> usize {
    if lag <= ACTIVATION {
        0
    } else {
        ((lag + LAG_THRESHOLD - 1) / LAG_THRESHOLD).min(i64::from(PARTITIONS)) as usize
    }
}

/// Total lag of `group` on `topic`, as KEDA's kafka scaler computes it
/// (no committed offset counts from the earliest record).
fn total_lag(consumer: &BaseConsumer, topic: &str) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    let mut lag = 0;
    for p in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .expect("watermarks");
        let done = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        lag += (high - done).max(0);
    }
    lag
}

#[sqlx::test(migrations = false)]
async fn keda_formula_scaling_with_a_crash_loses_and_duplicates_nothing(pool: PgPool) {
    let db: (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("db");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!("{}/{}", base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base), db.0);
    let redis =
        std::env::var("REDIS_URL").unwrap_or_else(|_| panic!("REDIS_URL is not set: run the tests with scripts/test"));
    let brokers = test_brokers();
    let topic = unique_topic("scale-aggs");
    let (alerts, dead, group) = (
        unique_topic("scale-alerts"),
        unique_topic("scale-dead"),
        unique_topic("scale-group"),
    );
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: brokers.clone(),
            ..KafkaArgs::default()
        },
        "scale-test",
    )
    .expect("connect");
    log.ensure_topics(&[topic.clone(), alerts.clone(), dead.clone()], PARTITIONS)
        .await
        .expect("topics");

    // Load: TOTAL distinct windows over ~8 s, in bursts.
    let producer = {
        let p = log.publisher();
        let topic = topic.clone();
        tokio::spawn(async move {
            let start = Utc
                .timestamp_opt(Utc::now().timestamp() / 10 * 10 - 3600, 0)
                .single()
                .expect("t");
            for chunk in 0..(TOTAL / 100) {
                let recs: Vec<Record> = (chunk * 100..chunk * 100 + 100)
                    .map(|i| {
                        let s = start + chrono::Duration::seconds(((i / 40) * 10) as i64);
                        let a = Aggregate {
                            device_id: format!("sdev-{}", i % 40),
                            metric: "temp".into(),
                            window_seconds: 10,
                            window_start: s,
                            window_end: s + chrono::Duration::seconds(10),
                            count: 1,
                            min: 1.0,
                            max: 1.0,
                            mean: 1.0,
                            stddev: 0.0,
                            p50: 1.0,
                            p95: 1.0,
                            p99: 1.0,
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
                for r in p.publish(&topic, recs).await {
                    r.expect("published");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // Migrate once up front so instances starting together do not race on it.
    tributary_process::store::ResultStore::migrate(&tributary_process::store::PgStore::new(pool.clone()))
        .await
        .expect("migrate");
    let spawn = || -> Child {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        Command::new(env!("CARGO_BIN_EXE_tributary-process"))
            .env("PORT", port.to_string())
            .env("TRIBUTARY_BIND", "127.0.0.1")
            .env("DATABASE_URL", &url)
            .env("TRIBUTARY_MIGRATE", "false")
            .env("REDIS_URL", &redis)
            .env("TRIBUTARY_KAFKA_BROKERS", &brokers)
            .env("TRIBUTARY_KAFKA_CREATE_TOPICS", "false")
            .env("TRIBUTARY_AGGREGATES_TOPIC", &topic)
            .env("TRIBUTARY_ALERTS_TOPIC", &alerts)
            .env("TRIBUTARY_DEADLETTER_TOPIC", &dead)
            .env("TRIBUTARY_CONSUMER_GROUP", &group)
            .env("TRIBUTARY_BATCH_MAX", "100")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tributary-process")
    };
    let lag_reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()
        .expect("lag reader");

    let mut instances: Vec<Child> = Vec::new();
    let mut max_seen = 0;
    let mut killed = false;
    let mut history = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        assert!(Instant::now() < deadline, "did not settle: history {history:?}");
        // A few milliseconds of blocking metadata calls; the producer task catches up at the sleep below.
        let lag = total_lag(&lag_reader, &topic);
        let want = keda_replicas(lag);
        history.push((lag, want, instances.len()));
        while instances.len() < want {
            instances.push(spawn());
        }
        while instances.len() > want {
            let mut c = instances.pop().expect("instance");
            // Scale-in: SIGTERM, as Kubernetes does; the instance commits and leaves the group.
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        max_seen = max_seen.max(instances.len());
        if !killed && instances.len() >= 2 && lag > 0 {
            // A crash: no clean shutdown, uncommitted work is redelivered to the others.
            let mut c = instances.remove(0);
            let _ = c.kill();
            let _ = c.wait();
            killed = true;
        }
        if producer.is_finished() && lag == 0 && instances.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(killed, "the test must have crashed an instance: {history:?}");
    assert!(max_seen >= 2, "load must have scaled out: {history:?}");
    assert!(max_seen <= PARTITIONS as usize);
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM aggregates")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n.0, TOTAL as i64, "every aggregate exactly once: history {history:?}");
}
