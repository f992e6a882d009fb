//! The device registry: which devices the fleet has, what they are called,
//! which group they belong to, whether they may send, and which of their
//! keys is current (see [`crate::auth`] for how a key version derives a key).
//!
//! One trait, [`DeviceRegistry`], with two backends in the results database
//! that pass the same contract suite (`tributary-testkit`):
//! - [`postgres::PgRegistry`] (table `device_registry`, `shared/migrations`);
//! - [`sqlite::SqliteRegistry`], the embedded one (`shared/migrations-sqlite`);
//! - [`import`]: the CSV and NDJSON files `tributary device import` reads;
//! - [`view`]: the registry as ingest holds it in memory, from the compacted
//!   topic `tributary.devices`, and what it admits;
//! - [`relay`]: publishes every recorded change to that topic.
//!
//! Guarantees of every backend: an import is written entirely or not at all;
//! importing the same file again changes nothing (not even a revision);
//! every change of a device moves its `revision` up by one, so whoever
//! follows the registry can tell a newer record from an older one; a key
//! rotation moves the key version up by exactly one; every change is
//! recorded in the same transaction in an outbox ([`DeviceRegistry::changes_after`])
//! that [`relay`] publishes from. Callers pass "now" in.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use crate::results::StoreError;

pub mod import;
pub mod postgres;
pub mod relay;
pub mod sqlite;
pub mod view;

pub use postgres::PgRegistry;
pub use sqlite::SqliteRegistry;

/// The group a device is in when none is given.
pub const DEFAULT_GROUP: &str = "default";
/// Longest display name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Longest group name and tag key, in bytes.
pub const MAX_GROUP_LEN: usize = 64;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// Most tags on one device.
pub const MAX_TAGS: usize = 32;
/// Most devices one listing returns.
pub const MAX_LIST: u32 = 10_000;

/// Whether a device may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Its readings are accepted (with a token of its current key version).
    Active,
    /// Its readings are refused (403 `device_disabled`).
    Disabled,
}

impl DeviceStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }
}

impl std::str::FromStr for DeviceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            other => Err(format!("unknown device state {other:?} (expected active or disabled)")),
        }
    }
}

/// How a device came into the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enrollment {
    /// An operator added or imported it.
    Operator,
    /// It authenticated with a key derived from the fleet key before anyone
    /// registered it (open enrollment).
    FirstContact,
}

impl Enrollment {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::FirstContact => "first-contact",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        if s == "first-contact" {
            Self::FirstContact
        } else {
            Self::Operator
        }
    }
}

