//! Stills made from any provider's H.264 MP4, with the decoder the crate
//! already links (no ffmpeg): a thumbnail (the first frame) and a
//! spritesheet (frames spread over the video in a grid), as lossless WebP.
//! The video is read through `Read + Seek`, so a caller can hand in a file
//! of any length; only the frames kept are held in memory, a spritesheet's
//! already shrunk to their cells.

use std::io::{Cursor, Read, Seek};
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{RgbImage, imageops};
use mp4::{Mp4Reader, TrackType};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use crate::MediaError;

/// Frames in a spritesheet: a grid of this many columns and rows.
pub const SPRITE_GRID: u32 = 5;
/// A spritesheet frame's width (its height keeps the video's aspect).
pub const SPRITE_WIDTH: u32 = 256;
/// Videos with more frames than this are refused (about 14 min at 24 fps):
/// every frame up to the last kept one is decoded.
pub const MAX_FRAMES: u32 = 20_000;
/// Largest side decoded (4K's 3840 fits).
const MAX_SIDE: u16 = 4096;
/// A spritesheet cell is at most this many times as tall as wide.
const MAX_CELL_RATIO: u64 = 4;

/// The first frame, as a lossless WebP at the video's size.
pub fn thumbnail_webp(reader: impl Read + Seek, size: u64) -> Result<Vec<u8>, MediaError> {
    let frame = guarded(|| frames(reader, size, 1, None))?
        .pop()
        .ok_or_else(|| MediaError::InvalidMp4("no frame decodes".into()))?;
    webp(&frame)
}

/// Up to 25 frames spread evenly over the video (first to last), each
/// [`SPRITE_WIDTH`] wide, row by row in a [`SPRITE_GRID`]² grid, as a
/// lossless WebP. A video of fewer frames fills fewer cells.
pub fn spritesheet_webp(reader: impl Read + Seek, size: u64) -> Result<Vec<u8>, MediaError> {
    let cells = (SPRITE_GRID * SPRITE_GRID) as usize;
    let frames = guarded(|| frames(reader, size, cells, Some(SPRITE_WIDTH)))?;
    let first = frames
        .first()
        .ok_or_else(|| MediaError::InvalidMp4("no frame decodes".into()))?;
    let cell_h = first.height();
    let rows = (frames.len() as u32).div_ceil(SPRITE_GRID);
    let cols = (frames.len() as u32).min(SPRITE_GRID);
    let mut sheet = RgbImage::new(cols * SPRITE_WIDTH, rows * cell_h);
    for (i, small) in frames.iter().enumerate() {
        let (col, row) = (i as u32 % SPRITE_GRID, i as u32 / SPRITE_GRID);
        imageops::replace(
            &mut sheet,
            small,
            i64::from(col * SPRITE_WIDTH),
            i64::from(row * cell_h),
        );
    }
    webp(&sheet)
}

/// The mp4 crate and the decoder can panic on malformed input; a caller
/// handing in an upstream's bytes gets an error instead.
fn guarded<T>(f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(MediaError::InvalidMp4(
            "malformed video (decoder panicked)".into(),
        ))
    })
}

fn webp(image: &RgbImage) -> Result<Vec<u8>, MediaError> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| MediaError::ImageEncode(e.to_string()))?;
    Ok(out.into_inner())
}

