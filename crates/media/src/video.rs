//! Video: render frames, encode them with OpenH264 (baseline), mux them with
//! the `mp4` crate and move the index to the front.

use std::io::Cursor;

use mp4::{
    AvcConfig, Bytes, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType,
};
use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;

use super::faststart::faststart;
use super::font::draw_label;
use super::scene::Scene;
use super::still::encode_jpeg;
use super::{MAX_VIDEO_FPS, MAX_VIDEO_FRAMES, MediaError, RenderedVideo, VideoSpec};

const BITRATE_BPS: u32 = 2_000_000;
const KEYFRAME_INTERVAL: u32 = 48;
/// Media ticks per frame; ffmpeg's choice too (24 fps → 12288 Hz).
const TICKS_PER_FRAME: u32 = 512;

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_IDR: u8 = 5;

/// One encoded frame: AVCC (4-byte length-prefixed) NAL units.
struct Sample {
    data: Vec<u8>,
    is_sync: bool,
}

/// Renders the seed's animation to an H.264 MP4 (moov first) plus JPEGs of
/// its first and last frames.
pub fn render_video(spec: &VideoSpec) -> Result<RenderedVideo, MediaError> {
    validate(spec)?;
    let (w, h) = (spec.width as usize, spec.height as usize);
    let scene = Scene::new(w, h, spec.seed, spec.base_color, spec.fps);

    let config = EncoderConfig::new()
        .profile(Profile::Baseline)
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(BITRATE_BPS))
        .max_frame_rate(FrameRate::from_hz(spec.fps as f32))
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(KEYFRAME_INTERVAL))
        // Keyframes exactly on the interval, not on "scene changes".
        .scene_change_detect(false)
        // One thread: deterministic output, and the machine is small.
        .num_threads(1)
        // Smooth procedural content gains little from a slower search.
        .complexity(Complexity::Low)
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| MediaError::Encode(e.to_string()))?;

    let mut rgb = vec![0u8; w * h * 3];
    let mut yuv = vec![0u8; w * h * 3 / 2];
    let mut sps: Option<Vec<u8>> = None;
    let mut pps: Option<Vec<u8>> = None;
    let mut samples = Vec::with_capacity(spec.frames as usize);
    let mut thumbnail_jpeg = Vec::new();
    let mut last_frame_jpeg = Vec::new();

    for frame in 0..spec.frames {
        // Out and back: frame i shows time min(i, n - i), so the clip ends
        // one step before its start and plays on without a doubled frame.
        let at = if spec.looped {
            frame.min(spec.frames - frame)
        } else {
            frame
        };
        scene.render(at, &mut rgb);
        draw_label(&mut rgb, w, h);
        if frame == 0 {
            thumbnail_jpeg = encode_jpeg(&rgb, spec.width, spec.height)?;
        }
        if frame + 1 == spec.frames {
            last_frame_jpeg = encode_jpeg(&rgb, spec.width, spec.height)?;
        }
        rgb_to_i420(&rgb, w, h, &mut yuv);
        let (y, uv) = yuv.split_at(w * h);
        let (u, v) = uv.split_at(w * h / 4);
        let source = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let millis = u64::from(frame) * 1000 / u64::from(spec.fps);
        let stream = encoder
            .encode_at(&source, Timestamp::from_millis(millis))
            .map_err(|e| MediaError::Encode(e.to_string()))?;

        let mut sample = Sample {
            data: Vec::new(),
            is_sync: false,
        };
        for layer in (0..stream.num_layers()).filter_map(|l| stream.layer(l)) {
            for nal in (0..layer.nal_count()).filter_map(|n| layer.nal_unit(n)) {
                let nal = strip_start_code(nal);
                let Some(&header) = nal.first() else {
                    continue;
                };
                match header & 0x1F {
                    // Parameter sets go in the avcC box, not in the samples.
                    NAL_SPS => {
                        sps.get_or_insert_with(|| nal.to_vec());
                    }
                    NAL_PPS => {
                        pps.get_or_insert_with(|| nal.to_vec());
                    }
                    kind => {
                        sample.is_sync |= kind == NAL_IDR;
                        let len = u32::try_from(nal.len())
                            .map_err(|_| MediaError::Encode("oversized NAL unit".into()))?;
                        sample.data.extend_from_slice(&len.to_be_bytes());
                        sample.data.extend_from_slice(nal);
                    }
                }
            }
        }
        if sample.data.is_empty() {
            // A dropped frame would shorten the video and break the timing.
            return Err(MediaError::Encode(format!("no picture for frame {frame}")));
        }
        samples.push(sample);
    }

    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(MediaError::Encode("no SPS/PPS in the stream".into()));
    };
    let mp4 = faststart(mux(spec, &sps, &pps, samples)?)?;
    Ok(RenderedVideo {
        mp4,
        thumbnail_jpeg,
        last_frame_jpeg,
    })
}

