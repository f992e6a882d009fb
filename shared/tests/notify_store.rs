//! The notification-channel contract against PostgreSQL (`DATABASE_URL`,
//! a database per test) and the embedded SQLite file.

use sqlx::PgPool;
use tributary_shared::notify::postgres::PgChannels;
use tributary_shared::notify::sqlite::SqliteChannels;
use tributary_shared::registry::{DeviceRegistry, SqliteRegistry};
use tributary_shared::results::SqliteStore;
use tributary_testkit::notify as contract;

#[sqlx::test(migrations = "./migrations")]
async fn channels_and_dead_letters_on_postgres(pool: PgPool) {
    contract::channels_and_dead_letters(&PgChannels::new(pool)).await;
}

#[tokio::test]
async fn channels_and_dead_letters_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tributary-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("results.db").display());
    let results = SqliteStore::open(&url).await.expect("open results");
    SqliteRegistry::new(results.pool().clone())
        .migrate()
        .await
        .expect("migrate");
    contract::channels_and_dead_letters(&SqliteChannels::new(results.pool().clone())).await;
}