/// What an operator says about a device: everything but its state and keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDevice {
    /// Device id (as in its tokens).
    pub id: String,
    /// A name for people (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its group ([`DEFAULT_GROUP`] when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Free key/value labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl NewDevice {
    /// A device with only an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Its group, or the default one.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }

    /// Its tags as the JSON object stored.
    pub fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).unwrap_or_else(|_| "{}".into())
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), InvalidDevice> {
        let bad = |field: &'static str, reason: String| InvalidDevice {
            device: self.id.clone(),
            field,
            reason,
        };
        if !crate::model::valid_id(&self.id) {
            return Err(bad("id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -".into()));
        }
        if let Some(name) = &self.name
            && (name.chars().count() > MAX_NAME_LEN || name.trim().is_empty() || name.chars().any(char::is_control))
        {
            return Err(bad(
                "name",
                format!("must be 1-{MAX_NAME_LEN} characters of text without control characters, not all blank"),
            ));
        }
        if let Some(group) = &self.group
            && !valid_label(group)
        {
            return Err(bad(
                "group",
                format!("must be 1-{MAX_GROUP_LEN} characters of A-Z a-z 0-9 . _ : -"),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(bad("tags", format!("at most {MAX_TAGS} tags, got {}", self.tags.len())));
        }
        for (k, v) in &self.tags {
            if !valid_label(k) {
                return Err(bad(
                    "tags",
                    format!("tag key {k:?} must be 1-{MAX_GROUP_LEN} characters of A-Z a-z 0-9 . _ : -"),
                ));
            }
            if v.chars().count() > MAX_TAG_VALUE_LEN || v.chars().any(char::is_control) {
                return Err(bad(
                    "tags",
                    format!(
                        "tag {k:?}: value must be at most {MAX_TAG_VALUE_LEN} characters without control characters"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `s` can name a group (or a tag key): what a filter by group may
/// be checked with before it is looked up.
pub fn valid_label(s: &str) -> bool {
    s.len() <= MAX_GROUP_LEN && crate::model::valid_id(s)
}

/// A field of a device that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {device:?}: {field} {reason}")]
pub struct InvalidDevice {
    /// The device's id as given.
    pub device: String,
    /// The field that is wrong.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// A device as the registry holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredDevice {
    /// Device id.
    pub id: String,
    /// A name for people.
    pub name: Option<String>,
    /// Its group.
    pub group: String,
    /// Free key/value labels.
    pub tags: BTreeMap<String, String>,
    /// Whether it may send.
    pub status: DeviceStatus,
    /// Its current key version: tokens of any other version are refused.
    pub key_version: u32,
    /// How it came into the registry.
    pub enrolled_by: Enrollment,
    /// Moves up by one with every change of this device.
    pub revision: i64,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// End of its latest window in the results, if any.
    pub last_seen: Option<DateTime<Utc>>,
}

/// Which devices a listing returns: ordered by id, a page after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryQuery {
    /// Part of the id or the name (case-insensitive, no wildcards).
    pub search: Option<String>,
    /// Only this group.
    pub group: Option<String>,
    /// Only devices in this state.
    pub status: Option<DeviceStatus>,
    /// Only ids after this one (the last id of the previous page).
    pub after: Option<String>,
    /// At most this many (capped at [`MAX_LIST`]; 0 means 100).
    pub limit: u32,
}

impl RegistryQuery {
    /// The limit the backends apply.
    pub fn effective_limit(&self) -> i64 {
        i64::from(match self.limit {
            0 => 100,
            n => n.min(MAX_LIST),
        })
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportOutcome {
    /// Devices that were not registered before.
    pub created: u64,
    /// Registered devices whose name, group or tags changed.
    pub updated: u64,
    /// Registered devices the file describes as they already were.
    pub unchanged: u64,
}

/// Errors of the registry, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No device with this id is registered.
    #[error("device {0:?} is not registered")]
    NotFound(String),
    /// `add` of a device that is registered already.
    #[error("device {0:?} is already registered")]
    Exists(String),
    /// A field cannot be stored; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidDevice),
    /// The same id twice in one import; nothing was written.
    #[error("device {0:?} appears more than once in the import")]
    Duplicate(String),
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The HTTP status an API answers this error with.
    pub fn status_code(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Exists(_) => StatusCode::CONFLICT,
            Self::Invalid(_) | Self::Duplicate(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(StoreError::Rejected(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<sqlx::migrate::MigrateError> for RegistryError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Store(e.into())
    }
}

/// The registry, in the results database.
#[async_trait]
pub trait DeviceRegistry: Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Create or update the tables (the results store's migrations).
    async fn migrate(&self) -> Result<(), RegistryError>;

    /// Register one device, active at key version 0; [`RegistryError::Exists`]
    /// when an operator registered it already. A device enrolled on first
    /// contact is adopted: it takes the operator's name, group and tags and
    /// keeps its state and key version.
    async fn add(&self, device: &NewDevice, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError>;

    /// Register or describe many devices in one transaction: new ones are
    /// created active at key version 0; registered ones get the file's name,
    /// group and tags (and count as the operator's), and keep their state
    /// and key version.
    async fn import(&self, devices: &[NewDevice], now: DateTime<Utc>) -> Result<ImportOutcome, RegistryError>;

    /// One device, if registered.
    async fn get(&self, id: &str) -> Result<Option<RegisteredDevice>, RegistryError>;

    /// A page of devices, by id.
    async fn list(&self, query: &RegistryQuery) -> Result<Vec<RegisteredDevice>, RegistryError>;

    /// How many devices are registered.
    async fn count(&self) -> Result<u64, RegistryError>;

    /// Enable or disable a device (a no-op, with no new revision, when it is
    /// in that state already).
    async fn set_status(
        &self,
        id: &str,
        status: DeviceStatus,
        now: DateTime<Utc>,
    ) -> Result<RegisteredDevice, RegistryError>;

    /// Move a device to its next key version: tokens of the old one stop
    /// being accepted.
    async fn rotate_key(&self, id: &str, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError>;

    /// Changes recorded after sequence number `seq`, oldest first, at most
    /// `limit`: each with the device as it is now. Every change above is
    /// recorded in its own transaction, so a change is here once it is
    /// visible at all (numbers may still become visible out of order, as
    /// concurrent transactions commit).
    async fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<(i64, RegisteredDevice)>, RegistryError>;

    /// The sequence number of the newest change recorded (0 when none).
    async fn last_change(&self) -> Result<i64, RegistryError>;

    /// Forget changes recorded before `before`; returns how many.
    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64, RegistryError>;
}

/// Check every device of an import, and that no id repeats.
pub fn validate_all(devices: &[NewDevice]) -> Result<(), RegistryError> {
    let mut seen = std::collections::HashSet::with_capacity(devices.len());
    for d in devices {
        d.validate()?;
        if !seen.insert(d.id.as_str()) {
            return Err(RegistryError::Duplicate(d.id.clone()));
        }
    }
    Ok(())
}

/// Open the registry a results-store URL names: `postgres://…` (lazily
/// connecting) or `sqlite://PATH` (created if missing).
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn DeviceRegistry>, RegistryError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteRegistry::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgRegistry::connect_lazy(url, max_connections)?))
    } else {
        let scheme = url.split(':').next().unwrap_or("");
        Err(RegistryError::Store(StoreError::Unavailable(format!(
            "unsupported database URL scheme {scheme:?} (expected postgres:// or sqlite://)"
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = NewDevice {
            id: "truck-1".into(),
            name: Some("Truck one".into()),
            group: Some("trucks".into()),
            tags: [("site".to_string(), "Oslo".to_string())].into(),
        };
        assert_eq!(ok.validate(), Ok(()));
        let field = |d: NewDevice| d.validate().map_err(|e| e.field);
        assert_eq!(field(NewDevice::new("")), Err("id"));
        assert_eq!(field(NewDevice::new("a b")), Err("id"));
        assert_eq!(
            field(NewDevice {
                name: Some("line\nbreak".into()),
                ..ok.clone()
            }),
            Err("name")
        );
        assert_eq!(
            field(NewDevice {
                name: Some("  ".into()),
                ..ok.clone()
            }),
            Err("name")
        );
        assert_eq!(
            field(NewDevice {
                group: Some("g".repeat(65)),
                ..ok.clone()
            }),
            Err("group")
        );
        assert_eq!(
            field(NewDevice {
                tags: [("bad key".to_string(), "v".to_string())].into(),
                ..ok.clone()
            }),
            Err("tags")
        );
        assert_eq!(
            field(NewDevice {
                tags: (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect(),
                ..ok.clone()
            }),
            Err("tags")
        );
        let e = NewDevice {
            group: Some("no spaces".into()),
            ..ok
        }
        .validate()
        .expect_err("bad group");
        assert!(
            e.to_string().contains("\"truck-1\"") && e.to_string().contains("group"),
            "{e}"
        );
    }

    #[test]
    fn an_import_with_a_repeated_id_is_refused() {
        let devices = [NewDevice::new("a"), NewDevice::new("b"), NewDevice::new("a")];
        assert!(matches!(validate_all(&devices), Err(RegistryError::Duplicate(id)) if id == "a"));
        assert!(validate_all(&devices[..2]).is_ok());
    }

    #[test]
    fn listing_limits_are_capped() {
        let q = |limit| RegistryQuery {
            limit,
            ..RegistryQuery::default()
        };
        assert_eq!(q(0).effective_limit(), 100);
        assert_eq!(q(5).effective_limit(), 5);
        assert_eq!(q(u32::MAX).effective_limit(), i64::from(MAX_LIST));
    }
}
