//! The alert-rule contract against the embedded SQLite file (a fresh file
//! each test, migrated as the results store is).

use std::sync::Arc;

use tributary_shared::registry::{DeviceRegistry, SqliteRegistry};
use tributary_shared::results::SqliteStore;
use tributary_shared::rules::SqliteRules;
use tributary_testkit::rules as contract;

async fn open(name: &str) -> SqliteRules {
    let dir = std::env::temp_dir().join(format!("tributary-rules-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("results.db").display());
    let results = SqliteStore::open(&url).await.expect("open results");
    // The registry's migrate runs the results store's migrations, rules included.
    SqliteRegistry::new(results.pool().clone())
        .migrate()
        .await
        .expect("migrate");
    SqliteRules::new(results.pool().clone())
}

#[tokio::test]
async fn rules_are_written_read_and_deleted() {
    contract::rules_are_written_read_and_deleted(&open("written").await).await;
}

#[tokio::test]
async fn the_number_of_rules_is_bounded() {
    contract::the_number_of_rules_is_bounded(&open("bounded").await).await;
}

#[tokio::test]
async fn the_relay_publishes_every_change() {
    contract::the_relay_publishes_every_change(Arc::new(open("relay").await)).await;
}