fn validate(spec: &VideoSpec) -> Result<(), MediaError> {
    let (w, h) = (spec.width, spec.height);
    let bad = |why: String| Err(MediaError::InvalidSpec(why));
    if w == 0 || h == 0 || w % 16 != 0 || h % 16 != 0 {
        return bad(format!(
            "video size {w}x{h} must be non-zero multiples of 16"
        ));
    }
    // OpenH264's limit (level 5.2).
    if w.max(h) > 3840 || w.min(h) > 2160 {
        return bad(format!("video size {w}x{h} exceeds 3840x2160"));
    }
    if spec.frames == 0 || spec.frames > MAX_VIDEO_FRAMES {
        return bad(format!(
            "frame count {} is outside 1..={MAX_VIDEO_FRAMES}",
            spec.frames
        ));
    }
    if spec.fps == 0 || spec.fps > MAX_VIDEO_FPS {
        return bad(format!("fps {} is outside 1..={MAX_VIDEO_FPS}", spec.fps));
    }
    Ok(())
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1])
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

fn mux(
    spec: &VideoSpec,
    sps: &[u8],
    pps: &[u8],
    samples: Vec<Sample>,
) -> Result<Vec<u8>, MediaError> {
    let mux_err = |e: mp4::Error| MediaError::Mux(e.to_string());
    if sps.len() < 4 {
        // The avcC box copies profile and level from SPS bytes 1..=3.
        return Err(MediaError::Encode("SPS too short".into()));
    }
    // Movie and track share one timescale: the mp4 writer converts track to
    // movie time per sample with integer division, which would drift.
    let timescale = spec.fps * TICKS_PER_FRAME;
    let config = Mp4Config {
        major_brand: FourCC::from(*b"isom"),
        minor_version: 512,
        compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"]
            .map(|b| FourCC::from(*b))
            .to_vec(),
        timescale,
    };
    let mut writer = Mp4Writer::write_start(Cursor::new(Vec::new()), &config).map_err(mux_err)?;
    let size_err = |_| MediaError::InvalidSpec("video size exceeds 65535".into());
    writer
        .add_track(&TrackConfig {
            track_type: TrackType::Video,
            timescale,
            language: "und".into(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: u16::try_from(spec.width).map_err(size_err)?,
                height: u16::try_from(spec.height).map_err(size_err)?,
                seq_param_set: sps.to_vec(),
                pic_param_set: pps.to_vec(),
            }),
        })
        .map_err(mux_err)?;
    for (i, sample) in samples.into_iter().enumerate() {
        let sample = Mp4Sample {
            start_time: i as u64 * u64::from(TICKS_PER_FRAME),
            duration: TICKS_PER_FRAME,
            rendering_offset: 0,
            is_sync: sample.is_sync,
            bytes: Bytes::from(sample.data),
        };
        writer.write_sample(1, &sample).map_err(mux_err)?;
    }
    writer.write_end().map_err(mux_err)?;
    Ok(writer.into_writer().into_inner())
}

