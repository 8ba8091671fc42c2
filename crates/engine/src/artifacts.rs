//! Results into storage gengate controls: each output is copied (downloaded
//! if the upstream gave a URL), probed for its real dimensions, duration and
//! palette, and stored under the hash of its bytes. Content-addressed keys
//! make result URLs immutable (cacheable forever) and store a result that
//! many tasks share (the deterministic sandbox, retries) once.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gengate_core::{Artifact, ArtifactRole, ImageFormat};
use gengate_providers::media;
use gengate_providers::{Output, OutputData};
use gengate_store::TaskStore;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::fetch::{Capped, FetchError};
use crate::storage::{MediaStore, StorageError};
use crate::sweeper::WRITE_HOLD;

/// Storage prefix of results; everything under it is served at `/files/`.
pub const RESULTS_PREFIX: &str = "results";

/// Results larger than this unless configured (`max_result_mb`).
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 2 << 30;
/// Images are decoded whole to be checked; larger ones are refused.
const MAX_IMAGE_RESULT_BYTES: u64 = 128 << 20;
/// Time allowed to download one result, however large.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Time a download may go without a byte arriving.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The upstream's result is not what it should be; the task fails.
    #[error("{0}")]
    BadResult(String),
    /// Storage or network trouble on our side; try again.
    #[error("{0}")]
    Transient(String),
}

/// What probing a file found out.
#[derive(Debug, Clone)]
struct Facts {
    content_type: &'static str,
    width: u32,
    height: u32,
    duration: Option<f64>,
    palette: Option<Vec<u8>>,
}

/// Entries kept of files already probed, by content hash.
const KNOWN_FILES: usize = 4096;

type Known = Arc<Mutex<HashMap<(String, ArtifactRole), Facts>>>;

/// When a hold ends, by key, of files this process held and stored.
type Stored = Mutex<HashMap<String, gengate_core::Millis>>;

/// Shared results lately hashed and probed, by where their bytes lie (the
/// sandbox hands every task of a scene the same bytes from its cache), with
/// the role probed as, the hash and the facts. Each entry holds its bytes,
/// so no other bytes can lie there while it is kept.
type Hashed = Mutex<VecDeque<(Bytes, ArtifactRole, String, Facts)>>;

/// Entries kept of shared results hashed.
const HASHED_SHARED: usize = 16;

/// Copies results into storage. A result the upstream gives by URL streams
/// to a local spool file (hashed on the way, capped in size), is probed
/// there and streamed up to storage: no whole video is ever in memory.
/// Remembers what it found in files it has seen, so identical results (the
/// sandbox's, retries) are decoded once.
pub struct Mirror {
    store: Arc<dyn TaskStore>,
    media: MediaStore,
    spool: PathBuf,
    max_bytes: u64,
    http: reqwest::Client,
    /// For downloads that carry an upstream's key: redirects followed by
    /// hand, the key kept to the upstream's own origin.
    keyed: reqwest::Client,
    known: Known,
    hashed: Hashed,
    /// A file in here, held for over half a hold more, is stored and stays
    /// so: it needs neither a new hold nor a write (a hold only grows, and
    /// only a lapsed one is swept). Identical results (the sandbox's,
    /// retries) then cost no store write.
    stored: Stored,
}

/// A downloaded result in the spool, removed when dropped.
struct Spooled {
    file: tempfile::TempPath,
    sha256: String,
    size: u64,
    ext: &'static str,
}

impl Mirror {
    /// Results come from the channels' upstreams, which the operator chose
    /// (self-hosted ones on private networks included): no address policy here.
    pub fn new(
        store: Arc<dyn TaskStore>,
        media: MediaStore,
        spool: PathBuf,
        max_bytes: u64,
    ) -> Mirror {
        clear_spool(&spool);
        let client = |redirects| {
            reqwest::Client::builder()
                .timeout(DOWNLOAD_TIMEOUT)
                .read_timeout(STALL_TIMEOUT)
                .redirect(redirects)
                .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default()
        };
        let http = client(reqwest::redirect::Policy::default());
        let keyed = client(reqwest::redirect::Policy::none());
        Mirror {
            store,
            media,
            spool,
            max_bytes,
            http,
            keyed,
            known: Arc::default(),
            hashed: Hashed::default(),
            stored: Stored::default(),
        }
    }

