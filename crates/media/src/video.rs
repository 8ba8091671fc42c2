//! Video: render frames, encode them with OpenH264 (baseline), mux them with
//! the `mp4` crate and move the index to the front.
//!
//! Encoding costs a few milliseconds a frame, far more than the rest, and
//! the sandbox is also the load-test upstream: its videos must not cost
//! more than the gateway's work on them. So a video is assembled from GOPs
//! (two seconds each, starting with an IDR frame, so any can follow any)
//! that are encoded once and kept: the scene loops every
//! [`LOOP_SECS`](super::scene::LOOP_SECS), a whole number of GOPs, and the
//! seed picks one of [`LOOKS`] looks and the GOP of its loop a video starts
//! at. The trade-off: per size, frame rate and length there are `LOOKS` ×
//! 4 videos, not one per seed, so two prompts can share one; in exchange a
//! video whose GOPs are kept costs little more than its muxing (about a
//! millisecond of CPU for 5 s, against some 0.4 s to encode it), and the
//! first video of a look encodes only the GOPs it shows.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io::Cursor;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

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
use super::scene::{LOOP_SECS, Scene, WASH_FRAMES};
use super::still::encode_jpeg;
use super::{MAX_VIDEO_FPS, MAX_VIDEO_FRAMES, MediaError, RenderedVideo, VideoSpec};

const BITRATE_BPS: u32 = 2_000_000;
/// A keyframe every two seconds: each GOP is encoded on its own.
const GOP_SECS: u32 = 2;
/// Looks a video can have; each GOP of each is encoded once per size.
const LOOKS: u64 = 16;
/// Encoded GOPs kept (about 0.5 MB each at the bitrate): every GOP of all
/// the looks of three sizes.
const GOP_CACHE_BYTES: usize = 96 << 20;
/// First and last frames kept as JPEGs (a few tens of KB each).
const STILL_CACHE_BYTES: usize = 8 << 20;
/// Media ticks per frame; ffmpeg's choice too (24 fps → 12288 Hz).
const TICKS_PER_FRAME: u32 = 512;

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_IDR: u8 = 5;

/// One encoded frame: AVCC (4-byte length-prefixed) NAL units.
#[derive(Clone)]
struct Sample {
    data: Bytes,
    is_sync: bool,
}

/// Everything one GOP's pictures depend on: its key in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GopKey {
    width: u32,
    height: u32,
    fps: u32,
    look: u64,
    base_color: Option<[u8; 3]>,
    loop_frames: u32,
    /// The frame of the loop it starts at, and how many frames it has.
    first: u32,
    len: u32,
    /// The frame of the video it starts at, when a base colour's wash
    /// reaches into it: then it belongs to that video's opening alone.
    washed_from: Option<u32>,
    /// One whole loop: washed at both ends, so it ends where it began.
    looped: bool,
}

impl GopKey {
    fn scene(&self) -> Scene {
        let (w, h) = (self.width as usize, self.height as usize);
        Scene::new(w, h, self.look, self.base_color, self.fps, self.loop_frames)
    }

    /// Draws its frame `i`, badge included.
    fn picture(&self, scene: &Scene, i: u32, rgb: &mut [u8]) {
        scene.render(self.first + i, rgb);
        if let Some(from) = self.washed_from {
            let at = from + i;
            // Symmetric about the seam, where the colour is strongest.
            let since = if self.looped {
                at.min(self.loop_frames - 1 - at)
            } else {
                at
            };
            scene.wash(since, rgb);
        }
        draw_label(rgb, self.width as usize, self.height as usize);
    }
}

/// An encoded GOP and the parameter sets it was encoded with.
struct Gop {
    sps: Vec<u8>,
    pps: Vec<u8>,
    samples: Vec<Sample>,
}

/// One value, made once however many callers want it at the same time
/// (a load test's first videos all want the same few GOPs): the others
/// wait for it.
type Cell<V> = Arc<OnceLock<Result<V, MediaError>>>;

