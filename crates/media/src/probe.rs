//! Reading media back: MP4 headers, PNG/JPEG validation and colour summaries.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{ImageReader, Limits, RgbImage};
use mp4::{Mp4Reader, TrackType};

use super::{ImageFormat, ImageInfo, MediaError, VideoInfo};

/// Largest side the probes will decode; bounds memory on hostile input.
const MAX_DECODE_SIDE: u32 = 16_384;
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// Reads an MP4's header with the `mp4` crate and describes its first video
/// track (lowest track id).
pub fn probe_mp4(bytes: &[u8]) -> Result<VideoInfo, MediaError> {
    probe_mp4_reader(Cursor::new(bytes), bytes.len() as u64)
}

/// [`probe_mp4`] of `size` bytes read from `reader`: only the boxes'
/// headers and `moov` are read (the media data is skipped), so a video of
/// any length is probed in little memory.
pub fn probe_mp4_reader(reader: impl Read + Seek, size: u64) -> Result<VideoInfo, MediaError> {
    // The mp4 crate can panic on some malformed boxes; a probe of untrusted
    // bytes must report that as an error rather than take the caller down.
    catch_unwind(AssertUnwindSafe(|| probe_mp4_inner(reader, size))).unwrap_or_else(|_| {
        Err(MediaError::InvalidMp4(
            "malformed boxes (parser panicked)".into(),
        ))
    })
}

fn probe_mp4_inner(reader: impl Read + Seek, size: u64) -> Result<VideoInfo, MediaError> {
    let reader = Mp4Reader::read_header(Bounded::new(reader), size)
        .map_err(|e| MediaError::InvalidMp4(e.to_string()))?;
    let track = reader
        .tracks()
        .values()
        .filter(|t| matches!(t.track_type(), Ok(TrackType::Video)))
        .min_by_key(|t| t.track_id())
        .ok_or(MediaError::NoVideoTrack)?;
    let codec = track
        .box_type()
        .map_err(|e| MediaError::InvalidMp4(e.to_string()))?
        .to_string();

    // Computed here rather than with Track::duration, which divides by a
    // timescale that a malformed file may set to zero.
    let mdhd = &track.trak.mdia.mdhd;
    let mvhd = &reader.moov.mvhd;
    let duration_secs = if mdhd.timescale > 0 && mdhd.duration > 0 {
        mdhd.duration as f64 / f64::from(mdhd.timescale)
    } else if mvhd.timescale > 0 {
        mvhd.duration as f64 / f64::from(mvhd.timescale)
    } else {
        return Err(MediaError::InvalidMp4("zero timescale".into()));
    };

    Ok(VideoInfo {
        width: u32::from(track.width()),
        height: u32::from(track.height()),
        duration_secs,
        codec,
        frames: track.sample_count(),
    })
}

/// Seeks the mp4 crate may make on one file, far more than any real
/// file's boxes and samples take.
const MAX_SEEKS: u32 = 1 << 20;

/// A reader the mp4 crate cannot spin on forever. It seeks at least once per
/// box it walks, and a box of size 0 inside `moov` (or any box it walks)
/// sends it back to that same header again and again, which it does not
/// refuse; past [`MAX_SEEKS`] the file is refused instead.
pub(crate) struct Bounded<R> {
    inner: R,
    seeks: u32,
}

impl<R> Bounded<R> {
    pub(crate) fn new(inner: R) -> Bounded<R> {
        Bounded { inner, seeks: 0 }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Bounded<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.seeks += 1;
        if self.seeks > MAX_SEEKS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "its boxes loop (a box of size 0 inside another?)",
            ));
        }
        self.inner.seek(pos)
    }
}

/// Identifies a PNG or JPEG by its content and checks that it fully decodes.
/// Anything else (GIF, WebP, garbage, truncated data) is an error.
pub fn probe_image(bytes: &[u8]) -> Result<ImageInfo, MediaError> {
    let (rgb, format) = decode(bytes)?;
    Ok(ImageInfo {
        width: rgb.width(),
        height: rgb.height(),
        format,
    })
}

