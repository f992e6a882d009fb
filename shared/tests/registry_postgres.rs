//! The device-registry contract against the real PostgreSQL (`DATABASE_URL`;
//! each test gets its own database from `#[sqlx::test]`).

use sqlx::PgPool;
use tributary_shared::registry::PgRegistry;
use tributary_shared::results::PgStore;
use tributary_testkit::registry as contract;

#[sqlx::test(migrations = "./migrations")]
async fn devices_are_added_read_and_listed(pool: PgPool) {
    contract::devices_are_added_read_and_listed(&PgRegistry::new(pool.clone()), &PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn imports_are_whole_and_idempotent(pool: PgPool) {
    contract::imports_are_whole_and_idempotent(&PgRegistry::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn status_and_key_changes_move_revisions(pool: PgPool) {
    contract::status_and_key_changes_move_revisions(&PgRegistry::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn changes_are_recorded_and_relayed(pool: PgPool) {
    contract::changes_are_recorded_and_relayed(std::sync::Arc::new(PgRegistry::new(pool))).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn first_windows_enroll_devices(pool: PgPool) {
    contract::first_windows_enroll_devices(&PgRegistry::new(pool.clone()), &PgStore::new(pool)).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn operators_adopt_first_contact_devices(pool: PgPool) {
    contract::operators_adopt_first_contact_devices(&PgRegistry::new(pool.clone()), &PgStore::new(pool)).await;
}
