//! Readings analyze still held in open windows at a clean stop, kept in the
//! data directory and replayed at the next start (the in-process event log
//! does not outlive the process).
//!
//! Guarantees: the file is written to a temporary name, synced and renamed,
//! so a crash mid-write never leaves half a file to replay; a missing file
//! means nothing is pending.

use std::path::Path;

use anyhow::Context;
use tributary_shared::eventlog::{Message, Record};

/// The pending tail as NDJSON lines: `{"key", "value", "headers"}` with UTF-8 strings.
pub fn save(path: &Path, messages: &[Message]) -> anyhow::Result<()> {
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

pub fn load(path: &Path) -> anyhow::Result<Vec<Record>> {
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
