//! Topic names and consumer groups: the contract between the functions
//! (see `docs/ARCHITECTURE.md`). Every function takes these as config
//! defaults, so a deployment can rename them in one place.

/// Raw readings, written by ingest. Key: device id. Value: [`crate::model::Reading`] JSON.
pub const RAW: &str = "telemetry.raw";
/// Window aggregates, written by analyze. Key: device id.
pub const AGGREGATES: &str = "telemetry.aggregates";
/// Alerts (opened / updated / resolved), written by analyze. Key: device id.
pub const ALERTS: &str = "telemetry.alerts";
/// Records a consumer could not handle: original key and bytes, with headers
/// naming the source topic, partition, offset, function and error.
pub const DEADLETTER: &str = "telemetry.deadletter";

/// The device registry's changes (compacted): key = device id, value =
/// [`crate::registry::view::DeviceChange`] JSON. Written by whoever changes
/// the registry (`tributary device …`); every ingest replica follows it.
pub const DEVICES: &str = "tributary.devices";

/// The alert rules (compacted): key = rule id, value =
/// [`crate::rules::AlertRule`] JSON (a deleted one marked so). Written by
/// process's relay from the results database; analyze follows it.
pub const RULES: &str = "tributary.rules";

/// Consumer group of the Cosmos DB archive.
pub const GROUP_ARCHIVE: &str = "tributary-archive";
/// Consumer group of the analyze function.
pub const GROUP_ANALYZE: &str = "tributary-analyze";
/// What a consumer group's state topic is named after its group (analyze:
/// `tributary-analyze.state`, its model and alert state for a warm
/// takeover; compacted, a partition per input partition).
pub const STATE_SUFFIX: &str = ".state";
/// Consumer group of the lake function.
pub const GROUP_LAKE: &str = "tributary-lake";
/// Consumer group of the process function.
pub const GROUP_PROCESS: &str = "tributary-process";

/// Partitions each topic is created with when the functions create it
/// themselves (local and test runs). KEDA never runs more consumers than
/// partitions, so this is also the scale-out ceiling of every consumer.
pub const DEFAULT_PARTITIONS: i32 = 12;
