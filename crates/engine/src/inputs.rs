//! Input images for a submit: fetched from a client's URL (bounded in size and
//! time, judged jpg/png by content), read from storage, or taken from the
//! parent's last frame for a follow-up.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gengate_core::validate::MAX_IMAGE_BYTES;
use gengate_core::{ArtifactRole, ImageFormat, ImageRole, ImageSource, Task};
use gengate_providers::InputBytes;
use gengate_store::TaskStore;

use crate::files::FileStore;

/// Why a task's inputs could not be had: the task fails with this reason.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The client's input is at fault; retrying will not help.
    #[error("{0}")]
    Bad(String),
    /// Our side failed (disk, database); the task is tried again later.
    #[error("{0}")]
    Transient(String),
}

pub struct InputFetcher {
    pub http: reqwest::Client,
    pub timeout: Duration,
}

impl InputFetcher {
    pub fn new(timeout: Duration) -> InputFetcher {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        InputFetcher { http, timeout }
    }

    /// Everything a submit of `task` needs, in the order its request lists it.
    pub async fn resolve(
        &self,
        task: &Task,
        files: &FileStore,
        store: &dyn TaskStore,
    ) -> Result<Vec<InputBytes>, InputError> {
        let mut out = Vec::new();
        for img in &task.request.images {
            let field = match img.role {
                ImageRole::Reference => "image",
                ImageRole::Start => "image_url",
                ImageRole::End => "image_end_url",
            };
            let (bytes, format) = match &img.source {
                ImageSource::Url { url } => self.fetch(field, url).await?,
                ImageSource::Stored { key, format } => {
                    let bytes = files
                        .get(key)
                        .await
                        .map_err(|e| InputError::Transient(format!("stored input {key}: {e}")))?;
                    (Bytes::from(bytes), *format)
                }
            };
            out.push(InputBytes {
                role: img.role,
                format,
                bytes,
            });
        }
        if let Some(parent_id) = task.request.extend_from {
            let parent = store
                .load_task(parent_id)
                .await
                .map_err(|e| InputError::Transient(e.to_string()))?
                .ok_or_else(|| InputError::Bad(format!("generation {parent_id} is gone")))?;
            if let Some(last) = parent.artifact(ArtifactRole::LastFrame) {
                let bytes = files.get(&last.key).await.map_err(|e| {
                    InputError::Transient(format!("last frame of {parent_id}: {e}"))
                })?;
                out.push(InputBytes {
                    role: ImageRole::Start,
                    format: ImageFormat::Jpeg,
                    bytes: Bytes::from(bytes),
                });
            }
        }
        Ok(out)
    }

    /// GET an image, at most 10 MB and `timeout`, jpg or png by content.
    pub async fn fetch(&self, field: &str, url: &str) -> Result<(Bytes, ImageFormat), InputError> {
        let bad = |why: String| InputError::Bad(format!("{field}: could not fetch {url}: {why}"));
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| bad(describe(&e, self.timeout)))?;
        if !resp.status().is_success() {
            return Err(bad(format!("HTTP {}", resp.status().as_u16())));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_IMAGE_BYTES as u64)
        {
            return Err(bad("image is larger than 10 MB".into()));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad(describe(&e, self.timeout)))?;
            if body.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(bad("image is larger than 10 MB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let format = ImageFormat::sniff(&body).ok_or_else(|| {
            InputError::Bad(format!("{field}: {url} is not a jpg, jpeg or png image"))
        })?;
        Ok((Bytes::from(body), format))
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs())
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.to_string()
    }
}
