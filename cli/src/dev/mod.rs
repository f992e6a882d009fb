//! `tributary dev`: the whole pipeline in one process, the README's first
//! command.
//!
//! Every function runs through its own `run`, the same entry point its
//! binary calls, on embedded backends behind the same traits as production:
//! the in-process event log for Kafka, SQLite for PostgreSQL, an in-process
//! cache for Redis and an SQLite file for Cosmos DB; each switches to the
//! real server by its flag or environment variable (`--kafka-brokers`,
//! `--database-url`, `--redis-url`, `--cosmos-endpoint`). Each function's
//! settings are its `Config::default()` with the few overrides this mode
//! needs. Simulated devices send to the local ingest, and the dashboard
//! serves the results (and every function's metrics) on localhost.
//!
//! Guarantees of a clean stop (Ctrl-C or SIGTERM): the devices stop first and
//! get their answers; ingest drains; every consumer catches up with what was
//! acknowledged (bounded by `--drain-timeout-secs`); with a data directory,
//! readings that analyze still holds in open windows are saved and replayed
//! on the next start, so a restart loses nothing acknowledged and keeps the
//! history. (A crash of the process loses what only the in-process log held;
//! run with `--kafka-brokers` for crash durability.)
//!
//! # Layout
//!
//! - this file: the arguments and the order of start and stop;
//! - `backends.rs`: opening the embedded or real backends;
//! - `pending.rs`: the readings of open windows and the log's offsets, kept
//!   across a clean restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::service::{Endpoint, Host, Shutdown};
use tributary_shared::telemetry::{LogFormat, MetricsRegistry};
use tributary_shared::topics;

mod backends;
mod pending;
mod receiver;

use backends::Backends;

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

    /// Where the lake's Delta tables go (a directory or an `abfss://` URL).
    /// Unset: `lake` in the data directory.
    #[arg(long, env = "TRIBUTARY_LAKE_URL")]
    pub lake_url: Option<String>,

    /// Seconds until buffered readings and aggregates are committed to the
    /// lake's tables (queryable).
    #[arg(long, default_value_t = 30)]
    pub lake_roll_secs: u64,

    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    pub log: String,
}

/// Readings analyze still needed at the last clean shutdown, replayed at start.
const PENDING_FILE: &str = "pending-raw.ndjson";
/// Where the in-process log's topics ended at the last clean stop.
const LOG_STATE_FILE: &str = "log-state.json";

fn free_data_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tributary-dev-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<(Endpoint, SocketAddr)> {
    let endpoint = Endpoint::bind(addr)
        .await
        .with_context(|| format!("pass {flag} to choose another address"))?;
    let bound = endpoint.local_addr().context("the bound address")?;
    Ok((endpoint, bound))
}

/// A running function: its task, named for the stop report.
struct Running {
    name: &'static str,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<E>(name: &'static str, run: impl Future<Output = Result<(), E>> + Send + 'static) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            name,
            task: tokio::spawn(async move { run.await.with_context(|| format!("{name} stopped")) }),
        }
    }

    /// Wait for it to end and report a failure on stdout.
    async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => println!("  {}: {e:#}", self.name),
            Err(e) => println!("  {}: task failed: {e}", self.name),
        }
    }
}

