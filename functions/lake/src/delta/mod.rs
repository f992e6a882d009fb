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
//! - every [`CHECKPOINT_INTERVAL`]th version this writer commits is followed
//!   by a checkpoint ([`crate::checkpoint`]), and a table is read from its
//!   newest checkpoint on, whoever wrote it; so reading a table costs the
//!   same in its first week and its fifth year;
//! - a table whose protocol needs more than reader 1 and writer 2 (column
//!   mapping, deletion vectors, v2 checkpoints: features this writer does
//!   not implement) is refused with [`DeltaError::Unsupported`] rather than
//!   misread or damaged.
//!
//! Here the table and its log; in `action.rs` a data file's `add` and
//! `remove` actions, in `schema.rs` the Delta schema of an Arrow schema.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_schema::Schema;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::{Value, json};

use crate::checkpoint::{self, CHECKPOINT_INTERVAL, TOMBSTONE_RETENTION_MS};

mod action;
mod schema;

pub use action::AddFile;
pub use schema::delta_schema;

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
    /// The table uses Delta features this writer does not implement.
    #[error("the table at {table} needs {reason}, which this writer does not implement")]
    Unsupported {
        /// The table's root.
        table: String,
        /// What it needs.
        reason: String,
    },
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
            Self::Corrupt { .. } | Self::Unsupported { .. } | Self::SchemaMismatch { .. } => false,
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

