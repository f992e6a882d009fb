//! `bench ingest --load wrk`: the same single-device requests driven by
//! `wrk` (Debian's package), a standard load generator, to check that the
//! bench's own client and a well-known one agree.
//!
//! Guarantees: wrk gets the very requests the bench's client would send
//! (per device: its token and bodies, built here and written into a Lua
//! script as literals, so wrk builds nothing per request); a request counts
//! as accepted only when wrk saw a 2xx; wrk's own CPU time is read from
//! bash's `times` after it ends, so it is reported like the bench's client's.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::load::Connection;

/// What one wrk run reported.
pub struct WrkOutcome {
    /// Requests wrk completed.
    pub requests: u64,
    /// Of those, answered with a status other than 2xx or 3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Latency quantiles, in ms.
    pub p50_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
    /// The duration wrk reports for its requests, in s.
    pub elapsed_s: f64,
    /// CPU time (user + system) wrk used, in s.
    pub cpu_s: f64,
}

/// A Lua script for wrk that cycles through `requests` (authorization
/// header and body per entry), each formatted once at start.
pub fn script(path: &str, requests: &[(String, Vec<u8>)], connection: Connection) -> anyhow::Result<String> {
    let close = match connection {
        Connection::KeepAlive => "",
        Connection::PerRequest => r#", ["Connection"] = "close""#,
    };
    let mut s = String::from("local raw = {\n");
    for (auth, body) in requests {
        let body = std::str::from_utf8(body).context("a request body that is not UTF-8")?;
        for text in [auth.as_str(), body] {
            if text.contains("]==]") {
                bail!("a request that cannot be a Lua long string");
            }
        }
        writeln!(s, "  {{ [==[{auth}]==], [==[{body}]==] }},")?;
    }
    writeln!(
        s,
        r#"}}
local reqs = {{}}
local i = 0
function init(args)
  for k, r in ipairs(raw) do
    reqs[k] = wrk.format("POST", "{path}", {{ ["Host"] = wrk.headers["Host"], ["Authorization"] = r[1], ["Content-Type"] = "application/json"{close} }}, r[2])
  end
end
function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end"#
    )?;
    Ok(s)
}

/// Run wrk on one thread (as the bench's own client runs) with
/// `connections` connections for `duration` against `url`, with `script`.
pub fn drive(url: &str, connections: usize, duration: Duration, script: &str) -> anyhow::Result<WrkOutcome> {
    let dir = std::env::temp_dir().join(format!("tributary-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ingest.lua");
    std::fs::write(&path, script)?;
    // bash's `times` prints the CPU time of the children it waited for: wrk's.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"command -v wrk >/dev/null || { echo "wrk not found: install Debian's package (apt-get install wrk) or use --load own" >&2; exit 127; }
"$@"; rc=$?; times >&2; exit $rc"#)
        .arg("bash")
        .arg("wrk")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(&path)
        .arg(url)
        .output()
        .context("running wrk under bash");
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("wrk failed ({}): {text}{errors}", out.status);
    }
    let mut o = parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))?;
    o.cpu_s = children_cpu_seconds(&errors).context("reading wrk's CPU time from bash's `times`")?;
    Ok(o)
}

/// The children's CPU time (user + system, s) from the last line of bash's
/// `times` ("0m1.250s 0m0.500s").
fn children_cpu_seconds(times: &str) -> anyhow::Result<f64> {
    let line = times.lines().rfind(|l| !l.trim().is_empty()).context("no output")?;
    line.split_whitespace()
        .map(|t| {
            let (m, s) = t
                .strip_suffix('s')
                .and_then(|t| t.split_once('m'))
                .context("not NmN.NNNs")?;
            Ok(m.parse::<f64>()? * 60.0 + s.parse::<f64>()?)
        })
        .sum()
}

/// wrk's report (with `--latency`) read into figures.
fn parse(text: &str) -> anyhow::Result<WrkOutcome> {
    let mut o = WrkOutcome {
        requests: 0,
        non_2xx: 0,
        errors: 0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        elapsed_s: f64::NAN,
        cpu_s: f64::NAN,
    };
    let mut saw_total = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => o.p50_ms = duration_ms(v)?,
            ["99%", v] => o.p99_ms = duration_ms(v)?,
            [n, "requests", "in", t, ..] => {
                o.requests = n.parse().context("request count")?;
                o.elapsed_s = duration_ms(t.trim_end_matches(','))? / 1000.0;
                saw_total = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => o.non_2xx = n.parse().context("non-2xx count")?,
            ["Socket", "errors:", rest @ ..] => {
                o.errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !saw_total || o.p99_ms.is_nan() {
        bail!("no request total or latency distribution");
    }
    Ok(o)
}

/// wrk's duration text ("812.00us", "1.23ms", "5.00s", "1.02m") in ms.
fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e3)
    } else {
        bail!("a duration without a unit: {v}")
    };
    Ok(num.parse::<f64>().with_context(|| format!("duration {v}"))? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_is_read_into_figures() {
        let report = "Running 5s test @ http://127.0.0.1:1/v1/telemetry
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.01ms    2.10ms  40.00ms   80.00%
    Req/Sec    32.10k     1.00k   35.00k    70.00%
  Latency Distribution
     50%    7.50ms
     75%    9.00ms
     90%   11.00ms
     99%  812.00us
  160000 requests in 5.00s, 30.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  32000.00
Transfer/sec:      6.00MB
";
        let o = parse(report).expect("parses");
        assert_eq!((o.requests, o.non_2xx, o.errors), (160_000, 7, 6));
        assert!((o.p50_ms - 7.5).abs() < 1e-9 && (o.p99_ms - 0.812).abs() < 1e-9);
        assert!((o.elapsed_s - 5.0).abs() < 1e-9);
        assert!(parse("Running 5s test\n").is_err());
    }

    #[test]
    fn the_cpu_time_of_children_is_read_from_bash_times() {
        let cpu = children_cpu_seconds("0m0.010s 0m0.002s\n1m1.250s 0m0.500s\n").expect("parses");
        assert!((cpu - 61.75).abs() < 1e-9, "{cpu}");
        assert!(children_cpu_seconds("").is_err());
    }

    #[test]
    fn the_script_holds_every_request_as_a_literal() {
        let reqs = [("SharedAccessSignature a".to_owned(), b"{\"x\":1}".to_vec())];
        let s = script("/v1/telemetry", &reqs, Connection::KeepAlive).expect("script");
        assert!(s.contains("[==[SharedAccessSignature a]==], [==[{\"x\":1}]==]"), "{s}");
        assert!(!s.contains("close"));
        let s = script("/v1/telemetry", &reqs, Connection::PerRequest).expect("script");
        assert!(s.contains(r#"["Connection"] = "close""#), "{s}");
        assert!(script("/v1/telemetry", &[("a]==]".into(), Vec::new())], Connection::KeepAlive).is_err());
    }
}
