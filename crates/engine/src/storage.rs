//! Storage gengate controls for results and inputs, chosen by URL as the
//! database is: `file://<dir>` (a local directory) or `s3://bucket/prefix`
//! (any S3-compatible server), both through `object_store`, so that every
//! instance sharing a bucket serves every file. Keys are relative paths
//! (`results/<sha256>.<ext>`, `inputs/<sha256>.<ext>`); an object is
//! written whole or not at all, so a reader never sees half a file.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
pub use object_store::GetRange;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, Signer};
use object_store::{
    ClientConfigKey, GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt,
    RetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::{ReaderStream, StreamReader};

/// How an `s3://` storage is reached, beside the standard AWS environment
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), which these override. No secret
/// here: credentials come from the environment only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// An S3-compatible server's URL (MinIO, R2, …); AWS's when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `bucket` in the path rather than the host name, as most
    /// S3-compatible servers want. Default true.
    pub path_style: Option<bool>,
    /// Allow an `http://` endpoint (a server on the same host or network).
    pub allow_http: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such object")]
    NotFound,
    #[error("bad storage key {0:?}")]
    BadKey(String),
    /// The storage did not answer as it should: worth trying again.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage configuration: {0}")]
    Config(String),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            // Tried again like an outage, but said loudly: an operator must act.
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => {
                tracing::error!(error = %e, "storage refuses gengate's credentials");
                StorageError::Unavailable(e.to_string())
            }
            other => StorageError::Unavailable(other.to_string()),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

/// An attempt at storage gives up after this, so that a task's lease (which
/// the caller holds) outlives it and the task is tried again later.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// Each request to S3 at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks a local file is served in.
const FILE_CHUNK: usize = 256 << 10;

/// What one kind of object takes in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindUsage {
    pub kind: String,
    pub objects: u64,
    pub bytes: u64,
}

/// What [`MediaStore::copy_to`] did with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// Copied, this many bytes.
    Copied(u64),
    /// Already there.
    Present,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub copied: u64,
    pub bytes: u64,
    pub present: u64,
}

#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    /// The directory of a `file://` storage.
    local: Option<PathBuf>,
    /// An S3 storage, which can presign URLs, and the prefix of its keys.
    s3: Option<(Arc<AmazonS3>, Option<ObjectPath>)>,
    url: String,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("url", &self.url)
            .finish()
    }
}

impl MediaStore {
    /// The storage `url` names: `file:///abs/dir` or `s3://bucket[/prefix]`.
    pub fn open(url: &str, s3: &S3Settings) -> Result<MediaStore, StorageError> {
        if let Some(dir) = url.strip_prefix("file://") {
            return MediaStore::local(dir);
        }
        if url.starts_with("s3://") {
            return MediaStore::s3(url, s3);
        }
        Err(StorageError::Config(format!(
            "storage_url {url:?}: expected file:///dir or s3://bucket/prefix"
        )))
    }

