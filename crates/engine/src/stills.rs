//! Stills of a stored video, whichever upstream made it: a thumbnail and a
//! spritesheet (WebP, see `gengate_media`), made from the stored MP4 the
//! first time one is asked for and stored beside it, kept as long as the
//! video. Only OpenAI's Videos API asks for them today, so no task pays for
//! them unasked.

use std::time::Duration;

use gengate_core::{ApiError, ArtifactRole, Task, TaskState};
use tokio::io::AsyncWriteExt;

use crate::Engine;
use crate::service::store_error;

/// Which still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Still {
    /// The first frame, at the video's size.
    Thumbnail,
    /// Frames spread over the video, in a grid.
    Spritesheet,
}

impl Still {
    fn name(self) -> &'static str {
        match self {
            Still::Thumbnail => "thumbnail",
            Still::Spritesheet => "spritesheet",
        }
    }
}

/// How long a request waits for its still (a long video decodes for a
/// while; the decode itself runs on, holding its permit, if it is late).
const MAKING: Duration = Duration::from_secs(120);

/// Stills made at once, on this instance: each decodes a whole video.
/// Requests beyond wait; one for a still made meanwhile finds it stored.
static MAKERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The storage key of `task`'s `still`, made and stored if it is not yet.
/// `task` must be a completed video whose results have not expired.
pub async fn still_key(engine: &Engine, task: &Task, still: Still) -> Result<String, ApiError> {
    let video = task
        .artifact(ArtifactRole::Video)
        .filter(|_| task.state == TaskState::Completed)
        .ok_or_else(|| ApiError::NotFound(format!("task {} has no video", task.id)))?;
    let stem = video.key.strip_suffix(".mp4").unwrap_or(&video.key);
    let key = format!("{stem}.{}.webp", still.name());
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(task = %task.id, key, error = %e, "{what}");
        ApiError::Unavailable("the video's stills could not be made now; try again".into())
    };
    let media = engine.media();
    let stored = || async {
        media
            .exists(&key)
            .await
            .map_err(|e| unavailable("reading storage failed", &e))
    };
    if stored().await? {
        return Ok(key);
    }
    let permit = MAKERS
        .acquire()
        .await
        .map_err(|e| unavailable("waiting to make a still failed", &e))?;
    if stored().await? {
        return Ok(key);
    }
    // Recorded before it is written, like every stored file, so the sweep
    // deletes it with the video and never under a writer.
    match engine.store.keep_file(&key, 0, task.keep_until).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::Gone("the video's files are being deleted".into())),
        Err(e) => return Err(store_error(e)),
    }
    let spool = &engine.config().spool_dir;
    let local = async {
        tokio::fs::create_dir_all(spool).await?;
        let (file, path) = tempfile::NamedTempFile::new_in(spool)?.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let found = media
            .read(&video.key, None, false)
            .await
            .map_err(std::io::Error::other)?;
        let mut body = crate::storage::MediaStore::body(found);
        use futures::StreamExt as _;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(std::io::Error::other)?)
                .await?;
        }
        file.flush().await?;
        Ok::<_, std::io::Error>(path)
    }
    .await
    .map_err(|e| unavailable("copying the video to make its stills failed", &e))?;
    let made = tokio::time::timeout(
        MAKING,
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let file = std::fs::File::open(&local)?;
            let size = file.metadata()?.len();
            let reader = std::io::BufReader::new(file);
            Ok::<_, std::io::Error>(match still {
                Still::Thumbnail => gengate_media::thumbnail_webp(reader, size),
                Still::Spritesheet => gengate_media::spritesheet_webp(reader, size),
            })
        }),
    )
    .await;
    let bytes = match made {
        Ok(Ok(Ok(Ok(bytes)))) => bytes,
        // The stored video itself is the trouble (not H.264, say): the
        // request was fine, the still does not exist.
        Ok(Ok(Ok(Err(e)))) => {
            return Err(ApiError::NotFound(format!(
                "no {} can be made of this video: {e}",
                still.name()
            )));
        }
        Ok(Ok(Err(e))) => return Err(unavailable("reading the copied video failed", &e)),
        Ok(Err(e)) => return Err(unavailable("making a still failed", &e)),
        Err(_) => return Err(unavailable("making a still took too long", &"timeout")),
    };
    let size = bytes.len() as u64;
    media
        .put_once(&key, bytes.into())
        .await
        .map_err(|e| unavailable("storing a still failed", &e))?;
    // Its size, now known, for the storage totals.
    if let Err(e) = engine.store.keep_file(&key, size, task.keep_until).await {
        tracing::warn!(key, error = %e, "recording a still's size failed");
    }
    Ok(key)
}
