//! Still images: one moment of the procedural scene, optionally tinted, as
//! PNG or JPEG.

use image::ExtendedColorType;
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use super::font::draw_label;
use super::scene::{LOOP_SECS, Scene};
use super::{ImageFormat, ImageSpec, JPEG_QUALITY, MAX_IMAGE_SIDE, MediaError};

/// Renders a still from the seed's scene as PNG or JPEG bytes.
pub fn render_image(spec: &ImageSpec) -> Result<Vec<u8>, MediaError> {
    let (w, h) = (spec.width, spec.height);
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(MediaError::InvalidSpec(format!(
            "image size {w}x{h} is outside 1..={MAX_IMAGE_SIDE} per side"
        )));
    }
    let tint = match spec.tint {
        Some((_, strength)) if !(0.0..=1.0).contains(&strength) => {
            return Err(MediaError::InvalidSpec(format!(
                "tint strength {strength} is outside 0..=1"
            )));
        }
        // Integer strength out of 256 keeps the blend exact and repeatable.
        Some((color, strength)) => Some((color, (strength * 256.0).round() as i32)),
        None => None,
    };

    let (wu, hu) = (w as usize, h as usize);
    let loop_frames = LOOP_SECS * 24;
    let scene = Scene::new(wu, hu, spec.seed, None, 24, loop_frames);
    let mut rgb = vec![0u8; wu * hu * 3];
    // Any moment of the animation; the seed picks which.
    scene.render((spec.seed % u64::from(loop_frames)) as u32, &mut rgb);
    if let Some((color, k)) = tint {
        for px in rgb.chunks_exact_mut(3) {
            for c in 0..3 {
                let p = i32::from(px[c]);
                px[c] = (p + (((i32::from(color[c]) - p) * k) >> 8)).clamp(0, 255) as u8;
            }
        }
    }
    // After the tint, so the badge stays legible whatever the tint.
    draw_label(&mut rgb, wu, hu);

    match spec.format {
        ImageFormat::Png => encode_png(&rgb, w, h),
        ImageFormat::Jpeg => encode_jpeg(&rgb, w, h),
    }
}

pub(crate) fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| MediaError::ImageEncode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| MediaError::ImageEncode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{average_color, probe_image};
    use super::*;

    fn spec(width: u32, height: u32, format: ImageFormat) -> ImageSpec {
        ImageSpec {
            width,
            height,
            seed: 42,
            format,
            tint: None,
        }
    }

    #[test]
    fn images_decode_at_the_requested_size_in_both_formats() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            for (w, h) in [(512, 288), (288, 512), (100, 37), (1, 1), (16, 16)] {
                let bytes = render_image(&spec(w, h, format)).unwrap();
                let info = probe_image(&bytes).unwrap();
                assert_eq!((info.width, info.height, info.format), (w, h, format));
                let decoded = image::load_from_memory(&bytes).unwrap();
                assert_eq!((decoded.width(), decoded.height()), (w, h));
            }
        }
    }

    #[test]
    fn images_are_deterministic_and_seeded() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let a = render_image(&spec(320, 180, format)).unwrap();
            let b = render_image(&spec(320, 180, format)).unwrap();
            assert_eq!(a, b);
            let other = ImageSpec {
                seed: 43,
                ..spec(320, 180, format)
            };
            assert_ne!(a, render_image(&other).unwrap());
        }
    }

    #[test]
    fn tint_pulls_the_picture_towards_its_colour() {
        let plain = spec(200, 200, ImageFormat::Png);
        let tinted = ImageSpec {
            tint: Some(([255, 0, 0], 0.8)),
            ..plain.clone()
        };
        let before = average_color(&render_image(&plain).unwrap()).unwrap();
        let after = average_color(&render_image(&tinted).unwrap()).unwrap();
        assert!(after[0] > 180, "{after:?}");
        assert!(
            after[0] > before[0] || before[0] > 200,
            "{before:?} -> {after:?}"
        );
        assert!(after[1] < 90 && after[2] < 90, "{after:?}");

        let none = ImageSpec {
            tint: Some(([255, 0, 0], 0.0)),
            ..plain.clone()
        };
        assert_eq!(render_image(&none).unwrap(), render_image(&plain).unwrap());
    }

    #[test]
    fn bad_specs_are_errors() {
        for (w, h) in [(0, 10), (10, 0), (MAX_IMAGE_SIDE + 1, 10)] {
            assert!(matches!(
                render_image(&spec(w, h, ImageFormat::Png)),
                Err(MediaError::InvalidSpec(_))
            ));
        }
        for strength in [f32::NAN, -0.1, 1.5, f32::INFINITY] {
            let s = ImageSpec {
                tint: Some(([1, 2, 3], strength)),
                ..spec(8, 8, ImageFormat::Jpeg)
            };
            assert!(matches!(render_image(&s), Err(MediaError::InvalidSpec(_))));
        }
    }
}
