//! The fleet list: one page of devices, searched, filtered and sorted in the
//! database, with the number of devices that match (so a list of 10,000
//! devices costs one page of rows per request, not the fleet).
//!
//! Both backends run the statement [`listing_sql`] writes: the sort column
//! and direction come from enums, never from the caller's text, and the
//! search term is bound as a `LIKE` pattern with its wildcards escaped, so
//! `truck_1` finds `truck_1` and not `truck11`. Ties are broken by device id,
//! so pages do not overlap while the fleet stands still.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A device in the fleet list, with its open alerts and whether it is online.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceListing {
    /// Device id.
    pub device_id: String,
    /// Its group in the device registry (`None`: not registered, which only
    /// a device stored before the registry existed can be: storing a
    /// device's first window enrolls it).
    pub group: Option<String>,
    /// Start of its first window.
    pub first_seen: DateTime<Utc>,
    /// End of its latest window.
    pub last_seen: DateTime<Utc>,
    /// As in [`super::DeviceState::last_values`].
    pub last_values: Value,
    /// Alerts of this device not resolved.
    pub open_alerts: i64,
    /// Whether its latest window ended after the caller's "online since".
    pub online: bool,
}

/// What the fleet list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSort {
    /// End of the latest window (the default, newest first).
    #[default]
    LastSeen,
    /// Start of the first window.
    FirstSeen,
    /// Device id.
    DeviceId,
    /// Alerts not resolved.
    OpenAlerts,
}

impl DeviceSort {
    /// The API's name of this order.
    pub fn name(self) -> &'static str {
        match self {
            Self::LastSeen => "lastSeen",
            Self::FirstSeen => "firstSeen",
            Self::DeviceId => "deviceId",
            Self::OpenAlerts => "openAlerts",
        }
    }
}

impl std::str::FromStr for DeviceSort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::LastSeen, Self::FirstSeen, Self::DeviceId, Self::OpenAlerts]
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("'{s}' is not one of lastSeen, firstSeen, deviceId, openAlerts"))
    }
}

/// Which devices the fleet list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceStatus {
    /// Every device.
    #[default]
    All,
    /// Devices whose latest window ended after "online since".
    Online,
    /// The others.
    Offline,
    /// Devices with an alert not resolved.
    Alerting,
}

impl DeviceStatus {
    /// The API's name of this filter.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Alerting => "alerting",
        }
    }
}

impl std::str::FromStr for DeviceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::All, Self::Online, Self::Offline, Self::Alerting]
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| format!("'{s}' is not one of all, online, offline, alerting"))
    }
}

/// One page of the fleet list.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceQuery {
    /// Only devices whose id contains this (ASCII case-insensitive).
    pub search: Option<String>,
    /// Only devices in this state.
    pub status: DeviceStatus,
    /// Only devices of this group of the device registry.
    pub group: Option<String>,
    /// Order.
    pub sort: DeviceSort,
    /// Largest first.
    pub descending: bool,
    /// Rows to skip.
    pub offset: i64,
    /// Rows to return.
    pub limit: i64,
    /// Devices whose latest window ended after this are online.
    pub online_since: DateTime<Utc>,
}

impl Default for DeviceQuery {
    /// The first 50 devices, most recently seen first, online within 5 minutes.
    fn default() -> Self {
        Self {
            search: None,
            status: DeviceStatus::All,
            group: None,
            sort: DeviceSort::LastSeen,
            descending: true,
            offset: 0,
            limit: 50,
            online_since: Utc::now() - chrono::Duration::minutes(5),
        }
    }
}

/// A group of the device registry, as the fleet list's group filter shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroup {
    /// The group's name.
    pub name: String,
    /// Devices registered in it.
    pub devices: i64,
    /// Of those, the ones whose latest window ended after "online since".
    pub online: i64,
}

impl DeviceGroup {
    /// The groups from (name, registered, online) rows, as both backends read them.
    pub(crate) fn from_rows(rows: Vec<(String, i64, i64)>) -> Vec<Self> {
        rows.into_iter()
            .map(|(name, devices, online)| Self { name, devices, online })
            .collect()
    }
}

/// A page of the fleet list and how many devices match in all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevicePage {
    /// Devices that match the query's search and status (every page).
    pub total: i64,
    /// This page.
    pub devices: Vec<DeviceListing>,
}

/// A value [`listing_sql`]'s statements take, in the order they take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListingBind {
    /// [`DeviceQuery::online_since`].
    OnlineSince,
    /// [`like_pattern`] of the search.
    Pattern,
    /// [`DeviceQuery::group`].
    Group,
}

/// `%term%` with `LIKE`'s wildcards and the escape itself escaped by `\`.
pub(crate) fn like_pattern(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 2);
    p.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// What the two backends write differently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// Written after a device id to compare it byte by byte: PostgreSQL's
    /// default collation would order `Truck-1` among the `t`s (SQLite's
    /// before every `a`), and its `ILIKE` is twice as fast under "C".
    collate: &'static str,
    /// ASCII case-insensitive `LIKE` (an id holds nothing else).
    like: &'static str,
    /// `$1, $2, …` rather than `?`.
    numbered: bool,
}

/// PostgreSQL's.
pub(crate) const POSTGRES: Dialect = Dialect {
    collate: " COLLATE \"C\"",
    like: "ILIKE",
    numbered: true,
};

/// SQLite's (its `LIKE` ignores ASCII case; its text order is byte order).
pub(crate) const SQLITE: Dialect = Dialect {
    collate: "",
    like: "LIKE",
    numbered: false,
};

