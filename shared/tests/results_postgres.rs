//! The results-store contract against the real PostgreSQL (`DATABASE_URL`;
//! each test gets its own database from `#[sqlx::test]`).

use sqlx::PgPool;
use tributary_shared::results::{PgStore, contract};

#[sqlx::test(migrations = "./migrations")]
async fn batch_is_written_and_replay_changes_nothing(pool: PgPool) {
    contract::batch_is_written_and_replay_changes_nothing(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn alerts_move_forward_and_keep_acknowledgement(pool: PgPool) {
    contract::alerts_move_forward_and_keep_acknowledgement(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn device_values_merge_by_recency(pool: PgPool) {
    contract::device_values_merge_by_recency(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn bad_rows_are_rejected_and_the_batch_is_atomic(pool: PgPool) {
    contract::bad_rows_are_rejected_and_the_batch_is_atomic(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn retention_deletes_old_windows(pool: PgPool) {
    contract::retention_deletes_old_windows(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn large_batches_are_written(pool: PgPool) {
    contract::large_batches_are_written(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn merged_series_match_the_reference(pool: PgPool) {
    contract::merged_series_match_the_reference(&PgStore::new(pool)).await;
}
