//! Delta tables read back with delta-rs (the Python `deltalake` package
//! `scripts/test` installs), an implementation of the protocol independent
//! of the lake's own writer: `read_delta.py` beside this crate prints what
//! the tests check as JSON.

use std::process::Command;

/// The table at `uri` (a directory, or `az://…` with `storage_options` and
/// the process environment `env`), with the `txn` versions of `apps`: its
/// version, partition columns, schema, files and rows (sorted by source
/// partition and offset). `Err` with delta-rs' message when it cannot read it
/// (no table yet, for instance). Panics when python3 cannot run: the test
/// fails loudly.
pub fn read(
    uri: &str,
    storage_options: Option<&serde_json::Value>,
    env: &[(&str, String)],
    apps: &[String],
) -> Result<serde_json::Value, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("read_delta.py");
    let options = storage_options.map_or_else(|| "null".to_owned(), |o| o.to_string());
    let out = Command::new("python3")
        .arg(script)
        .arg(uri)
        .arg(options)
        .args(apps)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3 runs (scripts/test installs it with the deltalake package)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the reader's output is not JSON: {e}"))
}
