//! The behaviour every [`DeviceRegistry`] backend must show, written once and
//! run against PostgreSQL and SQLite by `shared/tests/registry_*.rs`. Each
//! check takes a freshly migrated, empty database (the registry and the
//! results store on it) and panics naming what broke.

use chrono::Duration;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::registry::relay::{Relay, RelaySettings};
use tributary_shared::registry::view::{DeviceView, EnrollmentMode, Refusal};
use tributary_shared::registry::{
    DEFAULT_GROUP, DeviceRegistry, DeviceStatus, Enrollment, ImportOutcome, NewDevice, RegistryError, RegistryQuery,
};
use tributary_shared::results::ResultStore;

use crate::results::{agg, now};

fn device(id: &str, group: &str) -> NewDevice {
    NewDevice {
        id: id.into(),
        name: Some(format!("Device {id}")),
        group: Some(group.into()),
        tags: [("site".to_string(), "north".to_string())].into(),
    }
}

fn query() -> RegistryQuery {
    RegistryQuery::default()
}

fn ids(devices: &[tributary_shared::registry::RegisteredDevice]) -> Vec<&str> {
    devices.iter().map(|d| d.id.as_str()).collect()
}

/// Add one device, read it back with what the results know of it, refuse a
/// second add, and list by group, state and search, page by page.
pub async fn devices_are_added_read_and_listed(reg: &dyn DeviceRegistry, results: &dyn ResultStore) {
    let added = reg.add(&device("truck-1", "trucks"), now()).await.expect("add");
    assert_eq!(added.id, "truck-1");
    assert_eq!(added.name.as_deref(), Some("Device truck-1"));
    assert_eq!(added.group, "trucks");
    assert_eq!(added.tags.get("site").map(String::as_str), Some("north"));
    assert_eq!(added.status, DeviceStatus::Active);
    assert_eq!(added.key_version, 0);
    assert_eq!(added.enrolled_by, Enrollment::Operator);
    assert_eq!(added.revision, 1);
    assert_eq!((added.created_at, added.updated_at), (now(), now()));
    assert_eq!(added.last_seen, None, "no windows yet");

    assert!(
        matches!(reg.add(&device("truck-1", "other"), now()).await, Err(RegistryError::Exists(id)) if id == "truck-1"),
        "a second add of the same id is refused"
    );
    assert!(
        matches!(reg.add(&NewDevice::new("bad id"), now()).await, Err(RegistryError::Invalid(e)) if e.field == "id"),
        "an invalid id is refused"
    );
    let plain = reg.add(&NewDevice::new("sensor_7"), now()).await.expect("add plain");
    assert_eq!((plain.group.as_str(), plain.name.as_deref()), (DEFAULT_GROUP, None));
    assert!(plain.tags.is_empty());
    assert!(reg.get("nobody").await.expect("get").is_none());

    // last_seen is what the results store knows.
    results
        .write_batch(&[agg("truck-1", "temp", 0, 20.0)], &[])
        .await
        .expect("write a window");
    let seen = reg.get("truck-1").await.expect("get").expect("registered");
    assert_eq!(seen.last_seen, Some(agg("truck-1", "temp", 0, 20.0).window_end));

    for i in 0..5 {
        reg.add(&device(&format!("truck-{}", i + 2), "trucks"), now())
            .await
            .expect("add truck");
        reg.add(&device(&format!("freezer-{i}"), "freezers"), now())
            .await
            .expect("add freezer");
    }
    reg.set_status("truck-3", DeviceStatus::Disabled, now())
        .await
        .expect("disable");
    assert_eq!(reg.count().await.expect("count"), 12);

    let all = reg.list(&query()).await.expect("list");
    assert_eq!(all.len(), 12);
    let mut sorted = ids(&all);
    sorted.sort_unstable();
    assert_eq!(ids(&all), sorted, "listed by id");

    let trucks = reg
        .list(&RegistryQuery {
            group: Some("trucks".into()),
            ..query()
        })
        .await
        .expect("trucks");
    assert_eq!(
        ids(&trucks),
        ["truck-1", "truck-2", "truck-3", "truck-4", "truck-5", "truck-6"]
    );
    let disabled = reg
        .list(&RegistryQuery {
            status: Some(DeviceStatus::Disabled),
            ..query()
        })
        .await
        .expect("disabled");
    assert_eq!(ids(&disabled), ["truck-3"]);

    // Search: part of the id or the name, any case, wildcards taken literally.
    let found = reg
        .list(&RegistryQuery {
            search: Some("FREEZER-3".into()),
            ..query()
        })
        .await
        .expect("search id");
    assert_eq!(ids(&found), ["freezer-3"]);
    let found = reg
        .list(&RegistryQuery {
            search: Some("device truck-4".into()),
            ..query()
        })
        .await
        .expect("search name");
    assert_eq!(ids(&found), ["truck-4"]);
    let found = reg
        .list(&RegistryQuery {
            search: Some("sensor_".into()),
            ..query()
        })
        .await
        .expect("search underscore");
    assert_eq!(ids(&found), ["sensor_7"]);
    let found = reg
        .list(&RegistryQuery {
            search: Some("r_1".into()),
            ..query()
        })
        .await
        .expect("search wildcard");
    assert!(found.is_empty(), "_ is not a wildcard: {:?}", ids(&found));

    // Pages of 5 after the last id of the previous page cover the fleet once.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = reg
            .list(&RegistryQuery {
                after: after.clone(),
                limit: 5,
                ..query()
            })
            .await
            .expect("page");
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page.iter().map(|d| d.id.clone()));
    }
    assert_eq!(paged, ids(&all), "pages cover the fleet once, in order");
}

