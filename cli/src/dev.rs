//! `tributary dev`: the whole pipeline in one process, the README's first
//! command.
//!
//! Every function runs its own library code, wired to embedded backends
//! behind the same traits as production: the in-process event log for Kafka,
//! SQLite for PostgreSQL, an in-process cache for Redis and an SQLite file for
//! Cosmos DB; each switches to the real server by its flag or environment
//! variable (`--kafka-brokers`, `--database-url`, `--redis-url`,
//! `--cosmos-endpoint`). Simulated devices send to the local ingest, and the
//! dashboard serves the results on localhost.
//!
//! Guarantees of a clean stop (Ctrl-C or SIGTERM): the devices stop first and
//! get their answers; ingest drains; every consumer catches up with what was
//! acknowledged (bounded by `--drain-timeout-secs`); with a data directory,
//! readings that analyze still holds in open windows are saved and replayed
//! on the next start, so a restart loses nothing acknowledged and keeps the
//! history. (A crash of the process loses what only the in-process log held;
//! run with `--kafka-brokers` for crash durability.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tributary_analyze::engine::Analyzer;
use tributary_analyze::handler::{AnalyzeHandler, Outputs};
use tributary_dashboard::{Dashboard, StoreReadiness, live::Live};
use tributary_ingest::archive::cosmos::CosmosStore;
use tributary_ingest::archive::handler::ArchiveMetrics;
use tributary_ingest::archive::{ArchiveConfig, ArchiveHandler, LocalRawStore, RawStore};
use tributary_ingest::{Ingest, LogReadiness};
use tributary_process::cache::Cache;
use tributary_process::handler::ProcessHandler;
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::cache::{KvCache, MemoryCache, RedisCache};
use tributary_shared::eventlog::kafka::KafkaLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::runner::{Handler, RunnerConfig, run_consumer};
use tributary_shared::eventlog::{EventLog, Message, Record};
use tributary_shared::ops::Ops;
use tributary_shared::topics;

/// Arguments of `tributary dev`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Address of the ingest endpoint (devices POST to /v1/telemetry here).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the dashboard (web UI and JSON API).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub dashboard: SocketAddr,

    /// Directory for state kept across restarts (results, raw archive, and
    /// readings still inside open windows at shutdown). Unset: a fresh
    /// temporary directory, removed at exit.
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Kafka bootstrap servers. Unset: the in-process event log.
    #[arg(long, env = "TRIBUTARY_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Results store URL (`postgres://…` or `sqlite://…`). Unset: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL for the cache and live notifications. Unset: an in-process cache.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Cosmos DB account endpoint for the raw archive. Unset: an SQLite file in the data directory.
    #[arg(long, env = "TRIBUTARY_COSMOS_ENDPOINT")]
    pub cosmos_endpoint: Option<String>,

    /// Cosmos DB account key (with `--cosmos-endpoint`).
    #[arg(long, env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    pub cosmos_key: Option<String>,

    /// Fleet key device keys derive from (the development key by default).
    #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, hide_default_value = true, default_value = tributary_ingest::config::DEV_FLEET_KEY)]
    pub fleet_key: String,

    /// Token for acknowledging alerts in the dashboard. Unset: one is generated and printed.
    #[arg(long, env = "TRIBUTARY_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Simulated devices sending to the local ingest (0: none).
    #[arg(long, default_value_t = 6)]
    pub devices: usize,

    /// Readings per second per simulated device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,

    /// Readings per request from each simulated device.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Fraction of simulated readings that carry an injected anomaly.
    #[arg(long, default_value_t = 0.004)]
    pub anomaly_rate: f64,

    /// Tumbling window sizes in seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,60")]
    pub windows: Vec<u32>,

    /// Seconds a reading may arrive late and still join its window.
    #[arg(long, default_value_t = 5)]
    pub allowed_lateness_secs: i64,

    /// Threshold rules for analyze, `;`-separated, e.g. `engine_temp > 110 for 30s; vibration >= 2`.
    #[arg(long, default_value = "")]
    pub rules: String,

    /// Seconds between status lines (0: none).
    #[arg(long, default_value_t = 5)]
    pub status_secs: u64,

    /// Longest wait at shutdown for the consumers to catch up.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    pub log: String,
}

