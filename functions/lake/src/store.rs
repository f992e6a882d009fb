//! The lake's object store, from `TRIBUTARY_LAKE_URL`.
//!
//! - A path (`lake`, `/var/lib/tributary/lake`) or `file:///…`: a local
//!   directory, created if missing (the all-in-one mode's `<data-dir>/lake`).
//! - `abfss://<container>@<account>.dfs.core.windows.net/<path>`, `az://<container>/<path>`
//!   and the other forms object_store parses: Azure Data Lake Storage Gen2 or
//!   Blob storage. Credentials come from the `AZURE_*` environment, so AKS
//!   workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE`, set by its webhook) needs nothing else;
//!   `AZURE_STORAGE_USE_EMULATOR=true` points `az://` at Azurite.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use tributary_shared::service::Readiness;
use tributary_shared::service::readiness::NotReady;
use url::Url;

use crate::error::Error;

/// The store `url` names and the lake's root in it.
pub fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), Error> {
    let bad = |reason: String| Error::LakeUrl {
        url: url.to_owned(),
        reason,
    };
    if url.is_empty() {
        return Err(bad("empty: name a directory or an abfss:// URL".into()));
    }
    match Url::parse(url) {
        Ok(parsed) if parsed.scheme() != "file" && parsed.scheme().len() > 1 => {
            // reqwest 0.13 is built without a TLS provider of its own (see the workspace manifest).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let azure = std::env::vars().filter(|(k, _)| k.starts_with("AZURE_"));
            let (store, root) = object_store::parse_url_opts(&parsed, azure).map_err(|e| bad(e.to_string()))?;
            Ok((Arc::from(store), root))
        }
        Ok(parsed) if parsed.scheme() == "file" => {
            let dir = parsed.to_file_path().map_err(|()| bad("not a local path".into()))?;
            local(&dir, url)
        }
        // A plain path (or a Windows drive letter, which parses as a scheme).
        _ => local(std::path::Path::new(url), url),
    }
}

fn local(dir: &std::path::Path, url: &str) -> Result<(Arc<dyn ObjectStore>, Path), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::LakeUrl {
        url: url.to_owned(),
        reason: format!("creating the directory: {e}"),
    })?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(Error::Store)?;
    Ok((Arc::new(store), Path::default()))
}

/// Ready when the lake's store answers a listing of its root.
pub struct LakeReady {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The lake's root in it.
    pub root: Path,
}

#[async_trait]
impl Readiness for LakeReady {
    async fn check(&self) -> Result<(), NotReady> {
        match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(_) => Ok(()),
            Err(e)
                if crate::delta::store_error_is_retryable(&e) && !matches!(e, object_store::Error::NotFound { .. }) =>
            {
                Err(NotReady::unavailable("the lake's object store", e))
            }
            Err(e) => Err(NotReady::misconfigured("the lake's object store", e)),
        }
    }
}
