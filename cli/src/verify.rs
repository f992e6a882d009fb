//! `tributary verify`: reconcile what devices were told was stored with what
//! the sinks hold, after a run (a soak, a fault test, a demo).
//!
//! Source of truth: the simulator's record (`tributary simulate --record`),
//! one JSON line per acknowledged reading: id, deviceId, timestamp, metric
//! names. Checks, per device:
//! - **raw archive** (Cosmos DB, or the all-in-one mode's SQLite file): every
//!   acknowledged id is there; ids are unique per device by construction (the
//!   id is the document id), so "there" means exactly once;
//! - **aggregates** (the results store, windows of one size): for each metric,
//!   the windows' counts add up to exactly the number of acknowledged
//!   readings with that metric, over the windows that have closed (those
//!   ending at or before the device's newest stored window): fewer means a
//!   reading was lost (or arrived too late for its window), more means one was
//!   counted twice.
//!
//! Prints one line per failed check (at most 20 per kind), then a JSON
//! summary; exits non-zero when anything failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tributary_shared::raw::RawStore;
use tributary_shared::results::{Resolution, ResultStore};

/// Arguments of `tributary verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The record of acknowledged readings (`tributary simulate --record FILE`).
    #[arg(long)]
    record: PathBuf,
    /// The all-in-one mode's data directory (`tributary dev --data-dir`):
    /// reads its results.db and raw.db unless the URLs below are given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Results store: PostgreSQL URL or `sqlite://PATH`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Raw archive in Cosmos DB: account endpoint.
    #[arg(long, env = "TRIBUTARY_COSMOS_ENDPOINT")]
    cosmos_endpoint: Option<String>,
    /// Cosmos DB account key.
    #[arg(long, env = "TRIBUTARY_COSMOS_KEY", hide_env_values = true)]
    cosmos_key: Option<String>,
    /// Cosmos DB database.
    #[arg(long, env = "TRIBUTARY_COSMOS_DATABASE", default_value = "tributary")]
    cosmos_database: String,
    /// Cosmos DB container.
    #[arg(long, env = "TRIBUTARY_COSMOS_CONTAINER", default_value = "raw")]
    cosmos_container: String,
    /// Longest wait for one Cosmos DB query, milliseconds (a reconciliation reads
    /// whole device histories; the local stand-in needs many seconds for large ones).
    #[arg(long, default_value_t = 60_000)]
    cosmos_timeout_ms: u64,
    /// Window size (seconds) whose aggregates are reconciled.
    #[arg(long, default_value_t = 10)]
    window: u32,
}

/// One acknowledged reading.
struct Acked {
    id: String,
    t: DateTime<Utc>,
    metrics: Vec<String>,
}

fn load(path: &PathBuf) -> anyhow::Result<BTreeMap<String, Vec<Acked>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_device: BTreeMap<String, BTreeMap<String, Acked>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("{}:{}: no '{k}'", path.display(), n + 1))
        };
        let (id, device) = (field("id")?, field("deviceId")?);
        let ms = v["timestamp"].as_i64().with_context(|| {
            format!(
                "{}:{}: no epoch-ms 'timestamp' (record made by an older simulator?)",
                path.display(),
                n + 1
            )
        })?;
        let t = DateTime::from_timestamp_millis(ms).context("timestamp out of range")?;
        let metrics = v["metrics"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        // A reading acknowledged twice (a resend) is one reading.
        by_device
            .entry(device)
            .or_default()
            .entry(id.clone())
            .or_insert(Acked { id, t, metrics });
    }
    Ok(by_device
        .into_iter()
        .map(|(d, m)| (d, m.into_values().collect()))
        .collect())
}