/// What was made, kept up to a size, oldest dropped first.
struct Cache<K, V> {
    kept: HashMap<K, Cell<V>>,
    /// Values made, oldest first, with their sizes.
    order: VecDeque<(K, usize)>,
    bytes: usize,
    budget: usize,
}

impl<K: Clone + Eq + Hash, V> Cache<K, V> {
    fn new(budget: usize) -> Mutex<Cache<K, V>> {
        Mutex::new(Cache {
            kept: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        })
    }

    fn account(&mut self, key: K, size: usize) {
        self.order.push_back((key, size));
        self.bytes += size;
        while self.bytes > self.budget {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.kept.remove(&old);
            self.bytes -= n;
        }
    }
}

/// A cache shared by every render in the process.
type Shared<K, V> = LazyLock<Mutex<Cache<K, V>>>;

static GOPS: Shared<GopKey, Arc<Gop>> = LazyLock::new(|| Cache::new(GOP_CACHE_BYTES));
static STILLS: Shared<(GopKey, u32), Arc<Vec<u8>>> =
    LazyLock::new(|| Cache::new(STILL_CACHE_BYTES));

/// The kept value for `key`, or `make`'s, then kept; made outside the
/// cache's lock, so that only callers of the same key wait.
fn cached<K: Clone + Eq + Hash, V: Clone>(
    cache: &Mutex<Cache<K, V>>,
    key: &K,
    size: impl Fn(&V) -> usize,
    make: impl FnOnce() -> Result<V, MediaError>,
) -> Result<V, MediaError> {
    // A panic elsewhere while holding the lock leaves a consistent cache.
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    let cell = lock().kept.entry(key.clone()).or_default().clone();
    let mut made = false;
    let result = cell
        .get_or_init(|| {
            made = true;
            make()
        })
        .clone();
    if made {
        match &result {
            Ok(value) => lock().account(key.clone(), size(value)),
            // Not kept: the next caller tries again.
            Err(_) => {
                lock().kept.remove(key);
            }
        }
    }
    result
}

/// Renders the seed's look to an H.264 MP4 (moov first) plus JPEGs of its
/// first and last frames.
pub fn render_video(spec: &VideoSpec) -> Result<RenderedVideo, MediaError> {
    validate(spec)?;
    let gop_len = GOP_SECS * spec.fps;
    let gop_at = |frame| gop_key(spec, frame);
    let mut samples = Vec::with_capacity(spec.frames as usize);
    let mut sets: Option<(Vec<u8>, Vec<u8>)> = None;
    for at in (0..spec.frames).step_by(gop_len as usize) {
        let key = gop_at(at);
        let gop = cached(
            &GOPS,
            &key,
            |g| g.samples.iter().map(|s| s.data.len()).sum(),
            || encode_gop(&key).map(Arc::new),
        )?;
        match &sets {
            None => sets = Some((gop.sps.clone(), gop.pps.clone())),
            // One avcC box describes every GOP.
            Some((sps, pps)) if *sps != gop.sps || *pps != gop.pps => {
                return Err(MediaError::Encode(
                    "GOPs encoded with different parameter sets".into(),
                ));
            }
            Some(_) => {}
        }
        let take = (spec.frames - at).min(key.len) as usize;
        samples.extend(gop.samples.iter().take(take).cloned());
    }
    let Some((sps, pps)) = sets else {
        return Err(MediaError::Encode("no GOP encoded".into()));
    };
    let last = spec.frames - 1;
    let last_gop = last / gop_len * gop_len;
    Ok(RenderedVideo {
        mp4: faststart(mux(spec, &sps, &pps, samples)?)?,
        thumbnail_jpeg: still(&gop_at(0), 0)?,
        last_frame_jpeg: still(&gop_at(last_gop), last - last_gop)?,
    })
}