/// One append-only Delta table under `root` in `store`, and what its log says.
pub struct Table {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Columns of the data files, then the partition columns.
    schema: Schema,
    partition_columns: Vec<String>,
    /// Newest version read from the log; `None` while the table does not exist.
    version: Option<u64>,
    /// Newest `txn` version per appId, over every commit read, and when it was written.
    txns: HashMap<String, (i64, Option<i64>)>,
    /// The data files in the newest version read, by path, and when each was added.
    files: BTreeMap<String, (AddFile, i64)>,
    /// Files removed (by compaction), as their `remove` actions: checkpoints keep them a week.
    tombstones: BTreeMap<String, Value>,
    /// The newest `protocol` and `metaData` actions, as a checkpoint repeats them.
    protocol: Option<Value>,
    metadata: Option<Value>,
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
            tombstones: BTreeMap::new(),
            protocol: None,
            metadata: None,
        }
    }

    /// The data files in the newest version read.
    pub fn files(&self) -> impl Iterator<Item = &AddFile> {
        self.files.values().map(|(f, _)| f)
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
        self.txns.get(app_id).map(|(v, _)| *v)
    }

    fn commit_path(&self, version: u64) -> Path {
        self.log_path(&format!("{version:020}.json"))
    }

    fn log_path(&self, name: &str) -> Path {
        self.root.clone().join("_delta_log").join(name)
    }

    /// Read the commits made since the last refresh (the first time: the
    /// newest checkpoint, then the commits after it).
    pub async fn refresh(&mut self) -> Result<(), DeltaError> {
        if self.version.is_none() {
            self.load_checkpoint().await?;
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

    /// The state at the version `_last_checkpoint` names, if there is one.
    async fn load_checkpoint(&mut self) -> Result<(), DeltaError> {
        let pointer = self.log_path("_last_checkpoint");
        let bytes = match self.store.get(&pointer).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| DeltaError::Corrupt {
            path: pointer.to_string(),
            reason,
        };
        let last: Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let version = last
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt("no version".into()))?;
        if last.get("v2Checkpoint").is_some() {
            return Err(DeltaError::Unsupported {
                table: self.root.to_string(),
                reason: "v2 checkpoints".into(),
            });
        }
        let names: Vec<String> = match last.get("parts").and_then(Value::as_u64) {
            Some(n) if n > 1 => (1..=n)
                .map(|i| format!("{version:020}.checkpoint.{i:010}.{n:010}.parquet"))
                .collect(),
            _ => vec![format!("{version:020}.checkpoint.parquet")],
        };
        for name in names {
            let path = self.log_path(&name);
            let bytes = self.store.get(&path).await?.bytes().await?;
            let actions = checkpoint::from_parquet(bytes).map_err(|e| DeltaError::Corrupt {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            for action in &actions {
                self.apply_action(&path, action)?;
            }
        }
        self.version = Some(version);
        Ok(())
    }

    fn apply(&mut self, path: &Path, bytes: &[u8]) -> Result<(), DeltaError> {
        let corrupt = |reason: String| DeltaError::Corrupt {
            path: path.to_string(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: Value = serde_json::from_str(line).map_err(|e| corrupt(e.to_string()))?;
            self.apply_action(path, &action)?;
        }
        Ok(())
    }

    /// One action of a commit or a checkpoint read from `path`.
    fn apply_action(&mut self, path: &Path, action: &Value) -> Result<(), DeltaError> {
        let corrupt = |reason: String| DeltaError::Corrupt {
            path: path.to_string(),
            reason,
        };
        if let Some(txn) = action.get("txn") {
            let app = txn.get("appId").and_then(Value::as_str);
            let version = txn.get("version").and_then(Value::as_i64);
            let (Some(app), Some(version)) = (app, version) else {
                return Err(corrupt("a txn action without appId or version".into()));
            };
            let updated = txn.get("lastUpdated").and_then(Value::as_i64);
            let known = self.txns.entry(app.to_owned()).or_insert((version, updated));
            if version >= known.0 {
                *known = (version, updated.or(known.1));
            }
        }
        if let Some(protocol) = action.get("protocol") {
            let reader = protocol.get("minReaderVersion").and_then(Value::as_i64).unwrap_or(1);
            let writer = protocol.get("minWriterVersion").and_then(Value::as_i64).unwrap_or(2);
            if reader > 1 || writer > 2 {
                return Err(DeltaError::Unsupported {
                    table: self.root.to_string(),
                    reason: format!("Delta protocol reader {reader}, writer {writer}"),
                });
            }
            self.protocol = Some(protocol.clone());
        }
        if let Some(meta) = action.get("metaData") {
            self.check_schema(meta)?;
            self.metadata = Some(meta.clone());
        }
        if let Some(add) = action.get("add") {
            let file = AddFile::from_action(add).ok_or_else(|| corrupt("an add action without path or size".into()))?;
            let modified = add.get("modificationTime").and_then(Value::as_i64).unwrap_or_default();
            self.tombstones.remove(&file.path);
            self.files.insert(file.path.clone(), (file, modified));
        }
        if let Some(remove) = action.get("remove")
            && let Some(path) = remove.get("path").and_then(Value::as_str)
        {
            self.files.remove(path);
            self.tombstones.insert(path.to_owned(), remove.clone());
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

    /// The state at `version` (the newest read) as its checkpoint, then
    /// `_last_checkpoint` naming it.
    async fn write_checkpoint(&mut self, version: u64, now_ms: i64) -> Result<(), DeltaError> {
        // Expired tombstones are dropped from memory too: a table compacted
        // every hour for years would otherwise hold every file it ever removed.
        let cutoff = now_ms.saturating_sub(TOMBSTONE_RETENTION_MS);
        self.tombstones.retain(|_, r| {
            r.get("deletionTimestamp")
                .and_then(Value::as_i64)
                .is_none_or(|t| t >= cutoff)
        });
        let mut actions: Vec<Value> = Vec::with_capacity(self.files.len() + self.txns.len() + 2);
        actions.extend(self.protocol.iter().map(|p| json!({"protocol": p})));
        actions.extend(self.metadata.iter().map(|m| json!({"metaData": m})));
        let mut apps: Vec<_> = self.txns.iter().collect();
        apps.sort();
        for (app, (v, updated)) in apps {
            actions.push(json!({"txn": {"appId": app, "version": v, "lastUpdated": updated}}));
        }
        actions.extend(self.files.values().map(|(f, modified)| f.add_action(*modified, false)));
        actions.extend(self.tombstones.values().map(|r| json!({"remove": r})));
        let path = self.log_path(&format!("{version:020}.checkpoint.parquet"));
        let file = checkpoint::to_parquet(&actions).map_err(|e| DeltaError::Corrupt {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let size_in_bytes = file.len();
        // Overwritten, not created: a second writer's checkpoint of this version holds the same state.
        self.store.put(&path, PutPayload::from(file)).await?;
        let last = json!({"version": version, "size": actions.len(), "sizeInBytes": size_in_bytes, "numOfAddFiles": self.files.len()});
        self.store
            .put(
                &self.log_path("_last_checkpoint"),
                PutPayload::from(last.to_string().into_bytes()),
            )
            .await?;
        tracing::info!(table = %self.root, version, actions = actions.len(), "wrote a Delta checkpoint");
        Ok(())
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
                if version > 0 && version.is_multiple_of(CHECKPOINT_INTERVAL) {
                    // Readers and restarts are only slower without it: the commit stands.
                    if let Err(e) = self.write_checkpoint(version, now_ms).await {
                        tracing::warn!(error = %e, table = %self.root, version, "writing a Delta checkpoint failed; the next one will be tried at its version");
                    }
                }
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
