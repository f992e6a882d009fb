//! `tributary simulate`: simulated devices sending realistic readings to any
//! ingest URL, with injected anomalies, and a record of what was acknowledged.
//!
//! Device kinds: `vehicle` (speed, rpm, engine_temp, location), `sensor`
//! (temperature, humidity, pressure), `machine` (vibration, current,
//! spindle_temp). Injected: spikes, level shifts, dropouts (a device goes
//! silent), late sends (event time in the past) and duplicate sends (the same
//! reading, same id, again). Each device authenticates with its own token.
//! Sends that get 429/503 are retried with the same ids, so a retry is never a
//! second reading. Every acknowledged reading is appended to `--record` (JSON
//! lines) so a check afterwards can reconcile it with the stores.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tributary_shared::auth::{FleetKey, now_unix};

/// Arguments of `tributary simulate`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Ingest endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/telemetry")]
    pub url: String,
    /// Fleet key the device keys derive from (as configured on ingest).
    #[arg(long, env = "TRIBUTARY_FLEET_KEY", hide_env_values = true, hide_default_value = true, default_value = tributary_ingest::config::DEV_FLEET_KEY)]
    pub fleet_key: String,
    /// Number of devices (kinds are mixed evenly).
    #[arg(long, default_value_t = 12)]
    pub devices: usize,
    /// Readings per second per device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Readings per request (a device buffers this many before sending).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds to run; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Probability per reading of starting an anomaly (spike, level shift or dropout).
    #[arg(long, default_value_t = 0.002)]
    pub anomaly_rate: f64,
    /// Fraction of readings sent late (event time 30-120 s in the past).
    #[arg(long, default_value_t = 0.01)]
    pub late_fraction: f64,
    /// Fraction of requests sent twice (same readings, same ids).
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_fraction: f64,
    /// Device id prefix.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Random seed (same seed, same fleet).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Append every acknowledged reading (id, deviceId, timestamp in epoch ms,
    /// metric names) here as JSON lines, for `tributary verify`.
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
    /// Print a progress line every this many seconds (0: never).
    #[arg(long, default_value_t = 5)]
    pub progress_secs: u64,
}

/// Totals of a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Totals {
    /// Readings generated (duplicates not counted).
    pub sent: u64,
    /// Readings the ingest acknowledged (2xx, accepted).
    pub accepted: u64,
    /// Readings refused as invalid.
    pub rejected: u64,
    /// Retries after 429/503/connection errors.
    pub retries: u64,
    /// Requests sent a second time on purpose.
    pub duplicates: u64,
    /// Anomalies injected.
    pub anomalies: u64,
    /// Median latency of an acknowledged request (the attempt that got the 2xx), ms.
    pub post_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub post_p99_ms: f64,
    /// The slowest of them, ms.
    pub post_max_ms: f64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    duplicates: AtomicU64,
    anomalies: AtomicU64,
    /// Microseconds per acknowledged request.
    latency_us: std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Counters {
    fn record_latency(&self, d: Duration) {
        if let Ok(mut h) = self.latency_us.lock() {
            let h = h.get_or_insert_with(|| {
                hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
            });
            let _ = h.record((d.as_micros() as u64).clamp(1, 600_000_000));
        }
    }

    fn latency_ms(&self, q: f64) -> f64 {
        self.latency_us
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0))
            .unwrap_or(f64::NAN)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Vehicle,
    Sensor,
    Machine,
}

/// One simulated device's signal state.
struct Device {
    id: String,
    kind: Kind,
    rng: StdRng,
    t: f64,
    level: f64,
    drift: f64,
    lat: f64,
    lon: f64,
    shift: f64,
    shift_left: u32,
    silent_left: u32,
    seq: u64,
}

impl Device {
    fn new(id: String, kind: Kind, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let lat = 47.0 + rng.random::<f64>();
        let lon = 8.0 + rng.random::<f64>();
        Self {
            id,
            kind,
            rng,
            t: 0.0,
            level: 0.5,
            drift: 0.0,
            lat,
            lon,
            shift: 0.0,
            shift_left: 0,
            silent_left: 0,
            seq: 0,
        }
    }

