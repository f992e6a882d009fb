//! The lake's Prometheus metrics (`tributary_lake_*`), labelled by table and,
//! for failures, by kind: low cardinality whatever the fleet.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A table, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `raw` or `aggregates`.
    pub table: &'static str,
}

/// A failed roll, as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    /// `raw` or `aggregates`.
    pub table: &'static str,
    /// [`LakeError::kind`].
    pub kind: &'static str,
}

/// Counters of the lake function.
#[derive(Clone, Debug, Default)]
pub struct LakeMetrics {
    pub(crate) rows: Family<TableLabel, Counter>,
    pub(crate) files: Family<TableLabel, Counter>,
    pub(crate) bytes: Family<TableLabel, Counter>,
    pub(crate) commits: Family<TableLabel, Counter>,
    pub(crate) failed_rolls: Family<FailureLabel, Counter>,
    pub(crate) deadlettered: Counter,
    pub(crate) skipped: Counter,
    pub(crate) buffered: Gauge,
    pub(crate) buffered_rows: Gauge,
    pub(crate) compactions: Family<TableLabel, Counter>,
    pub(crate) compacted_files: Family<TableLabel, Counter>,
    pub(crate) failed_compactions: Family<FailureLabel, Counter>,
}

impl LakeMetrics {
    /// Counters registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tributary_lake_rows",
            "Rows committed to the lake's tables",
            m.rows.clone(),
        );
        registry.register("tributary_lake_files", "Parquet files committed", m.files.clone());
        registry.register(
            "tributary_lake_file_bytes",
            "Bytes of Parquet files committed",
            m.bytes.clone(),
        );
        registry.register("tributary_lake_commits", "Delta commits made", m.commits.clone());
        registry.register(
            "tributary_lake_failed_rolls",
            "Rolls that failed and will be retried, by kind",
            m.failed_rolls.clone(),
        );
        registry.register(
            "tributary_lake_deadlettered",
            "Records sent to the dead-letter topic",
            m.deadlettered.clone(),
        );
        registry.register(
            "tributary_lake_skipped_records",
            "Records skipped because the table held them already (replays)",
            m.skipped.clone(),
        );
        registry.register(
            "tributary_lake_buffered_bytes",
            "Record bytes buffered for the next roll",
            m.buffered.clone(),
        );
        registry.register(
            "tributary_lake_compactions",
            "Partitions whose small files were merged into one",
            m.compactions.clone(),
        );
        registry.register(
            "tributary_lake_compacted_files",
            "Small files replaced by merged ones",
            m.compacted_files.clone(),
        );
        registry.register(
            "tributary_lake_failed_compactions",
            "Compactions that failed and will be tried again, by kind",
            m.failed_compactions.clone(),
        );
        registry.register(
            "tributary_lake_buffered_rows",
            "Rows buffered for the next roll (not yet queryable)",
            m.buffered_rows.clone(),
        );
        m
    }

    /// Rows committed to `table` so far.
    pub fn rows(&self, table: &'static str) -> u64 {
        self.rows.get_or_create(&TableLabel { table }).get()
    }

    /// Records skipped as already in a table so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.get()
    }

    /// Records dead-lettered so far.
    pub fn deadlettered(&self) -> u64 {
        self.deadlettered.get()
    }
}
