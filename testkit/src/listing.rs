//! The fleet list's contract (paging, search, filters, order), run against
//! PostgreSQL and SQLite by `shared/tests/results_*.rs` like [`crate::results`].

use std::collections::BTreeSet;

use tributary_shared::records::{Aggregate, AlertState};
use tributary_shared::registry::{DeviceRegistry, NewDevice};
use tributary_shared::results::{DevicePage, DeviceQuery, DeviceSort, DeviceStatus, ResultStore};

use crate::results::{agg, alert, now, t};

async fn page(s: &dyn ResultStore, q: DeviceQuery) -> DevicePage {
    s.device_listing(&q).await.expect("device_listing")
}

fn ids(p: &DevicePage) -> Vec<&str> {
    p.devices.iter().map(|d| d.device_id.as_str()).collect()
}

/// 30 devices `dev-00`…`dev-29`, device i last seen at t(10 i + 10), plus
/// `Truck_1` and `truckX1`; alerts: two unresolved on dev-03, one on dev-07,
/// one resolved on dev-05.
async fn seed(s: &dyn ResultStore) {
    let mut aggs: Vec<Aggregate> = (0..30)
        .map(|i| agg(&format!("dev-{i:02}"), "temp", i * 10, 1.0))
        .collect();
    aggs.push(agg("Truck_1", "temp", 400, 1.0));
    aggs.push(agg("truckX1", "temp", 410, 1.0));
    let alerts = vec![
        alert("a-3a", "dev-03", AlertState::Opened, 5),
        alert("a-3b", "dev-03", AlertState::Opened, 6),
        alert("a-7", "dev-07", AlertState::Opened, 5),
        alert("a-5", "dev-05", AlertState::Resolved, 5),
    ];
    s.write_batch(&aggs, &alerts).await.expect("write");
}

/// Pages walk the whole fleet once, in order, with the total on every page;
/// search is a case-insensitive substring with `LIKE`'s wildcards literal;
/// the status filters partition the fleet; every order is total.
pub async fn fleet_list_pages_searches_filters_and_sorts(s: &dyn ResultStore) {
    seed(s).await;
    let base = DeviceQuery {
        limit: 10,
        online_since: now(),
        ..DeviceQuery::default()
    };

    // Paging by offset: four pages, no device twice, newest first throughout.
    let mut seen = Vec::new();
    for offset in [0, 10, 20, 30] {
        let p = page(s, DeviceQuery { offset, ..base.clone() }).await;
        assert_eq!(p.total, 32, "the total is the fleet's on every page (offset {offset})");
        assert_eq!(p.devices.len(), if offset == 30 { 2 } else { 10 });
        seen.extend(p.devices);
    }
    assert!(
        seen.windows(2).all(|w| w[0].last_seen >= w[1].last_seen),
        "newest first"
    );
    assert_eq!(
        seen.iter().map(|d| d.device_id.as_str()).collect::<BTreeSet<_>>().len(),
        32,
        "no device on two pages"
    );
    assert_eq!(
        (seen[0].device_id.as_str(), seen[31].device_id.as_str()),
        ("truckX1", "dev-00")
    );
    let past = page(
        s,
        DeviceQuery {
            offset: 40,
            ..base.clone()
        },
    )
    .await;
    assert!(
        past.devices.is_empty() && past.total == 32,
        "past the end: no rows, same total"
    );

    // Search.
    let search = |term: &str| DeviceQuery {
        search: Some(term.into()),
        limit: 100,
        ..base.clone()
    };
    assert_eq!(
        ids(&page(s, search("truck_1")).await),
        ["Truck_1"],
        "case-insensitive, '_' literal"
    );
    let teens = page(s, search("DEV-1")).await;
    assert_eq!(teens.total, 10, "dev-10..dev-19: {:?}", ids(&teens));
    assert_eq!(page(s, search("%")).await.total, 0, "'%' is literal");
    assert_eq!(
        page(s, search("")).await.total,
        32,
        "an empty search matches every device"
    );

    // Status: online after t(150) are dev-15..dev-29 and the trucks (ends t(160)..).
    let status = |status: DeviceStatus| DeviceQuery {
        status,
        online_since: t(150),
        limit: 100,
        ..base.clone()
    };
    let online = page(s, status(DeviceStatus::Online)).await;
    let offline = page(s, status(DeviceStatus::Offline)).await;
    assert_eq!((online.total, offline.total), (17, 15), "online {:?}", ids(&online));
    assert!(online.devices.iter().all(|d| d.online) && offline.devices.iter().all(|d| !d.online));
    let alerting = page(
        s,
        DeviceQuery {
            sort: DeviceSort::DeviceId,
            descending: false,
            ..status(DeviceStatus::Alerting)
        },
    )
    .await;
    assert_eq!(ids(&alerting), ["dev-03", "dev-07"], "a resolved alert does not count");
    assert_eq!(
        alerting.devices.iter().map(|d| d.open_alerts).collect::<Vec<_>>(),
        [2, 1]
    );
    let searched_online = page(
        s,
        DeviceQuery {
            search: Some("dev-2".into()),
            ..status(DeviceStatus::Online)
        },
    )
    .await;
    assert_eq!(searched_online.total, 10, "search and status together");

    // Orders: by alerts (ties by id, same direction), by id in byte order both ways, by first seen.
    let by = |sort: DeviceSort, descending: bool| DeviceQuery {
        sort,
        descending,
        limit: 3,
        ..base.clone()
    };
    assert_eq!(
        ids(&page(s, by(DeviceSort::OpenAlerts, true)).await),
        ["dev-03", "dev-07", "truckX1"]
    );
    assert_eq!(
        ids(&page(s, by(DeviceSort::DeviceId, false)).await),
        ["Truck_1", "dev-00", "dev-01"],
        "byte order on every backend"
    );
    assert_eq!(
        ids(&page(s, by(DeviceSort::DeviceId, true)).await),
        ["truckX1", "dev-29", "dev-28"]
    );
    assert_eq!(
        ids(&page(s, by(DeviceSort::FirstSeen, false)).await),
        ["dev-00", "dev-01", "dev-02"]
    );
}

