//! Open files per Kafka partition, rolled into Parquet files and one Delta
//! commit.
//!
//! Guarantees:
//! - a record is added to a buffer at most once: a replayed offset (the same
//!   batch retried, or a record before what the buffer already holds) is
//!   skipped, and so is an offset the table holds already
//!   ([`Table::written_through`]), whoever wrote it;
//! - a roll writes one file per (date, hour) of each rolled partition's
//!   buffer, named after the Kafka partition and the offset range it holds,
//!   then commits them all in one Delta commit with a `txn` per partition.
//!   Only after that commit are the partition's offsets committable, so the
//!   offsets the consumer commits never pass a row that is not in the table;
//! - a commit that loses a race to another writer (a partition's old owner
//!   during a rebalance) is decided again on the table's new state: rows the
//!   other writer committed are dropped from the buffer, the rest written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::delta::{AddFile, DeltaError, Table};
use crate::error::LakeError;
use crate::rows::{self, PARTITION_COLUMNS, Partition, SourcedRow, TableKind};

/// What a buffer holds for one Kafka partition.
#[derive(Default)]
struct Buffer {
    rows: Vec<SourcedRow>,
    /// Input bytes of the rows (their records' payloads).
    bytes: usize,
    /// When the oldest row came.
    opened: Option<Instant>,
    /// The offset after the newest record seen (buffered or skipped).
    next: Option<i64>,
}

/// What a record became.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// Buffered.
    Buffered,
    /// Seen before (a replay), or in the table already: skipped.
    Skipped,
}

/// One table, its writer identity and its open buffers.
pub struct TableWriter {
    kind: TableKind,
    table: Table,
    store: Arc<dyn ObjectStore>,
    /// Prefix of the table's `txn` appIds: the topic and the epoch (a new
    /// one for a topic that was recreated, whose offsets start again).
    app_prefix: String,
    buffers: BTreeMap<i32, Buffer>,
}

/// Files and offsets a roll committed.
#[derive(Debug, Default, PartialEq)]
pub struct Rolled {
    /// Files added.
    pub files: usize,
    /// Rows added.
    pub rows: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Kafka partition to the offset after everything now in the table.
    pub committable: Vec<(i32, i64)>,
}

impl TableWriter {
    /// The writer of `kind`'s table under `root`, committing as `app_prefix`/`<partition>`.
    pub fn new(kind: TableKind, store: Arc<dyn ObjectStore>, root: &Path, app_prefix: String) -> Self {
        let table = Table::new(
            store.clone(),
            root.clone().join(kind.dir()),
            kind.table_schema(),
            PARTITION_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
        );
        Self {
            kind,
            table,
            store,
            app_prefix,
            buffers: BTreeMap::new(),
        }
    }

    /// Which table this is.
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    /// The table's log, read up to its newest commit.
    pub async fn refresh(&mut self) -> Result<(), DeltaError> {
        self.table.refresh().await
    }