/// A 5×5 grid of average colours, row by row, 3 bytes (RGB) per cell; each
/// cell covers a fifth of the width and a fifth of the height.
pub fn palette_grid(image_bytes: &[u8]) -> Result<[u8; 75], MediaError> {
    let (rgb, _) = decode(image_bytes)?;
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let raw = rgb.as_raw();
    let mut out = [0u8; 75];
    for (cy, row) in out.chunks_exact_mut(15).enumerate() {
        let (y0, y1) = fifth(h, cy);
        for (cx, cell) in row.chunks_exact_mut(3).enumerate() {
            let (x0, x1) = fifth(w, cx);
            let mut sum = [0u64; 3];
            for y in y0..y1 {
                let line = raw.get((y * w + x0) * 3..(y * w + x1) * 3).unwrap_or(&[]);
                for px in line.chunks_exact(3) {
                    for c in 0..3 {
                        sum[c] += u64::from(px[c]);
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u64;
            cell.copy_from_slice(&mean(sum, n));
        }
    }
    Ok(out)
}

/// The mean colour of a PNG or JPEG.
pub fn average_color(image_bytes: &[u8]) -> Result<[u8; 3], MediaError> {
    let (rgb, _) = decode(image_bytes)?;
    let mut sum = [0u64; 3];
    for px in rgb.as_raw().chunks_exact(3) {
        for c in 0..3 {
            sum[c] += u64::from(px[c]);
        }
    }
    Ok(mean(sum, u64::from(rgb.width()) * u64::from(rgb.height())))
}

/// Pixel range of part `i` of 5 along a side of `n` pixels; never empty, so
/// pictures narrower than 5 pixels repeat pixels across cells.
fn fifth(n: usize, i: usize) -> (usize, usize) {
    let start = (i * n / 5).min(n.saturating_sub(1));
    let end = ((i + 1) * n / 5).max(start + 1).min(n.max(1));
    (start, end)
}

fn mean(sum: [u64; 3], n: u64) -> [u8; 3] {
    let n = n.max(1);
    // Rounded to nearest.
    sum.map(|s| ((s + n / 2) / n).min(255) as u8)
}

/// Sniffs the format from the magic bytes, then decodes to RGB8.
pub(crate) fn decode(bytes: &[u8]) -> Result<(RgbImage, ImageFormat), MediaError> {
    let (format, codec) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        (ImageFormat::Png, image::ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        (ImageFormat::Jpeg, image::ImageFormat::Jpeg)
    } else {
        return Err(MediaError::UnsupportedImage);
    };
    if format == ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        // The JPEG decoder pads a cut-off scan with grey instead of failing.
        return Err(MediaError::ImageDecode(
            "JPEG is truncated (no end-of-image marker)".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), codec);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| MediaError::ImageDecode(e.to_string()))?;
    Ok((decoded.into_rgb8(), format))
}

/// Whether an end-of-image marker follows the last start-of-scan. Entropy
/// coded data never contains FF D9, so a cut-off scan has none, while
/// padding or trailers written after a complete image are still accepted.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes
        .get(sos + 2..)
        .is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, 0xD9]))
}

#[cfg(test)]
mod tests {
    use super::super::still::{encode_jpeg, encode_png};
    use super::*;

