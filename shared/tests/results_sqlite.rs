//! The results-store contract against the embedded SQLite store (a fresh file each test).

use tributary_shared::results::{ResultStore, SqliteStore};
use tributary_testkit::results as contract;

async fn store(name: &str) -> SqliteStore {
    let dir = std::env::temp_dir().join(format!("tributary-results-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let s = SqliteStore::open(&format!("sqlite://{}", dir.join("results.db").display()))
        .await
        .expect("open");
    s.migrate().await.expect("migrate");
    s
}

#[tokio::test]
async fn batch_is_written_and_replay_changes_nothing() {
    contract::batch_is_written_and_replay_changes_nothing(&store("replay").await).await;
}

#[tokio::test]
async fn alerts_move_forward_and_keep_acknowledgement() {
    contract::alerts_move_forward_and_keep_acknowledgement(&store("alerts").await).await;
}

#[tokio::test]
async fn device_values_merge_by_recency() {
    contract::device_values_merge_by_recency(&store("merge").await).await;
}

#[tokio::test]
async fn bad_rows_are_rejected_and_the_batch_is_atomic() {
    contract::bad_rows_are_rejected_and_the_batch_is_atomic(&store("atomic").await).await;
}

#[tokio::test]
async fn retention_deletes_old_windows() {
    contract::retention_deletes_old_windows(&store("retention").await).await;
}

#[tokio::test]
async fn large_batches_are_written() {
    contract::large_batches_are_written(&store("large").await).await;
}

#[tokio::test]
async fn rollups_equal_the_merge_of_their_windows() {
    contract::rollups_equal_the_merge_of_their_windows(&store("equal-0").await).await;
}

#[tokio::test]
async fn rollups_count_replays_and_late_windows_once() {
    contract::rollups_count_replays_and_late_windows_once(&store("count-1").await).await;
}

#[tokio::test]
async fn rollup_retention_is_per_tier() {
    contract::rollup_retention_is_per_tier(&store("retention-2").await).await;
}

#[tokio::test]
async fn the_store_persists_across_reopen() {
    let dir = std::env::temp_dir().join(format!("tributary-results-{}-reopen", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("results.db").display());
    {
        let s = SqliteStore::open(&url).await.expect("open");
        s.migrate().await.expect("migrate");
        s.write_batch(&[contract::agg("d", "temp", 0, 3.0)], &[])
            .await
            .expect("write");
        s.pool().close().await;
    }
    let s = SqliteStore::open(&url).await.expect("reopen");
    s.migrate().await.expect("migrations are idempotent");
    assert_eq!(
        s.devices(&["d".into()]).await.expect("devices").len(),
        1,
        "a restart keeps history"
    );
}

#[tokio::test]
async fn merged_series_match_the_reference() {
    contract::merged_series_match_the_reference(&store("merged").await).await;
}

#[tokio::test]
async fn fleet_list_pages_searches_filters_and_sorts() {
    tributary_testkit::listing::fleet_list_pages_searches_filters_and_sorts(&store("listing").await).await;
}

#[tokio::test]
async fn fleet_list_by_registry_group() {
    let s = store("groups").await;
    let registry = tributary_shared::registry::SqliteRegistry::new(s.pool().clone());
    tributary_testkit::listing::fleet_list_by_registry_group(&s, &registry).await;
}

#[tokio::test]
async fn sketched_rollups_give_the_quantiles_of_the_readings() {
    contract::sketched_rollups_give_the_quantiles_of_the_readings(&store("sketch-3").await).await;
}
