//! Azurite, Azure's own Storage emulator (npm `azurite`, installed by
//! `scripts/test` into `scripts/azurite`), as a process of a test's own: the
//! Blob API on a free port, with a fresh data directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The emulator's well-known account name.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known, public account key.
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite Blob service; killed when dropped.
pub struct Azurite {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Azurite {
    /// Start one on a free port. Panics (the test fails) when Azurite is not installed.
    pub fn start() -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: these tests need Azurite. Run them with scripts/test, which installs it (npm ci in scripts/azurite).",
            bin.display()
        );
        let port = crate::free_port();
        let dir = std::env::temp_dir().join(format!("tributary-azurite-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("Azurite's data directory");
        let child = Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ])
            .arg("--location")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite-blob");
        crate::process::wait_port(port, 30, "azurite-blob");
        Self { child, port, dir }
    }

    /// The Blob endpoint (`http://127.0.0.1:<port>`), what `AZURITE_BLOB_STORAGE_URL` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create container `name` (through pyarrow's Azure filesystem, which `scripts/test` installs).
    pub fn create_container(&self, name: &str) {
        let script = format!(
            "from pyarrow.fs import AzureFileSystem\n\
             fs = AzureFileSystem(account_name={ACCOUNT:?}, account_key={KEY:?}, blob_storage_authority='127.0.0.1:{port}', blob_storage_scheme='http', dfs_storage_authority='127.0.0.1:{port}', dfs_storage_scheme='http')\n\
             fs.create_dir({name:?})\n",
            port = self.port
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "creating container {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