    /// The next reading, or `None` while the device is in a dropout.
    fn next(&mut self, anomaly_rate: f64, counters: &Counters) -> Option<Value> {
        self.t += 1.0;
        self.seq += 1;
        if self.silent_left > 0 {
            self.silent_left -= 1;
            return None;
        }
        let mut spike = 0.0;
        if self.rng.random::<f64>() < anomaly_rate {
            counters.anomalies.fetch_add(1, Ordering::Relaxed);
            match self.rng.random_range(0..3) {
                0 => spike = if self.rng.random() { 1.0 } else { -1.0 },
                1 => {
                    self.shift = if self.rng.random() { 1.0 } else { -1.0 };
                    self.shift_left = self.rng.random_range(60..240);
                }
                _ => {
                    self.silent_left = self.rng.random_range(30..120);
                    return None;
                }
            }
        }
        let shift = if self.shift_left > 0 {
            self.shift_left -= 1;
            self.shift
        } else {
            0.0
        };
        let n = |rng: &mut StdRng, s: f64| (rng.random::<f64>() - 0.5) * 2.0 * s;
        let metrics = match self.kind {
            Kind::Vehicle => {
                // Speed wanders smoothly between 0 and 130 km/h; rpm follows it.
                self.level = (self.level + n(&mut self.rng, 0.03)).clamp(0.0, 1.0);
                let speed = self.level * 130.0;
                let heading = self.t / 300.0;
                self.lat += heading.cos() * speed * 1e-6;
                self.lon += heading.sin() * speed * 1e-6;
                json!({
                    "speed": round(speed + spike * 60.0),
                    "rpm": round(800.0 + speed * 28.0 + n(&mut self.rng, 50.0)),
                    "engine_temp": round(88.0 + 4.0 * (self.t / 600.0).sin() + n(&mut self.rng, 0.5) + shift * 15.0 + spike * 25.0),
                })
            }
            Kind::Sensor => {
                self.drift = (self.drift + n(&mut self.rng, 0.02)).clamp(-3.0, 3.0);
                let day = (self.t / 3600.0 * std::f64::consts::TAU / 24.0).sin();
                json!({
                    "temperature": round(21.0 + 3.0 * day + self.drift + n(&mut self.rng, 0.2) + shift * 8.0 + spike * 15.0),
                    "humidity": round((45.0 - 8.0 * day + n(&mut self.rng, 1.0)).clamp(0.0, 100.0)),
                    "pressure": round(1013.0 + self.drift * 3.0 + n(&mut self.rng, 0.3)),
                })
            }
            Kind::Machine => json!({
                "vibration": round((0.5 + n(&mut self.rng, 0.05) + shift * 0.6 + spike * 2.0).max(0.0)),
                "current": round(12.0 + 2.0 * (self.t / 120.0).sin() + n(&mut self.rng, 0.3)),
                "spindle_temp": round(60.0 + n(&mut self.rng, 0.8) + shift * 12.0 + spike * 20.0),
            }),
        };
        let mut v = json!({"id": format!("{}-{}", self.id, self.seq), "metrics": metrics, "tags": {"kind": format!("{:?}", self.kind).to_lowercase()}});
        if matches!(self.kind, Kind::Vehicle) {
            v["location"] = json!({"lat": round6(self.lat), "lon": round6(self.lon)});
        }
        Some(v)
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Run the simulator until the duration ends or `stop` resolves.
pub async fn run(a: Args, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<Totals> {
    anyhow::ensure!(
        a.rate > 0.0 && a.batch >= 1 && a.devices >= 1,
        "--rate, --batch and --devices must be positive"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(a.devices.min(64))
        .build()?;
    let counters = Arc::new(Counters::default());
    let record = match &a.record {
        Some(p) => Some(Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        )))),
        None => None,
    };
    let fleet = FleetKey::new(&a.fleet_key);
    let deadline = (a.duration > 0).then(|| Instant::now() + Duration::from_secs(a.duration));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..a.devices {
        let kind = [Kind::Vehicle, Kind::Sensor, Kind::Machine][i % 3];
        let id = format!("{}-{}-{:03}", a.prefix, format!("{kind:?}").to_lowercase(), i);
        let mut dev = Device::new(id.clone(), kind, a.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let key = fleet.device_key(&id);
        let (client, counters, record, a, mut stop_rx) = (
            client.clone(),
            counters.clone(),
            record.clone(),
            a.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / a.rate);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut buf: Vec<Value> = Vec::with_capacity(a.batch);
            // Spread the fleet's sends over the first period.
            tokio::time::sleep(period.mul_f64(i as f64 / a.devices as f64)).await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                match dev.next(a.anomaly_rate, &counters) {
                    Some(mut reading) => {
                        let mut ts = chrono::Utc::now().timestamp_millis();
                        if dev.rng.random::<f64>() < a.late_fraction {
                            ts -= dev.rng.random_range(30_000..120_000);
                        }
                        reading["timestamp"] = json!(ts);
                        buf.push(reading);
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        if buf.len() < a.batch {
                            continue;
                        }
                    }
                    // A device going silent sends what it holds first. Held through the
                    // silence, those readings would reach ingest 30-120 s after their
                    // time, late for their windows: late data only when --late-fraction
                    // asks for it.
                    None if !buf.is_empty() => {}
                    None => continue,
                }
                let body = serde_json::to_vec(&buf).unwrap_or_default();
                let token = format!("SharedAccessSignature {}", key.token(&dev.id, now_unix() + 3600));
                let dup = dev.rng.random::<f64>() < a.duplicate_fraction;
                send(
                    &client,
                    &a.url,
                    &token,
                    &body,
                    Some(&counters),
                    record.as_deref(),
                    &dev.id,
                )
                .await;
                if dup {
                    // A device retrying after a lost answer: same readings, same ids, not counted again.
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    send(&client, &a.url, &token, &body, None, None, &dev.id).await;
                }
                buf.clear();
            }
        }));
    }

    let progress = {
        let counters = counters.clone();
        let every = a.progress_secs;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await;
            loop {
                tick.tick().await;
                let acc = counters.accepted.load(Ordering::Relaxed);
                println!(
                    "simulate: {} accepted ({:.0}/s), {} rejected, {} retries, {} anomalies injected",
                    acc,
                    (acc - last) as f64 / every as f64,
                    counters.rejected.load(Ordering::Relaxed),
                    counters.retries.load(Ordering::Relaxed),
                    counters.anomalies.load(Ordering::Relaxed)
                );
                last = acc;
            }
        })
    };

    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        _ = stop => {
            let _ = stop_tx.send(true);
            all.await;
        }
    }
    progress.abort();
    if let Some(r) = &record {
        r.lock().map_err(|_| anyhow::anyhow!("record lock"))?.flush()?;
    }
    Ok(Totals {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        anomalies: counters.anomalies.load(Ordering::Relaxed),
        post_p50_ms: counters.latency_ms(0.5),
        post_p99_ms: counters.latency_ms(0.99),
        post_max_ms: counters.latency_ms(1.0),
    })
}

