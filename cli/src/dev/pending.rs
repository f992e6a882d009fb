//! What the in-process event log must carry over a clean stop, kept in the
//! data directory (the log itself does not outlive the process): the
//! readings analyze still held in open windows, replayed at the next start,
//! and each topic's end offsets, so offsets continue as Kafka's would.
//!
//! Guarantees: each file is written to a temporary name, synced and renamed,
//! so a crash mid-write never leaves half a file; a missing file means
//! nothing is pending (or, for offsets, that the topics start at 0). A
//! replayed reading keeps its partition and offset, so a consumer that
//! remembers offsets (the lake's tables) recognises one it already holds.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use tributary_shared::eventlog::memory::MemoryLog;
use tributary_shared::eventlog::{Message, Record};

/// A saved record, and where it was in its topic (absent from files of older versions).
pub struct Pending {
    /// The record.
    pub record: Record,
    /// Its partition and offset.
    pub at: Option<(i32, i64)>,
}

/// The pending tail as NDJSON lines: `{"key", "value", "headers",
/// "partition", "offset"}` with UTF-8 strings.
pub fn save(path: &Path, messages: &[Message]) -> anyhow::Result<()> {
    let mut lines = Vec::with_capacity(messages.len());
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
            "partition": m.partition,
            "offset": m.offset,
        });
        lines.push(line.to_string());
    }
    write_atomically(path, &lines)
}

/// Where the in-process log's topics ended at a clean stop.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogState {
    /// Names one unbroken run of offsets: kept while offsets continue, new
    /// after a start without this file (the first, or after a crash), when
    /// they begin again at 0. The lake's writer ids include it.
    pub incarnation: String,
    /// Topic to each partition's end offset.
    pub ends: BTreeMap<String, Vec<i64>>,
}

/// Save `state` (at a clean stop).
pub fn save_log_state(path: &Path, state: &LogState) -> anyhow::Result<()> {
    write_atomically(path, &[serde_json::to_string(state)?])
}

/// Take what [`save_log_state`] wrote, removing the file (so a crash before
/// the next clean stop starts a new incarnation); `None` when there is none.
pub fn take_log_state(path: &Path) -> anyhow::Result<Option<LogState>> {
    let state = match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(state))
}

fn write_atomically(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    for line in lines {
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    drop(f);
    // Rename last, so a crash mid-write never leaves half a file to replay.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What [`save`] wrote; empty when there is no file.
pub fn load(path: &Path) -> anyhow::Result<Vec<Pending>> {
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
        let at = match (v["partition"].as_i64(), v["offset"].as_i64()) {
            (Some(p), Some(o)) => i32::try_from(p).ok().map(|p| (p, o)),
            _ => None,
        };
        out.push(Pending { record: r, at });
    }
    Ok(out)
}

/// Start `memory`'s topics where the last run left them (`ends`), with the
/// `pending` records of `topic` back at their own offsets; returns the
/// records to publish, in order (each with its partition when it keeps its
/// offset). Saved records that do not run up to their partition's end
/// (a file of an older version, or edited) are published at new offsets.
pub fn resume(
    memory: &MemoryLog,
    ends: &BTreeMap<String, Vec<i64>>,
    topic: &str,
    pending: Vec<Pending>,
) -> Vec<Record> {
    for (t, next) in ends {
        if t != topic {
            memory.resume(t, next);
        }
    }
    let Some(next) = ends.get(topic) else {
        return pending.into_iter().map(|p| p.record).collect();
    };
    let mut bases = next.clone();
    let mut expected: BTreeMap<i32, i64> = BTreeMap::new();
    let mut in_place = true;
    for p in &pending {
        let Some((part, offset)) = p.at else {
            in_place = false;
            break;
        };
        let Some(base) = usize::try_from(part).ok().and_then(|i| bases.get_mut(i)) else {
            in_place = false;
            break;
        };
        let want = expected.entry(part).or_insert(offset);
        in_place &= *want == offset;
        *want += 1;
        *base = (*base).min(offset);
    }
    // Each partition's records must run up to its end, one offset after another.
    in_place &= expected.iter().all(|(p, after)| next.get(*p as usize) == Some(after));
    if !in_place {
        tracing::warn!(
            topic,
            "saved readings are not the tail of their partitions; replaying them at new offsets"
        );
        memory.resume(topic, next);
        return pending.into_iter().map(|p| p.record).collect();
    }
    memory.resume(topic, &bases);
    pending
        .into_iter()
        .map(|p| {
            let mut r = p.record;
            r.partition = p.at.map(|(part, _)| part);
            r
        })
        .collect()
}
