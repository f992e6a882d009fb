//! The event-log contract, against the in-process backend.

use tributary_shared::eventlog::memory::MemoryLog;
use tributary_testkit::eventlog as contract;
use tributary_testkit::unique_topic;

#[tokio::test]
async fn publish_and_consume_in_key_order() {
    contract::publish_and_consume_in_key_order(&MemoryLog::default(), &unique_topic("order")).await;
}

#[tokio::test]
async fn headers_round_trip() {
    contract::headers_round_trip(&MemoryLog::default(), &unique_topic("headers")).await;
}

#[tokio::test]
async fn runner_commits_only_after_success() {
    contract::runner_commits_only_after_success(&MemoryLog::default(), &unique_topic("runner")).await;
}

#[tokio::test]
async fn uncommitted_records_are_redelivered() {
    contract::uncommitted_records_are_redelivered(&MemoryLog::default(), &unique_topic("redeliver")).await;
}

#[tokio::test]
async fn committed_offsets_and_metadata_round_trip() {
    contract::committed_offsets_round_trip(&MemoryLog::default(), &unique_topic("metadata")).await;
}

#[tokio::test]
async fn group_members_split_partitions() {
    contract::group_members_split_partitions(&MemoryLog::default(), &unique_topic("group")).await;
}

#[tokio::test]
async fn retention_drops_the_oldest_records() {
    use tributary_shared::eventlog::{Publisher, Record};
    let log = MemoryLog::new(1, 10);
    let recs: Vec<Record> = (0..25).map(|i| Record::new("k", format!("{i}"))).collect();
    let res = log.publish("t", recs).await;
    assert_eq!(res.last().and_then(|r| r.as_ref().ok()).map(|d| d.offset), Some(24));
    let kept = log.snapshot("t");
    assert_eq!(kept.len(), 10);
    assert_eq!(kept[0].offset, 15);
    assert_eq!(kept[0].value, b"15");
}

#[tokio::test]
async fn committed_metadata_belongs_to_the_latest_commit() {
    contract::committed_metadata_belongs_to_the_latest_commit(&MemoryLog::default(), &unique_topic("metadata-latest"))
        .await;
}

#[tokio::test]
async fn a_partition_reads_back_what_was_written_to_it() {
    contract::a_partition_reads_back_what_was_written_to_it(&MemoryLog::default(), &unique_topic("state")).await;
}

#[tokio::test]
async fn a_tail_reads_history_then_follows() {
    contract::a_tail_reads_history_then_follows(&MemoryLog::default(), &unique_topic("tail")).await;
}
