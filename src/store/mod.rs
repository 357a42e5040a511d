//! The upload store: compressed uploads and batch results, kept through the `object_store`
//! crate on the local filesystem (default) or any S3-compatible service.
//!
//! - [`id`]: content-addressed object ids (`<sha256 hex>.<ext>`) and their strict parser;
//! - [`sweep`]: the retention policy (max age, max total bytes) and its background task;
//! - [`metrics`]: the `imagegate_store_*` families.
//!
//! Objects are named by the hash of their bytes, so the same output stored twice is one
//! object, and an id is its own strong ETag. Writes are atomic on both backends: the local
//! filesystem writes to a staging file (`<id>#<n>`) and links it into place only when it is
//! complete (removing it on error); an S3 object becomes visible only when its PUT completes.
//! Puts use create-if-absent ([`PutMode::Create`]), so two concurrent uploads of the same image
//! write it once, and the loser sees `AlreadyExists`, which is success here.
//!
//! Objects live flat under the configured prefix. Listing and deleting look only at names
//! that parse as ids, so nothing else in a shared directory or bucket is ever touched.

pub mod id;
pub mod metrics;
pub mod sweep;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutPayload};
use prometheus::Registry;

use crate::config::{StoreBackend, StoreConfig};
pub use id::{ImageKind, ObjectId};
use metrics::StoreMetrics;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes to store are not an image of a type the store keeps.
    #[error("not an image of a type the store keeps (JPEG, PNG or WebP)")]
    NotAnImage,
    /// No such object (answered as `None` by the public API; internal only).
    #[error("no such object")]
    NotFound,
    /// The object store answered with an error.
    #[error("the {backend} store failed to {op} {key}: {source}")]
    Backend {
        /// `fs` or `s3`.
        backend: &'static str,
        /// The operation (see [`StoreError::op`]).
        op: &'static str,
        /// The object key (or, for a listing, the prefix) it was on.
        key: String,
        /// The object store's error.
        // Boxed: object_store's error is large, and this travels in every Result.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The object store did not answer in time.
    #[error("the {backend} store did not {op} {key} within {timeout:?}")]
    Timeout {
        /// `fs` or `s3`.
        backend: &'static str,
        /// The operation (see [`StoreError::op`]).
        op: &'static str,
        /// The object key (or, for a listing, the prefix) it was on.
        key: String,
        /// The time it was given (`store.timeout`, or longer for a listing).
        timeout: Duration,
    },
}

impl StoreError {
    /// The operation that failed (`put`, `get`, `head`, `list`, `delete`, `read`).
    pub fn op(&self) -> &'static str {
        match self {
            StoreError::NotAnImage => "put",
            StoreError::NotFound => "get",
            StoreError::Backend { op, .. } | StoreError::Timeout { op, .. } => op,
        }
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new object was written.
    Created,
    /// The same content was already stored; nothing new was written (or it was rewritten
    /// in place to restart its retention clock).
    Existing,
}

/// A stored image.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its id (the hash of its bytes).
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was new.
    pub outcome: PutOutcome,
}

/// An object as listed or looked up.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Its id.
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written (the retention clock).
    pub last_modified: SystemTime,
}

/// An object being read: its size, then its bytes as they arrive.
pub struct Object {
    /// Its id, size and time.
    pub info: ObjectInfo,
    /// Its bytes, chunk by chunk.
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

/// A dedicated Tokio runtime for the S3 client's connections. The BFF's handlers run on
/// several single-threaded actix runtimes; pooled HTTP connections must not belong to one of
/// them, or work on one worker would stall requests made from another.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // May be dropped from async context, where a blocking shutdown would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The store. Build once per BFF ([`Store::open`]) and share it.
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    backend: &'static str,
    /// Key prefix of every object (may be empty = the root).
    prefix: Path,
    /// `fs` only: the directory that holds the objects (for staging-file cleanup).
    fs_dir: Option<PathBuf>,
    config: StoreConfig,
    metrics: StoreMetrics,
    // Declared last: the runtime stops after the client that uses it is dropped.
    _io: Option<IoRuntime>,
}

