//! The normalized generation request every dialect parses into and every
//! provider reads from. Stored as JSON with the task.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Image formats gengate accepts as input and produces as output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    /// Judged by content (magic bytes), never by a name or a declared type.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

/// What an input image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// Kling's reference image, weighted by `image_fidelity`.
    Reference,
    /// Luma's `image_url`: the first frame.
    Start,
    /// Luma's `image_end_url`: the last frame.
    End,
}

/// Where an input image is: a URL fetched at dispatch, or already in storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ImageSource {
    Url { url: String },
    Stored { key: String, format: ImageFormat },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputImage {
    pub role: ImageRole,
    pub source: ImageSource,
}

/// Where inputs clients upload are stored (never served), by content hash.
pub const INPUTS_PREFIX: &str = "inputs";

/// An image a client sent inside its request, to be written to storage
/// before its task is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub key: String,
    pub bytes: Vec<u8>,
}

impl InputImage {
    /// An image sent inline (base64 or a data URI), named by its content
    /// hash: the same image is stored once, and a retried request that
    /// carries it again is the same request.
    pub fn inline(role: ImageRole, bytes: Vec<u8>, format: ImageFormat) -> (InputImage, Upload) {
        use sha2::Digest as _;
        let key = format!(
            "{INPUTS_PREFIX}/{}.{}",
            hex::encode(sha2::Sha256::digest(&bytes)),
            format.extension()
        );
        let image = InputImage {
            role,
            source: ImageSource::Stored {
                key: key.clone(),
                format,
            },
        };
        (image, Upload { key, bytes })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub aspect_ratio: String,
    /// How many outputs (images); 1 for video.
    pub n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<InputImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fidelity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_prompt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "loop")]
    pub loop_video: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Seconds of video asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
    /// Image quality, passed to upstreams that take it (OpenAI's `quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Image style, passed to upstreams that take it (OpenAI's `style`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// Kling's `cfg_scale` (0 to 1), which only Kling channels take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    /// Kling's `camera_control`, which only Kling channels take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_control: Option<serde_json::Value>,
    /// The task this one continues (Luma extend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_from: Option<Uuid>,
}

impl GenerationRequest {
    pub fn image(&self, role: ImageRole) -> Option<&InputImage> {
        self.images.iter().find(|i| i.role == role)
    }

    /// The video length to ask of an upstream that takes only `choices`
    /// (seconds): the one nearest what was asked (`default` when nothing
    /// was), the longer on a tie.
    pub fn seconds_among(&self, default: u32, choices: &[u32]) -> u32 {
        let asked = self.duration_secs.unwrap_or(default);
        choices
            .iter()
            .copied()
            .min_by_key(|c| (c.abs_diff(asked), std::cmp::Reverse(*c)))
            .unwrap_or(asked)
    }

    /// Whether the resolution asked is 1080p or more (upstreams with two
    /// steps take the higher).
    pub fn is_hd(&self) -> bool {
        matches!(self.resolution.as_deref(), Some("1080p" | "4k"))
    }

    /// Whether the frame is taller than wide.
    pub fn portrait(&self) -> bool {
        aspect_parts(&self.aspect_ratio).is_some_and(|(w, h)| h > w)
    }
}

/// `w:h` of an aspect ratio string such as `16:9`.
pub fn aspect_parts(ratio: &str) -> Option<(u32, u32)> {
    let (w, h) = ratio.split_once(':')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_png_and_jpeg_only() {
        assert_eq!(
            ImageFormat::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a"), None);
        assert_eq!(ImageFormat::sniff(b""), None);
    }

    #[test]
    fn aspect_ratio_parts() {
        assert_eq!(aspect_parts("16:9"), Some((16, 9)));
        assert_eq!(aspect_parts("0:9"), None);
        assert_eq!(aspect_parts("wide"), None);
    }
}