/// The GOP of `spec`'s video that starts at its frame `frame` (a multiple
/// of the GOP length).
fn gop_key(spec: &VideoSpec, frame: u32) -> GopKey {
    let gop_len = GOP_SECS * spec.fps;
    let mixed = mix(spec.seed);
    // A looped video is one whole loop of its own length; others are a
    // window on the usual loop, from the GOP the seed picks.
    let (loop_frames, start) = if spec.looped {
        (spec.frames, 0)
    } else {
        let gops = u64::from(LOOP_SECS / GOP_SECS);
        let start = (mixed / LOOKS % gops) as u32 * gop_len;
        (LOOP_SECS * spec.fps, start)
    };
    let first = (start + frame) % loop_frames;
    GopKey {
        width: spec.width,
        height: spec.height,
        fps: spec.fps,
        look: mixed % LOOKS,
        base_color: spec.base_color,
        loop_frames,
        first,
        len: gop_len.min(loop_frames - first),
        washed_from: (spec.base_color.is_some() && (spec.looped || frame < WASH_FRAMES))
            .then_some(frame),
        looped: spec.looped,
    }
}

/// The seed's bits spread (splitmix64's finaliser), so that nearby seeds
/// pick unrelated looks and starts.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Frame `i` of a GOP as a JPEG, from the source picture.
fn still(key: &GopKey, i: u32) -> Result<Vec<u8>, MediaError> {
    let jpeg = cached(
        &STILLS,
        &(key.clone(), i),
        |j| j.len(),
        || {
            let mut rgb = vec![0u8; key.width as usize * key.height as usize * 3];
            key.picture(&key.scene(), i, &mut rgb);
            encode_jpeg(&rgb, key.width, key.height).map(Arc::new)
        },
    )?;
    Ok(jpeg.to_vec())
}

