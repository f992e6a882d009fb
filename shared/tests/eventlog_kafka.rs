//! The event-log contract, against a real Kafka-protocol broker
//! (`TRIBUTARY_TEST_KAFKA_BROKERS`; `scripts/test` starts tansu).

use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::contract::{self, test_brokers, unique_topic};
use tributary_shared::eventlog::kafka::KafkaLog;

fn log() -> KafkaLog {
    let args = KafkaArgs { brokers: test_brokers(), ..KafkaArgs::default() };
    KafkaLog::connect(&args, "tributary-contract-test").expect("connect")
}

#[tokio::test]
async fn publish_and_consume_in_key_order() {
    contract::publish_and_consume_in_key_order(&log(), &unique_topic("order")).await;
}

#[tokio::test]
async fn headers_round_trip() {
    contract::headers_round_trip(&log(), &unique_topic("headers")).await;
}

#[tokio::test]
async fn runner_commits_only_after_success() {
    contract::runner_commits_only_after_success(&log(), &unique_topic("runner")).await;
}

#[tokio::test]
async fn uncommitted_records_are_redelivered() {
    contract::uncommitted_records_are_redelivered(&log(), &unique_topic("redeliver")).await;
}

#[tokio::test]
async fn committed_offsets_round_trip() {
    // tansu 0.6 returns the metadata empty; the backend's mirror topic brings it back.
    contract::committed_offsets_round_trip(&log(), &unique_topic("metadata")).await;
}

#[tokio::test]
async fn group_members_split_partitions() {
    contract::group_members_split_partitions(&log(), &unique_topic("group")).await;
}

#[tokio::test]
async fn unreachable_broker_is_reported_unavailable() {
    use std::time::Duration;
    use tributary_shared::eventlog::{EventLog, EventLogError, Record};
    // A port nothing listens on: delivery must fail within the delivery timeout, as Unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let args = KafkaArgs { brokers: format!("127.0.0.1:{port}"), delivery_timeout_ms: 1_000, ..KafkaArgs::default() };
    let log = KafkaLog::connect(&args, "tributary-contract-test").expect("connect");
    let p = log.publisher();
    let started = std::time::Instant::now();
    let res = p.publish("nowhere", vec![Record::new("k", "v")]).await;
    assert!(matches!(res[0], Err(EventLogError::Unavailable(_))), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(p.check_ready().await.is_err());
    assert!(res[0].as_ref().err().is_some_and(EventLogError::is_retryable));
}

#[tokio::test]
async fn committed_metadata_belongs_to_the_latest_commit() {
    contract::committed_metadata_belongs_to_the_latest_commit(&log(), &unique_topic("metadata-latest")).await;
}