/// `count` frames spread evenly from the first to the last (every frame
/// when there are fewer), decoded in order from the first H.264 track;
/// with `width`, each shrunk to it as it is kept (its height keeping the
/// aspect, at most [`MAX_CELL_RATIO`] times the width).
fn frames(
    reader: impl Read + Seek,
    size: u64,
    count: usize,
    width: Option<u32>,
) -> Result<Vec<RgbImage>, MediaError> {
    let bad = |e: &dyn std::fmt::Display| MediaError::InvalidMp4(e.to_string());
    let reader = crate::probe::Bounded::new(reader);
    let mut mp4 = Mp4Reader::read_header(reader, size).map_err(|e| bad(&e))?;
    let track = mp4
        .tracks()
        .values()
        .filter(|t| matches!(t.track_type(), Ok(TrackType::Video)))
        .min_by_key(|t| t.track_id())
        .ok_or(MediaError::NoVideoTrack)?;
    let codec = track.box_type().map_err(|e| bad(&e))?.to_string();
    if codec != "avc1" {
        return Err(MediaError::InvalidMp4(format!(
            "the video is {codec}, not H.264 (avc1): no stills can be made"
        )));
    }
    if track.width() > MAX_SIDE || track.height() > MAX_SIDE {
        return Err(MediaError::InvalidMp4(format!(
            "{}x{} is larger than {MAX_SIDE} on a side",
            track.width(),
            track.height()
        )));
    }
    let (id, total) = (track.track_id(), track.sample_count());
    if total == 0 {
        return Err(MediaError::InvalidMp4("the video has no frames".into()));
    }
    if total > MAX_FRAMES {
        return Err(MediaError::InvalidMp4(format!(
            "{total} frames is more than the {MAX_FRAMES} stills are made from"
        )));
    }
    // The mp4 crate allocates a sample's stated size before reading it: a
    // size the file cannot hold would be gigabytes asked for nothing.
    let stsz = &track.trak.mdia.minf.stbl.stsz;
    let largest = stsz.sample_sizes.iter().copied().max().unwrap_or(0);
    if u64::from(largest.max(stsz.sample_size)) > size {
        return Err(MediaError::InvalidMp4(
            "a sample is larger than the whole file".into(),
        ));
    }
    // Parameter sets in Annex B, before the first frame.
    let mut head = Vec::new();
    for set in [
        track.sequence_parameter_set().map_err(|e| bad(&e))?,
        track.picture_parameter_set().map_err(|e| bad(&e))?,
    ] {
        head.extend_from_slice(&[0, 0, 0, 1]);
        head.extend_from_slice(set);
    }
    let wanted: Vec<u32> = if total as usize <= count {
        (0..total).collect()
    } else {
        // Evenly from the first (0) to the last (total - 1) frame.
        (0..count as u64)
            .map(|i| (i * u64::from(total - 1) / (count as u64 - 1).max(1)) as u32)
            .collect()
    };
    let last = *wanted.last().unwrap_or(&0);
    let mut decoder = Decoder::new().map_err(|e| bad(&e))?;
    let mut out = Vec::with_capacity(wanted.len());
    // Decoded frames come out in sample order (no B-frames reordering in
    // the baseline profile the sandbox and most upstreams' MP4s use; with
    // reordering the picks are off by a frame or two, harmlessly).
    let mut decoded = 0u32;
    let mut packet = head;
    for sample_id in 1..=total {
        let sample = mp4
            .read_sample(id, sample_id)
            .map_err(|e| bad(&e))?
            .ok_or_else(|| MediaError::InvalidMp4(format!("sample {sample_id} is missing")))?;
        // AVCC (4-byte lengths) to Annex B (start codes).
        let mut rest = &sample.bytes[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let nal = rest
                .get(4..4 + len)
                .ok_or_else(|| MediaError::InvalidMp4("a NAL unit overruns its sample".into()))?;
            packet.extend_from_slice(&[0, 0, 0, 1]);
            packet.extend_from_slice(nal);
            rest = &rest[4 + len..];
        }
        let picture = decoder.decode(&packet).map_err(|e| bad(&e))?;
        packet.clear();
        if let Some(yuv) = picture {
            if wanted.contains(&decoded) {
                let (w, h) = yuv.dimensions();
                let mut rgb = vec![0; w * h * 3];
                yuv.write_rgb8(&mut rgb);
                let frame = RgbImage::from_raw(w as u32, h as u32, rgb)
                    .ok_or_else(|| MediaError::InvalidMp4("a frame of the wrong size".into()))?;
                out.push(match width {
                    None => frame,
                    Some(cell_w) => {
                        let tall = u64::from(cell_w) * h as u64 / (w as u64).max(1);
                        let cell_h = tall.clamp(1, MAX_CELL_RATIO * u64::from(cell_w)) as u32;
                        imageops::resize(&frame, cell_w, cell_h, imageops::FilterType::Triangle)
                    }
                });
            }
            decoded += 1;
            if decoded > last {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{VideoSpec, render_video};

    fn video(frames: u32) -> Vec<u8> {
        render_video(&VideoSpec {
            width: 256,
            height: 144,
            seed: 7,
            frames,
            fps: 24,
            base_color: None,
            looped: false,
        })
        .unwrap()
        .mp4
    }

    fn decode(webp: &[u8]) -> RgbImage {
        assert_eq!(&webp[..4], b"RIFF");
        assert_eq!(&webp[8..12], b"WEBP");
        image::load_from_memory_with_format(webp, image::ImageFormat::WebP)
            .unwrap()
            .into_rgb8()
    }

    #[test]
    fn the_thumbnail_is_the_first_frame_at_full_size() {
        let mp4 = video(48);
        let thumb = decode(&thumbnail_webp(Cursor::new(&mp4), mp4.len() as u64).unwrap());
        assert_eq!(thumb.dimensions(), (256, 144));
    }

    #[test]
    fn the_spritesheet_spreads_frames_over_a_grid() {
        let mp4 = video(120);
        let sheet = decode(&spritesheet_webp(Cursor::new(&mp4), mp4.len() as u64).unwrap());
        assert_eq!(sheet.dimensions(), (5 * 256, 5 * 144));
        // The cells differ: frames from across the video, not one repeated.
        let cell = |i: u32| {
            imageops::crop_imm(&sheet, (i % 5) * 256, (i / 5) * 144, 256, 144)
                .to_image()
                .into_raw()
        };
        assert_ne!(cell(0), cell(24));
        // A short video fills only the cells it has frames for.
        let short = video(3);
        let sheet = decode(&spritesheet_webp(Cursor::new(&short), short.len() as u64).unwrap());
        assert_eq!(sheet.dimensions(), (3 * 256, 144));
    }

    /// A sample size in `stsz` past the file's had the mp4 crate allocate
    /// it (up to 4 GB, for a file of a few KB) before reading it.
    #[test]
    fn a_sample_larger_than_the_file_is_refused_before_it_is_allocated() {
        let mut mp4 = video(2);
        let stsz = mp4.windows(4).position(|w| w == b"stsz").unwrap();
        // Uniform size 0, then the count and the first frame's size.
        mp4[stsz + 16..stsz + 20].copy_from_slice(&0xF000_0000u32.to_be_bytes());
        let err = thumbnail_webp(Cursor::new(&mp4), mp4.len() as u64).unwrap_err();
        assert!(
            err.to_string().contains("larger than the whole file"),
            "{err}"
        );
    }

    #[test]
    fn what_is_not_an_h264_mp4_is_an_error() {
        let junk = b"\x00\x00\x00\x18ftypmp42junkjunkjunkjunk".to_vec();
        assert!(thumbnail_webp(Cursor::new(&junk), junk.len() as u64).is_err());
        let mut cut = video(24);
        cut.truncate(cut.len() / 2);
        assert!(spritesheet_webp(Cursor::new(&cut), cut.len() as u64).is_err());
    }
}
