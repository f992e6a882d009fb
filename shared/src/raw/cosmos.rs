//! The Cosmos DB backend of [`RawStore`](super::RawStore), on `azure_data_cosmos`
//! (feature `cosmos`).
//!
//! Guarantees:
//! - documents are the reading's own camelCase JSON plus `ttl` (when a TTL is
//!   configured), id = reading id, partition key = device id; writes are
//!   upserts, so replays leave exactly one document per reading;
//! - every request is bounded by the configured timeout; at most
//!   `concurrency` upserts are in flight per [`RawStore::upsert_batch`] call,
//!   and once one finds the store unavailable the rest of the batch is not sent;
//! - failures are classified: throttling (429), timeouts, 408/410/449/503 and
//!   connection errors are [`StoreError::Unavailable`]; 400/413 (the document
//!   itself is refused) are [`StoreError::Permanent`]; everything else is
//!   [`StoreError::Retryable`];
//! - server certificates are always validated
//!   ([`ServerCertificateValidation::Required`]); plain HTTP is only possible
//!   for a local emulator on localhost/127.0.0.1 (the SDK refuses it elsewhere),
//!   and then HTTP/2, gateway v2 and binary encoding are turned off.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::model::Reading;
use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::ContinuationToken;
use azure_data_cosmos::models::{ContainerProperties, TimeToLive};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, MaxItemCountHint, QueryOptions, Region, ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, CosmosRuntime, FeedScope, Query, RoutingStrategy,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::{CosmosAuth, Page, RawStore, StoreError};

/// Partition key path of the raw container.
pub const PARTITION_KEY_PATH: &str = "/deviceId";

/// How to authenticate.
#[derive(Clone)]
pub enum Credential {
    /// Account key (emulator, local use).
    Key(String),
    /// Microsoft Entra ID token credential (managed or workload identity).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(_) => f.write_str("Key(..)"),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// Everything [`CosmosStore::connect`] needs.
#[derive(Clone, Debug)]
pub struct CosmosSettings {
    /// Account endpoint URL.
    pub endpoint: String,
    /// Authentication.
    pub credential: Credential,
    /// Database name.
    pub database: String,
    /// Container name.
    pub container: String,
    /// Seconds documents live (container default TTL and per-document `ttl`); 0 = forever.
    pub ttl_secs: u32,
    /// Most upserts in flight per batch.
    pub concurrency: usize,
    /// Longest wait for one request.
    pub timeout: Duration,
    /// Preferred region (routing hint for multi-region accounts).
    pub region: String,
}

impl CosmosSettings {
    /// Settings for `container` of `database` at `endpoint`, with the
    /// defaults for everything else: no TTL, 16 upserts in flight, 10 s per
    /// request, the default region.
    pub fn new(
        endpoint: impl Into<String>,
        credential: Credential,
        database: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            credential,
            database: database.into(),
            container: container.into(),
            ttl_secs: 0,
            concurrency: 16,
            timeout: Duration::from_secs(10),
            region: crate::config::DEFAULT_COSMOS_REGION.into(),
        }
    }

    /// Key-auth settings with the defaults (local emulator, tests, benchmark).
    pub fn with_key(
        endpoint: impl Into<String>,
        key: impl Into<String>,
        database: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self::new(endpoint, Credential::Key(key.into()), database, container)
    }
}

/// The credential a function's settings ask for: the account key (required
/// with [`CosmosAuth::Key`]), or the workload or managed identity.
pub fn credential(
    auth: CosmosAuth,
    key: Option<String>,
    azure_client_id: Option<String>,
) -> Result<Credential, StoreError> {
    match auth {
        CosmosAuth::Key => Ok(Credential::Key(key.filter(|k| !k.is_empty()).ok_or_else(|| {
            StoreError::Permanent("TRIBUTARY_COSMOS_KEY is required with TRIBUTARY_COSMOS_AUTH=key".into())
        })?)),
        CosmosAuth::Identity => Ok(Credential::Token(identity_credential(azure_client_id)?)),
    }
}