    /// 100×100, left half red, right half blue.
    fn halves_png() -> Vec<u8> {
        let mut rgb = Vec::with_capacity(100 * 100 * 3);
        for _y in 0..100 {
            for x in 0..100 {
                rgb.extend_from_slice(if x < 50 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        encode_png(&rgb, 100, 100).unwrap()
    }

    #[test]
    fn palette_grid_of_halves() {
        let grid = palette_grid(&halves_png()).unwrap();
        let red = [255, 0, 0];
        let blue = [0, 0, 255];
        // The middle column straddles the border: half of each.
        let mixed = [128, 0, 128];
        for row in grid.chunks_exact(15) {
            let cells: Vec<&[u8]> = row.chunks_exact(3).collect();
            assert_eq!(cells, vec![&red[..], &red, &mixed, &blue, &blue]);
        }
        assert_eq!(average_color(&halves_png()).unwrap(), [128, 0, 128]);
    }

    #[test]
    fn palette_grid_of_tiny_and_odd_images() {
        let one = encode_png(&[10, 20, 30], 1, 1).unwrap();
        let grid = palette_grid(&one).unwrap();
        assert!(grid.chunks_exact(3).all(|c| c == [10, 20, 30]));

        let mut rgb = vec![0u8; 7 * 3 * 3];
        rgb[..3].copy_from_slice(&[255, 255, 255]);
        let png = encode_png(&rgb, 7, 3).unwrap();
        let grid = palette_grid(&png).unwrap();
        assert_eq!(&grid[..3], &[255, 255, 255]);
        assert_eq!(&grid[72..], &[0, 0, 0]);
    }

    #[test]
    fn probe_image_identifies_by_content() {
        let png = halves_png();
        let info = probe_image(&png).unwrap();
        assert_eq!(
            (info.width, info.height, info.format),
            (100, 100, ImageFormat::Png)
        );

        let jpeg = encode_jpeg(&vec![90u8; 64 * 32 * 3], 64, 32).unwrap();
        let info = probe_image(&jpeg).unwrap();
        assert_eq!(
            (info.width, info.height, info.format),
            (64, 32, ImageFormat::Jpeg)
        );
        let avg = average_color(&jpeg).unwrap();
        assert!(avg.iter().all(|&c| c.abs_diff(90) <= 2), "{avg:?}");
    }

    #[test]
    fn probe_image_rejects_gif_garbage_and_truncated_data() {
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
        assert_eq!(probe_image(gif), Err(MediaError::UnsupportedImage));
        assert_eq!(probe_image(b""), Err(MediaError::UnsupportedImage));
        assert_eq!(
            probe_image(b"hello world"),
            Err(MediaError::UnsupportedImage)
        );
        assert_eq!(probe_image(&[0u8; 1000]), Err(MediaError::UnsupportedImage));

        let png = halves_png();
        let jpeg = encode_jpeg(&vec![90u8; 64 * 32 * 3], 64, 32).unwrap();
        for full in [&png, &jpeg] {
            for cut in [4, 10, 30, full.len() / 2, full.len() - 20] {
                let res = probe_image(&full[..cut]);
                assert!(res.is_err(), "cut at {cut} of {}: {res:?}", full.len());
            }
        }
        // Bytes after a complete JPEG do not make it invalid.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"\0\0trailer");
        assert!(probe_image(&padded).is_ok());

        // Magic bytes alone are not enough.
        let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
        fake.extend_from_slice(&[7u8; 100]);
        assert!(matches!(
            probe_image(&fake),
            Err(MediaError::ImageDecode(_))
        ));
        assert!(palette_grid(b"nope").is_err());
        assert!(average_color(b"nope").is_err());
    }

    /// A box of size 0 inside `moov` had the mp4 crate read that header
    /// forever: the probe (and a worker thread with it) never came back.
    #[test]
    fn nested_zero_size_box_does_not_hang_the_probe() {
        let mut mp4 = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00".to_vec();
        // moov (24 bytes) holding one box header of size 0.
        mp4.extend_from_slice(
            b"\x00\x00\x00\x18moov\x00\x00\x00\x00free\x00\x00\x00\x00\x00\x00\x00\x00",
        );
        assert!(matches!(probe_mp4(&mp4), Err(MediaError::InvalidMp4(_))));
    }

    #[test]
    fn probe_mp4_rejects_non_mp4() {
        assert!(probe_mp4(b"").is_err());
        assert!(probe_mp4(b"not an mp4 at all").is_err());
        assert!(probe_mp4(&halves_png()).is_err());
        // A lone ftyp box: no moov.
        let ftyp = b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00";
        assert!(matches!(probe_mp4(ftyp), Err(MediaError::InvalidMp4(_))));
    }
}
