//! `tributary dev`: the all-in-one local mode.
//!
//! Today it runs the ingest function on the in-process event log (no Kafka,
//! nothing to install) and prints what a person needs to send a reading. The
//! other functions join it as they are built (issue: all-in-one local mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tributary_ingest::{Config, Ingest, LogReadiness, app, serve};
use tributary_shared::auth::{FleetKey, now_unix};
use tributary_shared::eventlog::EventLog;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::ops::Ops;

/// Arguments of `tributary dev`.
#[derive(clap::Args)]
pub struct Args {
    /// Address for the ingest endpoint.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Simulated devices sending to the local ingest (0: none).
    #[arg(long, default_value_t = 6)]
    devices: usize,
    /// Readings per second per simulated device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Log filter.
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    log: String,
}

/// Run until Ctrl-C.
pub async fn run(a: Args) -> anyhow::Result<()> {
    tributary_shared::telemetry::init(&a.log, tributary_shared::telemetry::LogFormat::Text);
    let log = MemoryLog::default();
    let mut cfg = Config::defaults();
    cfg.port = a.listen.port();
    let mut registry = prometheus_client::registry::Registry::default();
    let state = Arc::new(Ingest::new(&cfg, log.publisher(), &mut registry));
    let ops = Ops::new(Arc::new(registry), Arc::new(LogReadiness(log.publisher())));
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {} (pass --listen to choose another)", a.listen))?;
    let addr = listener.local_addr()?;

    let device = "demo-device-1";
    let token = FleetKey::new(&cfg.fleet_key).device_key(device).token(device, now_unix() + 86_400);
    println!("Tributary dev mode: ingest on the in-process event log");
    println!("  ingest:   http://{addr}/v1/telemetry   (health: /healthz, metrics: /metrics)");
    println!("  token for {device} (24 h): {token}");
    println!("  try:");
    println!(
        "    curl -s http://{addr}/v1/telemetry -H 'Authorization: SharedAccessSignature {token}' -H 'Content-Type: application/json' -d '{{\"timestamp\": {}, \"metrics\": {{\"temperature\": 21.5}}}}'",
        chrono::Utc::now().timestamp_millis()
    );
    println!("  Ctrl-C to stop.");

    let status_log = log.clone();
    let status = tokio::spawn(async move {
        let mut last = 0usize;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = status_log.len(tributary_shared::topics::RAW);
            if n != last {
                println!("  readings in telemetry.raw: {n} (+{:.1}/s)", (n - last) as f64 / 5.0);
                last = n;
            }
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sim = if a.devices > 0 {
        println!("  simulating {} devices at {}/s each (tributary simulate); Ctrl-C stops everything", a.devices, a.rate);
        let args = crate::simulate::Args {
            url: format!("http://{addr}/v1/telemetry"),
            fleet_key: cfg.fleet_key.clone(),
            devices: a.devices,
            rate: a.rate,
            batch: 1,
            duration: 0,
            anomaly_rate: 0.002,
            late_fraction: 0.01,
            duplicate_fraction: 0.01,
            prefix: "sim".into(),
            seed: 7,
            record: None,
            progress_secs: 0,
        };
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(crate::simulate::run(args, async move {
            let _ = rx.wait_for(|s| *s).await;
        })))
    } else {
        None
    };
    let draining = ops.clone();
    let (server_stop, server_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(state, &ops), async move {
        let _ = server_rx.await;
        draining.start_draining();
    }));
    tributary_shared::shutdown::signal().await;
    // Stop the devices first, so every reading they sent is answered before the server goes.
    let _ = stop_tx.send(true);
    if let Some(sim) = sim {
        if let Ok(Ok(t)) = sim.await {
            println!("devices: {} readings sent, {} accepted, {} rejected, {} retries", t.sent, t.accepted, t.rejected, t.retries);
        }
    }
    let _ = server_stop.send(());
    server.await??;
    status.abort();
    println!("stopped; {} readings were accepted", log.len(tributary_shared::topics::RAW));
    Ok(())
}