/// The Azure SDK's HTTP client (reqwest 0.13 on rustls without a provider of
/// its own, see the workspace's Cargo.toml) takes rustls' process-wide
/// provider, which nothing installs by itself: ring, the one every other TLS
/// client here uses. Called before any Azure client is built; a second call
/// changes nothing (the first provider stays).
fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Workload identity (AKS: `AZURE_FEDERATED_TOKEN_FILE` set) or managed identity
/// (system-assigned, or user-assigned when `client_id` is given).
pub fn identity_credential(client_id: Option<String>) -> Result<Arc<dyn TokenCredential>, StoreError> {
    use_ring_for_tls();
    let failed = |e: azure_core::Error| StoreError::Permanent(format!("Azure identity: {e}"));
    if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        let cred = azure_identity::WorkloadIdentityCredential::new(None).map_err(failed)?;
        return Ok(cred);
    }
    let options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(azure_identity::UserAssignedId::ClientId),
        ..Default::default()
    };
    Ok(azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(failed)?)
}

/// A reading as stored: its own fields plus the per-document TTL.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    reading: &'a Reading,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
}

/// The raw archive in one Cosmos DB container.
#[derive(Clone)]
pub struct CosmosStore {
    client: CosmosClient,
    container: ContainerClient,
    settings: CosmosSettings,
}

fn is_local(endpoint: &str) -> bool {
    endpoint.starts_with("http://")
}

/// Build a client (no request needed beyond what the SDK does on build).
pub async fn client(settings: &CosmosSettings) -> Result<CosmosClient, StoreError> {
    use_ring_for_tls();
    let endpoint: AccountEndpoint = settings
        .endpoint
        .parse()
        .map_err(|e| StoreError::Permanent(format!("bad Cosmos endpoint {:?}: {e}", settings.endpoint)))?;
    let local = is_local(&settings.endpoint);
    let account = match &settings.credential {
        Credential::Key(k) => AccountReference::with_authentication_key(endpoint, Secret::from(k.clone())),
        Credential::Token(t) => AccountReference::with_credential(endpoint, t.clone()),
    };
    let mut pool =
        ConnectionPoolOptions::builder().with_server_certificate_validation(ServerCertificateValidation::Required);
    if local {
        // The local emulator speaks HTTP/1.1 only.
        pool = pool.with_is_http2_allowed(false).with_gateway_v2_disabled(true);
    }
    let pool = pool
        .build()
        .map_err(|e| StoreError::Permanent(format!("connection options: {e}")))?;
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await
        .map_err(|e| classify(&e))?;
    let mut builder = CosmosClient::builder().with_runtime(runtime);
    if local {
        builder = builder.with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false));
    }
    let strategy = RoutingStrategy::ProximityTo(Region::new(settings.region.clone()));
    tokio::time::timeout(settings.timeout, builder.build(account, strategy))
        .await
        .map_err(|_| StoreError::Unavailable("timed out connecting to Cosmos DB".into()))?
        .map_err(|e| classify(&e))
}

/// Map an SDK error to what the handler does with it.
pub fn classify(e: &CosmosError) -> StoreError {
    let status = e.status();
    let code = u16::from(status.status_code());
    let msg = format!("{code}: {e}");
    if !e.is_from_wire() {
        // No answer from the service: connection refused/reset, DNS, timeout.
        return StoreError::Unavailable(msg);
    }
    match code {
        400 | 413 => StoreError::Permanent(msg),
        408 | 410 | 429 | 449 | 503 => StoreError::Unavailable(msg),
        _ => StoreError::Retryable(msg),
    }
}

impl CosmosStore {
    /// Connect; with `create`, first create the database and container when
    /// missing (container partitioned by `/deviceId`, default TTL from settings).
    pub async fn connect(settings: CosmosSettings, create: bool) -> Result<Self, StoreError> {
        let client = client(&settings).await?;
        if create {
            ensure_container(&client, &settings).await?;
        }
        let container = tokio::time::timeout(
            settings.timeout,
            client
                .database_client(settings.database.clone())
                .container_client(settings.container.clone(), None),
        )
        .await
        .map_err(|_| StoreError::Unavailable("timed out opening the container".into()))?
        .map_err(|e| classify(&e))?;
        Ok(Self {
            client,
            container,
            settings,
        })
    }

