//! The event-log contract, against a real Kafka-protocol broker
//! (`TRIBUTARY_TEST_KAFKA_BROKERS`; `scripts/test` starts tansu).

use tributary_shared::config::KafkaArgs;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_testkit::eventlog as contract;
use tributary_testkit::{test_brokers, unique_topic};

fn log() -> KafkaLog {
    let args = KafkaArgs {
        brokers: test_brokers(),
        ..KafkaArgs::default()
    };
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let args = KafkaArgs {
        brokers: format!("127.0.0.1:{port}"),
        delivery_timeout_ms: 1_000,
        ..KafkaArgs::default()
    };
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

#[tokio::test]
async fn a_full_queue_fails_the_excess_fast_and_delivers_the_rest() {
    use std::collections::BTreeSet;
    use std::time::Duration;
    use tributary_shared::eventlog::{EventLog, EventLogError, Record};
    // A queue of 10 and one publish of 50: the producer must not buffer the
    // excess. Each record gets its own answer, in order, and the call returns.
    let args = KafkaArgs {
        brokers: test_brokers(),
        queue_max_messages: 10,
        ..KafkaArgs::default()
    };
    let log = KafkaLog::connect(&args, "tributary-contract-test").expect("connect");
    let topic = unique_topic("queue-full");
    log.ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .expect("create topic");
    let records: Vec<Record> = (0..50).map(|i| Record::new("k", format!("v{i}"))).collect();
    let res = tokio::time::timeout(Duration::from_secs(30), log.publisher().publish(&topic, records))
        .await
        .expect("publish settles every record");
    assert_eq!(res.len(), 50);
    // Nothing was delivered while the 50 sends ran (linger is 5 ms), so the first 10 fill the queue.
    assert!(res[..10].iter().all(Result::is_ok), "{res:?}");
    assert!(
        res.iter().all(|r| matches!(r, Ok(_) | Err(EventLogError::QueueFull))),
        "{res:?}"
    );
    let full = res.iter().filter(|r| r.is_err()).count();
    assert!(full > 0, "the queue never filled");

    // What was reported Ok is in the log, at the reported offsets, and nothing else is.
    let ok: BTreeSet<i64> = res.iter().filter_map(|r| r.as_ref().ok()).map(|d| d.offset).collect();
    let mut sub = log
        .subscribe(&format!("{topic}-g"), std::slice::from_ref(&topic))
        .await
        .expect("subscribe");
    let got = contract::drain(&mut sub, ok.len()).await;
    assert_eq!(got.iter().map(|m| m.offset).collect::<BTreeSet<_>>(), ok);
    let expected: Vec<Vec<u8>> = res
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| format!("v{i}").into_bytes())
        .collect();
    let mut in_log = got;
    in_log.sort_by_key(|m| m.offset);
    assert_eq!(
        in_log.into_iter().map(|m| m.value).collect::<Vec<_>>(),
        expected,
        "each Ok belongs to its own record"
    );
    sub.close().await;
}

#[tokio::test]
async fn a_partition_reads_back_what_was_written_to_it() {
    contract::a_partition_reads_back_what_was_written_to_it(&log(), &unique_topic("state")).await;
}

/// A tombstone is a null payload on the wire (what compaction deletes by),
/// and an empty value is not: read with librdkafka directly.
#[tokio::test]
async fn a_tombstone_is_a_null_payload_and_an_empty_value_is_not() {
    use std::time::{Duration, Instant};

    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use tributary_shared::eventlog::{EventLog, Record};

    let log = log();
    let topic = unique_topic("tombstone");
    log.ensure_compacted_topic(&topic, 1).await.expect("create topic");
    let records = vec![
        Record::tombstone("gone").to_partition(0),
        Record::new("empty", Vec::new()).to_partition(0),
    ];
    for d in log.publisher().publish(&topic, records).await {
        d.expect("acknowledged");
    }
    let topic_name = topic.clone();
    let payloads = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", test_brokers())
            .set("group.id", format!("{topic_name}-raw"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic_name, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let (deadline, mut got) = (Instant::now() + Duration::from_secs(30), Vec::new());
        while got.len() < 2 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                got.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
            }
        }
        got
    })
    .await
    .expect("reader");
    assert_eq!(
        payloads,
        vec![
            (Some(b"gone".to_vec()), None),
            (Some(b"empty".to_vec()), Some(Vec::new())),
        ]
    );
}

#[tokio::test]
async fn a_tail_reads_history_then_follows() {
    contract::a_tail_reads_history_then_follows(&log(), &unique_topic("tail")).await;
}