type Record = std::sync::Mutex<std::io::BufWriter<std::fs::File>>;

/// Send one batch, retrying 429/503/connection failures with the same ids.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &[u8],
    counters: Option<&Counters>,
    record: Option<&Record>,
    device: &str,
) {
    let mut delay = Duration::from_millis(200);
    for _ in 0..20 {
        let sent_at = Instant::now();
        let resp = client
            .post(url)
            .header("authorization", token)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 422 || r.status().as_u16() == 403 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(c) = counters {
                    c.record_latency(sent_at.elapsed());
                    c.accepted
                        .fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    c.rejected
                        .fetch_add(v["rejected"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                if let (Some(rec), Some(items)) = (record, v["items"].as_array()) {
                    // What `tributary verify` reconciles: the id, and the event time and
                    // metric names of the reading the item index points at.
                    let sent: Vec<Value> = serde_json::from_slice(body).unwrap_or_default();
                    if let Ok(mut w) = rec.lock() {
                        for it in items.iter().filter(|i| i["status"] == "accepted") {
                            let item = it["index"].as_u64().and_then(|i| sent.get(i as usize));
                            let metrics: Vec<&str> = item
                                .and_then(|r| r["metrics"].as_object())
                                .map(|m| m.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            let ts = item.map_or(Value::Null, |r| r["timestamp"].clone());
                            let _ = writeln!(
                                w,
                                "{}",
                                json!({"id": it["id"], "deviceId": device, "timestamp": ts, "metrics": metrics})
                            );
                        }
                    }
                }
                return;
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(c) = counters {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(after.map(Duration::from_secs).unwrap_or(delay)).await;
            }
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), device, "ingest refused a batch");
                return;
            }
            Err(e) => {
                if let Some(c) = counters {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "send failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tracing::warn!(device, "gave up on a batch after 20 attempts");
}
