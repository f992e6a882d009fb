//! A minimal writer of the Delta Lake transaction log: what an append-only
//! table needs, and no more (protocol reader 1, writer 2).
//!
//! Guarantees:
//! - a commit is one object, `_delta_log/<version, 20 digits>.json`, created
//!   only if absent (`PutMode::Create`: a rename-free local create, or
//!   `If-None-Match: *` on Azure). Two writers can never both commit a
//!   version; the loser gets [`DeltaError::Conflict`] with the table state
//!   refreshed, and decides again on the new state;
//! - every commit of this writer carries a `txn` action per source (appId)
//!   with the newest Kafka offset it holds, Delta's idempotent-writer
//!   mechanism: [`Table::written_through`] says which offsets are in the table
//!   whoever wrote them, so a replay never adds a row twice;
//! - data files are written before the commit that adds them and are
//!   invisible until then: Spark, delta-rs and DuckDB read a consistent
//!   snapshot, never a half-written file. A file left by a writer that died
//!   before its commit is not in any snapshot.
//!
//! Not done here (see `docs/ARCHITECTURE.md`): checkpoints. A table some other
//! engine has checkpointed (and whose old commits it may have removed) is
//! refused with [`DeltaError::Checkpointed`] rather than misread.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::{Value, json};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Another writer committed this version first; the state is refreshed.
    #[error("another writer committed version {0} first")]
    Conflict(u64),
    /// The object store failed (unreachable, refused, throttled).
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// A commit file is not the JSON lines Delta specifies.
    #[error("{path} is not a Delta commit: {reason}")]
    Corrupt {
        /// The commit file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The table has checkpoints, which this writer does not read.
    #[error("the table at {0} has Delta checkpoints (another engine wrote them); this writer reads JSON commits only")]
    Checkpointed(String),
    /// The table exists with columns this writer does not write.
    #[error("the table at {table} has another schema than this writer's: {reason}")]
    SchemaMismatch {
        /// The table's root.
        table: String,
        /// The difference.
        reason: String,
    },
}

impl DeltaError {
    /// Whether waiting and retrying can help (an outage), rather than a
    /// change of the table or the settings.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict(_) => true,
            Self::Store(e) => store_error_is_retryable(e),
            Self::Corrupt { .. } | Self::Checkpointed(_) | Self::SchemaMismatch { .. } => false,
        }
    }
}

