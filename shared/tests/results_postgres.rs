//! The results-store contract against the real PostgreSQL (`DATABASE_URL`;
//! each test gets its own database from `#[sqlx::test]`).

use sqlx::PgPool;
use tributary_shared::results::PgStore;
use tributary_testkit::results as contract;

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

#[sqlx::test(migrations = "./migrations")]
async fn rollups_equal_the_merge_of_their_windows(pool: PgPool) {
    contract::rollups_equal_the_merge_of_their_windows(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn rollups_count_replays_and_late_windows_once(pool: PgPool) {
    contract::rollups_count_replays_and_late_windows_once(&PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn rollup_retention_is_per_tier(pool: PgPool) {
    contract::rollup_retention_is_per_tier(&PgStore::new(pool)).await;
}

/// `sslmode=require` gives an encrypted session (the machine's PostgreSQL has
/// `ssl = on`, as Azure's flexible server requires TLS).
#[tokio::test]
async fn tls_is_used_when_the_url_asks_for_it() {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/test sets it)");
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = PgStore::connect_lazy(&format!("{base}{sep}sslmode=require"), 1).expect("store");
    let (ssl,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("PostgreSQL with ssl = on (scripts/test's PostgreSQL)");
    assert!(ssl, "the session is encrypted");
    let plain = PgStore::connect_lazy(&format!("{base}{sep}sslmode=disable"), 1).expect("store");
    let (ssl,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(plain.pool())
        .await
        .expect("query");
    assert!(!ssl, "and only then");
    // verify-full checks the certificate against the trusted roots: the machine's
    // self-signed snakeoil certificate is not among them, so the connect fails.
    let strict = PgStore::connect_lazy(&format!("{base}{sep}sslmode=verify-full"), 1).expect("store");
    let refused = sqlx::query("SELECT 1")
        .execute(strict.pool())
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        refused.to_string().to_lowercase().contains("certificate") || refused.to_string().contains("UnknownIssuer"),
        "{refused}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn fleet_list_pages_searches_filters_and_sorts(pool: PgPool) {
    tributary_testkit::listing::fleet_list_pages_searches_filters_and_sorts(&PgStore::new(pool)).await;
}
