//! The `add` and `remove` actions of a data file, as the log records them.

use serde_json::{Value, json};

/// A data file to add to the table in a commit.
#[derive(Clone, Debug, PartialEq)]
pub struct AddFile {
    /// Path relative to the table root (`date=…/hour=…/name.parquet`).
    pub path: String,
    /// Partition column to its value, as Delta serializes them.
    pub partition_values: Vec<(String, String)>,
    /// Bytes.
    pub size: u64,
    /// Rows.
    pub rows: u64,
}

impl AddFile {
    pub(super) fn from_action(add: &Value) -> Option<Self> {
        let path = add.get("path")?.as_str()?.to_owned();
        let size = add.get("size")?.as_u64()?;
        let mut partition_values: Vec<(String, String)> = add
            .get("partitionValues")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        partition_values.sort();
        let rows = add
            .get("stats")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|s| s.get("numRecords").and_then(Value::as_u64))
            .unwrap_or(0);
        Some(Self {
            path,
            partition_values,
            size,
            rows,
        })
    }

    pub(super) fn add_action(&self, now_ms: i64, data_change: bool) -> Value {
        let partition_values: serde_json::Map<String, Value> = self
            .partition_values
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"add": {
            "path": self.path,
            "partitionValues": partition_values,
            "size": self.size,
            "modificationTime": now_ms,
            "dataChange": data_change,
            "stats": json!({"numRecords": self.rows}).to_string(),
        }})
    }

    pub(super) fn remove_action(&self, now_ms: i64) -> Value {
        let partition_values: serde_json::Map<String, Value> = self
            .partition_values
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"remove": {
            "path": self.path,
            "deletionTimestamp": now_ms,
            "dataChange": false,
            "extendedFileMetadata": true,
            "partitionValues": partition_values,
            "size": self.size,
        }})
    }
}