/// Import thousands in one call; again with no change; with changes; and a
/// bad file, which writes nothing.
pub async fn imports_are_whole_and_idempotent(reg: &dyn DeviceRegistry) {
    let fleet: Vec<NewDevice> = (0..2_500)
        .map(|i| device(&format!("dev-{i:05}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let later = now() + Duration::minutes(1);
    assert_eq!(
        reg.import(&fleet, now()).await.expect("import"),
        ImportOutcome {
            created: 2_500,
            updated: 0,
            unchanged: 0
        }
    );
    assert_eq!(reg.count().await.expect("count"), 2_500);
    let d7 = reg.get("dev-00007").await.expect("get").expect("imported");
    assert_eq!((d7.group.as_str(), d7.revision, d7.key_version), ("odd", 1, 0));
    assert_eq!(d7.tags.get("site").map(String::as_str), Some("north"));

    // The same file again changes nothing, not even a revision or a time.
    assert_eq!(
        reg.import(&fleet, later).await.expect("re-import"),
        ImportOutcome {
            created: 0,
            updated: 0,
            unchanged: 2_500
        }
    );
    assert_eq!(reg.get("dev-00007").await.expect("get"), Some(d7.clone()));

    // State and key version are the registry's: an import keeps them.
    reg.set_status("dev-00007", DeviceStatus::Disabled, now())
        .await
        .expect("disable");
    reg.rotate_key("dev-00007", now()).await.expect("rotate");
    let mut changed = fleet.clone();
    changed[7].group = Some("moved".into());
    changed[8].tags.insert("rack".into(), "4".into());
    changed[9].name = None;
    changed.push(device("dev-new", "even"));
    assert_eq!(
        reg.import(&changed, later).await.expect("import changes"),
        ImportOutcome {
            created: 1,
            updated: 3,
            unchanged: 2_497
        }
    );
    let d7 = reg.get("dev-00007").await.expect("get").expect("still there");
    assert_eq!(d7.group, "moved");
    assert_eq!((d7.status, d7.key_version), (DeviceStatus::Disabled, 1), "kept");
    assert_eq!(d7.revision, 4, "disable, rotate, import");
    assert_eq!((d7.created_at, d7.updated_at), (now(), later));
    let d9 = reg.get("dev-00009").await.expect("get").expect("still there");
    assert_eq!(d9.name, None);

    // A file with one bad device, or one id twice, writes nothing at all.
    let before = reg.count().await.expect("count");
    let mut bad: Vec<NewDevice> = (0..1_500).map(|i| NewDevice::new(format!("late-{i}"))).collect();
    bad.push(NewDevice {
        group: Some("two words".into()),
        ..NewDevice::new("late-bad")
    });
    assert!(matches!(
        reg.import(&bad, later).await,
        Err(RegistryError::Invalid(e)) if e.device == "late-bad" && e.field == "group"
    ));
    let twice = [NewDevice::new("late-x"), NewDevice::new("late-x")];
    assert!(matches!(reg.import(&twice, later).await, Err(RegistryError::Duplicate(id)) if id == "late-x"));
    assert_eq!(reg.count().await.expect("count"), before, "nothing half-imported");
    assert!(reg.get("late-0").await.expect("get").is_none());
    assert_eq!(reg.import(&[], later).await.expect("empty"), ImportOutcome::default());
}

/// Disable, enable and rotate: each change is one revision, a repeat of a
/// state change is none, and an unknown device is an error.
pub async fn status_and_key_changes_move_revisions(reg: &dyn DeviceRegistry) {
    reg.add(&device("pump-1", "pumps"), now()).await.expect("add");
    let t1 = now() + Duration::seconds(1);
    let off = reg
        .set_status("pump-1", DeviceStatus::Disabled, t1)
        .await
        .expect("disable");
    assert_eq!(
        (off.status, off.revision, off.updated_at),
        (DeviceStatus::Disabled, 2, t1)
    );
    let again = reg
        .set_status("pump-1", DeviceStatus::Disabled, t1 + Duration::seconds(1))
        .await
        .expect("disable again");
    assert_eq!(again, off, "disabling a disabled device changes nothing");
    let on = reg
        .set_status("pump-1", DeviceStatus::Active, t1)
        .await
        .expect("enable");
    assert_eq!((on.status, on.revision), (DeviceStatus::Active, 3));

    let r1 = reg.rotate_key("pump-1", t1).await.expect("rotate");
    assert_eq!((r1.key_version, r1.revision), (1, 4));
    let r2 = reg.rotate_key("pump-1", t1).await.expect("rotate again");
    assert_eq!((r2.key_version, r2.revision), (2, 5), "every rotation is a new version");
    assert_eq!(r2.status, DeviceStatus::Active);

    assert!(matches!(
        reg.set_status("ghost", DeviceStatus::Disabled, t1).await,
        Err(RegistryError::NotFound(id)) if id == "ghost"
    ));
    assert!(matches!(
        reg.rotate_key("ghost", t1).await,
        Err(RegistryError::NotFound(_))
    ));
}

/// Every change is recorded in the outbox (a no-op is not), and the relay
/// publishes the registry whole, then each change, to a topic a view follows.
pub async fn changes_are_recorded_and_relayed(reg: Arc<dyn DeviceRegistry>) {
    assert_eq!(reg.last_change().await.expect("last"), 0);
    reg.add(&device("a", "g"), now()).await.expect("add");
    let fleet: Vec<NewDevice> = (0..1_200).map(|i| NewDevice::new(format!("f-{i:04}"))).collect();
    reg.import(&fleet, now()).await.expect("import");
    reg.import(&fleet, now()).await.expect("import again");
    reg.set_status("a", DeviceStatus::Disabled, now())
        .await
        .expect("disable");
    reg.set_status("a", DeviceStatus::Disabled, now())
        .await
        .expect("disable again");
    reg.rotate_key("f-0007", now()).await.expect("rotate");
    let changes = reg.changes_after(0, 10_000).await.expect("changes");
    assert_eq!(changes.len(), 1 + 1_200 + 1 + 1, "one per change, none for a no-op");
    assert!(changes.windows(2).all(|w| w[0].0 < w[1].0), "in sequence order");
    assert_eq!(reg.last_change().await.expect("last"), changes[changes.len() - 1].0);
    // A change row carries the device as it is now.
    assert_eq!(changes[0].1.id, "a");
    assert_eq!(changes[0].1.status, DeviceStatus::Disabled);
    let tail = reg.changes_after(changes[1_200].0, 10).await.expect("tail");
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1].1.key_version, 1);

    // The relay: everything first, then each change.
    let log = MemoryLog::new(1, 100_000);
    log.ensure_compacted_topic("devices", 1).await.expect("topic");
    let mut relay = Relay::new(reg.clone(), log.publisher(), "devices", RelaySettings::default());
    assert_eq!(relay.publish_all().await.expect("publish all"), 1_201);
    assert_eq!(relay.cursor(), changes[changes.len() - 1].0);
    assert_eq!(relay.step().await.expect("nothing new"), 0);
    let view = DeviceView::new();
    let mut follower = log.tail("devices").await.expect("tail");
    view.apply(
        &follower
            .next(100_000, StdDuration::from_millis(100))
            .await
            .expect("read"),
    );
    assert_eq!(view.len(), 1_201);
    assert_eq!(
        view.admit("a", 0, EnrollmentMode::Registered),
        Err(Refusal::Disabled("a".into()))
    );
    assert!(matches!(
        view.admit("f-0007", 0, EnrollmentMode::Registered),
        Err(Refusal::StaleKey { current: 1, .. })
    ));

    reg.set_status("a", DeviceStatus::Active, now()).await.expect("enable");
    reg.rotate_key("f-0007", now()).await.expect("rotate");
    reg.rotate_key("f-0007", now()).await.expect("rotate");
    assert_eq!(relay.step().await.expect("step"), 2, "one record per device changed");
    view.apply(&follower.next(100, StdDuration::from_millis(100)).await.expect("read"));
    assert_eq!(view.admit("a", 0, EnrollmentMode::Registered), Ok(()));
    assert_eq!(view.admit("f-0007", 3, EnrollmentMode::Registered), Ok(()));

    // Pruning forgets old changes only.
    assert_eq!(reg.prune_changes(now() - Duration::seconds(1)).await.expect("prune"), 0);
    assert!(reg.prune_changes(now() + Duration::seconds(1)).await.expect("prune") > 1_200);
    assert!(reg.changes_after(0, 10).await.expect("changes").is_empty());
}

/// Open enrollment's first contact: storing a device's first window
/// registers it (`first-contact`, active, key version 0) and records the
/// change for the relay; storing more windows changes nothing, and a device
/// an operator registered (and disabled) keeps what the operator set.
pub async fn first_windows_enroll_devices(reg: &dyn DeviceRegistry, results: &dyn ResultStore) {
    reg.add(&device("known", "trucks"), now()).await.expect("add");
    reg.set_status("known", DeviceStatus::Disabled, now())
        .await
        .expect("disable");
    let before = reg.last_change().await.expect("last");
    results
        .write_batch(
            &[
                agg("new-1", "t", 0, 1.0),
                agg("new-2", "t", 0, 2.0),
                agg("known", "t", 0, 3.0),
            ],
            &[],
        )
        .await
        .expect("write");
    let new = reg
        .get("new-1")
        .await
        .expect("get")
        .expect("new-1 enrolled on first contact");
    assert_eq!(new.enrolled_by, Enrollment::FirstContact);
    assert_eq!(new.status, DeviceStatus::Active);
    assert_eq!((new.key_version, new.revision), (0, 1));
    assert_eq!(new.group, DEFAULT_GROUP);
    assert!(new.last_seen.is_some(), "its window is joined in");
    let known = reg.get("known").await.expect("get").expect("known");
    assert_eq!(known.status, DeviceStatus::Disabled, "first contact never re-enables");
    assert_eq!(known.enrolled_by, Enrollment::Operator);
    let changes = reg.changes_after(before, 100).await.expect("changes");
    let mut changed = ids(&changes.iter().map(|c| c.1.clone()).collect::<Vec<_>>())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    changed.sort();
    assert_eq!(
        changed,
        ["new-1", "new-2"],
        "one change per new device, none for the known one"
    );

    let last = reg.last_change().await.expect("last");
    results
        .write_batch(&[agg("new-1", "t", 1, 1.5)], &[])
        .await
        .expect("write again");
    assert_eq!(
        reg.last_change().await.expect("last"),
        last,
        "a second window enrolls nothing"
    );
    assert_eq!(reg.get("new-1").await.expect("get").map(|d| d.revision), Some(1));
}

/// An operator adding or importing a device enrolled on first contact adopts
/// it: the operator's name and group, its state and key version kept.
pub async fn operators_adopt_first_contact_devices(reg: &dyn DeviceRegistry, results: &dyn ResultStore) {
    results
        .write_batch(&[agg("pump-1", "t", 0, 1.0), agg("pump-2", "t", 0, 1.0)], &[])
        .await
        .expect("write");
    reg.rotate_key("pump-1", now()).await.expect("rotate");
    let adopted = reg.add(&device("pump-1", "pumps"), now()).await.expect("adopt by add");
    assert_eq!(adopted.enrolled_by, Enrollment::Operator);
    assert_eq!((adopted.group.as_str(), adopted.key_version), ("pumps", 1));
    assert_eq!(adopted.revision, 3, "enrolled, rotated, adopted");
    assert!(
        matches!(
            reg.add(&device("pump-1", "pumps"), now()).await,
            Err(RegistryError::Exists(_))
        ),
        "a second add is refused once an operator registered it"
    );
    let outcome = reg
        .import(&[device("pump-1", "pumps"), NewDevice::new("pump-2")], now())
        .await
        .expect("import");
    assert_eq!(
        outcome,
        ImportOutcome {
            created: 0,
            updated: 1,
            unchanged: 1
        },
        "pump-2 adopted as it is, pump-1 unchanged"
    );
    let pump2 = reg.get("pump-2").await.expect("get").expect("pump-2");
    assert_eq!(pump2.enrolled_by, Enrollment::Operator);
}