    /// A local directory, made if missing.
    pub fn local(dir: impl Into<PathBuf>) -> Result<MediaStore, StorageError> {
        let dir: PathBuf = dir.into();
        if !dir.is_absolute() {
            return Err(StorageError::Config(format!(
                "{}: a file:// storage needs an absolute directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::Config(format!("{}: {e}", dir.display())))?;
        // fsync: each file and its directory are on disk before it is
        // published under its name, so a crash never leaves half a file
        // where a task says its result is.
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StorageError::Config(format!("{}: {e}", dir.display())))?
            .with_fsync(true);
        Ok(MediaStore {
            store: Arc::new(fs),
            url: format!("file://{}", dir.display()),
            local: Some(dir),
            s3: None,
        })
    }

    fn s3(url: &str, settings: &S3Settings) -> Result<MediaStore, StorageError> {
        // object_store's HTTP client takes the process's TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Client options one by one: setting them whole would drop those
        // the environment gave (AWS_ALLOW_HTTP).
        let timeout = format!("{}s", REQUEST_TIMEOUT.as_secs());
        let mut b = AmazonS3Builder::from_env()
            .with_url(url)
            .with_virtual_hosted_style_request(!settings.path_style.unwrap_or(true))
            .with_retry(RetryConfig {
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            })
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout);
        if let Some(endpoint) = &settings.endpoint {
            // Both keys: object_store prefers the S3 one, which the
            // environment (AWS_ENDPOINT_URL_S3) may set.
            b = b
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let Some(region) = &settings.region {
            b = b.with_region(region);
        }
        if let Some(allow) = settings.allow_http {
            b = b.with_allow_http(allow);
        }
        let s3 = Arc::new(
            b.build()
                .map_err(|e| StorageError::Config(format!("storage_url {url:?}: {e}")))?,
        );
        // The bucket comes from the URL; the path after it prefixes every key.
        let prefix = url
            .trim_start_matches("s3://")
            .split_once('/')
            .map(|(_, p)| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(ObjectPath::parse)
            .transpose()
            .map_err(|e| StorageError::Config(format!("storage_url {url:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> = match &prefix {
            Some(p) => Arc::new(PrefixStore::new(s3.clone(), p.clone())),
            None => s3.clone(),
        };
        Ok(MediaStore {
            store,
            local: None,
            s3: Some((s3, prefix)),
            url: url.to_string(),
        })
    }

    /// The storage's URL, for logs (it holds no secret).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the two are one storage, or one holds the other (a directory
    /// inside the other's): copying between them would copy into itself.
    pub fn overlaps(&self, other: &MediaStore) -> bool {
        match (&self.local, &other.local) {
            (Some(a), Some(b)) => {
                let real = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
                let (a, b) = (real(a), real(b));
                a.starts_with(&b) || b.starts_with(&a)
            }
            _ => {
                let bucket_path = |u: &str| u.trim_end_matches('/').to_string() + "/";
                let (a, b) = (bucket_path(&self.url), bucket_path(&other.url));
                a.starts_with(&b) || b.starts_with(&a)
            }
        }
    }

    pub fn can_presign(&self) -> bool {
        self.s3.is_some()
    }

    /// The object path of `key`, refusing keys that are not plain relative paths.
    fn path(key: &str) -> Result<ObjectPath, StorageError> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StorageError::BadKey(key.into()));
        }
        ObjectPath::parse(key).map_err(|_| StorageError::BadKey(key.into()))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&MediaStore::path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `bytes` under a content-addressed `key`: a key that exists
    /// already holds these very bytes, so it is not written again.
    pub async fn put_once(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        if self.exists(key).await? {
            return Ok(());
        }
        let (path, size) = (MediaStore::path(key)?, bytes.len() as u64);
        self.store.put(&path, bytes.into()).await?;
        stored(size);
        Ok(())
    }

    /// [`put_once`](Self::put_once) of a local file's content, streamed
    /// (multipart for large files): no whole video in memory.
    pub async fn put_file_once(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        if self.exists(key).await? {
            return Ok(());
        }
        self.upload(key, tokio::fs::File::open(file).await?).await
    }

    /// Write what `from` reads under `key`, whole or not at all.
    async fn upload(
        &self,
        key: &str,
        mut from: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<(), StorageError> {
        let mut to = BufWriter::new(self.store.clone(), MediaStore::path(key)?);
        let size = match tokio::io::copy(&mut from, &mut to).await {
            Ok(size) => size,
            Err(e) => {
                let _ = to.abort().await;
                return Err(e.into());
            }
        };
        to.shutdown().await?;
        stored(size);
        Ok(())
    }

    /// Objects and bytes stored, by kind (the first part of the key:
    /// `results`, `inputs`), in key order.
    pub async fn usage(&self) -> Result<Vec<KindUsage>, StorageError> {
        let mut by_kind = std::collections::BTreeMap::<String, KindUsage>::new();
        let mut listing = self.store.list(None);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let kind = meta.location.parts().next().map(|p| p.as_ref().to_string());
            let kind = kind.unwrap_or_default();
            let entry = by_kind.entry(kind.clone()).or_insert(KindUsage {
                kind,
                objects: 0,
                bytes: 0,
            });
            entry.objects += 1;
            entry.bytes += meta.size;
        }
        Ok(by_kind.into_values().collect())
    }

    /// Copy every object here that `to` lacks (keys name content, so one
    /// present is the same), each streamed; `each` hears of every object.
    pub async fn copy_to(
        &self,
        to: &MediaStore,
        mut each: impl FnMut(&str, Copied),
    ) -> Result<CopyReport, StorageError> {
        let mut report = CopyReport::default();
        let mut listing = self.store.list(None);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let key = meta.location.to_string();
            if to.exists(&key).await? {
                report.present += 1;
                each(&key, Copied::Present);
                continue;
            }
            let body = MediaStore::body(self.store.get(&meta.location).await?);
            let reader = StreamReader::new(body.map_err(std::io::Error::other));
            to.upload(&key, reader).await?;
            report.copied += 1;
            report.bytes += meta.size;
            each(&key, Copied::Copied(meta.size));
        }
        Ok(report)
    }

    /// Delete `key`; one already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&MediaStore::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole object, in memory: for inputs and frames, which are small.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        Ok(self
            .store
            .get(&MediaStore::path(key)?)
            .await?
            .bytes()
            .await?)
    }

    /// An object or a range of it (`head`: its description only), to stream.
    pub async fn read(
        &self,
        key: &str,
        range: Option<GetRange>,
        head: bool,
    ) -> Result<GetResult, StorageError> {
        let options = GetOptions {
            range,
            head,
            ..GetOptions::default()
        };
        Ok(self
            .store
            .get_opts(&MediaStore::path(key)?, options)
            .await?)
    }

    /// The bytes of what [`read`](Self::read) found, as a stream. A local
    /// file is read in 256 KiB chunks: object_store's own stream reads 8 KiB
    /// at a time, each a trip to the blocking pool.
    pub fn body(found: GetResult) -> BoxStream<'static, Result<Bytes, StorageError>> {
        let range = found.range.clone();
        match found.payload {
            GetResultPayload::File(file, _) => {
                let read = async move {
                    let mut file = tokio::fs::File::from_std(file);
                    file.seek(std::io::SeekFrom::Start(range.start)).await?;
                    Ok::<_, std::io::Error>(ReaderStream::with_capacity(
                        file.take(range.end - range.start),
                        FILE_CHUNK,
                    ))
                };
                futures::stream::once(read)
                    .try_flatten()
                    .map_err(StorageError::from)
                    .boxed()
            }
            GetResultPayload::Stream(s) => s.map_err(StorageError::from).boxed(),
        }
    }

