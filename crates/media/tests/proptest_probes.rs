//! Property tests of the probes that read upstreams' and clients' files:
//! any bytes are refused or described, never a panic; a cut-off file is
//! refused or described as the whole one is, never with invented facts.

use std::sync::OnceLock;

use gengate_media::{
    ImageFormat, ImageSpec, MediaError, VideoSpec, average_color, palette_grid, probe_image,
    probe_mp4, render_image, render_video,
};
use proptest::prelude::*;

/// The probes decode at most this much on a side.
const MAX_DECODE_SIDE: u32 = 16_384;

fn png() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| image(ImageFormat::Png))
}

fn jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Vec<u8>> = OnceLock::new();
    JPEG.get_or_init(|| image(ImageFormat::Jpeg))
}

fn image(format: ImageFormat) -> Vec<u8> {
    render_image(&ImageSpec {
        width: 24,
        height: 16,
        seed: 7,
        format,
        tint: None,
    })
    .unwrap()
}

/// A short H.264 MP4, `moov` first, as results arrive.
fn mp4() -> &'static [u8] {
    static MP4: OnceLock<Vec<u8>> = OnceLock::new();
    MP4.get_or_init(|| {
        render_video(&VideoSpec {
            width: 32,
            height: 32,
            seed: 3,
            frames: 4,
            fps: 8,
            base_color: None,
            looped: false,
        })
        .unwrap()
        .mp4
    })
}

/// What an image probe may say of any bytes: a PNG or JPEG of a size it
/// decodes, judged by the magic bytes; its summaries agree.
fn image_facts_are_possible(bytes: &[u8]) -> Result<(), TestCaseError> {
    match probe_image(bytes) {
        Ok(info) => {
            prop_assert!((1..=MAX_DECODE_SIDE).contains(&info.width), "{:?}", info);
            prop_assert!((1..=MAX_DECODE_SIDE).contains(&info.height), "{:?}", info);
            let magic: &[u8] = match info.format {
                ImageFormat::Png => b"\x89PNG\r\n\x1a\n",
                ImageFormat::Jpeg => &[0xFF, 0xD8, 0xFF],
            };
            prop_assert!(bytes.starts_with(magic));
            prop_assert!(palette_grid(bytes).is_ok() && average_color(bytes).is_ok());
        }
        Err(e) => {
            prop_assert!(palette_grid(bytes).is_err() && average_color(bytes).is_err());
            if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") && !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
                prop_assert_eq!(e, MediaError::UnsupportedImage);
            }
        }
    }
    Ok(())
}

/// An MP4 probe's facts: a duration that is a real, non-negative number.
fn mp4_facts_are_possible(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(info) = probe_mp4(bytes) {
        prop_assert!(
            info.duration_secs.is_finite() && info.duration_secs >= 0.0,
            "{:?}",
            info
        );
        prop_assert_eq!(info.codec.len(), 4, "{:?}", info);
    }
    Ok(())
}

/// `whole` with `flips` (position, xor) applied, each position taken
/// modulo its length.
fn flipped(whole: &[u8], flips: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    let mut bytes = whole.to_vec();
    for (at, x) in flips {
        bytes[at.index(whole.len())] ^= x;
    }
    bytes
}

/// Random bytes, and random bytes behind each format's magic (so the
/// decoders, not only the sniffing, see them).
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop::sample::select(vec![
        &b""[..],
        b"\x89PNG\r\n\x1a\n",
        &[0xFF, 0xD8, 0xFF],
        b"\x00\x00\x00\x18ftypisom",
    ]);
    (magic, prop::collection::vec(any::<u8>(), 0..256))
        .prop_map(|(head, tail)| [head, &tail].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_refused_or_possible(bytes in hostile_bytes()) {
        image_facts_are_possible(&bytes)?;
        mp4_facts_are_possible(&bytes)?;
    }

    /// Cut anywhere, a PNG or JPEG is refused, or (cut past its pixels,
    /// in the PNG's last checksum) described as the whole.
    #[test]
    fn cut_images_are_refused_or_described_as_whole(
        jpeg_not_png in any::<bool>(),
        at in any::<prop::sample::Index>(),
    ) {
        let whole = if jpeg_not_png { jpeg() } else { png() };
        let cut = &whole[..at.index(whole.len())];
        if let Ok(info) = probe_image(cut) {
            prop_assert_eq!(info, probe_image(whole).unwrap(), "{} of {} bytes", cut.len(), whole.len());
        }
        image_facts_are_possible(cut)?;
    }

    /// A damaged image is refused, or decodes to the size its header says.
    #[test]
    fn damaged_images_keep_their_size_or_are_refused(
        jpeg_not_png in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let whole = if jpeg_not_png { jpeg() } else { png() };
        let bytes = flipped(whole, &flips);
        image_facts_are_possible(&bytes)?;
    }
}

proptest! {
    // Each case parses a whole MP4's boxes: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Cut anywhere, an MP4 is refused or described as the whole file is:
    /// with `moov` first, a cut in the media data leaves the header whole.
    #[test]
    fn cut_mp4s_are_refused_or_described_as_whole(at in any::<prop::sample::Index>()) {
        let whole = mp4();
        let info = probe_mp4(whole).unwrap();
        let cut = &whole[..at.index(whole.len())];
        if let Ok(got) = probe_mp4(cut) {
            prop_assert_eq!(got, info);
        }
    }

    /// Damaged anywhere, an MP4 is refused or has possible facts.
    #[test]
    fn damaged_mp4s_are_refused_or_possible(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        mp4_facts_are_possible(&flipped(mp4(), &flips))?;
    }
}

/// The fixtures are what the properties assume: whole files, described.
#[test]
fn fixtures_are_whole() {
    assert_eq!(probe_image(png()).unwrap().width, 24);
    assert_eq!(probe_image(jpeg()).unwrap().height, 16);
    let info = probe_mp4(mp4()).unwrap();
    assert_eq!((info.width, info.height, info.frames), (32, 32, 4));
    assert_eq!(info.codec, "avc1");
}