fn grouped(group: &str, ids: impl IntoIterator<Item = String>) -> Vec<NewDevice> {
    ids.into_iter()
        .map(|id| NewDevice {
            group: Some(group.into()),
            ..NewDevice::new(id)
        })
        .collect()
}

/// The group filter and column follow the device registry at read time: a
/// group's devices only (with search and status), a device moved to another
/// group is listed there at once, a device first stored is in the default
/// group (enrolled on first contact), and the groups list counts registered
/// devices whether they sent or not.
/// `registry` must be the registry in `s`'s database.
pub async fn fleet_list_by_registry_group(s: &dyn ResultStore, registry: &dyn DeviceRegistry) {
    seed(s).await;
    let mut devices = grouped("trucks", (0..10).map(|i| format!("dev-{i:02}")));
    devices.extend(grouped("freezers", (10..15).map(|i| format!("dev-{i:02}"))));
    // Registered, never sent: counted in its group, not in the fleet list.
    devices.extend(grouped("trucks", ["idle-1".to_owned()]));
    registry.import(&devices, now()).await.expect("import");
    let base = DeviceQuery {
        limit: 100,
        online_since: t(55),
        ..DeviceQuery::default()
    };
    let of = |group: &str| DeviceQuery {
        group: Some(group.into()),
        ..base.clone()
    };

    let trucks = page(s, of("trucks")).await;
    assert_eq!(trucks.total, 10, "{:?}", ids(&trucks));
    assert_eq!(ids(&trucks).first(), Some(&"dev-09"), "newest first within the group");
    assert!(trucks.devices.iter().all(|d| d.group.as_deref() == Some("trucks")));
    let alerting = page(
        s,
        DeviceQuery {
            status: DeviceStatus::Alerting,
            sort: DeviceSort::DeviceId,
            descending: false,
            ..of("trucks")
        },
    )
    .await;
    assert_eq!(ids(&alerting), ["dev-03", "dev-07"], "group and status together");
    assert_eq!(
        ids(&page(
            s,
            DeviceQuery {
                search: Some("1".into()),
                ..of("freezers")
            }
        )
        .await),
        ["dev-14", "dev-13", "dev-12", "dev-11", "dev-10"],
        "group and search together"
    );
    let none = page(s, of("nobody")).await;
    assert!(
        none.devices.is_empty() && none.total == 0,
        "an unknown group lists nothing"
    );

    // The column on the unfiltered list.
    let all = page(s, base.clone()).await;
    assert_eq!(all.total, 32);
    let group_of = |id: &str| {
        all.devices
            .iter()
            .find(|d| d.device_id == id)
            .map(|d| d.group.clone())
            .expect("listed")
    };
    assert_eq!(group_of("dev-12").as_deref(), Some("freezers"));
    assert_eq!(
        group_of("dev-20").as_deref(),
        Some("default"),
        "enrolled on first contact"
    );

    // Online after t(55): devices 5 and up.
    let groups = s.device_groups(t(55)).await.expect("groups");
    let counts: Vec<(&str, i64, i64)> = groups.iter().map(|g| (g.name.as_str(), g.devices, g.online)).collect();
    assert_eq!(counts, [("default", 17, 17), ("freezers", 5, 5), ("trucks", 11, 5)]);

    // Moved in the registry: listed in its new group from the next read.
    registry
        .import(&grouped("freezers", ["dev-00".to_owned()]), now())
        .await
        .expect("move");
    assert_eq!(page(s, of("trucks")).await.total, 9);
    let freezers = page(s, of("freezers")).await;
    assert_eq!((freezers.total, ids(&freezers).last()), (6, Some(&"dev-00")));
}
