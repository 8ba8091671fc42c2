//! Input images for a submit: fetched from a client's URL (bounded in size and
//! time, judged jpg/png by content), read from storage, or taken from the
//! parent's last frame for a follow-up.

use std::time::Duration;

use bytes::Bytes;
use gengate_core::validate::MAX_IMAGE_BYTES;
use gengate_core::{ArtifactRole, ImageFormat, ImageRole, ImageSource, Task};
use gengate_providers::InputBytes;
use gengate_store::TaskStore;

use crate::fetch::get_capped;
use crate::net::AddressPolicy;
use crate::storage::{MediaStore, StorageError};

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

/// What a submit takes besides the task: its images, and for a follow-up
/// the parent's upstream reference.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub images: Vec<InputBytes>,
    pub parent_upstream_ref: Option<String>,
}

pub struct InputFetcher {
    http: reqwest::Client,
    timeout: Duration,
    policy: AddressPolicy,
}

impl InputFetcher {
    pub fn new(timeout: Duration, policy: AddressPolicy) -> InputFetcher {
        InputFetcher {
            http: policy.client(timeout, true),
            timeout,
            policy,
        }
    }

    /// Everything a submit of `task` needs, in the order its request lists it.
    pub async fn resolve(
        &self,
        task: &Task,
        media: &MediaStore,
        store: &dyn TaskStore,
    ) -> Result<Resolved, InputError> {
        let mut out = Resolved::default();
        for img in &task.request.images {
            let field = match img.role {
                ImageRole::Reference => "image",
                ImageRole::Start => "image_url",
                ImageRole::End => "image_end_url",
            };
            let (bytes, format, url) = match &img.source {
                ImageSource::Url { url } => {
                    let (bytes, format) = self.fetch(field, url).await?;
                    (bytes, format, Some(url.clone()))
                }
                ImageSource::Stored { key, format } => {
                    let bytes = media
                        .get(key)
                        .await
                        .map_err(|e| InputError::Transient(format!("stored input {key}: {e}")))?;
                    (bytes, *format, None)
                }
            };
            out.images.push(InputBytes {
                role: img.role,
                format,
                bytes,
                url,
            });
        }
        if let Some(parent_id) = task.request.extend_from {
            let parent = store
                .load_task(parent_id)
                .await
                .map_err(|e| InputError::Transient(e.to_string()))?
                .ok_or_else(|| InputError::Bad(format!("generation {parent_id} is gone")))?;
            if let Some(last) = parent.artifact(ArtifactRole::LastFrame) {
                let bytes = media.get(&last.key).await.map_err(|e| match e {
                    StorageError::NotFound => InputError::Bad(format!(
                        "the last frame of generation {parent_id} is gone (its results expired)"
                    )),
                    e => InputError::Transient(format!("last frame of {parent_id}: {e}")),
                })?;
                out.images.push(InputBytes {
                    role: ImageRole::Start,
                    format: ImageFormat::Jpeg,
                    bytes,
                    url: None,
                });
            }
            out.parent_upstream_ref = parent.upstream_ref;
        }
        Ok(out)
    }

    /// GET an image, at most 10 MB and `timeout`, jpg or png by content.
    pub async fn fetch(&self, field: &str, url: &str) -> Result<(Bytes, ImageFormat), InputError> {
        self.policy
            .check_url(url)
            .await
            .map_err(|e| InputError::Bad(format!("{field}: refused {url}: {e}")))?;
        let body = get_capped(&self.http, url, MAX_IMAGE_BYTES, self.timeout)
            .await
            .map_err(|e| InputError::Bad(format!("{field}: could not fetch {url}: {e}")))?;
        let format = ImageFormat::sniff(&body).ok_or_else(|| {
            InputError::Bad(format!("{field}: {url} is not a jpg, jpeg or png image"))
        })?;
        Ok((Bytes::from(body), format))
    }
}
