//! Tributary's lake function: every reading of `telemetry.raw` and every
//! aggregate of `telemetry.aggregates` in Delta Lake tables of Parquet files
//! (zstd), partitioned by date and hour, in Azure Data Lake Storage Gen2 or
//! a local directory: what Spark on HDInsight, Synapse, Databricks or
//! Fabric, and DuckDB or pandas on a laptop, read.
//!
//! Guarantees:
//! - exactly once: each commit records, per Kafka partition, the newest
//!   offset it holds (Delta `txn`), records the table holds are skipped
//!   whoever wrote them, and offsets are committed to Kafka only after the
//!   table commit; so a crash or a rebalance at any point neither loses a
//!   row nor adds one twice;
//! - readers see whole commits only: a data file is in the table once the
//!   commit adding it is, and a commit is one object created only if absent;
//! - a clean stop (SIGTERM, or Ctrl-C of `tributary dev`) commits what is
//!   buffered before the offsets and the group are left;
//! - a new metric name or tag is a new key of a map column, not a new column.
//!
//! # Layout
//!
//! - this file: [`Deps`] and [`run`], the entry point;
//! - [`config`]: the settings, with their defaults;
//! - [`store`]: the object store the lake URL names, and its readiness;
//! - [`rows`]: the two tables' columns, records as Arrow batches;
//! - [`delta`]: the Delta transaction log (commits, `txn` versions);
//! - [`checkpoint`]: the log's state at a version as one Parquet file;
//! - [`writer`]: buffers per Kafka partition, rolled into Parquet files and a commit;
//! - [`compact`]: the small files of a finished hour merged into one;
//! - [`handler`]: the batch handler (when to roll, what to commit);
//! - [`metrics`]: the Prometheus counters and gauges;
//! - [`error`]: why a roll failed, or [`run`] could not start or stopped.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::service::{ConsumerSettings, Endpoint, Host, Readiness, Service, Shutdown};

pub mod checkpoint;
pub mod compact;
pub mod config;
pub mod delta;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod rows;
pub mod store;
pub mod writer;

pub use config::Config;
pub use error::{Error, LakeError};
pub use handler::{LakeHandler, RollPolicy};
pub use metrics::LakeMetrics;

/// What the lake runs on: the event log it reads, the store it writes, its host.
pub struct Deps {
    /// The event log (Kafka in production).
    pub log: Arc<dyn EventLog>,
    /// Where the tables are (Azure Data Lake Storage in production).
    pub store: Arc<dyn ObjectStore>,
    /// The lake's root in `store`: the tables are `<root>/raw` and `<root>/aggregates`.
    pub root: Path,
    /// Where the ops endpoints are served, and metrics registered.
    pub host: Host,
}

impl Deps {
    /// The production dependencies `config` names: Kafka, the lake's store, `$PORT`.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let (store, root) = store::open(&config.lake_url)?;
        let log = KafkaLog::connect(&config.kafka, "tributary-lake").map_err(Error::EventLog)?;
        let host = Host::new(Endpoint::bind(config.listen.addr()).await?);
        Ok(Self {
            log: Arc::new(log),
            store,
            root,
            host,
        })
    }
}

/// Write `telemetry.raw` and `telemetry.aggregates` to the lake until
/// `shutdown`, then commit what is buffered, its offsets, and leave the group.
pub async fn run(config: Config, deps: Deps, shutdown: Shutdown) -> Result<(), Error> {
    let metrics = deps.host.metrics.register(LakeMetrics::new);
    let writers = [
        (&config.topics.raw, rows::TableKind::Raw),
        (&config.topics.aggregates, rows::TableKind::Aggregates),
    ]
    .into_iter()
    .map(|(topic, kind)| {
        // Not the group: a renamed group reading the same topic still skips what the table holds.
        let app = format!("tributary-lake/{topic}/{}", config.epoch);
        (
            topic.clone(),
            writer::TableWriter::new(kind, deps.store.clone(), &deps.root, app),
        )
    })
    .collect();
    let policy = RollPolicy {
        max_bytes: usize::try_from(config.roll_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        max_age: Duration::from_secs(config.roll_secs.max(1)),
    };
    let mut handler = LakeHandler::new(
        writers,
        policy,
        deps.log.publisher(),
        config.topics.deadletter.clone(),
        metrics,
    );
    if config.compact_secs > 0 {
        let compact = compact::CompactPolicy {
            min_files: config.compact_min_files.max(2),
            // Merged files as large as a roll's.
            target_bytes: config.roll_mb.saturating_mul(1 << 20).max(1 << 20),
        };
        handler = handler.compacting(Duration::from_secs(config.compact_secs), compact);
    }
    let ready: Arc<dyn Readiness> = Arc::new(store::LakeReady {
        store: deps.store,
        root: deps.root,
    });
    let topics = [config.topics.raw.as_str(), config.topics.aggregates.as_str()];
    let consumer = ConsumerSettings::new(&config.group, &topics, config.batch_max)
        .committing(&config.kafka)
        .creating(
            &config.kafka,
            &[&config.topics.raw, &config.topics.aggregates, &config.topics.deadletter],
        )
        .after(ready.clone());
    let service = Service::new("lake", deps.host, ready);
    service
        .consume(deps.log.as_ref(), &consumer, &handler, &shutdown)
        .await?;
    Ok(())
}
