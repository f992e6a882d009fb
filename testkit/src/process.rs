//! Real processes for end-to-end tests: the function binaries, brokers and
//! servers a test starts on loopback ports of its own, with their output in
//! log files the failure messages quote.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Wait until something listens on 127.0.0.1:`port`, at most `secs`.
pub fn wait_port(port: u16, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

/// Wait until `/healthz` on `port` answers 200, at most `secs`.
pub fn wait_healthy(port: u16, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{what} was not healthy on port {port} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A program on `PATH` (resolved here: the processes below start with an empty environment).
pub fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} not found on PATH: the test needs it"))
}

/// The binary `name` beside `of` (a test's `CARGO_BIN_EXE_...`) in the target directory.
pub fn sibling(of: &str, name: &str) -> PathBuf {
    let p = Path::new(of).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: the test runs the function binaries; build them with `cargo test --workspace` (scripts/test does)",
        p.display()
    );
    p
}

/// `dir/name.log`, opened for appending (a restarted process adds to it).
pub fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("log file")
}

/// The last 15 lines of `dir/name.log`, for a failure message.
pub fn tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A process a test starts, kills with SIGKILL and starts again, with the
/// same arguments, environment and port.
pub struct Proc {
    /// What logs and messages call it (its log is `<dir>/<name>.log`).
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// `program` with `args` and exactly `env` (nothing inherited), run in `dir`; not started yet.
    pub fn new(name: &str, program: PathBuf, args: &[&str], env: &[(&str, String)], dir: &Path) -> Self {
        Self {
            name: name.into(),
            program,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            dir: dir.to_owned(),
            child: None,
        }
    }

    /// Start it, its output appended to `<dir>/<name>.log`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        writeln!(log_file(&self.dir, &self.name), "--- start ---").expect("log");
        let child = Command::new(&self.program)
            .args(&self.args)
            // Nothing from the test environment leaks in: each process gets exactly this.
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, &self.name))
            .stderr(log_file(&self.dir, &self.name))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Kill it with SIGKILL and reap it; fails the test if it had already exited.
    pub fn kill9(&mut self) {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        if let Some(status) = c.try_wait().expect("try_wait") {
            panic!(
                "{} had already exited ({status}) before it was killed:\n{}",
                self.name,
                tail(&self.dir, &self.name)
            );
        }
        c.kill().expect("SIGKILL");
        c.wait().expect("wait");
    }

    /// Stop it with SIGTERM and wait (up to `secs`) for its exit, which must be clean.
    pub fn terminate(&mut self, secs: u64) {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.name);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not exit within {secs} s of SIGTERM:\n{}",
                    self.name,
                    tail(&self.dir, &self.name)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            self.name,
            tail(&self.dir, &self.name)
        );
    }

    /// Still running (a function must survive every outage of what it depends on).
    pub fn assert_alive(&mut self) {
        let c = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        if let Some(status) = c.try_wait().expect("try_wait") {
            panic!(
                "{} exited ({status}) during the run:\n{}",
                self.name,
                tail(&self.dir, &self.name)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