    /// The SDK's container client (for reads the trait does not cover, e.g. tests).
    pub fn container(&self) -> &ContainerClient {
        &self.container
    }

    /// The container's default TTL as Cosmos reports it (`None` = off).
    pub async fn default_ttl(&self) -> Result<Option<i64>, StoreError> {
        let props: ContainerProperties = self
            .timed(self.container.read(None))
            .await?
            .into_model()
            .map_err(|e| classify(&e))?;
        Ok(match props.default_ttl {
            TimeToLive::Forever => None,
            TimeToLive::NoDefault => Some(-1),
            TimeToLive::Seconds(s) => Some(i64::from(s)),
            _ => None,
        })
    }

    /// Point read of one stored document as JSON (`None` when missing).
    pub async fn read_document(&self, device: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let read = self.container.read_item(device.to_owned(), id, None);
        match tokio::time::timeout(self.settings.timeout, read).await {
            Ok(Ok(r)) => Ok(Some(r.into_model::<serde_json::Value>().map_err(|e| classify(&e))?)),
            Ok(Err(e)) if e.is_from_wire() && u16::from(e.status().status_code()) == 404 => Ok(None),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "timed out after {:?}",
                self.settings.timeout
            ))),
        }
    }

    async fn timed<T>(&self, fut: impl std::future::Future<Output = Result<T, CosmosError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "timed out after {:?}",
                self.settings.timeout
            ))),
        }
    }

    async fn upsert_one(&self, reading: &Reading) -> Result<(), StoreError> {
        let ttl = (self.settings.ttl_secs > 0).then_some(self.settings.ttl_secs);
        let doc = Document { reading, ttl };
        self.timed(
            self.container
                .upsert_item(reading.device_id.clone(), &reading.id, &doc, None),
        )
        .await
        .map(|_| ())
    }
}

async fn ensure_container(client: &CosmosClient, s: &CosmosSettings) -> Result<(), StoreError> {
    let conflict_ok = |r: Result<(), CosmosError>| match r {
        Ok(()) => Ok(()),
        Err(e) if e.status().is_conflict() => Ok(()),
        Err(e) => Err(classify(&e)),
    };
    let timeout = |what: &'static str| move |_| StoreError::Unavailable(format!("timed out creating the {what}"));
    conflict_ok(
        tokio::time::timeout(s.timeout, client.create_database(&s.database, None))
            .await
            .map_err(timeout("database"))?
            .map(|_| ()),
    )?;
    let mut props = ContainerProperties::new(s.container.clone(), PARTITION_KEY_PATH.into());
    if s.ttl_secs > 0 {
        props = props.with_default_ttl(s.ttl_secs);
    }
    let db = client.database_client(s.database.clone());
    conflict_ok(
        tokio::time::timeout(s.timeout, db.create_container(props, None))
            .await
            .map_err(timeout("container"))?
            .map(|_| ()),
    )
}

#[async_trait]
impl RawStore for CosmosStore {
    async fn upsert_batch(&self, readings: &[Reading]) -> Vec<Result<(), StoreError>> {
        // Once the store is found unavailable, the rest of the batch is not
        // sent: the runner retries the whole batch anyway, and an outage then
        // costs one timeout rather than one per `concurrency` readings.
        let unavailable = AtomicBool::new(false);
        let unavailable = &unavailable;
        futures::stream::iter(0..readings.len())
            .map(|i| async move {
                if unavailable.load(Ordering::Relaxed) {
                    return Err(StoreError::Unavailable(
                        "not sent: the store was unavailable for an earlier reading of the batch".into(),
                    ));
                }
                let r = self.upsert_one(&readings[i]).await;
                if matches!(r, Err(StoreError::Unavailable(_))) {
                    unavailable.store(true, Ordering::Relaxed);
                }
                r
            })
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await
    }

