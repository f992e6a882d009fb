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

/// A stop is prompt even while the relay publishes to a broker that does not
/// answer (each publish would wait out the 5 s delivery timeout): process's
/// SIGTERM must not wait for it.
#[tokio::test]
async fn the_relay_stops_promptly_while_a_publish_waits_for_the_broker() {
    use tributary_shared::config::KafkaArgs;
    use tributary_shared::eventlog::EventLog;
    use tributary_shared::eventlog::kafka::KafkaLog;
    use tributary_shared::registry::NewDevice;
    use tributary_shared::registry::relay::{self, Relay, RelaySettings};
    use tributary_shared::service::Shutdown;

    let (registry, _results) = open("relay-stop").await;
    registry
        .add(&NewDevice::new("dev-1"), chrono::Utc::now())
        .await
        .expect("add");
    // Nothing listens on port 9 (discard): every delivery waits for its timeout.
    let log = KafkaLog::connect(
        &KafkaArgs {
            brokers: "127.0.0.1:9".into(),
            ..KafkaArgs::default()
        },
        "relay-stop-test",
    )
    .expect("client");
    let relay = Relay::new(
        std::sync::Arc::new(registry),
        log.publisher(),
        "tributary.devices",
        RelaySettings::default(),
    );
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay::run(relay, shutdown.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "the first publish is still waiting for the broker"
    );
    let asked = std::time::Instant::now();
    shutdown.trigger();
    tokio::time::timeout(std::time::Duration::from_secs(1), running)
        .await
        .expect("the relay stopped within 1 s of the stop")
        .expect("the relay task");
    assert!(asked.elapsed() < std::time::Duration::from_secs(1));
}
