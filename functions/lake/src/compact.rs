//! Small files merged: a table rolled every few minutes by several replicas
//! gathers many small files per hour, which every reader pays for. This
//! merges the files of one (date, hour) partition into one, as Delta's
//! OPTIMIZE does.
//!
//! Guarantees:
//! - the same rows before and after, in one commit that removes the small
//!   files and adds the merged one with `dataChange: false`, so streaming
//!   readers of the table see no new data and snapshot readers the same rows;
//! - a commit that loses a race is retried only while every file it removes
//!   is still in the table; otherwise (another writer compacted them) its
//!   merged file is deleted and nothing changes;
//! - the current UTC hour is left alone: it is still being written.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::delta::{AddFile, DeltaError, Table};
use crate::error::LakeError;
use crate::writer::{under, writer_properties};

/// When a partition is worth compacting.
#[derive(Clone, Debug)]
pub struct CompactPolicy {
    /// Least number of small files in a partition.
    pub min_files: usize,
    /// Files this big or bigger are left alone, and a merge stops at this size.
    pub target_bytes: u64,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        Self {
            min_files: 8,
            target_bytes: 128 << 20,
        }
    }
}

/// What one compaction did.
#[derive(Debug, Default, PartialEq)]
pub struct Compacted {
    /// Files removed.
    pub removed: usize,
    /// Rows in the merged file.
    pub rows: u64,
    /// Its bytes.
    pub bytes: u64,
}

/// Merge the small files of the first partition (oldest first) that has at
/// least `policy.min_files` of them, skipping `current` (the partition still
/// being written). `None` when no partition needs it, or another writer
/// compacted it first.
pub async fn compact_one(
    table: &mut Table,
    store: &Arc<dyn ObjectStore>,
    policy: &CompactPolicy,
    current: &[(String, String)],
    now_ms: i64,
) -> Result<Option<Compacted>, LakeError> {
    let mut by_partition: BTreeMap<Vec<(String, String)>, Vec<AddFile>> = BTreeMap::new();
    for f in table.files().filter(|f| f.size < policy.target_bytes) {
        by_partition
            .entry(f.partition_values.clone())
            .or_default()
            .push(f.clone());
    }
    let Some((values, mut files)) = by_partition
        .into_iter()
        .find(|(values, files)| values.as_slice() != current && files.len() >= policy.min_files)
    else {
        return Ok(None);
    };
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut total = 0;
    files.retain(|f| {
        total += f.size;
        total <= policy.target_bytes
    });
    if files.len() < 2 {
        return Ok(None);
    }

    let dir = values
        .iter()
        .map(|(k, v)| format!("{k}={v:0>2}"))
        .collect::<Vec<_>>()
        .join("/");
    let name = format!("{dir}/compacted-{}.zstd.parquet", uuid::Uuid::new_v4());
    let (bytes, rows) = merge(store, table.root(), &files).await?;
    let merged = AddFile {
        path: name.clone(),
        partition_values: values,
        size: bytes.len() as u64,
        rows,
    };
    let path = under(table.root(), &name);
    store.put(&path, PutPayload::from(bytes)).await?;
    loop {
        match table.rewrite(&files, std::slice::from_ref(&merged), now_ms).await {
            Ok(version) => {
                tracing::info!(table = %table.root(), version, removed = files.len(), rows, "compacted a partition");
                return Ok(Some(Compacted {
                    removed: files.len(),
                    rows,
                    bytes: merged.size,
                }));
            }
            Err(DeltaError::Conflict(_)) if files.iter().all(|f| table.holds(&f.path)) => continue,
            Err(e) => {
                // Not in any snapshot: removing it only saves space.
                if let Err(del) = store.delete(&path).await {
                    tracing::warn!(error = %del, path = %path, "removing an unused compacted file failed");
                }
                return match e {
                    DeltaError::Conflict(_) => Ok(None),
                    other => Err(other.into()),
                };
            }
        }
    }
}

/// The rows of `files`, in order, as one Parquet file: its bytes and rows.
async fn merge(store: &Arc<dyn ObjectStore>, root: &Path, files: &[AddFile]) -> Result<(Vec<u8>, u64), LakeError> {
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let mut rows = 0u64;
    for f in files {
        let bytes: Bytes = store.get(&under(root, &f.path)).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(ArrowWriter::try_new(
                    Vec::new(),
                    batch.schema(),
                    Some(writer_properties()?),
                )?),
            };
            w.write(&batch)?;
        }
    }
    match writer {
        Some(w) => Ok((w.into_inner()?, rows)),
        None => Ok((Vec::new(), 0)),
    }
}