/// Encodes one GOP with an encoder of its own: an IDR frame, then P frames.
fn encode_gop(key: &GopKey) -> Result<Gop, MediaError> {
    let (w, h) = (key.width as usize, key.height as usize);
    let scene = key.scene();
    let config = EncoderConfig::new()
        .profile(Profile::Baseline)
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(BITRATE_BPS))
        .max_frame_rate(FrameRate::from_hz(key.fps as f32))
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(GOP_SECS * key.fps))
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
    let mut samples = Vec::with_capacity(key.len as usize);
    for i in 0..key.len {
        key.picture(&scene, i, &mut rgb);
        rgb_to_i420(&rgb, w, h, &mut yuv);
        let (y, uv) = yuv.split_at(w * h);
        let (u, v) = uv.split_at(w * h / 4);
        let source = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let millis = u64::from(i) * 1000 / u64::from(key.fps);
        let stream = encoder
            .encode_at(&source, Timestamp::from_millis(millis))
            .map_err(|e| MediaError::Encode(e.to_string()))?;

        let mut data = Vec::new();
        let mut is_sync = false;
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
                        is_sync |= kind == NAL_IDR;
                        let len = u32::try_from(nal.len())
                            .map_err(|_| MediaError::Encode("oversized NAL unit".into()))?;
                        data.extend_from_slice(&len.to_be_bytes());
                        data.extend_from_slice(nal);
                    }
                }
            }
        }
        if data.is_empty() {
            // A dropped frame would shorten the video and break the timing.
            return Err(MediaError::Encode(format!("no picture for frame {i}")));
        }
        if is_sync != (i == 0) {
            // GOPs are joined in any order: each must open, and only open,
            // with an IDR frame.
            return Err(MediaError::Encode(format!("unexpected frame type at {i}")));
        }
        samples.push(Sample {
            data: Bytes::from(data),
            is_sync,
        });
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(MediaError::Encode("no SPS/PPS in the stream".into()));
    };
    Ok(Gop { sps, pps, samples })
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
            bytes: sample.data,
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
        let plain = decode_all(&render_video(&spec(256, 144)).unwrap().mp4);
        let step = typical_step(&frames);
        let wrap = diff(last, first);
        assert!(
            wrap <= 2.0 * step + 1.0,
            "the last frame is one step before the first: {wrap} vs {step}"
        );
        assert!(
            diff(first, middle) > 3.0 * wrap.max(1.0),
            "it moves between"
        );
        assert!(
            diff(&plain[0].2, &plain[119].2) > 3.0 * wrap.max(1.0),
            "an unlooped clip does not come back"
        );
    }

    /// The median difference between one frame and the next.
    fn typical_step(frames: &[(usize, usize, Vec<u8>)]) -> f64 {
        let mut steps: Vec<f64> = frames.windows(2).map(|p| diff(&p[0].2, &p[1].2)).collect();
        steps.sort_by(f64::total_cmp);
        steps[steps.len() / 2]
    }

    /// Mean absolute difference per channel value.
    fn diff(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum::<u64>() as f64
            / a.len() as f64
    }

    #[test]
    fn gops_join_and_the_loop_wraps_without_a_jump() {
        // Nine seconds: past the eight-second loop.
        let s = VideoSpec {
            frames: 216,
            ..spec(128, 64)
        };
        let frames = decode_all(&render_video(&s).unwrap().mp4);
        assert_eq!(frames.len(), 216);
        let loop_frames = (LOOP_SECS * 24) as usize;
        for i in 0..216 - loop_frames {
            assert!(
                frames[i].2 == frames[i + loop_frames].2,
                "frame {i} comes back a loop later"
            );
        }
        let steps: Vec<f64> = frames.windows(2).map(|p| diff(&p[0].2, &p[1].2)).collect();
        let typical = typical_step(&frames);
        assert!(typical > 0.0, "it moves");
        // Into each GOP (every two seconds), including the loop's wrap.
        for join in (48..216).step_by(48) {
            let step = steps[join - 1];
            assert!(
                step <= 3.0 * typical + 1.0,
                "frame {join}: a step of {step}, typically {typical}"
            );
        }
    }

    #[test]
    fn kept_gops_are_the_bytes_a_fresh_encoding_gives() {
        let s = VideoSpec {
            frames: 60,
            ..spec(160, 96)
        };
        let mp4 = render_video(&s).unwrap().mp4;
        let mut reader =
            mp4::Mp4Reader::read_header(Cursor::new(&mp4[..]), mp4.len() as u64).unwrap();
        for (at, key) in [(0, gop_key(&s, 0)), (48, gop_key(&s, 48))] {
            let fresh = encode_gop(&key).unwrap();
            for (i, sample) in fresh.samples.iter().take(60 - at).enumerate() {
                let stored = reader.read_sample(1, (at + i + 1) as u32).unwrap().unwrap();
                assert!(stored.bytes == sample.data, "frame {}", at + i);
                assert_eq!(stored.is_sync, i == 0);
            }
        }
    }

    #[test]
    fn videos_rendered_at_once_from_new_gops_are_alike() {
        let s = VideoSpec {
            seed: 4321,
            frames: 30,
            ..spec(144, 80)
        };
        let videos: Vec<RenderedVideo> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| render_video(&s).unwrap()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(videos.iter().all(|v| *v == videos[0]));
        assert_eq!(probe_mp4(&videos[0].mp4).unwrap().frames, 30);
    }

    #[test]
    fn seeds_spread_over_every_look_and_start() {
        let starts: std::collections::HashSet<_> = (0..2000)
            .map(|seed| {
                let key = gop_key(
                    &VideoSpec {
                        seed,
                        ..spec(512, 288)
                    },
                    0,
                );
                (key.look, key.first)
            })
            .collect();
        assert_eq!(starts.len() as u64, LOOKS * u64::from(LOOP_SECS / GOP_SECS));
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
        let near = |jpeg: &[u8]| {
            let avg = average_color(jpeg).unwrap();
            (0..3).all(|c| avg[c].abs_diff(base[c]) < 30)
        };
        assert!(near(&video.thumbnail_jpeg));
        assert!(!near(&video.last_frame_jpeg), "it fades into the animation");
        // A loop from that colour comes back to it.
        let looped = render_video(&VideoSpec {
            looped: true,
            frames: 120,
            ..s
        })
        .unwrap();
        assert!(near(&looped.thumbnail_jpeg) && near(&looped.last_frame_jpeg));
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