/// A page row's registry group: a scalar subquery, one primary-key lookup
/// per row. As a `LEFT JOIN`, PostgreSQL hashed the whole registry for a
/// page of 50 (a sequential scan of 10,000 rows in `EXPLAIN ANALYZE`; the
/// page fell from 926 to 552 requests/s in `bench dashboard`).
const GROUP: &str = "(SELECT r.device_group FROM device_registry r WHERE r.device_id = d.device_id)";

const OPEN_ALERTS: &str = "(SELECT count(*) FROM alerts a WHERE a.device_id = d.device_id AND a.state <> 'resolved')";

/// The page statement (`LIMIT` and `OFFSET` are its last two values) and the
/// count statement of `q` in `dialect`, and the values both take before
/// `LIMIT`, in order.
///
/// The page is chosen on ids and the sort key alone and only its rows are
/// read in full (a deferred join): a page deep in the fleet steps over index
/// entries, not over 10,000 rows with their latest values and alert counts.
pub(crate) fn listing_sql(q: &DeviceQuery, dialect: Dialect) -> (String, String, Vec<ListingBind>) {
    let placeholder = |n: usize| {
        if dialect.numbered {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    let mut binds = Vec::new();
    let mut filters = Vec::new();
    let mut next = |b: ListingBind| {
        binds.push(b);
        placeholder(binds.len())
    };
    match q.status {
        DeviceStatus::All => {}
        DeviceStatus::Online => filters.push(format!("d.last_seen > {}", next(ListingBind::OnlineSince))),
        DeviceStatus::Offline => filters.push(format!("d.last_seen <= {}", next(ListingBind::OnlineSince))),
        // Driven from the (few) alerts not resolved, not from every device.
        DeviceStatus::Alerting => {
            filters.push("d.device_id IN (SELECT a.device_id FROM alerts a WHERE a.state <> 'resolved')".to_owned())
        }
    }
    if q.search.as_deref().is_some_and(|s| !s.is_empty()) {
        filters.push(format!(
            "d.device_id{} {} {} ESCAPE '\\'",
            dialect.collate,
            dialect.like,
            next(ListingBind::Pattern)
        ));
    }
    if q.group.is_some() {
        // Through the registry's (group, id) index: a group's ids, not the fleet.
        filters.push(format!(
            "d.device_id IN (SELECT r.device_id FROM device_registry r WHERE r.device_group = {})",
            next(ListingBind::Group)
        ));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let dir = if q.descending { "DESC" } else { "ASC" };
    let collate = dialect.collate;
    let key = match q.sort {
        DeviceSort::LastSeen => "d.last_seen".to_owned(),
        DeviceSort::FirstSeen => "d.first_seen".to_owned(),
        DeviceSort::DeviceId => format!("d.device_id{collate}"),
        DeviceSort::OpenAlerts => OPEN_ALERTS.to_owned(),
    };
    let page = format!(
        "SELECT d.device_id, {GROUP} AS device_group, d.first_seen, d.last_seen, d.last_values, {OPEN_ALERTS} AS open_alerts
         FROM (SELECT d.device_id, {key} AS k FROM devices d {filter}
               ORDER BY {key} {dir}, d.device_id{collate} {dir} LIMIT {} OFFSET {}) p
         JOIN devices d ON d.device_id = p.device_id
         ORDER BY p.k {dir}, p.device_id{collate} {dir}",
        placeholder(binds.len() + 1),
        placeholder(binds.len() + 2),
    );
    let count = format!("SELECT count(*) FROM devices d {filter}");
    (page, count, binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_a_search_are_literal() {
        assert_eq!(like_pattern("truck_1"), "%truck\\_1%");
        assert_eq!(like_pattern("50%"), "%50\\%%");
        assert_eq!(like_pattern("a\\b"), "%a\\\\b%");
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for s in ["lastSeen", "firstSeen", "deviceId", "openAlerts"] {
            assert_eq!(s.parse::<DeviceSort>().map(DeviceSort::name), Ok(s));
        }
        for s in ["all", "online", "offline", "alerting"] {
            assert_eq!(s.parse::<DeviceStatus>().map(DeviceStatus::name), Ok(s));
        }
        assert!(
            "last_seen; DROP TABLE devices"
                .parse::<DeviceSort>()
                .is_err_and(|e| e.contains("lastSeen"))
        );
        assert!("gone".parse::<DeviceStatus>().is_err());
    }

    #[test]
    fn placeholders_follow_the_values_in_order() {
        let q = DeviceQuery {
            search: Some("x".into()),
            status: DeviceStatus::Offline,
            sort: DeviceSort::OpenAlerts,
            ..DeviceQuery::default()
        };
        let (page, count, binds) = listing_sql(&q, POSTGRES);
        assert_eq!(binds, [ListingBind::OnlineSince, ListingBind::Pattern]);
        assert!(
            page.contains("d.last_seen <= $1") && page.contains("ILIKE $2"),
            "{page}"
        );
        assert!(
            page.contains("d.device_id COLLATE \"C\" DESC LIMIT $3 OFFSET $4) p")
                && page.contains("ORDER BY p.k DESC, p.device_id COLLATE \"C\" DESC"),
            "{page}"
        );
        assert!(count.contains("ILIKE $2") && !count.contains("LIMIT"), "{count}");
        let (page, _, binds) = listing_sql(&DeviceQuery::default(), SQLITE);
        assert!(binds.is_empty() && !page.contains("FROM devices d WHERE"), "{page}");
    }
}
