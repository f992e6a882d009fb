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

#[sqlx::test(migrations = "./migrations")]
async fn fleet_list_by_registry_group(pool: PgPool) {
    let registry = tributary_shared::registry::PgRegistry::new(pool.clone());
    tributary_testkit::listing::fleet_list_by_registry_group(&PgStore::new(pool), &registry).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn sketched_rollups_give_the_quantiles_of_the_readings(pool: PgPool) {
    contract::sketched_rollups_give_the_quantiles_of_the_readings(&PgStore::new(pool)).await;
}

/// The fleet list's search on PostgreSQL reads the trigram index
/// (migration 20261207000002) rather than every device: in a fleet of
/// 10,000, after every device was updated (which re-adds its trigrams:
/// the index's small pending list keeps them from piling up), the planner
/// takes it for the list's own predicate
/// (`results::listing`: the id under "C", `ILIKE`, escaped pattern), and the
/// store's answer through it is the matching devices.
#[sqlx::test(migrations = "./migrations")]
async fn a_search_reads_the_trigram_index_not_the_fleet(pool: PgPool) {
    use tributary_shared::results::{DeviceQuery, ResultStore};
    sqlx::query(
        "INSERT INTO devices (device_id, first_seen, last_seen, last_values)
         SELECT 'bench-truck-' || g, now() - interval '1 day', now() - g * interval '1 second', '{}'::jsonb
         FROM generate_series(0, 9999) g",
    )
    .execute(&pool)
    .await
    .expect("fleet");
    // Then every device's last_seen moves, as each batch process writes does.
    sqlx::query("UPDATE devices SET last_seen = last_seen + interval '10 seconds'")
        .execute(&pool)
        .await
        .expect("update");
    sqlx::query("ANALYZE devices").execute(&pool).await.expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT count(*) FROM devices d WHERE d.device_id COLLATE \"C\" ILIKE $1 ESCAPE '\\'",
    )
    .bind("%truck-42%")
    .fetch_all(&pool)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains("devices_id_trgm"), "the search scans the fleet:\n{plan}");
    let page = PgStore::new(pool)
        .device_listing(&DeviceQuery {
            search: Some("TRUCK-42".into()),
            limit: 500,
            ..DeviceQuery::default()
        })
        .await
        .expect("listing");
    // truck-42, truck-420..429 and truck-4200..4299.
    assert_eq!(page.total, 111);
    assert_eq!(page.devices.len(), 111);
    assert!(page.devices.iter().all(|d| d.device_id.contains("truck-42")));
}
