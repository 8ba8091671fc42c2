//! Results into storage gengate controls: each output is copied (downloaded
//! if the upstream gave a URL), probed for its real dimensions, duration and
//! palette, and stored under the hash of its bytes. Content-addressed keys
//! make result URLs immutable (cacheable forever) and store a result that
//! many tasks share (the deterministic sandbox, retries) once.

use std::time::Duration;

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

pub async fn mirror(
    outputs: Vec<Output>,
    files: &FileStore,
    http: &reqwest::Client,
) -> Result<Vec<Artifact>, MirrorError> {
    let mut artifacts = Vec::with_capacity(outputs.len());
    for out in outputs {
        let (bytes, ext) = match out.data {
            OutputData::Inline { bytes, extension } => (bytes.to_vec(), extension),
            OutputData::Url(url) => download(&url, http).await?,
        };
        let probed = tokio::task::spawn_blocking(move || probe(out.role, bytes))
            .await
            .map_err(|e| MirrorError::Transient(format!("probe: {e}")))??;
        let hash = hex::encode(Sha256::digest(&probed.bytes));
        let key = format!("{RESULTS_PREFIX}/{hash}.{ext}");
        files
            .put_once(&key, &probed.bytes)
            .await
            .map_err(|e| MirrorError::Transient(format!("storing {key}: {e}")))?;
        artifacts.push(Artifact {
            role: out.role,
            index: out.index,
            key,
            content_type: probed.content_type.into(),
            width: probed.width,
            height: probed.height,
            duration_secs: probed.duration,
            palette: probed.palette,
        });
    }
    Ok(artifacts)
}

struct Probed {
    bytes: Vec<u8>,
    content_type: &'static str,
    width: u32,
    height: u32,
    duration: Option<f64>,
    palette: Option<Vec<u8>>,
}

/// Read what the file really is; never trust the upstream's word for it.
fn probe(role: ArtifactRole, bytes: Vec<u8>) -> Result<Probed, MirrorError> {
    let bad =
        |e: media::MediaError| MirrorError::BadResult(format!("unreadable {role:?} result: {e}"));
    if role == ArtifactRole::Video {
        let info = media::probe_mp4(&bytes).map_err(bad)?;
        return Ok(Probed {
            bytes,
            content_type: "video/mp4",
            width: info.width,
            height: info.height,
            duration: Some(info.duration_secs),
            palette: None,
        });
    }
    let info = media::probe_image(&bytes).map_err(bad)?;
    let palette = if role == ArtifactRole::Thumbnail {
        Some(media::palette_grid(&bytes).map_err(bad)?.to_vec())
    } else {
        None
    };
    Ok(Probed {
        content_type: info.format.mime_type(),
        width: info.width,
        height: info.height,
        duration: None,
        palette,
        bytes,
    })
}

async fn download(
    url: &str,
    http: &reqwest::Client,
) -> Result<(Vec<u8>, &'static str), MirrorError> {
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
    Ok((body, ext))
}