/// Whether an object store error may go away by itself (an outage,
/// throttling), rather than needing other credentials or settings.
pub fn store_error_is_retryable(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
    )
}

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
    fn from_action(add: &Value) -> Option<Self> {
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

    fn add_action(&self, now_ms: i64, data_change: bool) -> Value {
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

    fn remove_action(&self, now_ms: i64) -> Value {
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

/// One append-only Delta table under `root` in `store`, and what its log says.
pub struct Table {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Columns of the data files, then the partition columns.
    schema: Schema,
    partition_columns: Vec<String>,
    /// Newest version read from the log; `None` while the table does not exist.
    version: Option<u64>,
    /// Newest `txn` version per appId, over every commit read.
    txns: HashMap<String, i64>,
    /// The data files in the newest version read, by path.
    files: BTreeMap<String, AddFile>,
}

impl Table {
    /// The table at `root` with `schema` (data columns, then `partition_columns`).
    /// Nothing is read until [`Table::refresh`].
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, schema: Schema, partition_columns: Vec<String>) -> Self {
        Self {
            store,
            root,
            schema,
            partition_columns,
            version: None,
            txns: HashMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// The data files in the newest version read.
    pub fn files(&self) -> impl Iterator<Item = &AddFile> {
        self.files.values()
    }

    /// Whether `path` is in the newest version read.
    pub fn holds(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The table's root in its store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The newest version read, `None` before the table's first commit.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The newest offset of `app_id` the table holds (its `txn` version), if any.
    pub fn written_through(&self, app_id: &str) -> Option<i64> {
        self.txns.get(app_id).copied()
    }

    fn commit_path(&self, version: u64) -> Path {
        self.root.clone().join("_delta_log").join(format!("{version:020}.json"))
    }

    /// Read the commits made since the last refresh (all of them the first time).
    pub async fn refresh(&mut self) -> Result<(), DeltaError> {
        if self.version.is_none() {
            self.refuse_checkpoints().await?;
        }
        loop {
            let next = self.version.map_or(0, |v| v + 1);
            let path = self.commit_path(next);
            let bytes = match self.store.get(&path).await {
                Ok(got) => got.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            self.apply(&path, &bytes)?;
            self.version = Some(next);
        }
    }

    async fn refuse_checkpoints(&self) -> Result<(), DeltaError> {
        let checkpoint = self.root.clone().join("_delta_log").join("_last_checkpoint");
        match self.store.head(&checkpoint).await {
            Ok(_) => Err(DeltaError::Checkpointed(self.root.to_string())),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn apply(&mut self, path: &Path, bytes: &[u8]) -> Result<(), DeltaError> {
        let corrupt = |reason: String| DeltaError::Corrupt {
            path: path.to_string(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: Value = serde_json::from_str(line).map_err(|e| corrupt(e.to_string()))?;
            if let Some(txn) = action.get("txn") {
                let app = txn.get("appId").and_then(Value::as_str);
                let version = txn.get("version").and_then(Value::as_i64);
                let (Some(app), Some(version)) = (app, version) else {
                    return Err(corrupt("a txn action without appId or version".into()));
                };
                let known = self.txns.entry(app.to_owned()).or_insert(version);
                *known = (*known).max(version);
            }
            if let Some(meta) = action.get("metaData") {
                self.check_schema(meta)?;
            }
            if let Some(add) = action.get("add") {
                let file =
                    AddFile::from_action(add).ok_or_else(|| corrupt("an add action without path or size".into()))?;
                self.files.insert(file.path.clone(), file);
            }
            if let Some(path) = action.get("remove").and_then(|r| r.get("path")).and_then(Value::as_str) {
                self.files.remove(path);
            }
        }
        Ok(())
    }

    fn check_schema(&self, meta: &Value) -> Result<(), DeltaError> {
        let mismatch = |reason: String| DeltaError::SchemaMismatch {
            table: self.root.to_string(),
            reason,
        };
        let theirs: Value = meta
            .get("schemaString")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| mismatch("no readable schemaString".into()))?;
        let ours = delta_schema(&self.schema);
        if theirs != ours {
            return Err(mismatch(format!("theirs {theirs}, ours {ours}")));
        }
        Ok(())
    }

    /// Commit `files` and the offsets `txns` (appId, newest offset) as the
    /// next version; the first commit creates the table. On
    /// [`DeltaError::Conflict`] the state is refreshed and nothing was
    /// committed: decide again on [`Table::written_through`] and retry.
    pub async fn commit(&mut self, files: &[AddFile], txns: &[(String, i64)], now_ms: i64) -> Result<u64, DeltaError> {
        let mut lines = Vec::new();
        for (app, offset) in txns {
            lines.push(json!({"txn": {"appId": app, "version": offset, "lastUpdated": now_ms}}));
        }
        lines.extend(files.iter().map(|f| f.add_action(now_ms, true)));
        self.put_next(lines, json!({"mode": "Append"}), "WRITE", true, now_ms)
            .await
    }

    /// Replace `removed` by `added`, the same rows in fewer files (no data
    /// change, as Delta's OPTIMIZE records it), as the next version. On
    /// [`DeltaError::Conflict`] the state is refreshed: retry only if
    /// [`Table::holds`] every removed file still.
    pub async fn rewrite(&mut self, removed: &[AddFile], added: &[AddFile], now_ms: i64) -> Result<u64, DeltaError> {
        let mut lines: Vec<Value> = removed.iter().map(|f| f.remove_action(now_ms)).collect();
        lines.extend(added.iter().map(|f| f.add_action(now_ms, false)));
        self.put_next(
            lines,
            json!({"predicate": "[]", "targetSize": "compaction"}),
            "OPTIMIZE",
            false,
            now_ms,
        )
        .await
    }

    /// Write `actions` (after the commit info, and the protocol and metadata
    /// for the first version) as the next version, if nobody did first.
    async fn put_next(
        &mut self,
        actions: Vec<Value>,
        parameters: Value,
        operation: &str,
        blind_append: bool,
        now_ms: i64,
    ) -> Result<u64, DeltaError> {
        let version = self.version.map_or(0, |v| v + 1);
        let mut lines: Vec<Value> = vec![json!({"commitInfo": {
            "timestamp": now_ms,
            "operation": operation,
            "operationParameters": parameters,
            "isBlindAppend": blind_append,
            "engineInfo": concat!("tributary-lake/", env!("CARGO_PKG_VERSION")),
        }})];
        if version == 0 {
            lines.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
            lines.push(json!({"metaData": {
                "id": uuid::Uuid::new_v4().to_string(),
                "format": {"provider": "parquet", "options": {}},
                "schemaString": delta_schema(&self.schema).to_string(),
                "partitionColumns": self.partition_columns,
                "configuration": {},
                "createdTime": now_ms,
            }}));
        }
        lines.extend(actions);
        let path = self.commit_path(version);
        let mut body = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut body, l).map_err(|e| DeltaError::Corrupt {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            body.push(b'\n');
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.store.put_opts(&path, PutPayload::from(body.clone()), opts).await {
            Ok(_) => {
                self.apply(&path, &body)?;
                self.version = Some(version);
                Ok(version)
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.refresh().await?;
                Err(DeltaError::Conflict(version))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The Delta schema (its JSON form) of `schema`.
pub fn delta_schema(schema: &Schema) -> Value {
    json!({"type": "struct", "fields": schema.fields().iter().map(|f| delta_field(f)).collect::<Vec<_>>()})
}

fn delta_field(f: &Field) -> Value {
    json!({"name": f.name(), "type": delta_type(f.data_type()), "nullable": f.is_nullable(), "metadata": {}})
}

fn delta_type(t: &DataType) -> Value {
    match t {
        DataType::Utf8 => json!("string"),
        DataType::Int32 => json!("integer"),
        DataType::Int64 => json!("long"),
        DataType::Float64 => json!("double"),
        DataType::Boolean => json!("boolean"),
        DataType::Date32 => json!("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => json!("timestamp"),
        DataType::Struct(fields) => {
            json!({"type": "struct", "fields": fields.iter().map(|f| delta_field(f)).collect::<Vec<_>>()})
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type()),
                "valueType": delta_type(kv[1].data_type()),
                "valueContainsNull": kv[1].is_nullable(),
            }),
            // Arrow's maps are always entries of (key, value).
            other => json!(format!("unsupported map entries {other}")),
        },
        // Only the types above are written (see `rows`): a test checks each table's.
        other => json!(format!("unsupported {other}")),
    }
}