async fn stores(a: &Args) -> anyhow::Result<(Arc<dyn ResultStore>, Arc<dyn RawStore>)> {
    let in_dir = |f: &str| a.data_dir.as_ref().map(|d| format!("sqlite://{}", d.join(f).display()));
    let results_url = a
        .database_url
        .clone()
        .or_else(|| in_dir("results.db"))
        .context("give --database-url or --data-dir")?;
    let results = tributary_shared::results::open(&results_url, 2)
        .await
        .context("opening the results store")?;
    let raw: Arc<dyn RawStore> = match (&a.cosmos_endpoint, in_dir("raw.db")) {
        (Some(endpoint), _) => {
            let key = a
                .cosmos_key
                .clone()
                .context("--cosmos-key (TRIBUTARY_COSMOS_KEY) is required with --cosmos-endpoint")?;
            let mut settings = tributary_shared::raw::cosmos::CosmosSettings::with_key(
                endpoint.clone(),
                key,
                a.cosmos_database.clone(),
                a.cosmos_container.clone(),
            );
            settings.timeout = std::time::Duration::from_millis(a.cosmos_timeout_ms);
            Arc::new(
                tributary_shared::raw::cosmos::CosmosStore::connect(settings, false)
                    .await
                    .context("connecting to Cosmos DB")?,
            )
        }
        (None, Some(url)) => Arc::new(
            tributary_shared::raw::LocalRawStore::open(&url)
                .await
                .context("opening the local raw archive")?,
        ),
        (None, None) => bail!("give --cosmos-endpoint or --data-dir for the raw archive"),
    };
    Ok((results, raw))
}

/// Run the reconciliation.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let acked = load(&a.record)?;
    let (results, raw) = stores(&a).await?;
    let w = chrono::Duration::seconds(i64::from(a.window));
    let (mut readings, mut raw_missing, mut checked, mut lost, mut doubled, mut open) =
        (0usize, 0usize, 0i64, 0i64, 0i64, 0usize);
    let mut problems = Vec::new();
    for (device, list) in &acked {
        readings += list.len();
        let from = list.iter().map(|r| r.t).min().context("empty device")?;
        let to = list.iter().map(|r| r.t).max().context("empty device")? + chrono::Duration::milliseconds(1);

        // Raw: every acknowledged id is archived.
        let mut found = BTreeSet::new();
        let mut continuation = None;
        loop {
            let page = raw
                .query_device_range(device, from, to, 1000, continuation.take())
                .await
                .context("querying the raw archive")?;
            found.extend(page.items.into_iter().map(|r| r.id));
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => break,
            }
        }
        for r in list.iter().filter(|r| !found.contains(&r.id)) {
            raw_missing += 1;
            if raw_missing <= 20 {
                problems.push(format!("raw archive: {device} reading {} ({}) is missing", r.id, r.t));
            }
        }

        // Aggregates: per metric, counts of closed windows against acknowledged readings.
        let start = from - chrono::Duration::milliseconds(from.timestamp_millis().rem_euclid(w.num_milliseconds()));
        let metrics: BTreeSet<&String> = list.iter().flat_map(|r| &r.metrics).collect();
        let mut windows = BTreeMap::new();
        for m in &metrics {
            let s = results
                .series(device, m, Resolution::Windows(a.window), start, to + w, 1)
                .await
                .context("querying the results store")?;
            windows.insert(*m, s.points);
        }
        // Windows close in order per device: everything ending at or before the newest stored one is closed.
        let Some(cutoff) = windows.values().flatten().map(|p| p.window_start + w).max() else {
            open += list.len();
            continue;
        };
        for m in metrics {
            let expected = list.iter().filter(|r| r.t < cutoff && r.metrics.contains(m)).count() as i64;
            let counted: i64 = windows[m]
                .iter()
                .filter(|p| p.window_start + w <= cutoff)
                .map(|p| p.count)
                .sum();
            checked += expected;
            open += list.iter().filter(|r| r.t >= cutoff && r.metrics.contains(m)).count();
            if counted < expected {
                lost += expected - counted;
                problems.push(format!(
                    "aggregates: {device} {m}: {counted} counted of {expected} acknowledged (lost or late)"
                ));
            } else if counted > expected {
                doubled += counted - expected;
                problems.push(format!(
                    "aggregates: {device} {m}: {counted} counted of {expected} acknowledged (counted twice)"
                ));
            }
        }
    }
    for p in problems.iter().take(40) {
        println!("FAIL {p}");
    }
    let ok = raw_missing == 0 && lost == 0 && doubled == 0;
    println!(
        "{}",
        json!({
            "ok": ok, "devices": acked.len(), "acknowledged": readings,
            "raw": {"missing": raw_missing},
            "aggregates": {"windowSeconds": a.window, "valuesChecked": checked, "lost": lost, "countedTwice": doubled, "valuesInOpenWindows": open},
        })
    );
    if !ok {
        bail!(
            "reconciliation failed: {raw_missing} acknowledged readings missing from the raw archive, {lost} values missing from and {doubled} counted twice in the aggregates"
        );
    }
    Ok(())
}
