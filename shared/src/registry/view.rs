//! What every ingest replica knows of the registry, without a database
//! lookup per request: each device's state and key version, kept in memory
//! from the compacted topic `tributary.devices` (key: device id; value: a
//! [`DeviceChange`] as JSON; a tombstone when a device is removed).
//!
//! Guarantees: a record with a lower revision than the one held for its
//! device never overwrites it, so records may arrive twice or out of order
//! (a republish, a reconnect that reads the topic again); a record that
//! cannot be read is skipped and logged, never fatal. [`DeviceView::admit`]
//! decides from memory only; a caller should not serve before
//! [`DeviceView::is_caught_up`] (the topic as it was at start has been read).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{DeviceStatus, RegisteredDevice};
use crate::eventlog::follow::{CatchUp, TopicView};
use crate::eventlog::{EventLog, EventLogError, Publisher, Record};
use crate::service::Shutdown;

/// One device's record on the registry topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceChange {
    /// Device id (also the record's key).
    pub id: String,
    /// Whether it may send.
    pub status: DeviceStatus,
    /// Its current key version.
    pub key_version: u32,
    /// The registry's revision of this device: higher wins.
    pub revision: i64,
    /// Its group (for consumers that apply rules per group).
    pub group: String,
}

impl From<&RegisteredDevice> for DeviceChange {
    fn from(d: &RegisteredDevice) -> Self {
        Self {
            id: d.id.clone(),
            status: d.status,
            key_version: d.key_version,
            revision: d.revision,
            group: d.group.clone(),
        }
    }
}

impl DeviceChange {
    /// The record to publish: keyed by device id, so compaction keeps the newest.
    pub fn to_record(&self) -> Record {
        Record::new(self.id.clone(), serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Publish the registry's current record of each device (and ask the
/// topic's existence first); an error names the first device not published.
pub async fn publish(
    publisher: &dyn Publisher,
    topic: &str,
    devices: &[RegisteredDevice],
) -> Result<usize, EventLogError> {
    let mut published = 0;
    for chunk in devices.chunks(5_000) {
        let records = chunk.iter().map(|d| DeviceChange::from(d).to_record()).collect();
        for (d, delivered) in chunk.iter().zip(publisher.publish(topic, records).await) {
            delivered.map_err(|e| EventLogError::Other(format!("publishing device {}: {e}", d.id)))?;
            published += 1;
        }
    }
    Ok(published)
}

/// How a device the registry does not know is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EnrollmentMode {
    /// Any device with a valid token of a key derived from the fleet key
    /// (key version 0), as with DPS group enrollment; the registry can still
    /// disable a device or rotate its key.
    #[default]
    Open,
    /// Only devices in the registry; others get 403 `device_unknown`.
    Registered,
}

/// Why the view refuses a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An operator disabled it.
    #[error("device {0:?} is disabled")]
    Disabled(String),
    /// It is not registered, and only registered devices may send.
    #[error("device {0:?} is not registered")]
    Unknown(String),
    /// Its token was signed with a key version that is not its current one.
    #[error(
        "device {device:?}: the token is signed with key version {presented}, but the device's current key version is {current} (its key was rotated)"
    )]
    StaleKey {
        /// The device.
        device: String,
        /// The version that signed the token.
        presented: u32,
        /// The device's current version.
        current: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    revision: i64,
    key_version: u32,
    disabled: bool,
}

/// The in-memory view (see the module docs).
#[derive(Debug, Default)]
pub struct DeviceView {
    entries: RwLock<HashMap<Box<str>, Entry>>,
    caught_up: CatchUp,
}

/// One record of the topic, read: `Ok(None)` for a tombstone of `id`.
fn read_change<'a>(key: &'a [u8], value: &[u8]) -> Result<(&'a str, Option<DeviceChange>), ()> {
    let Ok(id) = std::str::from_utf8(key) else {
        return Err(());
    };
    if value.is_empty() {
        return Ok((id, None));
    }
    let change: DeviceChange = match serde_json::from_slice(value) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(device.id = id, error = %e, "a registry record cannot be read; skipped");
            return Err(());
        }
    };
    if change.id != id {
        tracing::warn!(device.id = id, record.id = %change.id, "a registry record's id differs from its key; skipped");
        return Err(());
    }
    Ok((id, Some(change)))
}

impl DeviceView {
    /// An empty view, not caught up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply records from the topic, in order; returns how many could not be read.
    pub fn apply(&self, records: &[(Vec<u8>, Vec<u8>)]) -> usize {
        let mut bad = 0;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in records {
            let change = match read_change(key, value) {
                Ok((id, None)) => {
                    entries.remove(id);
                    continue;
                }
                Ok((_, Some(change))) => change,
                Err(()) => {
                    bad += 1;
                    continue;
                }
            };
            let entry = Entry {
                revision: change.revision,
                key_version: change.key_version,
                disabled: change.status == DeviceStatus::Disabled,
            };
            match entries.get_mut(change.id.as_str()) {
                Some(held) if held.revision >= entry.revision => {}
                Some(held) => *held = entry,
                None => {
                    entries.insert(change.id.into_boxed_str(), entry);
                }
            }
        }
        bad
    }