    /// The hash and facts of `bytes` when they are shared bytes hashed
    /// lately and probed as `role`: neither is worked out again.
    fn hashed_before(&self, bytes: &Bytes, role: ArtifactRole) -> Option<(String, Facts)> {
        let hashed = self.hashed.lock().ok()?;
        let (_, _, sha256, facts) = hashed.iter().find(|(b, r, ..)| {
            b.as_ptr() == bytes.as_ptr() && b.len() == bytes.len() && *r == role
        })?;
        Some((sha256.clone(), facts.clone()))
    }

    /// Remember what `bytes` are if someone else holds them too (a cache):
    /// bytes made for this result alone are never seen again.
    fn remember_hash(&self, bytes: &Bytes, role: ArtifactRole, (sha256, facts): &(String, Facts)) {
        if bytes.is_unique() || bytes.is_empty() {
            return;
        }
        if let Ok(mut hashed) = self.hashed.lock() {
            if hashed.len() >= HASHED_SHARED {
                hashed.pop_front();
            }
            hashed.push_back((bytes.clone(), role, sha256.clone(), facts.clone()));
        }
    }

    pub async fn store(&self, outputs: Vec<Output>) -> Result<Vec<Artifact>, MirrorError> {
        let mut artifacts = Vec::with_capacity(outputs.len());
        for out in outputs {
            let (role, known) = (out.role, self.known.clone());
            let (key, facts) = match out.data {
                OutputData::Inline { bytes, extension } => {
                    if bytes.len() as u64 > self.max_bytes {
                        return Err(self.too_large());
                    }
                    let (sha256, facts) = match self.hashed_before(&bytes, role) {
                        Some(seen) => seen,
                        None => {
                            let for_probe = bytes.clone();
                            let found =
                                blocking(move || examine(role, &for_probe, &known)).await??;
                            self.remember_hash(&bytes, role, &found);
                            found
                        }
                    };
                    let key = format!("{RESULTS_PREFIX}/{sha256}.{extension}");
                    let size = bytes.len() as u64;
                    self.keep(&key, size, self.media.put_once(&key, bytes))
                        .await?;
                    (key, facts)
                }
                OutputData::Url(_) | OutputData::Keyed { .. } => {
                    let spooled = self.download(&out.data).await?;
                    let key = format!("{RESULTS_PREFIX}/{}.{}", spooled.sha256, spooled.ext);
                    let (path, sha256, size) = (
                        spooled.file.to_path_buf(),
                        spooled.sha256.clone(),
                        spooled.size,
                    );
                    let facts =
                        blocking(move || examine_file(role, &path, size, sha256, &known)).await??;
                    self.keep(&key, size, self.media.put_file_once(&key, &spooled.file))
                        .await?;
                    (key, facts)
                }
            };
            artifacts.push(Artifact {
                role,
                index: out.index,
                key,
                content_type: facts.content_type.into(),
                width: facts.width,
                height: facts.height,
                duration_secs: facts.duration,
                palette: facts.palette,
            });
        }
        Ok(artifacts)
    }

    /// Store `key` by `put`, kept from the sweeper while it is written and
    /// its task completes (which then keeps it as long as the task's
    /// results); nothing to do for a file stored here lately.
    async fn keep(
        &self,
        key: &str,
        size: u64,
        put: impl Future<Output = Result<(), StorageError>>,
    ) -> Result<(), MirrorError> {
        let now = crate::now_ms();
        let hold = crate::config::ms(WRITE_HOLD);
        let lately = self.stored.lock().ok().and_then(|s| s.get(key).copied());
        if lately.is_some_and(|until| until - now > hold / 2) {
            return Ok(());
        }
        let until = now + hold;
        self.hold(key, size, until).await?;
        put.await.map_err(|e| storing(key, e))?;
        if let Ok(mut stored) = self.stored.lock() {
            if stored.len() >= KNOWN_FILES {
                stored.clear();
            }
            stored.insert(key.to_string(), until);
        }
        Ok(())
    }