    async fn query_device_range(
        &self,
        device: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        continuation: Option<String>,
    ) -> Result<Page, StoreError> {
        // eventTime is stored as fixed-width RFC 3339 UTC with milliseconds, so strings compare as times.
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let bad = |e: CosmosError| StoreError::Permanent(format!("query: {e}"));
        let query = Query::from("SELECT * FROM c WHERE c.deviceId = @device AND c.eventTime >= @from AND c.eventTime < @to ORDER BY c.eventTime")
            .with_parameter("@device", device)
            .map_err(bad)?
            .with_parameter("@from", ts(from))
            .map_err(bad)?
            .with_parameter("@to", ts(to))
            .map_err(bad)?;
        let limit = NonZeroU32::new(page_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut options = QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(limit));
        if let Some(c) = continuation {
            options = options.with_continuation_token(ContinuationToken::from_string(c));
        }
        let timeout = self.settings.timeout;
        let fetch = async {
            let mut pages = self
                .container
                .query_items::<serde_json::Value>(query, FeedScope::partition(device.to_owned()), Some(options))
                .await?
                .into_pages();
            let Some(page) = pages.try_next().await? else {
                return Ok::<_, CosmosError>((Vec::new(), None));
            };
            let next = if page.headers().continuation().is_some() {
                Some(pages.to_continuation_token()?.as_str().to_owned())
            } else {
                None
            };
            Ok((page.into_items(), next))
        };
        let (docs, continuation) = match tokio::time::timeout(timeout, fetch).await {
            Ok(r) => r.map_err(|e| classify(&e))?,
            Err(_) => return Err(StoreError::Unavailable(format!("query timed out after {timeout:?}"))),
        };
        let items = docs
            .into_iter()
            .map(|d| {
                serde_json::from_value::<Reading>(d)
                    .map_err(|e| StoreError::Permanent(format!("stored document is not a Reading: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, continuation })
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        self.timed(self.container.read(None)).await.map(|_| ())
    }

    fn backend(&self) -> &'static str {
        "cosmos"
    }
}

impl std::fmt::Debug for CosmosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosStore")
            .field("endpoint", &self.settings.endpoint)
            .field("database", &self.settings.database)
            .field("container", &self.settings.container)
            .finish()
    }
}

impl CosmosStore {
    /// The account endpoint the client talks to.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint().as_str()
    }
}

/// A [`CosmosStore`] connected on first use (and again after a failed
/// attempt), so that a function starts, and serves its ops endpoints, while
/// Cosmos DB is unreachable: the dashboard serves everything else, and the
/// archive waits for it (its readiness check connects) before consuming.
pub struct LazyCosmosStore {
    settings: CosmosSettings,
    create: bool,
    store: tokio::sync::OnceCell<CosmosStore>,
    /// Held by the readiness check that is connecting, so further checks
    /// answer "connecting" at once instead of queueing behind it.
    checking: tokio::sync::Mutex<()>,
}

impl LazyCosmosStore {
    /// A store that connects with `settings` when first asked, creating the
    /// database and container first when `create` (see [`CosmosStore::connect`]).
    pub fn new(settings: CosmosSettings, create: bool) -> Self {
        Self {
            settings,
            create,
            store: tokio::sync::OnceCell::new(),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    async fn get(&self) -> Result<&CosmosStore, StoreError> {
        self.store
            .get_or_try_init(|| CosmosStore::connect(self.settings.clone(), self.create))
            .await
    }
}

impl std::fmt::Debug for LazyCosmosStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCosmosStore")
            .field("endpoint", &self.settings.endpoint)
            .field("connected", &self.store.initialized())
            .finish()
    }
}

#[async_trait]
impl RawStore for LazyCosmosStore {
    async fn upsert_batch(&self, readings: &[Reading]) -> Vec<Result<(), StoreError>> {
        match self.get().await {
            Ok(s) => s.upsert_batch(readings).await,
            Err(e) => readings.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn query_device_range(
        &self,
        device: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        continuation: Option<String>,
    ) -> Result<Page, StoreError> {
        self.get()
            .await?
            .query_device_range(device, from, to, page_size, continuation)
            .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        if let Some(store) = self.store.get() {
            return store.check_ready().await;
        }
        let Ok(_connecting) = self.checking.try_lock() else {
            return Err(StoreError::Unavailable("connecting to Cosmos DB".into()));
        };
        self.get().await?.check_ready().await
    }

    fn backend(&self) -> &'static str {
        "cosmos"
    }
}