impl Store {
    /// Opens the configured store. `fs`: creates the data directory (an error names
    /// `store.dir`). `s3`: builds the client; nothing is contacted until first use, so the
    /// BFF starts even while the object store is down.
    pub fn open(config: &StoreConfig, registry: &Registry) -> anyhow::Result<Store> {
        let prefix = Path::from(config.prefix.as_str());
        let (inner, backend, fs_dir, io): (Arc<dyn ObjectStore>, _, _, _) = match config.backend {
            StoreBackend::Fs => {
                let root = PathBuf::from(&config.dir);
                let dir = config
                    .prefix
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .fold(root.clone(), |d, p| d.join(p));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    anyhow::anyhow!(
                        "store.dir: cannot create the upload directory {}: {e}",
                        dir.display()
                    )
                })?;
                let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
                    anyhow::anyhow!("store.dir: cannot use {}: {e}", root.display())
                })?;
                (Arc::new(fs), "fs", Some(std::fs::canonicalize(&dir)?), None)
            }
            StoreBackend::S3 => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("imagegate-store-io")
                    .enable_all()
                    .build()?;
                let s3 = s3_builder(config, rt.handle().clone())
                    .build()
                    .map_err(|e| anyhow::anyhow!("store: invalid S3 settings: {e}"))?;
                (Arc::new(s3), "s3", None, Some(IoRuntime(Some(rt))))
            }
        };
        tracing::info!(backend, config = ?config, "upload store opened");
        Ok(Store {
            inner,
            backend,
            prefix,
            fs_dir,
            config: config.clone(),
            metrics: StoreMetrics::new(registry, backend),
            _io: io,
        })
    }

    /// `fs` or `s3`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The `[store]` settings it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn location(&self, id: &ObjectId) -> Path {
        self.prefix.child(id.as_str())
    }

    /// The id of an object key directly under the prefix, if it is one of ours.
    fn id_of(&self, location: &Path) -> Option<ObjectId> {
        let mut rest = location.prefix_match(&self.prefix)?;
        let name = rest.next()?;
        if rest.next().is_some() {
            return None;
        }
        ObjectId::parse(name.as_ref())
    }

    fn info(&self, meta: &ObjectMeta) -> Option<ObjectInfo> {
        Some(ObjectInfo {
            id: self.id_of(&meta.location)?,
            size: meta.size,
            last_modified: SystemTime::from(meta.last_modified),
        })
    }

    /// Runs one backend operation with the store's deadline, latency and error metrics.
    /// `NotFound` is an answer, not an error.
    async fn call<T>(
        &self,
        op: &'static str,
        key: &Path,
        timeout: Duration,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, fut).await;
        self.metrics
            .duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(object_store::Error::NotFound { .. })) => return Err(StoreError::NotFound),
            Ok(Err(source)) => StoreError::Backend {
                backend: self.backend,
                op,
                key: key.to_string(),
                source: Box::new(source),
            },
            Err(_) => StoreError::Timeout {
                backend: self.backend,
                op,
                key: key.to_string(),
                timeout,
            },
        };
        self.metrics.errors.with_label_values(&[op]).inc();
        tracing::warn!(error = %error, "upload store operation failed");
        Err(error)
    }

    /// Stores an image (JPEG, PNG or WebP, judged by its bytes) under its content id.
    pub async fn put(&self, data: Bytes) -> Result<Stored, StoreError> {
        let Some(kind) = ImageKind::sniff(&data) else {
            self.metrics.errors.with_label_values(&["put"]).inc();
            return Err(StoreError::NotAnImage);
        };
        let id = ObjectId::for_bytes(&data, kind);
        let location = self.location(&id);
        let size = data.len() as u64;
        let outcome = self
            .call(
                "put",
                &location,
                self.config.timeout,
                self.put_once(&location, data),
            )
            .await?;
        match outcome {
            PutOutcome::Created => {
                self.metrics.objects.inc();
                self.metrics.bytes.add(size as i64);
            }
            PutOutcome::Existing => {}
        }
        let label = match outcome {
            PutOutcome::Created => "created",
            PutOutcome::Existing => "existing",
        };
        self.metrics.puts.with_label_values(&[label]).inc();
        Ok(Stored { id, size, outcome })
    }

    /// Create-if-absent; an existing object of the right size is success. Under a max age,
    /// an existing object past half of it is rewritten (same bytes, atomically) so that a
    /// URL just handed out does not expire at once.
    async fn put_once(&self, location: &Path, data: Bytes) -> object_store::Result<PutOutcome> {
        let size = data.len() as u64;
        let payload = PutPayload::from_bytes(data);
        match self
            .inner
            .put_opts(location, payload.clone(), PutMode::Create.into())
            .await
        {
            Ok(_) => return Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            // A store without conditional writes: content-addressed, so overwriting with the
            // same bytes is just as correct.
            Err(object_store::Error::NotImplemented) => {
                self.inner.put(location, payload).await?;
                return Ok(PutOutcome::Created);
            }
            Err(e) => return Err(e),
        }
        let (fresh, outcome) = match self.inner.head(location).await {
            Ok(meta) => (
                meta.size == size && !self.due_for_refresh(&meta),
                PutOutcome::Existing,
            ),
            // Removed between our create and our look (a sweep): write it again.
            Err(object_store::Error::NotFound { .. }) => (false, PutOutcome::Created),
            Err(e) => return Err(e),
        };
        if !fresh {
            self.inner
                .put_opts(location, payload, PutMode::Overwrite.into())
                .await?;
        }
        Ok(outcome)
    }

    fn due_for_refresh(&self, meta: &ObjectMeta) -> bool {
        let max_age = self.config.max_age;
        !max_age.is_zero()
            && SystemTime::now()
                .duration_since(SystemTime::from(meta.last_modified))
                .is_ok_and(|age| age > max_age / 2)
    }

    /// The object's size and age, or `None` if there is no such object.
    pub async fn head(&self, id: &ObjectId) -> Result<Option<ObjectInfo>, StoreError> {
        let location = self.location(id);
        match self
            .call(
                "head",
                &location,
                self.config.timeout,
                self.inner.head(&location),
            )
            .await
        {
            Ok(meta) => Ok(Some(ObjectInfo {
                id: id.clone(),
                size: meta.size,
                last_modified: SystemTime::from(meta.last_modified),
            })),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the object for reading, or `None` if there is no such object.
    pub async fn get(&self, id: &ObjectId) -> Result<Option<Object>, StoreError> {
        let location = self.location(id);
        let result = match self
            .call(
                "get",
                &location,
                self.config.timeout,
                self.inner.get(&location),
            )
            .await
        {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let info = ObjectInfo {
            id: id.clone(),
            size: result.meta.size,
            last_modified: SystemTime::from(result.meta.last_modified),
        };
        let errors = self.metrics.errors.clone();
        let backend = self.backend;
        let key = location.to_string();
        let stream = result
            .into_stream()
            .map(move |chunk| {
                chunk.map_err(|source| {
                    errors.with_label_values(&["read"]).inc();
                    StoreError::Backend {
                        backend,
                        op: "read",
                        key: key.clone(),
                        source: Box::new(source),
                    }
                })
            })
            .boxed();
        Ok(Some(Object { info, stream }))
    }

    /// The whole object in memory, or `None` (tests and small tools).
    pub async fn get_bytes(&self, id: &ObjectId) -> Result<Option<Bytes>, StoreError> {
        let Some(object) = self.get(id).await? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(object.info.size as usize);
        let mut stream = object.stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Some(out.into()))
    }

    /// Every object of ours (names that are ids, directly under the prefix), in no order.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        // A listing of a large bucket may take longer than one object operation.
        let timeout = self.config.timeout.max(self.config.sweep_interval);
        let prefix = (!self.config.prefix.is_empty()).then_some(&self.prefix);
        let listing = self
            .call(
                "list",
                &self.prefix,
                timeout,
                self.inner.list_with_delimiter(prefix),
            )
            .await;
        let listing = match listing {
            Ok(l) => l,
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(listing
            .objects
            .iter()
            .filter_map(|m| self.info(m))
            .collect())
    }

    /// Deletes one object (absent already counts as deleted).
    pub async fn delete(&self, id: &ObjectId) -> Result<(), StoreError> {
        let location = self.location(id);
        match self
            .call(
                "delete",
                &location,
                self.config.timeout,
                self.inner.delete(&location),
            )
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn s3_builder(config: &StoreConfig, io: tokio::runtime::Handle) -> AmazonS3Builder {
    // Bounded retries: a dead store must fail an upload within the store's timeout, not
    // after object_store's default of minutes.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: config.timeout,
        ..Default::default()
    };
    let client = object_store::ClientOptions::new()
        .with_timeout(config.timeout)
        .with_connect_timeout(config.timeout.min(Duration::from_secs(5)));
    // `from_env` first: the standard AWS_* variables (credentials, region, …) apply unless
    // the config says otherwise.
    let mut builder = AmazonS3Builder::from_env()
        .with_client_options(client)
        .with_retry(retry)
        .with_http_connector(object_store::client::SpawnedReqwestConnector::new(io))
        .with_bucket_name(&config.bucket);
    if !config.region.is_empty() {
        builder = builder.with_region(&config.region);
    }
    if config.allow_http {
        builder = builder.with_allow_http(true);
    }
    if !config.endpoint.is_empty() {
        // Path-style addressing (`endpoint/bucket/key`): what S3-compatible services expect.
        builder = builder
            .with_endpoint(config.endpoint.trim())
            .with_virtual_hosted_style_request(false);
    }
    if !config.access_key_id.is_empty() {
        builder = builder
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key);
    }
    builder
}