/// Partitions of the in-process log's topics: one process, and fewer idle
/// partitions hold fewer windows open.
pub const DEV_PARTITIONS: i32 = 4;

/// Readings analyze still needed at the last clean shutdown, replayed at start.
const PENDING_FILE: &str = "pending-raw.ndjson";

/// The log, as the functions see it, and the in-process one when used (for lag and the pending tail).
struct Log {
    log: Arc<dyn EventLog>,
    memory: Option<MemoryLog>,
}

fn free_data_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tributary-dev-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pending tail as NDJSON lines: `{"key", "value", "headers"}` with UTF-8 strings.
fn save_pending(path: &Path, messages: &[Message]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    for m in messages {
        let headers: Vec<(String, String)> = m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let line = serde_json::json!({
            "key": String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()),
            "value": String::from_utf8_lossy(&m.value),
            "headers": headers,
        });
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    drop(f);
    // Rename last, so a crash mid-write never leaves half a file to replay.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load_pending(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        let s = |k: &str| v[k].as_str().map(str::to_owned).unwrap_or_default();
        let mut r = Record::new(s("key"), s("value"));
        if let Some(hs) = v["headers"].as_array() {
            for h in hs {
                if let (Some(k), Some(val)) = (h[0].as_str(), h[1].as_str()) {
                    r.headers.push((k.to_owned(), val.as_bytes().to_vec()));
                }
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// A consumer task: `handler` on `group` over `topics` until `stop` fires.
fn spawn_consumer<H: Handler + 'static>(
    log: Arc<dyn EventLog>,
    group: &'static str,
    topics: Vec<String>,
    handler: H,
    max_batch: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let sub = log
            .subscribe(group, &topics)
            .await
            .with_context(|| format!("joining consumer group {group}"))?;
        let cfg = RunnerConfig {
            max_batch,
            ..RunnerConfig::default()
        };
        let mut stop = stop;
        run_consumer(sub, &handler, &cfg, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .with_context(|| format!("consumer {group}"))
    })
}

/// Run until Ctrl-C or SIGTERM.
pub async fn run(a: Args) -> anyhow::Result<()> {
    tributary_shared::telemetry::init(&a.log, tributary_shared::telemetry::LogFormat::Text);
    let started = Instant::now();
    let (data_dir, temporary) = match &a.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating the data directory {}", d.display()))?;
            (d.clone(), false)
        }
        None => (free_data_dir()?, true),
    };

    // --- backends -----------------------------------------------------------
    let log = match &a.kafka_brokers {
        Some(brokers) => {
            let mut k = tributary_shared::config::KafkaArgs::default();
            k.brokers = brokers.clone();
            let kafka = KafkaLog::connect(&k, "tributary-dev").context("connecting to Kafka")?;
            let all: Vec<String> = [topics::RAW, topics::AGGREGATES, topics::ALERTS, topics::DEADLETTER]
                .map(String::from)
                .to_vec();
            kafka
                .ensure_topics(&all, k.partitions)
                .await
                .context("creating topics")?;
            Log {
                log: Arc::new(kafka),
                memory: None,
            }
        }
        None => {
            let m = MemoryLog::new(DEV_PARTITIONS, 2_000_000);
            Log {
                log: Arc::new(m.clone()),
                memory: Some(m),
            }
        }
    };
    let store_url = a
        .database_url
        .clone()
        .unwrap_or_else(|| sqlite_url(&data_dir, "results.db"));
    let store = tributary_shared::results::open(&store_url, 8)
        .await
        .context("opening the results store")?;
    store.migrate().await.context("creating the results tables")?;
    let kv: Arc<dyn KvCache> = match &a.redis_url {
        Some(url) => Arc::new(RedisCache::new(url).context("REDIS_URL")?),
        None => Arc::new(MemoryCache::default()),
    };
    let raw: Arc<dyn RawStore> = match &a.cosmos_endpoint {
        Some(endpoint) => {
            let mut args = vec![
                "tributary-archive".to_owned(),
                "--cosmos-endpoint".into(),
                endpoint.clone(),
            ];
            if let Some(k) = &a.cosmos_key {
                args.extend(["--cosmos-key".into(), k.clone()]);
            }
            let cfg = <ArchiveConfig as clap::Parser>::try_parse_from(args).context("Cosmos DB settings")?;
            Arc::new(
                CosmosStore::connect(cfg.cosmos_settings()?, true)
                    .await
                    .context("connecting to Cosmos DB")?,
            )
        }
        None => Arc::new(
            LocalRawStore::open(&sqlite_url(&data_dir, "raw.db"))
                .await
                .context("opening the local raw archive")?,
        ),
    };

    // Readings saved at the last clean stop go back in first, so analyze rebuilds its open windows.
    let pending_path = data_dir.join(PENDING_FILE);
    if log.memory.is_some() {
        let pending = load_pending(&pending_path)?;
        if !pending.is_empty() {
            let n = pending.len();
            for r in log.log.publisher().publish(topics::RAW, pending).await {
                r.context("replaying saved readings")?;
            }
            println!("  replayed {n} readings saved at the last stop");
        }
        let _ = std::fs::remove_file(&pending_path);
    }

    // --- functions ------------------------------------------------------------
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = log.log.publisher();

    let mut ingest_cfg = tributary_ingest::Config::defaults();
    ingest_cfg.fleet_key = a.fleet_key.clone();
    let mut ingest_registry = prometheus_client::registry::Registry::default();
    let ingest = Arc::new(Ingest::new(&ingest_cfg, publisher.clone(), &mut ingest_registry));
    let ingest_ops = Ops::new(Arc::new(ingest_registry), Arc::new(LogReadiness(publisher.clone())));
    let ingest_listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {} (pass --listen to choose another)", a.listen))?;
    let ingest_addr = ingest_listener.local_addr()?;

    let mut registry = prometheus_client::registry::Registry::default();
    let archive_metrics = ArchiveMetrics::new(&mut registry);
    let archive = ArchiveHandler::new(
        raw.clone(),
        publisher.clone(),
        topics::DEADLETTER.to_owned(),
        5,
        archive_metrics.clone(),
    );

    let mut analyze_cfg = tributary_analyze::config::Config::defaults();
    analyze_cfg.windows = a.windows.clone();
    analyze_cfg.allowed_lateness_secs = a.allowed_lateness_secs;
    analyze_cfg.rules = a.rules.clone();
    let analyzer = Analyzer::new(analyze_cfg.analyzer().map_err(anyhow::Error::msg)?);
    let outputs = Outputs {
        aggregates: topics::AGGREGATES.into(),
        alerts: topics::ALERTS.into(),
        deadletter: topics::DEADLETTER.into(),
    };
    let analyze = Arc::new(AnalyzeHandler::new(
        analyzer,
        publisher.clone(),
        outputs,
        None,
        tributary_analyze::metrics::Metrics::new(&mut registry),
    ));

    let process_cfg = tributary_process::Config::defaults();
    let cache = Arc::new(Cache::new(
        kv.clone(),
        process_cfg.cache_ttl_secs,
        process_cfg.recent_alerts,
    ));
    if let Err(e) = cache.rebuild(store.as_ref()).await {
        tracing::warn!(error = %e, "cache warm-up failed; retrying in the background");
    }
    let process = ProcessHandler::new(
        &process_cfg,
        store.clone(),
        cache.clone(),
        publisher.clone(),
        tributary_process::metrics::Metrics::new(&mut registry),
    );

    let operator_token = a.operator_token.clone().unwrap_or_else(random_token);
    let live = Live::new();
    let follower = tokio::spawn(live.clone().follow(kv.clone()));
    let dashboard_cfg = tributary_dashboard::Config::defaults();
    let dashboard = Arc::new(Dashboard {
        store: store.clone(),
        cache: Some(kv.clone()),
        raw: Some(raw.clone()),
        live,
        operator_token: Some(operator_token.clone()),
        offline_after_secs: dashboard_cfg.offline_after_secs,
    });
    let dashboard_ops = Ops::new(Arc::new(registry), Arc::new(StoreReadiness(store.clone())));
    let dashboard_listener = tokio::net::TcpListener::bind(a.dashboard)
        .await
        .with_context(|| format!("binding {} (pass --dashboard to choose another)", a.dashboard))?;
    let dashboard_addr = dashboard_listener.local_addr()?;

    let raw_topic = vec![topics::RAW.to_owned()];
    let archive_task = spawn_consumer(
        log.log.clone(),
        topics::GROUP_ARCHIVE,
        raw_topic.clone(),
        archive,
        500,
        stop_rx.clone(),
    );
    let analyze_task = {
        let (log, mut stop) = (log.log.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let sub = log
                .subscribe(topics::GROUP_ANALYZE, &raw_topic)
                .await
                .context("joining consumer group tributary-analyze")?;
            // Ticks between polls: closes the windows of quiet partitions (and commits them), evicts idle series.
            let sub = tributary_analyze::handler::Ticking::wrap(sub, analyze.clone());
            let cfg = RunnerConfig {
                max_batch: 1000,
                ..RunnerConfig::default()
            };
            run_consumer(sub, &*analyze, &cfg, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("consumer tributary-analyze")
        })
    };
    let process_task = spawn_consumer(
        log.log.clone(),
        topics::GROUP_PROCESS,
        vec![topics::AGGREGATES.into(), topics::ALERTS.into()],
        process,
        1000,
        stop_rx.clone(),
    );
    let upkeep = tokio::spawn(tributary_process::upkeep(
        store.clone(),
        cache.clone(),
        process_cfg.retention_days,
        {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        },
    ));

    let (ingest_stop, ingest_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = ingest_ops.clone();
    let ingest_server = tokio::spawn(tributary_ingest::serve(
        ingest_listener,
        tributary_ingest::app(ingest.clone(), &ingest_ops),
        async move {
            let _ = ingest_stop_rx.await;
            draining.start_draining();
        },
    ));
    let dashboard_server = tokio::spawn({
        let mut rx = stop_rx.clone();
        axum::serve(dashboard_listener, tributary_dashboard::app(dashboard, &dashboard_ops))
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .into_future()
    });

    // --- what a person needs ------------------------------------------------------
    let device = "demo-device-1";
    let token = FleetKey::new(&a.fleet_key)
        .device_key(device)
        .token(device, now_unix() + 86_400);
    let backend = |real: bool, name: &str, embedded: String| if real { name.to_owned() } else { embedded };
    println!("Tributary dev mode: ready in {} ms", started.elapsed().as_millis());
    println!("  dashboard: http://{dashboard_addr}/   (operator token for acknowledging alerts: {operator_token})");
    println!("  ingest:    http://{ingest_addr}/v1/telemetry   (health: /healthz, metrics: /metrics)");
    println!(
        "  backends:  event log {} · results {} · cache {} · raw archive {}",
        backend(log.memory.is_none(), "Kafka", "in-process".into()),
        store.backend(),
        kv.backend(),
        backend(a.cosmos_endpoint.is_some(), "Cosmos DB", "SQLite".into())
    );
    println!(
        "  data:      {}{}",
        data_dir.display(),
        if temporary {
            " (temporary; pass --data-dir to keep history)"
        } else {
            ""
        }
    );
    println!("  token for {device} (24 h): {token}");
    println!("  send a reading by hand:");
    println!(
        "    curl -s http://{ingest_addr}/v1/telemetry -H 'Authorization: SharedAccessSignature {token}' -H 'Content-Type: application/json' -d '{{\"timestamp\": {}, \"metrics\": {{\"temperature\": 21.5}}}}'",
        chrono::Utc::now().timestamp_millis()
    );

    let (sim_stop, sim_stop_rx) = tokio::sync::watch::channel(false);
    let sim = (a.devices > 0).then(|| {
        println!(
            "  simulating {} devices at {}/s each; Ctrl-C stops everything cleanly",
            a.devices, a.rate
        );
        let args = crate::simulate::Args {
            url: format!("http://{ingest_addr}/v1/telemetry"),
            fleet_key: a.fleet_key.clone(),
            devices: a.devices,
            rate: a.rate,
            batch: a.batch,
            duration: 0,
            anomaly_rate: a.anomaly_rate,
            late_fraction: 0.01,
            duplicate_fraction: 0.01,
            prefix: "sim".into(),
            seed: 7,
            record: None,
            progress_secs: 0,
        };
        let mut rx = sim_stop_rx.clone();
        tokio::spawn(crate::simulate::run(args, async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    });

    let status = (a.status_secs > 0).then(|| {
        let (ingest, store, archived) = (ingest.clone(), store.clone(), archive_metrics.clone());
        let every = Duration::from_secs(a.status_secs);
        tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let accepted = ingest.accepted_total();
                let rate = (accepted - last) as f64 / every.as_secs_f64();
                last = accepted;
                let summary = store.fleet_summary(chrono::Utc::now() - chrono::Duration::minutes(5)).await;
                let (devices, alerts) = summary.map(|s| (s.devices_online.to_string(), s.alerts_open.to_string())).unwrap_or(("?".into(), "?".into()));
                println!("  [{:>5}s] accepted {accepted} ({rate:.1}/s) · archived {} · devices online {devices} · open alerts {alerts}", started.elapsed().as_secs(), archived.archived());
            }
        })
    });

    tributary_shared::shutdown::signal().await;
    println!("stopping: devices, then ingest, then the consumers once they caught up");

    // 1. Devices stop and get their answers; 2. ingest drains its in-flight requests.
    let _ = sim_stop.send(true);
    if let Some(sim) = sim {
        match sim.await {
            Ok(Ok(t)) => println!(
                "  devices: {} readings sent, {} acknowledged, {} rejected, {} retries",
                t.sent, t.accepted, t.rejected, t.retries
            ),
            Ok(Err(e)) => println!("  devices: stopped with an error: {e:#}"),
            Err(e) => println!("  devices: task failed: {e}"),
        }
    }
    let _ = ingest_stop.send(());
    ingest_server.await?.context("ingest server")?;
    if let Some(s) = status {
        s.abort();
    }

    // 3. Consumers catch up with everything acknowledged.
    if let Some(m) = &log.memory {
        let deadline = Instant::now() + Duration::from_secs(a.drain_timeout_secs);
        loop {
            let archive_lag = m.lag(topics::GROUP_ARCHIVE, topics::RAW);
            let process_lag =
                m.lag(topics::GROUP_PROCESS, topics::AGGREGATES) + m.lag(topics::GROUP_PROCESS, topics::ALERTS);
            if archive_lag == 0 && process_lag == 0 {
                break;
            }
            if Instant::now() > deadline {
                println!(
                    "  gave up waiting after {} s: archive behind by {archive_lag}, process by {process_lag}",
                    a.drain_timeout_secs
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = stop_tx.send(true);
    for (name, task) in [
        ("archive", archive_task),
        ("analyze", analyze_task),
        ("process", process_task),
    ] {
        if let Err(e) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            println!("  {name}: {e:#}");
        }
    }
    let _ = upkeep.await;
    follower.abort();
    let _ = dashboard_server.await;

    // 4. What analyze still held in open windows (and anything a consumer did not reach) waits for the next start.
    if let Some(m) = &log.memory {
        let pending = m.uncommitted(&[topics::GROUP_ARCHIVE, topics::GROUP_ANALYZE], topics::RAW);
        if temporary {
            println!(
                "  {} readings were in open windows (not kept: no --data-dir)",
                pending.len()
            );
        } else if !pending.is_empty() {
            save_pending(&pending_path, &pending)?;
            println!(
                "  saved {} readings still in open windows; the next start replays them",
                pending.len()
            );
        }
    } else {
        publisher.flush(Duration::from_secs(10)).await.ok();
    }
    println!("stopped; {} readings accepted in this run", ingest.accepted_total());
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
