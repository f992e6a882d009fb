//! The fault matrix (issue 9): the whole pipeline as real processes, every
//! part broken in turn while simulated devices send, then reconciled.
//!
//! Started here, on loopback ports of their own:
//! - a tansu broker with durable `sqlite://` storage;
//! - a PostgreSQL cluster of our own (`initdb` into a temporary directory, run
//!   as the `postgres` user when the test runs as root), so crashing it does
//!   not touch the machine's service;
//! - a Redis server of our own (no persistence, as the cache is deployed);
//! - a Cosmos DB stand-in of our own (`scripts/cosmos/start.js`), reached
//!   through a TCP proxy in this test, which it advertises as its endpoint
//!   (the SDK sends requests where the account document says). The stand-in keeps its documents in
//!   memory, so restarting it would lose them where Cosmos DB would not: its
//!   outage is simulated by the proxy instead, which cuts every connection
//!   and closes new ones at once while "down";
//! - `tributary-ingest`, `tributary-archive`, `tributary-analyze`,
//!   `tributary-process` and `tributary-lake` (into a local Delta table;
//!   built beside the `tributary` binary by `cargo test --workspace`).
//!
//! While `tributary simulate` sends (with a tenth of its requests sent twice,
//! as a device resends after a lost answer), the schedule below kills each
//! function with SIGKILL mid-stream and restarts it, kills the broker with SIGKILL and
//! restarts it on the same storage, crashes PostgreSQL (immediate shutdown,
//! then crash recovery), kills Redis (its cache is lost) and cuts Cosmos DB.
//! Then, once the last windows have closed, `tributary verify` must find every
//! reading that got a 2xx in Cosmos DB and counted exactly once in the
//! PostgreSQL aggregates, with no window left unchecked, Redis must hold
//! each device's latest state as PostgreSQL has it, and after a SIGTERM the
//! lake's raw table (read with delta-rs) must hold every record of
//! `telemetry.raw` exactly once, every acknowledged reading among them.
//!
//! Allowed lateness (20 s) is larger than any stall the faults cause (a few
//! seconds), so nothing may arrive late: a value missing from a window is a
//! loss, and fails the test. (A CI run once lost 192 values here: a restarted
//! analyze, without the watermark tansu had dropped from the commit metadata,
//! re-emitted a closed window holding only a few retried readings; see
//! `functions/analyze/tests/checkpoint.rs`.)

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tributary_testkit::free_port;
use tributary_testkit::process::{Proc, log_file, on_path, sibling, tail, wait_healthy, wait_port};

const TRIBUTARY: &str = env!("CARGO_BIN_EXE_tributary");
const FLEET_KEY: &str = "fault-matrix-fleet-key-0123456789abcdef";
const WINDOW_SECS: u32 = 5;
const LATENESS_SECS: u32 = 20;
const SIMULATE_SECS: u64 = 52;