    async fn hold(
        &self,
        key: &str,
        size: u64,
        until: gengate_core::Millis,
    ) -> Result<(), MirrorError> {
        match self.store.keep_file(key, size, Some(until)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MirrorError::Transient(format!(
                "{key} is being deleted (retention); storing it again shortly"
            ))),
            Err(e) => Err(MirrorError::Transient(format!("recording {key}: {e}"))),
        }
    }

    fn too_large(&self) -> MirrorError {
        MirrorError::BadResult(format!(
            "the result is larger than the {} MB limit (max_result_mb)",
            self.max_bytes >> 20
        ))
    }

    /// Stream a result given by URL into a spool file, hashing it on the way.
    async fn download(&self, data: &OutputData) -> Result<Spooled, MirrorError> {
        let failed = |e: FetchError| match e {
            FetchError::TooLarge(_) => self.too_large(),
            e if e.is_transient() => MirrorError::Transient(format!("downloading the result: {e}")),
            e => MirrorError::BadResult(format!("downloading the result: {e}")),
        };
        let spool = |e: std::io::Error| MirrorError::Transient(format!("spooling the result: {e}"));
        let mut body = match data {
            OutputData::Keyed { url, header, value } => {
                let header = (*header, value.as_str());
                Capped::open_keyed(&self.keyed, url, header, self.max_bytes, DOWNLOAD_TIMEOUT).await
            }
            OutputData::Url(url) => {
                Capped::open(&self.http, url, self.max_bytes, DOWNLOAD_TIMEOUT).await
            }
            OutputData::Inline { .. } => {
                return Err(MirrorError::BadResult(
                    "an inline result has nothing to download".into(),
                ));
            }
        }
        .map_err(failed)?;
        tokio::fs::create_dir_all(&self.spool)
            .await
            .map_err(spool)?;
        let (file, path) = tempfile::NamedTempFile::new_in(&self.spool)
            .map_err(spool)?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let (mut hasher, mut head, mut size) = (Sha256::new(), Vec::new(), 0u64);
        while let Some(chunk) = body.chunk().await.map_err(failed)? {
            hasher.update(&chunk);
            if head.len() < 16 {
                head.extend_from_slice(&chunk[..chunk.len().min(16 - head.len())]);
            }
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(spool)?;
        }
        file.flush().await.map_err(spool)?;
        Ok(Spooled {
            file: path,
            sha256: hex::encode(hasher.finalize()),
            size,
            ext: ImageFormat::sniff(&head).map_or("mp4", ImageFormat::extension),
        })
    }
}

/// Remove what a killed process left in the spool: files older than any
/// download may run (another process sharing the data directory may be
/// writing the younger ones).
fn clear_spool(spool: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    let stale = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > 2 * DOWNLOAD_TIMEOUT)
    };
    for entry in entries.flatten().filter(stale) {
        let _ = std::fs::remove_file(entry.path());
    }
}

fn storing(key: &str, e: StorageError) -> MirrorError {
    metrics::counter!("gengate_storage_errors_total", "op" => "put").increment(1);
    tracing::warn!(key, error = %e, "storing a result failed; the task will try again");
    MirrorError::Transient(format!("storing {key}: {e}"))
}

/// Run CPU- or disk-bound work on the blocking pool. A probe that panics
/// would panic again on the same bytes: the result is bad, not our side.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MirrorError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            MirrorError::BadResult("unreadable result (its probe failed)".into())
        } else {
            MirrorError::Transient(format!("probe: {e}"))
        }
    })
}

/// What a spooled file is, reading no more of it than needed: a video's
/// boxes but not its frames; an image whole (it is decoded to be checked).
fn examine_file(
    role: ArtifactRole,
    path: &std::path::Path,
    size: u64,
    sha256: String,
    known: &Mutex<HashMap<(String, ArtifactRole), Facts>>,
) -> Result<Facts, MirrorError> {
    let key = (sha256, role);
    if let Some(facts) = known.lock().ok().and_then(|k| k.get(&key).cloned()) {
        return Ok(facts);
    }
    let spool =
        |e: std::io::Error| MirrorError::Transient(format!("reading the spooled result: {e}"));
    let facts = if role == ArtifactRole::Video {
        let file = std::io::BufReader::new(std::fs::File::open(path).map_err(spool)?);
        video_facts(media::probe_mp4_reader(file, size), role)?
    } else {
        if size > MAX_IMAGE_RESULT_BYTES {
            return Err(MirrorError::BadResult(format!(
                "the {role:?} result is larger than {} MB",
                MAX_IMAGE_RESULT_BYTES >> 20
            )));
        }
        probe(role, &std::fs::read(path).map_err(spool)?)?
    };
    remember(known, key, &facts);
    Ok(facts)
}

fn remember(
    known: &Mutex<HashMap<(String, ArtifactRole), Facts>>,
    key: (String, ArtifactRole),
    facts: &Facts,
) {
    if let Ok(mut k) = known.lock() {
        if k.len() >= KNOWN_FILES {
            k.clear();
        }
        k.insert(key, facts.clone());
    }
}

