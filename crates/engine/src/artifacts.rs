//! Results into storage gengate controls: each output is copied (downloaded
//! if the upstream gave a URL), probed for its real dimensions, duration and
//! palette, and stored under the hash of its bytes. Content-addressed keys
//! make result URLs immutable (cacheable forever) and store a result that
//! many tasks share (the deterministic sandbox, retries) once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gengate_core::{Artifact, ArtifactRole, ImageFormat};
use gengate_providers::media;
use gengate_providers::{Output, OutputData};
use sha2::{Digest, Sha256};

use crate::fetch::get_capped;
use crate::files::FileStore;

/// Storage prefix of results; everything under it is served at `/files/`.
pub const RESULTS_PREFIX: &str = "results";

/// Results larger than this are refused (a 4K video is well under it).
const MAX_RESULT_BYTES: usize = 1 << 30;
/// Time allowed to copy one result.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Copies results into storage. Remembers what it found in files it has
/// seen, so identical results (the sandbox's, retries) are decoded once.
pub struct Mirror {
    files: FileStore,
    http: reqwest::Client,
    known: Arc<Mutex<HashMap<(String, ArtifactRole), Facts>>>,
}

impl Mirror {
    /// Results come from the channels' upstreams, which the operator chose
    /// (self-hosted ones on private networks included): no address policy here.
    pub fn new(files: FileStore) -> Mirror {
        let http = reqwest::Client::builder()
            .timeout(DOWNLOAD_TIMEOUT)
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Mirror {
            files,
            http,
            known: Arc::default(),
        }
    }

    pub async fn store(&self, outputs: Vec<Output>) -> Result<Vec<Artifact>, MirrorError> {
        let mut artifacts = Vec::with_capacity(outputs.len());
        for out in outputs {
            let (bytes, ext) = match out.data {
                OutputData::Inline { bytes, extension } => (bytes, extension),
                OutputData::Url(url) => download(&url, &self.http).await?,
            };
            let known = self.known.clone();
            let role = out.role;
            let for_probe = bytes.clone();
            let (sha256, facts) =
                tokio::task::spawn_blocking(move || examine(role, &for_probe, &known))
                    .await
                    .map_err(|e| MirrorError::Transient(format!("probe: {e}")))??;
            let key = format!("{RESULTS_PREFIX}/{sha256}.{ext}");
            self.files
                .put_once(&key, &bytes)
                .await
                .map_err(|e| MirrorError::Transient(format!("storing {key}: {e}")))?;
            artifacts.push(Artifact {
                role: out.role,
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
    if let Ok(mut k) = known.lock() {
        if k.len() >= KNOWN_FILES {
            k.clear();
        }
        k.insert(key.clone(), facts.clone());
    }
    Ok((key.0, facts))
}

/// Read what the file really is; never trust the upstream's word for it.
fn probe(role: ArtifactRole, bytes: &[u8]) -> Result<Facts, MirrorError> {
    let bad =
        |e: media::MediaError| MirrorError::BadResult(format!("unreadable {role:?} result: {e}"));
    if role == ArtifactRole::Video {
        let info = media::probe_mp4(bytes).map_err(bad)?;
        return Ok(Facts {
            content_type: "video/mp4",
            width: info.width,
            height: info.height,
            duration: Some(info.duration_secs),
            palette: None,
        });
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

async fn download(url: &str, http: &reqwest::Client) -> Result<(Bytes, &'static str), MirrorError> {
    let body = get_capped(http, url, MAX_RESULT_BYTES, DOWNLOAD_TIMEOUT)
        .await
        .map_err(|e| {
            let msg = format!("downloading the result: {e}");
            if e.is_transient() {
                MirrorError::Transient(msg)
            } else {
                MirrorError::BadResult(msg)
            }
        })?;
    let ext = match ImageFormat::sniff(&body) {
        Some(f) => f.extension(),
        None => "mp4",
    };
    Ok((Bytes::from(body), ext))
}
