//! The backends `tributary dev` runs the functions on: embedded by default
//! (the in-process event log, SQLite results and raw archive in the data
//! directory, the in-process cache), each switched to the real server by its
//! flag.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary_shared::cache::{KvCache, MemoryCache, RedisCache};
use tributary_shared::config::{CosmosArgs, KafkaArgs};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::notify::store::ChannelStore;
use tributary_shared::raw::cosmos::CosmosStore;
use tributary_shared::raw::{LocalRawStore, RawStore};
use tributary_shared::registry::DeviceRegistry;
use tributary_shared::results::ResultStore;
use tributary_shared::rules::RuleStore;
use tributary_shared::topics;

use super::Args;

/// Partitions of the in-process log's topics: one process, and fewer idle
/// partitions hold fewer windows open.
pub const DEV_PARTITIONS: i32 = 4;

/// Readings kept per partition of the in-process log.
const MEMORY_RETENTION: usize = 2_000_000;

/// Every backend, opened.
pub struct Backends {
    /// The event log the functions meet in.
    pub log: Arc<dyn EventLog>,
    /// The same log when it is the in-process one (for lag and the pending tail).
    pub memory: Option<MemoryLog>,
    /// The Kafka settings the functions' configs carry (partitions of the topics they create).
    pub kafka: KafkaArgs,
    /// Results (migrated).
    pub store: Arc<dyn ResultStore>,
    /// The device registry, in the results database.
    pub registry: Arc<dyn DeviceRegistry>,
    /// The alert rules, in the results database.
    pub rules: Arc<dyn RuleStore>,
    /// The notification channels, in the results database.
    pub channels: Arc<dyn ChannelStore>,
    /// The cache and change notifications.
    pub cache: Arc<dyn KvCache>,
    /// The raw archive.
    pub raw: Arc<dyn RawStore>,
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

impl Backends {
    /// Open what `args` asks for, with embedded files in `data_dir`.
    pub async fn open(args: &Args, data_dir: &Path) -> anyhow::Result<Self> {
        let (log, memory, kafka): (Arc<dyn EventLog>, _, _) = match &args.kafka_brokers {
            Some(brokers) => {
                let kafka = KafkaArgs {
                    brokers: brokers.clone(),
                    ..KafkaArgs::default()
                };
                let log = KafkaLog::connect(&kafka, "tributary-dev").context("connecting to Kafka")?;
                // Before ingest takes a reading: a broker that creates topics on first use
                // would give them its own partition count.
                let all = [topics::RAW, topics::AGGREGATES, topics::ALERTS, topics::DEADLETTER].map(String::from);
                log.ensure_topics(&all, kafka.partitions)
                    .await
                    .context("creating topics")?;
                (Arc::new(log), None, kafka)
            }
            None => {
                let memory = MemoryLog::new(DEV_PARTITIONS, MEMORY_RETENTION);
                let kafka = KafkaArgs {
                    partitions: DEV_PARTITIONS,
                    ..KafkaArgs::default()
                };
                (Arc::new(memory.clone()), Some(memory), kafka)
            }
        };
        let store_url = args
            .database_url
            .clone()
            .unwrap_or_else(|| sqlite_url(data_dir, "results.db"));
        let store = tributary_shared::results::open(&store_url, 8)
            .await
            .context("opening the results store")?;
        // Before any function starts, so the dashboard never queries missing tables.
        store.migrate().await.context("creating the results tables")?;
        let registry = tributary_shared::registry::open(&store_url, 2)
            .await
            .context("opening the device registry")?;
        let rules = tributary_shared::rules::open(&store_url, 2)
            .await
            .context("opening the alert rules")?;
        let channels = tributary_shared::notify::store::open(&store_url, 2)
            .await
            .context("opening the notification channels")?;
        let cache: Arc<dyn KvCache> = match &args.redis_url {
            Some(url) => Arc::new(RedisCache::new(url).context("REDIS_URL")?),
            None => Arc::new(MemoryCache::default()),
        };
        let raw: Arc<dyn RawStore> = match &args.cosmos_endpoint {
            Some(endpoint) => {
                let cosmos = CosmosArgs {
                    endpoint: Some(endpoint.clone()),
                    key: args.cosmos_key.clone(),
                    ..CosmosArgs::default()
                };
                let settings = cosmos.settings(Duration::from_secs(10)).context("Cosmos DB settings")?;
                let settings = settings.context("a Cosmos DB endpoint")?;
                Arc::new(
                    CosmosStore::connect(settings, true)
                        .await
                        .context("connecting to Cosmos DB")?,
                )
            }
            None => Arc::new(
                LocalRawStore::open(&sqlite_url(data_dir, "raw.db"))
                    .await
                    .context("opening the local raw archive")?,
            ),
        };
        Ok(Self {
            log,
            memory,
            kafka,
            store,
            registry,
            rules,
            channels,
            cache,
            raw,
        })
    }

    /// One line naming each backend.
    pub fn describe(&self) -> String {
        let log = if self.memory.is_some() { "in-process" } else { "Kafka" };
        format!(
            "event log {log} · results {} · cache {} · raw archive {}",
            self.store.backend(),
            self.cache.backend(),
            self.raw.backend()
        )
    }
}