/// Hash a result and learn what it is. CPU-bound: runs on the blocking pool.
fn examine(
    role: ArtifactRole,
    bytes: &[u8],
    known: &Mutex<HashMap<(String, ArtifactRole), Facts>>,
) -> Result<(String, Facts), MirrorError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let key = (sha256, role);
    if let Some(facts) = known.lock().ok().and_then(|k| k.get(&key).cloned()) {
        return Ok((key.0, facts));
    }
    let facts = probe(role, bytes)?;
    remember(known, key.clone(), &facts);
    Ok((key.0, facts))
}

/// Read what the file really is; never trust the upstream's word for it.
fn probe(role: ArtifactRole, bytes: &[u8]) -> Result<Facts, MirrorError> {
    let bad =
        |e: media::MediaError| MirrorError::BadResult(format!("unreadable {role:?} result: {e}"));
    if role == ArtifactRole::Video {
        return video_facts(media::probe_mp4(bytes), role);
    }
    let info = media::probe_image(bytes).map_err(bad)?;
    let palette = if role == ArtifactRole::Thumbnail {
        Some(media::palette_grid(bytes).map_err(bad)?.to_vec())
    } else {
        None
    };
    Ok(Facts {
        content_type: info.format.mime_type(),
        width: info.width,
        height: info.height,
        duration: None,
        palette,
    })
}

fn video_facts(
    probed: Result<media::VideoInfo, media::MediaError>,
    role: ArtifactRole,
) -> Result<Facts, MirrorError> {
    let info =
        probed.map_err(|e| MirrorError::BadResult(format!("unreadable {role:?} result: {e}")))?;
    Ok(Facts {
        content_type: "video/mp4",
        width: info.width,
        height: info.height,
        duration: Some(info.duration_secs),
        palette: None,
    })
}

#[cfg(test)]
mod tests {
    use gengate_testkit::{ImageHost, RED_PNG};

    use super::*;

    async fn store_in(dir: &std::path::Path) -> Arc<dyn TaskStore> {
        let url = format!("sqlite://{}", dir.join("gengate.db").display());
        gengate_store::open(&url, true).await.unwrap()
    }

    async fn mirror(max_bytes: u64) -> (Mirror, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let media = MediaStore::local(dir.path().join("media")).unwrap();
        let store = store_in(dir.path()).await;
        let spool = dir.path().join("spool");
        (Mirror::new(store, media, spool, max_bytes), dir)
    }

    fn output(data: OutputData) -> Vec<Output> {
        vec![Output {
            role: ArtifactRole::Image,
            index: 0,
            data,
        }]
    }

    fn files_in(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[tokio::test]
    async fn a_downloaded_result_streams_through_the_spool_into_storage() {
        let host = ImageHost::start().await;
        let (mirror, dir) = mirror(1 << 20).await;
        let url = OutputData::Url(host.url("/red.png"));
        let stored = mirror.store(output(url)).await.unwrap();
        let sha = hex::encode(Sha256::digest(RED_PNG));
        assert_eq!(stored[0].key, format!("results/{sha}.png"));
        assert_eq!((stored[0].width, stored[0].height), (8, 8));
        let on_disk = std::fs::read(dir.path().join("media").join(&stored[0].key)).unwrap();
        assert_eq!(on_disk, RED_PNG);
        assert_eq!(
            files_in(&dir.path().join("spool")),
            0,
            "the spool file is gone"
        );
    }

    #[tokio::test]
    async fn a_new_mirror_clears_what_a_killed_process_left_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let (old, young) = (spool.join(".tmpOLD"), spool.join(".tmpYOUNG"));
        std::fs::write(&old, b"left behind").unwrap();
        std::fs::write(&young, b"being written").unwrap();
        let long_ago = std::time::SystemTime::now() - 3 * DOWNLOAD_TIMEOUT;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let media = MediaStore::local(dir.path().join("media")).unwrap();
        let _mirror = Mirror::new(store_in(dir.path()).await, media, spool, 1 << 20);
        assert!(!old.exists());
        assert!(young.exists());
    }

