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

#[sqlx::test(migrations = "./migrations")]
async fn delivery_queue_on_postgres(pool: PgPool) {
    contract::delivery_queue(&PgChannels::new(pool)).await;
}

async fn sqlite(name: &str) -> SqliteChannels {
    let dir = std::env::temp_dir().join(format!("tributary-notify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("results.db").display());
    let results = SqliteStore::open(&url).await.expect("open results");
    SqliteRegistry::new(results.pool().clone())
        .migrate()
        .await
        .expect("migrate");
    SqliteChannels::new(results.pool().clone())
}

#[tokio::test]
async fn channels_and_dead_letters_on_sqlite() {
    contract::channels_and_dead_letters(&sqlite("channels").await).await;
}

#[tokio::test]
async fn delivery_queue_on_sqlite() {
    contract::delivery_queue(&sqlite("queue").await).await;
}

/// The query KEDA scales process on (`keda/base/process.yaml`, the
/// postgresql trigger) runs on the migrated schema and counts the
/// deliveries waiting for enabled channels: not the done ones, not a
/// disabled channel's.
#[sqlx::test(migrations = "./migrations")]
async fn the_keda_queue_query_counts_what_waits_for_enabled_channels(pool: PgPool) {
    use chrono::Utc;
    use tributary_shared::notify::queue::{DeliveryQueue, Queued};
    use tributary_shared::notify::store::ChannelStore;
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../keda/base/process.yaml"))
        .expect("keda/base/process.yaml");
    let query = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("query: "))
        .expect("the postgresql trigger's query")
        .trim_matches('"')
        .to_owned();
    let store = PgChannels::new(pool.clone());
    let mut spec = tributary_testkit::notify::spec("https://hooks.example.com/a");
    store.put("on", &spec, Utc::now()).await.expect("on");
    spec.enabled = false;
    store.put("off", &spec, Utc::now()).await.expect("off");
    let alerts: Vec<_> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| tributary_testkit::notify::alert(id, tributary_shared::records::AlertState::Opened, 0))
        .collect();
    let items = [
        Queued::new("on", &alerts[0], "freezers"),
        Queued::new("on", &alerts[1], "freezers"),
        Queued::new("off", &alerts[2], "freezers"),
    ];
    store.enqueue(&items, Utc::now()).await.expect("enqueue");
    let count = || async {
        sqlx::query_as::<_, (i64,)>(&query)
            .fetch_one(&pool)
            .await
            .expect("the KEDA query runs")
            .0
    };
    assert_eq!(count().await, 2);
    let head = store.head("on").await.expect("head").expect("queued");
    store.delivered(head.seq, Utc::now()).await.expect("delivered");
    assert_eq!(count().await, 1, "done rows do not count");
}