    /// Whether `device`, authenticated with `key_version`, may send now.
    pub fn admit(&self, device: &str, key_version: u32, mode: EnrollmentMode) -> Result<(), Refusal> {
        let entry = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(device)
            .copied();
        let current = match (entry, mode) {
            (Some(e), _) if e.disabled => return Err(Refusal::Disabled(device.to_owned())),
            (Some(e), _) => e.key_version,
            (None, EnrollmentMode::Registered) => return Err(Refusal::Unknown(device.to_owned())),
            // A device nobody registered has the fleet-derived key, version 0.
            (None, EnrollmentMode::Open) => 0,
        };
        if key_version != current {
            return Err(Refusal::StaleKey {
                device: device.to_owned(),
                presented: key_version,
                current,
            });
        }
        Ok(())
    }

    /// Devices held.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// What the view holds in memory, in bytes: its table at its capacity
    /// (a slot and a control byte per bucket) and every id's own allocation
    /// (rounded up to the allocator's 8-byte granularity). An estimate, as
    /// allocator bookkeeping is left out; `bench ingest --registered`
    /// reports it beside the process's RSS.
    pub fn memory_bytes(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        // A full table holds 7/8 of its buckets, a power of two.
        let buckets = (entries.capacity() * 8 / 7).next_power_of_two();
        let table = buckets * (std::mem::size_of::<(Box<str>, Entry)>() + 1);
        let ids: usize = entries.keys().map(|k| k.len().div_ceil(8) * 8).sum();
        table + ids
    }

    /// Whether no device is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the topic as it was at start has been read.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.is_done()
    }

    /// Say the view has caught up (for views filled by other means, as in tests).
    pub fn mark_caught_up(&self) {
        self.caught_up.mark();
    }

    /// Wait until the view has caught up, at most `timeout`; whether it has.
    /// (A request that arrives while a replica starts, as the first one of a
    /// Lambda cold start does, waits for the registry instead of failing.)
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        self.caught_up.wait(timeout).await
    }
}

impl TopicView for DeviceView {
    fn what(&self) -> &'static str {
        "device registry"
    }
    fn apply(&self, records: &[(Vec<u8>, Vec<u8>)]) -> usize {
        DeviceView::apply(self, records)
    }
    fn len(&self) -> usize {
        DeviceView::len(self)
    }
    fn catch_up(&self) -> &CatchUp {
        &self.caught_up
    }
}

/// A device's revision and group.
type GroupEntry = (i64, Arc<str>);

/// Each device's group, as analyze needs it to apply rules per group, kept
/// from the same topic with the same guarantees as [`DeviceView`]. Group
/// names are shared, not copied per device.
#[derive(Debug, Default)]
pub struct GroupView {
    entries: RwLock<HashMap<Box<str>, GroupEntry>>,
    caught_up: CatchUp,
}

impl GroupView {
    /// An empty view, not caught up.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group of `device`, if the registry has it.
    pub fn group_of(&self, device: &str) -> Option<Arc<str>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(device)
            .map(|(_, g)| Arc::clone(g))
    }

    /// Whether the topic as it was at start has been read.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.is_done()
    }

    /// Say the view has caught up (for views filled by other means, as in tests).
    pub fn mark_caught_up(&self) {
        self.caught_up.mark();
    }
}

impl TopicView for GroupView {
    fn what(&self) -> &'static str {
        "device registry"
    }

    fn apply(&self, records: &[(Vec<u8>, Vec<u8>)]) -> usize {
        let mut bad = 0;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        // The groups seen in this batch, so each name is allocated once.
        let mut names: Vec<Arc<str>> = Vec::new();
        for (key, value) in records {
            let change = match read_change(key, value) {
                Ok((id, None)) => {
                    entries.remove(id);
                    continue;
                }
                Ok((_, Some(change))) => change,
                Err(()) => {
                    bad += 1;
                    continue;
                }
            };
            if entries
                .get(change.id.as_str())
                .is_some_and(|(r, _)| *r >= change.revision)
            {
                continue;
            }
            let group = match names.iter().find(|n| ***n == *change.group) {
                Some(n) => Arc::clone(n),
                None => {
                    let n: Arc<str> = Arc::from(change.group.as_str());
                    names.push(Arc::clone(&n));
                    n
                }
            };
            entries.insert(change.id.into_boxed_str(), (change.revision, group));
        }
        bad
    }

    fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn catch_up(&self) -> &CatchUp {
        &self.caught_up
    }
}