    #[tokio::test]
    async fn a_result_over_the_limit_is_refused_by_name_and_not_stored() {
        let host = ImageHost::start().await;
        let (mirror, dir) = mirror(1 << 20).await;
        // 11 MB, no Content-Length trusted: refused while streaming.
        let url = OutputData::Url(host.url("/huge.png"));
        match mirror.store(output(url)).await {
            Err(MirrorError::BadResult(why)) => assert_eq!(
                why,
                "the result is larger than the 1 MB limit (max_result_mb)"
            ),
            other => panic!("{other:?}"),
        }
        let inline = OutputData::Inline {
            bytes: Bytes::from(vec![0u8; (1 << 20) + 1]),
            extension: "png",
        };
        assert!(matches!(
            mirror.store(output(inline)).await,
            Err(MirrorError::BadResult(_))
        ));
        assert_eq!(files_in(&dir.path().join("media/results")), 0);
        assert_eq!(files_in(&dir.path().join("spool")), 0);
    }

    /// One red PNG, given inline.
    fn red_png() -> Vec<Output> {
        output(OutputData::Inline {
            bytes: Bytes::from_static(RED_PNG),
            extension: "png",
        })
    }

    /// A result whose file a sweep is deleting waits (a transient error)
    /// rather than point at a file about to vanish; once the sweep has
    /// forgotten it, it is stored again and held from the next sweep.
    #[tokio::test]
    async fn a_result_being_swept_waits_then_is_stored_again() {
        let (mirror, dir) = mirror(1 << 20).await;
        let key = mirror.store(red_png()).await.unwrap()[0].key.clone();
        let held = crate::now_ms() + 1000;
        let sweep = mirror.store.doom_files(held, 10).await.unwrap();
        assert!(sweep.is_empty(), "held while its task completes: {sweep:?}");
        let past_hold = crate::now_ms() + crate::config::ms(WRITE_HOLD) + 1000;
        let sweep = mirror.store.doom_files(past_hold, 10).await.unwrap();
        assert_eq!(sweep[0].key, key);
        assert_eq!(sweep[0].size, RED_PNG.len() as u64);
        // The sweep's clock is past the hold: so, then, is half of it here.
        mirror.stored.lock().unwrap().clear();
        match mirror.store(red_png()).await {
            Err(MirrorError::Transient(why)) => assert!(why.contains("being deleted"), "{why}"),
            other => panic!("{other:?}"),
        }
        mirror.media.delete(&key).await.unwrap();
        mirror
            .store
            .forget_files(std::slice::from_ref(&key))
            .await
            .unwrap();
        assert_eq!(mirror.store(red_png()).await.unwrap()[0].key, key);
        assert!(dir.path().join("media").join(&key).exists());
        let sweep = mirror.store.doom_files(held, 10).await.unwrap();
        assert!(sweep.is_empty(), "held again: {sweep:?}");
    }

    /// The same result again, while the hold its first copy took has over
    /// half to run: no new hold is written (nor the file again).
    #[tokio::test]
    async fn a_result_stored_lately_is_not_held_again() {
        let (mirror, _dir) = mirror(1 << 20).await;
        let key = mirror.store(red_png()).await.unwrap()[0].key.clone();
        let first_held_by = crate::now_ms() + crate::config::ms(WRITE_HOLD);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(mirror.store(red_png()).await.unwrap()[0].key, key);
        // Held as the first store left it: a second hold would run 20 ms longer.
        let totals = mirror.store.file_totals(first_held_by + 1).await.unwrap();
        assert_eq!((totals.files, totals.expired_files), (1, 1));
    }

    /// Bytes shared with a cache (static here) are hashed once and known
    /// by where they lie after; bytes made for one result alone are hashed
    /// every time and never kept. Either way the same content gets the same
    /// key and facts.
    #[tokio::test]
    async fn shared_result_bytes_are_hashed_once() {
        let (mirror, _dir) = mirror(1 << 20).await;
        let shared = mirror.store(red_png()).await.unwrap();
        assert_eq!(mirror.hashed.lock().unwrap().len(), 1);
        assert_eq!(mirror.store(red_png()).await.unwrap(), shared);
        let own = output(OutputData::Inline {
            bytes: Bytes::from(RED_PNG.to_vec()),
            extension: "png",
        });
        assert_eq!(mirror.store(own).await.unwrap(), shared);
        assert_eq!(mirror.hashed.lock().unwrap().len(), 1);
        assert_eq!((shared[0].width, shared[0].height), (8, 8));
        // The shared bytes' key comes from their entry, not from hashing
        // them again: an entry altered here shows through.
        let marked = "0".repeat(64);
        mirror.hashed.lock().unwrap()[0].2 = marked.clone();
        let again = mirror.store(red_png()).await.unwrap();
        assert_eq!(again[0].key, format!("{RESULTS_PREFIX}/{marked}.png"));
    }
}