/// Run until Ctrl-C or SIGTERM.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let _telemetry = tributary_shared::telemetry::init(&a.log, LogFormat::Text, "tributary-dev")?;
    let started = Instant::now();
    let (data_dir, temporary) = match &a.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating the data directory {}", d.display()))?;
            (d.clone(), false)
        }
        None => (free_data_dir()?, true),
    };
    let b = Backends::open(&a, &data_dir).await?;

    // The in-process log continues where the last clean stop left it, and the
    // readings saved then go back in first (at their own offsets), so analyze
    // rebuilds its open windows and the lake recognises what it holds.
    let pending_path = data_dir.join(PENDING_FILE);
    let log_state_path = data_dir.join(LOG_STATE_FILE);
    // Kafka's offsets outlive the process: one incarnation for ever.
    let mut incarnation = "0".to_owned();
    if let Some(memory) = &b.memory {
        let state = pending::take_log_state(&log_state_path)?.unwrap_or_else(|| pending::LogState {
            incarnation: format!("dev-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")),
            ends: Default::default(),
        });
        incarnation = state.incarnation.clone();
        let saved = pending::load(&pending_path)?;
        let replay = pending::resume(memory, &state.ends, topics::RAW, saved);
        if !replay.is_empty() {
            let n = replay.len();
            for r in b.log.publisher().publish(topics::RAW, replay).await {
                r.context("replaying saved readings")?;
            }
            println!("  replayed {n} readings saved at the last stop");
        }
        let _ = std::fs::remove_file(&pending_path);
    }

    // --- the functions, each through its own `run` ------------------------------
    // Ingest stops first (devices get their answers); the consumers and the
    // dashboard once the consumers caught up.
    let (front, back) = (Shutdown::new(), Shutdown::new());
    let metrics = MetricsRegistry::new();
    let (ingest_endpoint, ingest_addr) = bind(a.listen, "--listen").await?;
    let (dashboard_endpoint, dashboard_addr) = bind(a.dashboard, "--dashboard").await?;
    let operator_token = a.operator_token.clone().unwrap_or_else(random_token);

    let ingest = {
        let config = tributary_ingest::Config {
            fleet_key: a.fleet_key.clone(),
            kafka: b.kafka.clone(),
            ..Default::default()
        };
        let deps = tributary_ingest::Deps {
            log: b.log.clone(),
            host: Host {
                endpoint: ingest_endpoint,
                metrics: metrics.clone(),
            },
        };
        Running::spawn("ingest", tributary_ingest::run(config, deps, front.clone()))
    };
    let archive = {
        let config = tributary_archive::Config {
            kafka: b.kafka.clone(),
            ..Default::default()
        };
        let deps = tributary_archive::Deps {
            log: b.log.clone(),
            raw: b.raw.clone(),
            host: Host::embedded(metrics.clone()),
        };
        Running::spawn("archive", tributary_archive::run(config, deps, back.clone()))
    };
    let analyze = {
        let config = tributary_analyze::Config {
            windows: a.windows.clone(),
            allowed_lateness_secs: a.allowed_lateness_secs,
            rules: a.rules.clone(),
            kafka: b.kafka.clone(),
            // One process owns every partition for its whole life: there is
            // no takeover to keep state for.
            snapshot_every_secs: 0,
            ..Default::default()
        };
        config.analyzer()?; // a bad rule is the user's mistake: say so before starting anything
        let deps = tributary_analyze::Deps {
            log: b.log.clone(),
            host: Host::embedded(metrics.clone()),
        };
        Running::spawn("analyze", tributary_analyze::run(config, deps, back.clone()))
    };
    let lake_stop = Shutdown::new();
    let lake = {
        let default_dir = data_dir.join("lake");
        let config = tributary_lake::Config {
            lake_url: a.lake_url.clone().unwrap_or_else(|| default_dir.display().to_string()),
            roll_secs: a.lake_roll_secs,
            epoch: incarnation.clone(),
            kafka: b.kafka.clone(),
            ..Default::default()
        };
        let (store, root) = tributary_lake::store::open(&config.lake_url)?;
        let deps = tributary_lake::Deps {
            log: b.log.clone(),
            store,
            root,
            host: Host::embedded(metrics.clone()),
        };
        Running::spawn("lake", tributary_lake::run(config, deps, lake_stop.clone()))
    };
    let lake_url = a
        .lake_url
        .clone()
        .unwrap_or_else(|| data_dir.join("lake").display().to_string());
    let process = {
        let config = tributary_process::Config {
            kafka: b.kafka.clone(),
            ..Default::default()
        };
        let deps = tributary_process::Deps {
            log: b.log.clone(),
            store: b.store.clone(),
            registry: b.registry.clone(),
            rules: b.rules.clone(),
            channels: b.channels.clone(),
            cache: b.cache.clone(),
            host: Host::embedded(metrics.clone()),
        };
        Running::spawn("process", tributary_process::run(config, deps, back.clone()))
    };
    let dashboard = {
        let config = tributary_dashboard::Config {
            operator_token: Some(operator_token.clone()),
            ..Default::default()
        };
        let deps = tributary_dashboard::Deps {
            store: b.store.clone(),
            cache: Some(b.cache.clone()),
            raw: Some(b.raw.clone()),
            registry: Some(b.registry.clone()),
            rules: Some(b.rules.clone()),
            channels: Some(b.channels.clone()),
            host: Host {
                endpoint: dashboard_endpoint,
                metrics: metrics.clone(),
            },
        };
        Running::spawn("dashboard", tributary_dashboard::run(config, deps, back.clone()))
    };

    // A notification channel that works with no setup: every alert reaches a
    // receiver here, which checks its signature and prints it.
    let console_secret = random_token();
    let receiver_url = receiver::start(console_secret.clone(), back.clone()).await?;
    let console = tributary_shared::notify::ChannelSpec {
        url: receiver_url.clone(),
        format: tributary_shared::notify::Format::Generic,
        secret: Some(console_secret),
        groups: Vec::new(),
        min_severity: tributary_shared::rules::Severity::Info,
        enabled: true,
    };
    b.channels
        .put("dev-console", &console, chrono::Utc::now())
        .await
        .context("creating the dev-console notification channel")?;

    // --- what a person needs ------------------------------------------------------
    let device = "demo-device-1";
    let token = FleetKey::new(&a.fleet_key)
        .device_key(device)
        .token(device, now_unix() + 86_400);
    println!("Tributary dev mode: ready in {} ms", started.elapsed().as_millis());
    println!("  dashboard: http://{dashboard_addr}/   (operator token for acknowledging alerts: {operator_token})");
    println!(
        "  registry:  http://{dashboard_addr}/#/registry   (devices: list, disable, enable, rotate a key; with the operator token)"
    );
    println!(
        "  rules:     http://{dashboard_addr}/#/rules   (alert rules per device group or device, applied within seconds; edit with the operator token)"
    );
    println!(
        "  notify:    channel dev-console -> {receiver_url}   (every alert, signed; printed here as 'notified: …')"
    );
    println!("  ingest:    http://{ingest_addr}/v1/telemetry   (health: /healthz, metrics: /metrics)");
    println!(
        "  lake:      {lake_url}/raw and /aggregates   (Delta tables, committed every {} s; README: reading it with DuckDB or Spark)",
        a.lake_roll_secs
    );
    println!("  backends:  {}", b.describe());
    println!(
        "  data:      {}{}",
        data_dir.display(),
        if temporary {
            " (temporary; pass --data-dir to keep history)"
        } else {
            ""
        }
    );
    if a.database_url.is_none() {
        // The relay in process publishes what the command writes to this file.
        println!(
            "  devices:   DATABASE_URL=sqlite://{} tributary device --no-publish list   (add, import, disable, rotate-key: in force here within a second)",
            data_dir.join("results.db").display()
        );
    }
    println!("  token for {device} (24 h): {token}");
    println!("  send a reading by hand:");
    println!(
        "    curl -s http://{ingest_addr}/v1/telemetry -H 'Authorization: SharedAccessSignature {token}' -H 'Content-Type: application/json' -d '{{\"timestamp\": {}, \"metrics\": {{\"temperature\": 21.5}}}}'",
        chrono::Utc::now().timestamp_millis()
    );

    let devices = Shutdown::new();
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
        tokio::spawn(crate::simulate::run(args, devices.wait()))
    });
    let status = (a.status_secs > 0)
        .then(|| tokio::spawn(status_lines(a.status_secs, b.store.clone(), metrics.clone(), started)));

    tributary_shared::service::shutdown::signal().await;
    println!("stopping: devices, then ingest, then the consumers once they caught up");

    // 1. Devices stop and get their answers; 2. ingest drains its in-flight requests.
    devices.trigger();
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
    front.trigger();
    ingest.join().await;
    if let Some(s) = status {
        s.abort();
    }

    // 3. Consumers catch up with everything acknowledged, then stop (each commits its last batch).
    if let Some(m) = &b.memory {
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
    back.trigger();
    for function in [archive, analyze, process, dashboard] {
        function.join().await;
    }
    // The lake stops last, once it was handed everything the others wrote:
    // its clean stop commits what it buffered.
    if let Some(m) = &b.memory {
        let deadline = Instant::now() + Duration::from_secs(a.drain_timeout_secs);
        while m.undelivered(topics::GROUP_LAKE, topics::RAW) + m.undelivered(topics::GROUP_LAKE, topics::AGGREGATES) > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    lake_stop.trigger();
    lake.join().await;

    // 4. What analyze still held in open windows (and anything a consumer did not reach) waits for the next start.
    if let Some(m) = &b.memory {
        let held = m.uncommitted(
            &[topics::GROUP_ARCHIVE, topics::GROUP_ANALYZE, topics::GROUP_LAKE],
            topics::RAW,
        );
        if temporary {
            println!(
                "  {} readings were in open windows (not kept: no --data-dir)",
                held.len()
            );
        } else {
            let ends = [topics::RAW, topics::AGGREGATES]
                .into_iter()
                .map(|t| (t.to_owned(), m.end_offsets(t)))
                .filter(|(_, e)| !e.is_empty())
                .collect();
            pending::save_log_state(&log_state_path, &pending::LogState { incarnation, ends })?;
        }
        if !temporary && !held.is_empty() {
            pending::save(&pending_path, &held)?;
            println!(
                "  saved {} readings still in open windows; the next start replays them",
                held.len()
            );
        }
    }
    println!("stopped; {} readings accepted in this run", accepted(&metrics));
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Readings ingest accepted so far, as its `/metrics` counts them.
fn accepted(metrics: &MetricsRegistry) -> u64 {
    metrics.sample("tributary_ingest_readings_total", Some(("outcome", "accepted"))) as u64
}

/// A status line every `every_secs` seconds, until aborted.
async fn status_lines(
    every_secs: u64,
    store: std::sync::Arc<dyn tributary_shared::results::ResultStore>,
    metrics: MetricsRegistry,
    started: Instant,
) {
    let every = Duration::from_secs(every_secs);
    let mut last = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let accepted = accepted(&metrics);
        let rate = accepted.saturating_sub(last) as f64 / every.as_secs_f64();
        last = accepted;
        let archived = metrics.sample("tributary_archive_readings_total", None) as u64;
        let summary = store
            .fleet_summary(chrono::Utc::now() - chrono::Duration::minutes(5))
            .await;
        let (devices, alerts) = summary
            .map(|s| (s.devices_online.to_string(), s.alerts_open.to_string()))
            .unwrap_or(("?".into(), "?".into()));
        println!(
            "  [{:>5}s] accepted {accepted} ({rate:.1}/s) · archived {archived} · devices online {devices} · open alerts {alerts}",
            started.elapsed().as_secs()
        );
    }
}
