//! Offline media for the sandbox provider: procedural H.264/MP4 videos and
//! PNG/JPEG images, probes that read such files back, and stills (WebP)
//! made from any H.264 MP4.
//!
//! Everything here is a pure function on bytes: no file or network I/O, and
//! the same spec always yields byte-identical output.

mod faststart;
mod font;
mod frames;
mod probe;
mod scene;
mod still;
mod video;

pub use frames::{spritesheet_webp, thumbnail_webp};
pub use probe::{average_color, palette_grid, probe_image, probe_mp4, probe_mp4_reader};
pub use still::render_image;
pub use video::render_video;

/// Errors from rendering, encoding and probing media.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The requested spec cannot be rendered (bad size, frame count, tint...).
    #[error("invalid media spec: {0}")]
    InvalidSpec(String),
    /// The H.264 encoder failed or produced unusable output.
    #[error("H.264 encoding failed: {0}")]
    Encode(String),
    /// Writing the MP4 container failed.
    #[error("MP4 muxing failed: {0}")]
    Mux(String),
    /// The bytes are not an MP4 this module can read.
    #[error("not a readable MP4: {0}")]
    InvalidMp4(String),
    /// The MP4 has no video track.
    #[error("MP4 has no video track")]
    NoVideoTrack,
    /// The bytes are neither PNG nor JPEG.
    #[error("unsupported image format (only PNG and JPEG are accepted)")]
    UnsupportedImage,
    /// The bytes look like PNG/JPEG but do not decode.
    #[error("image decoding failed: {0}")]
    ImageDecode(String),
    /// Encoding a PNG/JPEG failed.
    #[error("image encoding failed: {0}")]
    ImageEncode(String),
}

/// What to render as a video.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VideoSpec {
    /// Multiple of 16, at most 3840 (or 2160 when it is the smaller side).
    pub width: u32,
    /// Multiple of 16, at most 3840 (or 2160 when it is the smaller side).
    pub height: u32,
    /// Picks the look (palette and motion, one of a few per size, so that
    /// videos reuse each other's encoding) and where in its loop the video
    /// starts.
    pub seed: u64,
    /// 1..=[`MAX_VIDEO_FRAMES`].
    pub frames: u32,
    /// 1..=[`MAX_VIDEO_FPS`].
    pub fps: u32,
    /// When set, the first frame is mostly this colour and fades into the
    /// animation, so an extension can continue from a previous last frame.
    pub base_color: Option<[u8; 3]>,
    /// Ends where it began: the motion makes whole cycles over the video,
    /// the last frame one step before the first, so the clip plays as a
    /// seamless loop.
    pub looped: bool,
}

/// A rendered video and two stills taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedVideo {
    /// H.264 (baseline) in MP4 with `moov` before `mdat`.
    pub mp4: Vec<u8>,
    /// JPEG of the first frame, at the video's size.
    pub thumbnail_jpeg: Vec<u8>,
    /// JPEG of the last frame, at the video's size.
    pub last_frame_jpeg: Vec<u8>,
}

/// Still image formats this module writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// PNG, lossless.
    Png,
    /// JPEG at [`JPEG_QUALITY`].
    Jpeg,
}

impl ImageFormat {
    /// The MIME type, e.g. for a `Content-Type` header.
    pub fn mime_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }
}

/// What to render as a still image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// 1..=[`MAX_IMAGE_SIDE`].
    pub width: u32,
    /// 1..=[`MAX_IMAGE_SIDE`].
    pub height: u32,
    /// Picks the palette, composition and moment of the animation.
    pub seed: u64,
    /// Output encoding.
    pub format: ImageFormat,
    /// A colour blended over the picture with a strength in `0.0..=1.0`.
    pub tint: Option<([u8; 3], f32)>,
}

/// What [`probe_mp4`] found in the first video track.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Coded width from the sample entry.
    pub width: u32,
    /// Coded height from the sample entry.
    pub height: u32,
    /// Track duration (media header), or the movie's if the track has none.
    pub duration_secs: f64,
    /// The sample entry's four-character code, e.g. `"avc1"`.
    pub codec: String,
    /// Number of samples (frames) in the track.
    pub frames: u32,
}

/// What [`probe_image`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Format judged from the content, not from any name.
    pub format: ImageFormat,
}

/// Largest frame count [`render_video`] accepts.
pub const MAX_VIDEO_FRAMES: u32 = 24 * 60 * 5;
/// Largest frame rate [`render_video`] accepts.
pub const MAX_VIDEO_FPS: u32 = 120;
/// Largest side [`render_image`] accepts.
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// JPEG quality for every JPEG written here.
pub const JPEG_QUALITY: u8 = 85;