    /// Where presigned URLs point (`scheme://host[:port]`), for a page that
    /// loads media from there; `None` when the storage cannot sign.
    pub async fn presign_origin(&self) -> Option<String> {
        let signed = self
            .presign("results/origin", Duration::from_secs(60))
            .await?
            .ok()?;
        Some(
            url::Url::parse(&signed)
                .ok()?
                .origin()
                .ascii_serialization(),
        )
    }

    /// A URL that GETs `key` straight from the storage until `ttl` passes;
    /// `None` when the storage cannot sign one (a local directory).
    pub async fn presign(&self, key: &str, ttl: Duration) -> Option<Result<String, StorageError>> {
        let (s3, prefix) = self.s3.as_ref()?;
        let path = match MediaStore::path(key) {
            Ok(p) => match prefix {
                Some(prefix) => prefix.parts().chain(p.parts()).collect(),
                None => p,
            },
            Err(e) => return Some(Err(e)),
        };
        Some(
            s3.signed_url(Method::GET, &path, ttl)
                .await
                .map(String::from)
                .map_err(StorageError::from),
        )
    }
}

fn stored(bytes: u64) {
    metrics::counter!("gengate_storage_objects_written_total").increment(1);
    metrics::counter!("gengate_storage_bytes_written_total").increment(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let media = MediaStore::local(dir.path()).unwrap();
        media
            .put_once("a/b/c.txt", Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert_eq!(media.get("a/b/c.txt").await.unwrap(), &b"hi"[..]);
        assert!(std::fs::read(dir.path().join("a/b/c.txt")).is_ok());
        for bad in ["../x", "/etc/x", "a/../../b", ""] {
            assert!(
                matches!(
                    media.put_once(bad, Bytes::new()).await,
                    Err(StorageError::BadKey(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            media.get("nope").await,
            Err(StorageError::NotFound)
        ));
        assert!(
            media
                .presign("a/b/c.txt", Duration::from_secs(1))
                .await
                .is_none()
        );
        let relative = MediaStore::open("file://relative/dir", &S3Settings::default());
        assert!(matches!(relative, Err(StorageError::Config(_))));
    }

    #[tokio::test]
    async fn usage_counts_by_kind_and_copy_moves_what_is_missing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (
            MediaStore::local(a.path()).unwrap(),
            MediaStore::local(b.path()).unwrap(),
        );
        for (key, bytes) in [
            ("results/x.mp4", &b"12345"[..]),
            ("results/y.jpg", b"12"),
            ("inputs/z.png", b"1"),
        ] {
            from.put_once(key, Bytes::copy_from_slice(bytes))
                .await
                .unwrap();
        }
        to.put_once("results/y.jpg", Bytes::from_static(b"12"))
            .await
            .unwrap();
        let usage = from.usage().await.unwrap();
        let seen: Vec<_> = usage
            .iter()
            .map(|u| (u.kind.as_str(), u.objects, u.bytes))
            .collect();
        assert_eq!(seen, [("inputs", 1, 1), ("results", 2, 7)]);

        let mut heard = Vec::new();
        let report = from
            .copy_to(&to, |key, what| heard.push((key.to_string(), what)))
            .await
            .unwrap();
        assert_eq!(
            report,
            CopyReport {
                copied: 2,
                bytes: 6,
                present: 1
            }
        );
        assert_eq!(heard.len(), 3);
        assert_eq!(to.get("results/x.mp4").await.unwrap(), &b"12345"[..]);
        assert_eq!(to.usage().await.unwrap(), usage);
        // Again: nothing left to copy.
        let again = from.copy_to(&to, |_, _| {}).await.unwrap();
        assert_eq!(
            again,
            CopyReport {
                copied: 0,
                bytes: 0,
                present: 3
            }
        );
    }
}