    /// The table's newest committed version.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    fn app_id(&self, partition: i32) -> String {
        format!("{}/{partition}", self.app_prefix)
    }

    /// The newest offset of `partition` the table holds.
    pub fn written_through(&self, partition: i32) -> Option<i64> {
        self.table.written_through(&self.app_id(partition))
    }

    /// Whether `offset` of `partition` needs adding: not seen by the buffer, not in the table.
    pub fn is_new(&self, partition: i32, offset: i64) -> bool {
        let seen = self
            .buffers
            .get(&partition)
            .and_then(|b| b.next)
            .is_some_and(|n| offset < n);
        let written = self.written_through(partition).is_some_and(|w| offset <= w);
        !seen && !written
    }

    /// Note `offset` of `partition` as seen, adding `row` (`None`: a record
    /// that is not kept, such as a dead-lettered one) of `bytes` input bytes.
    pub fn add(&mut self, partition: i32, offset: i64, row: Option<rows::Row>, bytes: usize) -> Added {
        if !self.is_new(partition, offset) {
            return Added::Skipped;
        }
        let b = self.buffers.entry(partition).or_default();
        b.next = Some(offset + 1);
        let Some(row) = row else { return Added::Skipped };
        b.opened.get_or_insert_with(Instant::now);
        b.bytes += bytes;
        b.rows.push(SourcedRow { partition, offset, row });
        Added::Buffered
    }

    /// Input bytes buffered over every partition.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.values().map(|b| b.bytes).sum()
    }

    /// The Kafka partitions with a buffer.
    pub fn buffered_partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.buffers.keys().copied()
    }

    /// Rows buffered over every partition.
    pub fn buffered_rows(&self) -> usize {
        self.buffers.values().map(|b| b.rows.len()).sum()
    }

    /// Whether some buffer has been open for `max_age` or longer.
    pub fn is_due(&self, max_age: Duration) -> bool {
        self.buffers
            .values()
            .any(|b| b.opened.is_some_and(|t| t.elapsed() >= max_age))
    }

    /// The first buffered offset of `partition` (what its committed offset must not pass).
    pub fn first_buffered(&self, partition: i32) -> Option<i64> {
        self.buffers
            .get(&partition)
            .and_then(|b| b.rows.first())
            .map(|r| r.offset)
    }

    /// The offset after the newest record seen of `partition`, if any was.
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.buffers.get(&partition).and_then(|b| b.next)
    }

    /// Merge the small files of one finished (date, hour) partition (see [`crate::compact`]).
    pub async fn compact(
        &mut self,
        policy: &crate::compact::CompactPolicy,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::compact::Compacted>, LakeError> {
        self.table.refresh().await?;
        let current = Partition::of(now).values();
        crate::compact::compact_one(&mut self.table, &self.store, policy, &current, now.timestamp_millis()).await
    }

    /// The table's data files now (as last read or written).
    pub fn files(&self) -> usize {
        self.table.files().count()
    }

    /// Forget `partitions` (revoked): their next owner reads them from the committed offsets.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.buffers.remove(p);
        }
    }

    /// Write the buffers of `partitions` (all when `None`) to the table, in
    /// one commit, retrying a lost race on the new table state.
    pub async fn roll(&mut self, partitions: Option<&[i32]>, now_ms: i64) -> Result<Rolled, LakeError> {
        let chosen: Vec<i32> = self
            .buffers
            .iter()
            // A partition with nothing new for the table (only records it
            // already holds, or none kept) needs no commit.
            .filter(|(p, b)| {
                let ahead = b
                    .next
                    .is_some_and(|n| self.written_through(**p).is_none_or(|w| n - 1 > w));
                ahead && !b.rows.is_empty() && partitions.is_none_or(|ps| ps.contains(p))
            })
            .map(|(p, _)| *p)
            .collect();
        if chosen.is_empty() {
            return Ok(Rolled::default());
        }
        loop {
            // Drop what the table holds already (another writer's commit won a race).
            for p in &chosen {
                let through = self.written_through(*p);
                if let (Some(w), Some(b)) = (through, self.buffers.get_mut(p)) {
                    b.rows.retain(|r| r.offset > w);
                }
            }
            let (files, txns) = self.write_files(&chosen).await?;
            // Nothing left to add (a race's winner wrote it all): no empty commit.
            let commit = if files.is_empty() && txns.is_empty() {
                Ok(self.table.version().unwrap_or_default())
            } else {
                self.table.commit(&files, &txns, now_ms).await
            };
            match commit {
                Ok(version) => {
                    let mut rolled = Rolled {
                        files: files.len(),
                        rows: files.iter().map(|f| f.rows).sum(),
                        bytes: files.iter().map(|f| f.size).sum(),
                        committable: Vec::new(),
                    };
                    for p in &chosen {
                        if let Some(b) = self.buffers.get_mut(p) {
                            rolled.committable.extend(b.next.map(|n| (*p, n)));
                            b.rows.clear();
                            b.bytes = 0;
                            b.opened = None;
                        }
                    }
                    tracing::info!(
                        table = self.kind.dir(),
                        version,
                        files = rolled.files,
                        rows = rolled.rows,
                        bytes = rolled.bytes,
                        "committed to the lake"
                    );
                    return Ok(rolled);
                }
                Err(DeltaError::Conflict(version)) => {
                    tracing::info!(table = self.kind.dir(), version, "lost a commit race; deciding again");
                    // Files of the lost attempt are not in the table; those the
                    // next attempt names the same are overwritten, others removed.
                    self.remove_files(&files).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Each chosen partition's rows as one Parquet file per (date, hour), and its `txn`.
    async fn write_files(&self, chosen: &[i32]) -> Result<(Vec<AddFile>, Vec<(String, i64)>), LakeError> {
        let mut files = Vec::new();
        let mut txns = Vec::new();
        for p in chosen {
            let Some(b) = self.buffers.get(p) else { continue };
            // The txn names the newest offset seen, kept or not, so a replay
            // skips it all; never a lower one than the table's (a race's
            // winner may have committed past everything this buffer saw).
            if let Some(next) = b.next
                && self.written_through(*p).is_none_or(|w| next - 1 > w)
            {
                txns.push((self.app_id(*p), next - 1));
            }
            let (Some(first), Some(last)) = (b.rows.first(), b.rows.last()) else {
                continue;
            };
            let mut by_partition: HashMap<Partition, Vec<&SourcedRow>> = HashMap::new();
            for r in &b.rows {
                by_partition.entry(r.row.partition()).or_default().push(r);
            }
            let mut parts: Vec<_> = by_partition.into_iter().collect();
            parts.sort_by_key(|(k, _)| *k);
            for (part, rows) in parts {
                let name = format!(
                    "{}/p{p}-{:020}-{:020}.zstd.parquet",
                    part.dir(),
                    first.offset,
                    last.offset
                );
                let bytes = parquet_file(self.kind, &rows)?;
                let size = bytes.len() as u64;
                let path = under(self.table.root(), &name);
                self.store.put(&path, PutPayload::from(bytes)).await?;
                files.push(AddFile {
                    path: name,
                    partition_values: part.values(),
                    size,
                    rows: rows.len() as u64,
                });
            }
        }
        Ok((files, txns))
    }

    async fn remove_files(&self, files: &[AddFile]) {
        for f in files {
            let path = under(self.table.root(), &f.path);
            if let Err(e) = self.store.delete(&path).await {
                tracing::warn!(error = %e, path = %path, "removing a file of a lost commit failed; it is in no snapshot");
            }
        }
    }
}

/// `rel` (segments separated by `/`) under `root`.
pub(crate) fn under(root: &Path, rel: &str) -> Path {
    rel.split('/').fold(root.clone(), |p, seg| p.join(seg))
}

/// How the lake's Parquet files are written: zstd, level 3.
pub fn writer_properties() -> Result<WriterProperties, LakeError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build())
}

/// `rows` as a Parquet file with zstd.
fn parquet_file(kind: TableKind, rows: &[&SourcedRow]) -> Result<Vec<u8>, LakeError> {
    let batch = rows::to_batch(kind, rows)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties()?))?;
    writer.write(&batch)?;
    Ok(writer.into_inner()?)
}