/// Keep `view` up to date from `topic` until `shutdown` (see
/// [`crate::eventlog::follow`]).
pub async fn follow(log: Arc<dyn EventLog>, topic: String, view: Arc<DeviceView>, shutdown: Shutdown) {
    crate::eventlog::follow::follow(log, topic, view, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_estimated_per_device() {
        let view = DeviceView::new();
        let records: Vec<_> = (0..10_000)
            .map(|i| change(&format!("device-{i:05}"), DeviceStatus::Active, 0, 1))
            .collect();
        view.apply(&records);
        let bytes = view.memory_bytes();
        // 16 384 buckets of a 32-byte slot and a control byte, and 16 bytes per id.
        assert_eq!(bytes, 16_384 * 33 + 10_000 * 16);
        assert!(bytes / view.len() < 100, "{bytes} bytes for {} devices", view.len());
    }

    fn change(id: &str, status: DeviceStatus, key_version: u32, revision: i64) -> (Vec<u8>, Vec<u8>) {
        let c = DeviceChange {
            id: id.into(),
            status,
            key_version,
            revision,
            group: "g".into(),
        };
        let r = c.to_record();
        (r.key, r.value)
    }

    #[test]
    fn open_enrollment_admits_unknown_devices_at_version_0_only() {
        let view = DeviceView::new();
        assert_eq!(view.admit("new-1", 0, EnrollmentMode::Open), Ok(()));
        assert!(matches!(
            view.admit("new-1", 1, EnrollmentMode::Open),
            Err(Refusal::StaleKey {
                presented: 1,
                current: 0,
                ..
            })
        ));
        assert_eq!(
            view.admit("new-1", 0, EnrollmentMode::Registered),
            Err(Refusal::Unknown("new-1".into()))
        );
    }

    #[test]
    fn disabled_devices_and_old_keys_are_refused_newest_revision_wins() {
        let view = DeviceView::new();
        let bad = view.apply(&[
            change("a", DeviceStatus::Active, 0, 1),
            change("b", DeviceStatus::Active, 0, 1),
            change("a", DeviceStatus::Disabled, 0, 2),
            change("b", DeviceStatus::Active, 2, 4),
            // Older revisions arriving late change nothing.
            change("a", DeviceStatus::Active, 0, 1),
            change("b", DeviceStatus::Active, 1, 3),
        ]);
        assert_eq!(bad, 0);
        for mode in [EnrollmentMode::Open, EnrollmentMode::Registered] {
            assert_eq!(view.admit("a", 0, mode), Err(Refusal::Disabled("a".into())));
            assert_eq!(view.admit("b", 2, mode), Ok(()));
            assert_eq!(
                view.admit("b", 0, mode),
                Err(Refusal::StaleKey {
                    device: "b".into(),
                    presented: 0,
                    current: 2
                })
            );
        }
        // Enabled again at a higher revision.
        view.apply(&[change("a", DeviceStatus::Active, 0, 5)]);
        assert_eq!(view.admit("a", 0, EnrollmentMode::Registered), Ok(()));
        // A tombstone removes the device: unknown again.
        view.apply(&[(b"a".to_vec(), Vec::new())]);
        assert_eq!(
            view.admit("a", 0, EnrollmentMode::Registered),
            Err(Refusal::Unknown("a".into()))
        );
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn groups_follow_the_newest_revision_and_share_their_names() {
        let view = GroupView::new();
        let rec = |id: &str, group: &str, revision: i64| {
            let r = DeviceChange {
                id: id.into(),
                status: DeviceStatus::Active,
                key_version: 0,
                revision,
                group: group.into(),
            }
            .to_record();
            (r.key, r.value)
        };
        let bad = TopicView::apply(
            &view,
            &[
                rec("a", "freezers", 1),
                rec("b", "freezers", 1),
                rec("a", "trucks", 2),
                rec("a", "freezers", 1),
                (b"x".to_vec(), b"{".to_vec()),
            ],
        );
        assert_eq!(bad, 1);
        assert_eq!(view.group_of("a").as_deref(), Some("trucks"));
        assert_eq!(view.group_of("b").as_deref(), Some("freezers"));
        assert_eq!(view.group_of("c"), None);
        TopicView::apply(&view, &[(b"b".to_vec(), Vec::new())]);
        assert_eq!(view.group_of("b"), None, "a tombstone removes the device");
    }

    #[test]
    fn unreadable_records_are_skipped_and_counted() {
        let view = DeviceView::new();
        let (_, value) = change("x", DeviceStatus::Disabled, 0, 1);
        let bad = view.apply(&[
            (b"k".to_vec(), b"not json".to_vec()),
            (vec![0xff, 0xfe], b"{}".to_vec()),
            // The key and the record's id must agree.
            (b"y".to_vec(), value),
            change("z", DeviceStatus::Disabled, 0, 1),
        ]);
        assert_eq!(bad, 3);
        assert_eq!(view.len(), 1);
        assert_eq!(view.admit("y", 0, EnrollmentMode::Open), Ok(()));
        assert!(view.admit("z", 0, EnrollmentMode::Open).is_err());
    }
}
