//! The device-registry contract against the embedded SQLite file (a fresh
//! file each test, the results store on the same file).

use tributary_shared::registry::{DeviceRegistry, SqliteRegistry};
use tributary_shared::results::SqliteStore;
use tributary_testkit::registry as contract;

async fn open(name: &str) -> (SqliteRegistry, SqliteStore) {
    let dir = std::env::temp_dir().join(format!("tributary-registry-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("results.db").display());
    let results = SqliteStore::open(&url).await.expect("open results");
    let registry = SqliteRegistry::new(results.pool().clone());
    registry.migrate().await.expect("migrate");
    (registry, results)
}

#[tokio::test]
async fn devices_are_added_read_and_listed() {
    let (registry, results) = open("listed").await;
    contract::devices_are_added_read_and_listed(&registry, &results).await;
}

#[tokio::test]
async fn imports_are_whole_and_idempotent() {
    contract::imports_are_whole_and_idempotent(&open("import").await.0).await;
}

#[tokio::test]
async fn status_and_key_changes_move_revisions() {
    contract::status_and_key_changes_move_revisions(&open("status").await.0).await;
}

#[tokio::test]
async fn changes_are_recorded_and_relayed() {
    contract::changes_are_recorded_and_relayed(std::sync::Arc::new(open("relay").await.0)).await;
}

#[tokio::test]
async fn first_windows_enroll_devices() {
    let (registry, results) = open("first-contact").await;
    contract::first_windows_enroll_devices(&registry, &results).await;
}

#[tokio::test]
async fn operators_adopt_first_contact_devices() {
    let (registry, results) = open("adopt").await;
    contract::operators_adopt_first_contact_devices(&registry, &results).await;
}