/// Run `cmd` as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL cluster of this test's own.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    fn init(dir: &Path) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).max())
            .expect("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql: the fault test runs a cluster of its own");
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).expect("pg dir");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status();
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-instructions", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            bin,
            data,
            port: free_port(),
        };
        pg.start();
        pg
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &opts, "-l"])
            .arg(self.data.join("server.log"))
            .arg("-D")
            .arg(&self.data)
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop as a crash does: no checkpoint, crash recovery on the next start.
    fn crash(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn query(&self, sql: &str) -> String {
        let out = Command::new(on_path("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-F",
                "\t",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// A TCP proxy in front of a server that cannot be restarted without losing
/// its data: "down" cuts every open connection and closes new ones at once.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        let port = free_port();
        let (up, stop) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refused: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let (up2, stop2, refused2) = (up.clone(), stop.clone(), refused.clone());
        std::thread::spawn(move || {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let mut was_up = true;
            while !stop2.load(Ordering::Relaxed) {
                let is_up = up2.load(Ordering::Relaxed);
                if was_up && !is_up {
                    for c in conns.lock().expect("conns").drain(..) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                }
                was_up = is_up;
                match listener.accept() {
                    Ok((client, _)) if !is_up => {
                        // Down: the connection is closed at once, as by a load balancer with no backend.
                        refused2.fetch_add(1, Ordering::Relaxed);
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    Ok((client, _)) => {
                        client.set_nonblocking(false).expect("blocking");
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut all = conns.lock().expect("conns");
                        all.retain(|c| c.peer_addr().is_ok());
                        all.push(client.try_clone().expect("clone"));
                        all.push(server.try_clone().expect("clone"));
                        for (mut from, mut to) in [
                            (client.try_clone().expect("clone"), server.try_clone().expect("clone")),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        wait_port(port, 10, "the Cosmos DB proxy");
        Self {
            port,
            up,
            stop,
            refused,
        }
    }

    /// Connections closed at once while down.
    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn every_acknowledged_reading_survives_kills_and_outages_exactly_once() {
    let cosmos_key = std::env::var("TRIBUTARY_TEST_COSMOS_KEY")
        .expect("TRIBUTARY_TEST_COSMOS_KEY is not set: run the tests with scripts/test");
    let tansu = std::env::var("TANSU_BIN")
        .expect("TANSU_BIN is not set: run the tests with scripts/test, which installs the tansu broker");
    let dir = std::env::temp_dir().join(format!("tributary-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    println!("fault matrix: logs in {}", dir.display());

    // --- services ---
    let kafka_port = free_port();
    let kafka = format!("127.0.0.1:{kafka_port}");
    let mut broker = Proc::new(
        "tansu",
        PathBuf::from(tansu),
        &[
            "broker",
            "--listener-url",
            &format!("tcp://{kafka}"),
            "--advertised-listener-url",
            &format!("tcp://{kafka}"),
            "--storage-engine",
            "sqlite://tansu.db",
        ],
        &[],
        &dir,
    );
    broker.start();
    wait_port(kafka_port, 30, "tansu");
    let pg = Postgres::init(&dir);
    let redis_port = free_port();
    let mut redis = Proc::new(
        "redis",
        on_path("redis-server"),
        &[
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
        &dir,
    );
    redis.start();
    wait_port(redis_port, 30, "redis-server");
    // A stand-in of our own that advertises the proxy as its endpoint (the SDK
    // sends its requests where the account document says).
    let start_js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cosmos/start.js");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/cosmos/node_modules/@vercel/cosmosdb-server")
            .exists(),
        "the Cosmos DB stand-in is not installed: run the tests with scripts/test (npm ci in scripts/cosmos)"
    );
    let cosmos_port = free_port();
    let proxy = Proxy::start(format!("127.0.0.1:{cosmos_port}").parse().expect("addr"));
    let cosmos_via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let mut cosmos = Proc::new(
        "cosmos",
        on_path("node"),
        &[
            start_js.to_str().expect("path"),
            "--port",
            &cosmos_port.to_string(),
            "--advertise",
            &format!("{cosmos_via_proxy}/"),
        ],
        &[],
        &dir,
    );
    cosmos.start();
    wait_port(cosmos_port, 30, "the Cosmos DB stand-in");
    let cosmos_db = format!("faults{}", std::process::id());

    // --- the functions ---
    let common = |port: u16| -> Vec<(&'static str, String)> {
        vec![
            ("PORT", port.to_string()),
            ("TRIBUTARY_BIND", "127.0.0.1".into()),
            ("TRIBUTARY_KAFKA_BROKERS", kafka.clone()),
            // tansu 0.6's sqlite storage fails an idempotent producer that outlived a
            // broker restart (see the ingest outage test): at-least-once producers here,
            // which the pipeline's idempotent writes must make exactly-once anyway.
            ("TRIBUTARY_KAFKA_OPTIONS", "enable.idempotence=false".into()),
            ("TRIBUTARY_KAFKA_PARTITIONS", "4".into()),
            ("RUST_LOG", "info".into()),
        ]
    };
    let with = |mut v: Vec<(&'static str, String)>, more: &[(&'static str, String)]| {
        v.extend_from_slice(more);
        v
    };
    let ingest_port = free_port();
    let mut ingest = Proc::new(
        "ingest",
        sibling(TRIBUTARY, "tributary-ingest"),
        &[],
        &with(
            common(ingest_port),
            &[
                ("TRIBUTARY_FLEET_KEY", FLEET_KEY.into()),
                ("TRIBUTARY_DEVICE_RATE", "10000".into()),
            ],
        ),
        &dir,
    );
    let archive_port = free_port();
    let mut archive = Proc::new(
        "archive",
        sibling(TRIBUTARY, "tributary-archive"),
        &[],
        &with(
            common(archive_port),
            &[
                ("TRIBUTARY_COSMOS_ENDPOINT", cosmos_via_proxy.clone()),
                ("TRIBUTARY_COSMOS_KEY", cosmos_key.clone()),
                ("TRIBUTARY_COSMOS_DATABASE", cosmos_db.clone()),
                ("TRIBUTARY_COSMOS_TIMEOUT_MS", "2000".into()),
            ],
        ),
        &dir,
    );
    let analyze_port = free_port();
    let mut analyze = Proc::new(
        "analyze",
        sibling(TRIBUTARY, "tributary-analyze"),
        &[],
        &with(
            common(analyze_port),
            &[
                ("TRIBUTARY_WINDOWS", WINDOW_SECS.to_string()),
                ("TRIBUTARY_ALLOWED_LATENESS_SECS", LATENESS_SECS.to_string()),
                ("TRIBUTARY_IDLE_TIMEOUT_SECS", "2".into()),
            ],
        ),
        &dir,
    );
    let process_port = free_port();
    let mut process = Proc::new(
        "process",
        sibling(TRIBUTARY, "tributary-process"),
        &[],
        &with(
            common(process_port),
            &[
                ("DATABASE_URL", pg.url()),
                ("REDIS_URL", format!("redis://127.0.0.1:{redis_port}")),
            ],
        ),
        &dir,
    );
    let lake_port = free_port();
    let lake_dir = dir.join("lake");
    let mut lake = Proc::new(
        "lake",
        sibling(TRIBUTARY, "tributary-lake"),
        &[],
        &with(
            common(lake_port),
            &[
                ("TRIBUTARY_LAKE_URL", lake_dir.display().to_string()),
                ("TRIBUTARY_LAKE_ROLL_SECS", "2".into()),
            ],
        ),
        &dir,
    );
    // Ingest first: it creates the topics the consumers subscribe to.
    ingest.start();
    wait_healthy(ingest_port, 30, "ingest");
    for (f, port) in [
        (&mut archive, archive_port),
        (&mut analyze, analyze_port),
        (&mut process, process_port),
        (&mut lake, lake_port),
    ] {
        f.start();
        wait_healthy(port, 30, &f.name.clone());
    }

    // --- load, and the faults while it runs ---
    let record = dir.join("acknowledged.jsonl");
    let sim = Command::new(TRIBUTARY)
        .args([
            "simulate",
            "--url",
            &format!("http://127.0.0.1:{ingest_port}/v1/telemetry"),
            "--devices",
            "8",
            "--rate",
            "10",
            "--batch",
            "5",
        ])
        .args([
            "--duration",
            &SIMULATE_SECS.to_string(),
            "--anomaly-rate",
            "0.002",
            "--duplicate-fraction",
            "0.1",
            "--late-fraction",
            "0",
            "--progress-secs",
            "0",
            "--record",
        ])
        .arg(&record)
        .env("TRIBUTARY_FLEET_KEY", FLEET_KEY)
        .stdout(Stdio::piped())
        .stderr(log_file(&dir, "simulate"))
        .spawn()
        .expect("tributary simulate");
    let t0 = Instant::now();
    let at = |secs: u64| {
        let when = t0 + Duration::from_secs(secs);
        if let Some(d) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    };
    let pause = || std::thread::sleep(Duration::from_secs(3));
    let mut done = Vec::new();

    at(4);
    ingest.kill9();
    std::thread::sleep(Duration::from_secs(1));
    ingest.start();
    wait_healthy(ingest_port, 30, "ingest after SIGKILL");
    done.push("ingest SIGKILL");

    // The four consumers die together, mid-stream, and come back once tansu has
    // expired their dead members (session timeout 10 s): tansu 0.6 gives a member
    // that joins while the dead one is still in the group an empty assignment, for
    // good (seen here with a restart after 1 s; Kafka rebalances instead). Ingest
    // keeps accepting meanwhile, so they restart into a backlog.
    at(7);
    for f in [&mut archive, &mut analyze, &mut process, &mut lake] {
        f.kill9();
    }
    std::thread::sleep(Duration::from_secs(12));
    for (f, port) in [
        (&mut archive, archive_port),
        (&mut analyze, analyze_port),
        (&mut process, process_port),
        (&mut lake, lake_port),
    ] {
        f.start();
        wait_healthy(port, 30, &format!("{} after SIGKILL", f.name));
    }
    done.push("archive, analyze, process and lake SIGKILL");

    at(23);
    broker.kill9();
    pause();
    broker.start();
    wait_port(kafka_port, 30, "tansu after SIGKILL");
    done.push("broker SIGKILL, restarted on its sqlite storage");

    // PostgreSQL and Redis stay down longer than a window (5 s), so a batch of
    // closed windows surely meets the outage.
    at(30);
    pg.crash();
    std::thread::sleep(Duration::from_secs(6));
    pg.start();
    done.push("PostgreSQL immediate shutdown and crash recovery");

    at(38);
    redis.kill9();
    std::thread::sleep(Duration::from_secs(6));
    redis.start();
    wait_port(redis_port, 30, "redis-server after SIGKILL");
    done.push("Redis SIGKILL (cache lost)");

    at(46);
    proxy.set_up(false);
    pause();
    proxy.set_up(true);
    done.push("Cosmos DB cut off");

    let out = sim.wait_with_output().expect("simulate");
    assert!(out.status.success(), "simulate failed: {}", tail(&dir, "simulate"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let totals: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("totals")).expect("totals JSON");
    println!("simulate: {totals}");
    let accepted = totals["accepted"].as_u64().expect("accepted");
    assert!(
        accepted >= 1500,
        "too little got through for the check to mean much: {totals}"
    );
    assert_eq!(totals["rejected"], 0, "{totals}");
    assert!(
        totals["retries"].as_u64() > Some(0),
        "the ingest and broker outages must have made devices retry: {totals}"
    );
    for f in [
        &mut broker,
        &mut redis,
        &mut cosmos,
        &mut ingest,
        &mut archive,
        &mut analyze,
        &mut process,
        &mut lake,
    ] {
        f.assert_alive();
    }

    // The faults were met, not slept through (PostgreSQL's outage shows only as a
    // batch that waits for a connection; the invariants below are what count).
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    assert!(
        proxy.refused() > 0,
        "archive never tried Cosmos DB while it was cut off"
    );
    // Each process start rebuilds the cache once; a third rebuild is the one after Redis came back.
    let rebuilds = log("process").matches("cache rebuilt from the results store").count();
    assert!(
        rebuilds >= 3,
        "process rebuilt the cache {rebuilds} times: it did not notice Redis go and come back\n{}",
        tail(&dir, "process")
    );
    // The restarted analyze resumed its partitions with the killed one's watermarks (commit
    // metadata; tansu drops it, the backend's mirror topic keeps it): without them a window
    // closed before the kill can be emitted again with part of its readings.
    assert!(
        log("analyze").contains("restored the partition's watermark"),
        "analyze restarted without its checkpoints\n{}",
        tail(&dir, "analyze")
    );

    // --- reconciliation: wait for the last windows to close (idle rule) and be written ---
    let verify = || {
        Command::new(TRIBUTARY)
            .args(["verify", "--window", &WINDOW_SECS.to_string(), "--record"])
            .arg(&record)
            .args([
                "--database-url",
                &pg.url(),
                "--cosmos-endpoint",
                &cosmos_via_proxy,
                "--cosmos-key",
                &cosmos_key,
                "--cosmos-database",
                &cosmos_db,
            ])
            .env_remove("DATABASE_URL")
            .output()
            .expect("tributary verify")
    };
    let deadline = Instant::now() + Duration::from_secs(u64::from(LATENESS_SECS) + 60);
    let (summary, report) = loop {
        let out = verify();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary: serde_json::Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        let settled = summary["aggregates"]["valuesInOpenWindows"] == 0 && summary["raw"]["missing"] == 0;
        if settled || Instant::now() > deadline {
            break (summary, format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("verify after [{}]: {summary}", done.join(", "));
    let diagnostics = || {
        format!(
            "{report}\ningest:\n{}\narchive:\n{}\nanalyze:\n{}\nprocess:\n{}",
            tail(&dir, "ingest"),
            tail(&dir, "archive"),
            tail(&dir, "analyze"),
            tail(&dir, "process")
        )
    };
    assert_eq!(summary["acknowledged"].as_u64(), Some(accepted), "{}", diagnostics());
    assert_eq!(
        summary["raw"]["missing"],
        0,
        "every acknowledged reading is in Cosmos DB: {}",
        diagnostics()
    );
    assert_eq!(
        summary["aggregates"]["valuesInOpenWindows"],
        0,
        "every window closed and was checked: {}",
        diagnostics()
    );
    assert_eq!(
        summary["aggregates"]["lost"],
        0,
        "no acknowledged value missing from the aggregates: {}",
        diagnostics()
    );
    assert_eq!(
        summary["aggregates"]["countedTwice"],
        0,
        "no value counted twice: {}",
        diagnostics()
    );
    assert_eq!(summary["ok"], true, "{}", diagnostics());
    assert!(
        summary["aggregates"]["valuesChecked"].as_u64() >= Some(accepted * 3),
        "every reading carries 3 metrics: {summary}"
    );

    // --- the cache recovered: Redis holds each device's latest state as PostgreSQL has it ---
    let rows = pg.query("SELECT device_id, extract(epoch from last_seen)::bigint FROM devices ORDER BY device_id");
    let devices: Vec<(String, i64)> = rows
        .lines()
        .map(|l| {
            l.split_once('\t')
                .map(|(d, t)| (d.to_owned(), t.parse().expect("epoch")))
                .expect("row")
        })
        .collect();
    assert_eq!(devices.len(), 8, "{rows}");
    let deadline = Instant::now() + Duration::from_secs(20);
    for (device, last_seen) in &devices {
        loop {
            let out = Command::new(on_path("redis-cli"))
                .args([
                    "-p",
                    &redis_port.to_string(),
                    "GET",
                    &format!("tributary:device:{device}"),
                ])
                .output()
                .expect("redis-cli");
            let cached: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let cached_seen = cached["lastSeen"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp());
            if cached_seen == Some(*last_seen) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis does not hold {device}'s latest state after its restart: {cached} vs last_seen {last_seen} in PostgreSQL\nprocess:\n{}",
                tail(&dir, "process")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // --- the lake: a clean stop commits what is buffered; every record of the topic once ---
    lake.terminate(60);
    check_lake(&lake_dir, &kafka, &record, &dir);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lake's raw table holds every record of `telemetry.raw` on `kafka` exactly
/// once (by Kafka partition and offset), and so every reading in `record`.
fn check_lake(lake_dir: &Path, kafka: &str, record: &Path, dir: &Path) {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let table = tributary_testkit::delta::read(&lake_dir.join("raw").display().to_string(), None, &[], &[])
        .unwrap_or_else(|e| panic!("delta-rs could not read the lake: {e}\nlake:\n{}", tail(dir, "lake")));
    let rows = table["rows"].as_array().expect("rows");
    let mut by_partition: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for r in rows {
        let p = r["source_partition"].as_i64().expect("source_partition");
        by_partition
            .entry(p)
            .or_default()
            .push(r["source_offset"].as_i64().expect("source_offset"));
    }
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .create()
        .expect("a Kafka client");
    for p in 0..4 {
        let (low, high) = consumer
            .fetch_watermarks("telemetry.raw", p, Duration::from_secs(10))
            .expect("watermarks");
        let mut offsets = by_partition.remove(&i64::from(p)).unwrap_or_default();
        offsets.sort_unstable();
        let expected: Vec<i64> = (low..high).collect();
        assert!(
            offsets == expected,
            "partition {p} of telemetry.raw holds offsets {low}..{high}; the lake holds {} rows of it (first {:?}, last {:?}), each must be there once\nlake:\n{}",
            offsets.len(),
            offsets.first(),
            offsets.last(),
            tail(dir, "lake")
        );
    }
    assert!(
        by_partition.is_empty(),
        "rows from partitions the topic lacks: {by_partition:?}"
    );
    let ids: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    let acknowledged = std::fs::read_to_string(record).expect("the record of acknowledged readings");
    let missing: Vec<String> = acknowledged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged readings are not in the lake, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    println!("lake: {} rows, every record of telemetry.raw once", rows.len());
}