/// RGB8 → I420 with integer BT.601 limited-range coefficients (signalled in
/// the SPS's VUI); chroma is the average of each 2×2 block.
fn rgb_to_i420(rgb: &[u8], w: usize, h: usize, out: &mut [u8]) {
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(w * h / 4);
    for (py, (y_row, px_row)) in y_plane
        .chunks_exact_mut(w)
        .zip(rgb.chunks_exact(w * 3))
        .enumerate()
    {
        for (y, px) in y_row.iter_mut().zip(px_row.chunks_exact(3)) {
            let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            *y = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
        if py % 2 == 1 {
            continue;
        }
        let next = rgb
            .get((py + 1) * w * 3..(py + 2) * w * 3)
            .unwrap_or(px_row);
        let c = py / 2 * (w / 2);
        for cx in 0..w / 2 {
            let mut sum = [0i32; 3];
            for row in [px_row, next] {
                for dx in 0..2 {
                    let i = (cx * 2 + dx) * 3;
                    for (s, &v) in sum.iter_mut().zip(&row[i..i + 3]) {
                        *s += i32::from(v);
                    }
                }
            }
            let [r, g, b] = sum.map(|s| (s + 2) >> 2);
            u_plane[c + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v_plane[c + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    use super::super::faststart::top_level_kinds;
    use super::super::{average_color, probe_image, probe_mp4};
    use super::*;

    fn spec(width: u32, height: u32) -> VideoSpec {
        VideoSpec {
            width,
            height,
            seed: 1234,
            frames: 120,
            fps: 24,
            base_color: None,
            looped: false,
        }
    }

    /// Decodes samples (AVCC) read back with the mp4 reader; returns the
    /// decoded frames' RGB and size.
    fn decode_all(mp4: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
        let mut reader = mp4::Mp4Reader::read_header(Cursor::new(mp4), mp4.len() as u64).unwrap();
        let track = reader.tracks().get(&1).unwrap();
        let mut annexb_head = vec![0, 0, 0, 1];
        annexb_head.extend_from_slice(track.sequence_parameter_set().unwrap());
        annexb_head.extend_from_slice(&[0, 0, 0, 1]);
        annexb_head.extend_from_slice(track.picture_parameter_set().unwrap());
        let count = track.sample_count();
        let mut decoder = Decoder::new().unwrap();
        let mut frames = Vec::new();
        for id in 1..=count {
            let sample = reader.read_sample(1, id).unwrap().unwrap();
            let mut packet = if id == 1 {
                annexb_head.clone()
            } else {
                Vec::new()
            };
            let mut rest = &sample.bytes[..];
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                packet.extend_from_slice(&[0, 0, 0, 1]);
                packet.extend_from_slice(&rest[4..4 + len]);
                rest = &rest[4 + len..];
            }
            assert!(rest.is_empty());
            if let Some(yuv) = decoder.decode(&packet).unwrap() {
                let (w, h) = yuv.dimensions();
                let mut rgb = vec![0; w * h * 3];
                yuv.write_rgb8(&mut rgb);
                frames.push((w, h, rgb));
            }
        }
        frames
    }

    fn rgb_mean(rgb: &[u8]) -> [i32; 3] {
        let n = (rgb.len() / 3) as u64;
        [0, 1, 2].map(|c| {
            (rgb.iter()
                .skip(c)
                .step_by(3)
                .map(|&v| u64::from(v))
                .sum::<u64>()
                / n) as i32
        })
    }

    #[test]
    fn video_is_real_h264_with_moov_first() {
        let s = spec(512, 288);
        let started = Instant::now();
        let video = render_video(&s).unwrap();
        eprintln!(
            "512x288x120 rendered in {:?}, {} bytes",
            started.elapsed(),
            video.mp4.len()
        );

        let kinds = top_level_kinds(&video.mp4).unwrap();
        let pos = |k: &[u8; 4]| kinds.iter().position(|x| x == k).unwrap();
        assert!(pos(b"moov") < pos(b"mdat"), "{kinds:?}");
        assert_eq!(kinds[0], *b"ftyp");

        let info = probe_mp4(&video.mp4).unwrap();
        assert_eq!((info.width, info.height), (512, 288));
        assert_eq!(info.codec, "avc1");
        assert_eq!(info.frames, 120);
        assert!(
            (info.duration_secs - 5.0).abs() < 1e-9,
            "{}",
            info.duration_secs
        );
        let size = video.mp4.len();
        assert!((300_000..=2_000_000).contains(&size), "{size} bytes");

        // Keyframes every 48 frames.
        let reader = mp4::Mp4Reader::read_header(Cursor::new(&video.mp4[..]), size as u64).unwrap();
        let stbl = &reader.tracks()[&1].trak.mdia.minf.stbl;
        assert_eq!(stbl.stss.as_ref().unwrap().entries, vec![1, 49, 97]);
        assert_eq!(reader.moov.mvhd.duration, 120 * 512);

        // Every sample decodes, from offsets that faststart rewrote.
        let frames = decode_all(&video.mp4);
        assert_eq!(frames.len(), 120);
        for (w, h, _) in &frames {
            assert_eq!((*w, *h), (512, 288));
        }
        // Decoded first/last frames look like the JPEG stills.
        for (rgb, jpeg) in [
            (&frames[0].2, &video.thumbnail_jpeg),
            (&frames[119].2, &video.last_frame_jpeg),
        ] {
            let still = average_color(jpeg).unwrap().map(i32::from);
            let decoded = rgb_mean(rgb);
            for c in 0..3 {
                assert!(
                    (still[c] - decoded[c]).abs() <= 8,
                    "{still:?} vs {decoded:?}"
                );
            }
        }
        for jpeg in [&video.thumbnail_jpeg, &video.last_frame_jpeg] {
            let i = probe_image(jpeg).unwrap();
            assert_eq!(
                (i.width, i.height, i.format),
                (512, 288, super::super::ImageFormat::Jpeg)
            );
        }
        assert_ne!(video.thumbnail_jpeg, video.last_frame_jpeg);
    }

    #[test]
    fn video_is_deterministic() {
        let s = VideoSpec {
            frames: 30,
            ..spec(288, 160)
        };
        let a = render_video(&s).unwrap();
        let b = render_video(&s).unwrap();
        assert!(a == b, "same spec gave different bytes");
        let c = render_video(&VideoSpec { seed: 99, ..s }).unwrap();
        assert_ne!(a.mp4, c.mp4);
    }

    #[test]
    fn typical_shapes_probe_correctly() {
        for (w, h) in [(288, 512), (384, 384), (672, 288)] {
            let s = VideoSpec {
                frames: 12,
                ..spec(w, h)
            };
            let info = probe_mp4(&render_video(&s).unwrap().mp4).unwrap();
            assert_eq!((info.width, info.height, info.frames), (w, h, 12));
            assert!((info.duration_secs - 0.5).abs() < 1e-9);
        }
        let s = VideoSpec {
            frames: 45,
            fps: 30,
            ..spec(256, 144)
        };
        let info = probe_mp4(&render_video(&s).unwrap().mp4).unwrap();
        assert!((info.duration_secs - 1.5).abs() < 1e-9);
    }

    #[test]
    fn looped_videos_end_where_they_begin() {
        let looped = render_video(&VideoSpec {
            looped: true,
            ..spec(256, 144)
        })
        .unwrap();
        let frames = decode_all(&looped.mp4);
        let (first, middle, last) = (&frames[0].2, &frames[60].2, &frames[119].2);
        // Mean absolute difference per channel value.
        let diff = |a: &[u8], b: &[u8]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum::<u64>() as f64
                / a.len() as f64
        };
        let plain = decode_all(&render_video(&spec(256, 144)).unwrap().mp4);
        assert!(
            diff(first, last) < 3.0,
            "the last frame is one step before the first"
        );
        assert!(
            diff(first, middle) > 3.0 * diff(first, last).max(1.0),
            "it moves between"
        );
        assert!(
            diff(&plain[0].2, &plain[119].2) > 3.0 * diff(first, last).max(1.0),
            "an unlooped clip does not come back"
        );
    }

    #[test]
    fn base_color_dominates_the_first_frame() {
        let base = [200, 40, 60];
        let s = VideoSpec {
            frames: 24,
            base_color: Some(base),
            looped: false,
            ..spec(256, 144)
        };
        let video = render_video(&s).unwrap();
        let avg = average_color(&video.thumbnail_jpeg).unwrap();
        for c in 0..3 {
            assert!(avg[c].abs_diff(base[c]) < 30, "{avg:?} vs {base:?}");
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        let bad = [
            VideoSpec {
                width: 500,
                ..spec(512, 288)
            },
            VideoSpec {
                height: 0,
                ..spec(512, 288)
            },
            VideoSpec {
                width: 4096,
                ..spec(512, 288)
            },
            VideoSpec {
                frames: 0,
                ..spec(512, 288)
            },
            VideoSpec {
                frames: MAX_VIDEO_FRAMES + 1,
                ..spec(512, 288)
            },
            VideoSpec {
                fps: 0,
                ..spec(512, 288)
            },
        ];
        for s in bad {
            assert!(
                matches!(render_video(&s), Err(MediaError::InvalidSpec(_))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn probe_survives_damaged_videos() {
        let video = render_video(&VideoSpec {
            frames: 6,
            ..spec(128, 64)
        })
        .unwrap()
        .mp4;
        for cut in [8, 20, 40, video.len() / 3, video.len() / 2, video.len() - 1] {
            let _ = probe_mp4(&video[..cut]);
        }
        // Flip bytes throughout the header; only errors, never a crash.
        let moov_end = 2000.min(video.len());
        for i in (0..moov_end).step_by(7) {
            let mut bad = video.clone();
            bad[i] ^= 0xA5;
            let _ = probe_mp4(&bad);
        }
    }

    #[test]
    fn i420_conversion_matches_bt601() {
        let (w, h) = (4, 2);
        let rgb: Vec<u8> = [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]
            .iter()
            .cycle()
            .take(w * h)
            .flatten()
            .copied()
            .collect();
        let mut yuv = vec![0; w * h * 3 / 2];
        rgb_to_i420(&rgb, w, h, &mut yuv);
        assert_eq!(&yuv[..4], &[235, 16, 82, 41]);
    }
}
