//! The procedural picture: flowing diagonal colour bands under soft, glowing
//! blobs that drift on Lissajous paths and small crisp bubbles that rise
//! through them, with a vignette. Integer math only, so output is identical on every machine and a
//! frame costs a few nanoseconds per pixel.
//!
//! Motion is periodic: every element makes whole turns (bubbles whole
//! climbs) over the scene's loop, so frame `loop_frames` is frame 0 again
//! and a video can repeat stretches it has already encoded without a jump.

/// One full turn in phase units.
const TURN: u32 = 1 << 16;
/// The usual loop: long enough that a 5 s video does not show it repeat.
pub(crate) const LOOP_SECS: u32 = 8;
/// Frames over which a `base_color` wash fades out of the animation.
pub(crate) const WASH_FRAMES: u32 = 36;
/// Wash strength on the first frame, out of 256.
const WASH_START: u32 = 232;
/// Entries in the per-frame band colour table (indexed by phase >> 6).
const BAND_LUT: usize = 1024;
/// 4×4 ordered dither, scaled to 0..=255, so gradients do not band.
const BAYER: [[u16; 4]; 4] = [
    [0, 128, 32, 160],
    [192, 64, 224, 96],
    [48, 176, 16, 144],
    [240, 112, 208, 80],
];

/// splitmix64: tiny, well mixed, and fully specified.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        lo + (self.next() % span) as u32
    }
}

struct Blob {
    color: [i32; 3],
    radius: i32,
    /// Path amplitude as a fraction of half the picture, out of 4096.
    amp_x: i32,
    amp_y: i32,
    /// Turns per loop, and starting phase.
    turns_x: u64,
    turns_y: u64,
    phase_x: u32,
    phase_y: u32,
    /// Peak strength out of 256.
    strength: i32,
}

/// A small, sharp-edged disc rising from the bottom and wrapping around.
struct Bubble {
    color: [i32; 3],
    radius: i32,
    /// Horizontal home position, out of 4096 of the width.
    home_x: i32,
    /// Vertical start position, out of 4096 of the travel.
    start_y: i64,
    /// Climbs from bottom to top per loop.
    climbs: i64,
    /// Sideways wobble in pixels, its turns per loop and starting phase.
    wobble: i32,
    wobble_turns: u64,
    wobble_phase: u32,
    strength: i32,
}

pub(crate) struct Scene {
    width: usize,
    height: usize,
    band_a: [i32; 3],
    band_b: [i32; 3],
    /// Band phase step per pixel in x and y (phase units, may be negative).
    step_x: i32,
    step_y: i32,
    /// Band turns per loop.
    band_turns: u64,
    blobs: Vec<Blob>,
    bubbles: Vec<Bubble>,
    /// Separable vignette, out of 256.
    vig_x: Vec<u16>,
    vig_y: Vec<u16>,
    wash: Option<[i32; 3]>,
    /// Frames until the motion is back where it began.
    loop_frames: u32,
}

impl Scene {
    /// Builds the scene for a picture, looping over `loop_frames` frames;
    /// `fps` only scales motion so that it looks about the same speed at any
    /// frame rate and loop length (rounded to whole turns per loop).
    pub(crate) fn new(
        width: usize,
        height: usize,
        seed: u64,
        base_color: Option<[u8; 3]>,
        fps: u32,
        loop_frames: u32,
    ) -> Scene {
        let loop_frames = loop_frames.max(1);
        // Whole cycles per loop of something moving `per_24th` of `cycle`
        // each 1/24 s; at least one, so everything moves.
        let per_loop = |per_24th: u64, cycle: u64| -> u64 {
            let num = per_24th * u64::from(loop_frames) * 24;
            let den = u64::from(fps.max(1)) * cycle.max(1);
            ((num + den / 2) / den).max(1)
        };
        let mut rng = Rng(seed ^ 0x5A4D_B0C5_0000_0001);
        let hue = match base_color {
            Some(c) => hue_of(c) + rng.range(0, 30),
            None => rng.range(0, 359),
        };
        let sat = rng.range(150, 215);
        let band_a = match base_color {
            Some(c) => c.map(i32::from),
            None => hsv(hue, sat, rng.range(70, 120)),
        };
        let band_b = hsv(hue + rng.range(25, 60), sat - 30, rng.range(190, 235));
        // Complementary and split-complementary lights for the blobs.
        let lights = [
            hsv(hue + rng.range(160, 200), rng.range(120, 190), 250),
            hsv(hue + rng.range(80, 120), rng.range(110, 170), 245),
            hsv(hue + rng.range(300, 340), rng.range(60, 120), 255),
        ];

        let short = width.min(height).max(1) as i32;
        let blob_count = rng.range(4, 6);
        let blobs = (0..blob_count)
            .map(|i| Blob {
                color: lights[(i as usize + rng.next() as usize) % lights.len()],
                radius: (short * rng.range(22, 42) as i32 / 100).max(2),
                amp_x: rng.range(1600, 3400) as i32,
                amp_y: rng.range(1200, 3000) as i32,
                turns_x: per_loop(rng.range(150, 520).into(), TURN.into()),
                turns_y: per_loop(rng.range(150, 520).into(), TURN.into()),
                phase_x: rng.range(0, TURN - 1),
                phase_y: rng.range(0, TURN - 1),
                strength: rng.range(150, 215) as i32,
            })
            .collect();

        let bubble_count = rng.range(10, 18);
        let bubbles = (0..bubble_count)
            .map(|_| {
                let radius = (short * rng.range(12, 40) as i32 / 1000).max(1);
                // Near-white versions of the lights.
                let light = lights[rng.next() as usize % lights.len()];
                let travel = (height as i32 + 2 * radius) as u64;
                // Pixels per 1/24 s, ×256.
                let rise = short as u64 * u64::from(rng.range(40, 160)) / 100;
                Bubble {
                    color: light.map(|c| (c + 2 * 255) / 3),
                    radius,
                    home_x: rng.range(0, 4096) as i32,
                    start_y: i64::from(rng.range(0, 4096)),
                    climbs: per_loop(rise, travel * 256) as i64,
                    wobble: radius * rng.range(1, 4) as i32,
                    wobble_turns: per_loop(rng.range(300, 900).into(), TURN.into()),
                    wobble_phase: rng.range(0, TURN - 1),
                    strength: rng.range(110, 190) as i32,
                }
            })
            .collect();

        // One band period spans about the picture's diagonal extent.
        let angle = rng.range(0, TURN - 1);
        let period = (width + height).max(2) as i64;
        let step_x = (i64::from(icos(angle)) * i64::from(TURN) / 4096 / period) as i32;
        let step_y = (i64::from(isin(angle)) * i64::from(TURN) / 4096 / period) as i32;
        let band_turns = per_loop(rng.range(180, 420).into(), TURN.into());

        Scene {
            width,
            height,
            band_a,
            band_b,
            step_x,
            step_y,
            band_turns,
            blobs,
            bubbles,
            vig_x: vignette(width),
            vig_y: vignette(height),
            wash: base_color.map(|c| c.map(i32::from)),
            loop_frames,
        }
    }

    /// Renders frame `frame` of the loop into `rgb` (RGB8, width × height ×
    /// 3); frames past the loop wrap around. The caller adds any wash and
    /// the badge, after any post-processing of its own.
    pub(crate) fn render(&self, frame: u32, rgb: &mut [u8]) {
        let (w, h) = (self.width, self.height);
        if rgb.len() != w * h * 3 {
            return;
        }
        let (at, period) = (
            u64::from(frame % self.loop_frames),
            u64::from(self.loop_frames),
        );
        let phase_at = |turns: u64, start: u32| -> u32 {
            ((u64::from(start) + turns * u64::from(TURN) * at / period) % u64::from(TURN)) as u32
        };

        // Per-frame colour table for the bands, in 8.8 fixed point so that the
        // per-pixel dither can pick sub-level shades.
        let mut lut = [[0u16; 3]; BAND_LUT];
        for (i, entry) in lut.iter_mut().enumerate() {
            let tri = if i < BAND_LUT / 2 {
                i
            } else {
                BAND_LUT - 1 - i
            } as i32;
            let t = tri * 256 / (BAND_LUT as i32 / 2 - 1);
            let s = t * t * (768 - 2 * t) / 65536;
            *entry = std::array::from_fn(|c| {
                let v = self.band_a[c] * 256 + (self.band_b[c] - self.band_a[c]) * s;
                v.clamp(0, 255 * 256) as u16
            });
        }

        let shift = phase_at(self.band_turns, 0) as i32;
        for y in 0..h {
            let row = &mut rgb[y * w * 3..(y + 1) * w * 3];
            let vy = u32::from(self.vig_y[y]);
            let bayer = &BAYER[y & 3];
            let mut phase = shift.wrapping_add(self.step_y.wrapping_mul(y as i32));
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let idx = ((phase as u32 & (TURN - 1)) >> 6) as usize;
                let d = bayer[x & 3];
                let v = vy * u32::from(self.vig_x[x]);
                for c in 0..3 {
                    let base = u32::from((lut[idx][c] + d) >> 8);
                    px[c] = ((base * v) >> 16) as u8;
                }
                phase = phase.wrapping_add(self.step_x);
            }
        }

        for blob in &self.blobs {
            let ox = i64::from(isin(phase_at(blob.turns_x, blob.phase_x)));
            let oy = i64::from(isin(phase_at(blob.turns_y, blob.phase_y)));
            let cx = w as i64 / 2 + ox * i64::from(blob.amp_x) * w as i64 / (4096 * 4096 * 2);
            let cy = h as i64 / 2 + oy * i64::from(blob.amp_y) * h as i64 / (4096 * 4096 * 2);
            self.draw_blob(rgb, blob, cx, cy);
        }

        for b in &self.bubbles {
            let r = i64::from(b.radius);
            let travel = h as i64 + 2 * r;
            let y0 = b.start_y * travel / 4096;
            let climbed = b.climbs * travel * at as i64 / period as i64;
            let cy = (y0 - climbed).rem_euclid(travel) - r;
            let sway = i64::from(isin(phase_at(b.wobble_turns, b.wobble_phase)));
            let cx = i64::from(b.home_x) * w as i64 / 4096 + sway * i64::from(b.wobble) / 4096;
            self.draw_bubble(rgb, b, cx, cy);
        }
    }

    /// Blends a video's frame `frame` frames from where it begins (not the
    /// loop's start) towards the base colour, if the scene has one: strongly
    /// at first, fading out over [`WASH_FRAMES`].
    pub(crate) fn wash(&self, frame: u32, rgb: &mut [u8]) {
        if let Some(base) = self.wash
            && frame < WASH_FRAMES
        {
            let left = WASH_FRAMES - frame;
            let k = (WASH_START * left * left / (WASH_FRAMES * WASH_FRAMES)) as i32;
            for px in rgb.chunks_exact_mut(3) {
                for c in 0..3 {
                    let p = i32::from(px[c]);
                    px[c] = (p + (((base[c] - p) * k) >> 8)) as u8;
                }
            }
        }
    }

    /// Screen-blends a soft disc whose strength falls off smoothly to zero at
    /// its rim.
    fn draw_blob(&self, rgb: &mut [u8], blob: &Blob, cx: i64, cy: i64) {
        let r = i64::from(blob.radius);
        // 1/r² in 0.32 fixed point, so the falloff needs no per-pixel division.
        let inv = (1u64 << 32) / (r * r).max(1) as u64;
        self.blend_disc(rgb, cx, cy, r, blob.color, |inside| {
            let a = ((inside * inv) >> 24) as i32;
            (((a * a) >> 8) * blob.strength) >> 8
        });
    }

    /// Screen-blends a disc with a one-pixel anti-aliased rim.
    fn draw_bubble(&self, rgb: &mut [u8], b: &Bubble, cx: i64, cy: i64) {
        let r = i64::from(b.radius);
        // (r² − d²)/(2r) ≈ r − d near the rim: coverage without a square root.
        let inv = (1u64 << 32) / (2 * r).max(1) as u64;
        self.blend_disc(rgb, cx, cy, r, b.color, |inside| {
            let cover = ((inside * inv) >> 24).min(256) as i32;
            (cover * b.strength) >> 8
        });
    }

    /// Screen-blends `color` into every pixel strictly inside the disc of
    /// radius `r` at (`cx`, `cy`), with the strength `alpha` gives for the
    /// pixel's r² − d².
    fn blend_disc(
        &self,
        rgb: &mut [u8],
        cx: i64,
        cy: i64,
        r: i64,
        color: [i32; 3],
        alpha: impl Fn(u64) -> i32,
    ) {
        let (w, h) = (self.width as i64, self.height as i64);
        let r2 = r * r;
        let (x0, x1) = ((cx - r).max(0), (cx + r + 1).min(w));
        let (y0, y1) = ((cy - r).max(0), (cy + r + 1).min(h));
        for y in y0..y1 {
            let dy = y - cy;
            let row = y as usize * self.width * 3;
            for x in x0..x1 {
                let dx = x - cx;
                let d2 = dx * dx + dy * dy;
                if d2 >= r2 {
                    continue;
                }
                let i = row + x as usize * 3;
                let Some(px) = rgb.get_mut(i..i + 3) else {
                    continue;
                };
                screen(px, color, alpha((r2 - d2) as u64));
            }
        }
    }
}

/// Screen blend, p + c·(255 − p)/255, mixed in with strength `a` out of 256:
/// overlapping lights brighten without clipping harshly.
fn screen(px: &mut [u8], color: [i32; 3], a: i32) {
    for (p, c) in px.iter_mut().zip(color) {
        let v = i32::from(*p);
        let lit = (c * (255 - v)) >> 8;
        *p = (v + ((lit * a) >> 8)).min(255) as u8;
    }
}

/// Vignette factors for one axis: 256 in the middle, ~200 at the edges.
fn vignette(n: usize) -> Vec<u16> {
    let n = n.max(1) as i64;
    (0..n)
        .map(|i| {
            let d = (2 * i + 1 - n) * 1024 / n; // -1024..1024
            (256 - (d * d * 56 / (1024 * 1024))) as u16
        })
        .collect()
}

/// sin of a phase (one turn = 65536), scaled to ±4096; a refined parabola,
/// within ~0.1% of the real thing and free of platform float differences.
pub(crate) fn isin(phase: u32) -> i32 {
    // t in -32768..32768 maps -π..π; sin(θ) = -sin(θ - π).
    let t = (phase & (TURN - 1)) as i64 - 32768;
    let y = t / 2 - ((t * t.abs()) >> 16);
    let y = y + (225 * (y * y.abs() / 4096 - y)) / 1000;
    -(y as i32)
}

pub(crate) fn icos(phase: u32) -> i32 {
    isin(phase.wrapping_add(TURN / 4))
}

/// Integer HSV → RGB; hue in degrees (any value, wrapped), s and v 0..=255.
fn hsv(hue: u32, s: u32, v: u32) -> [i32; 3] {
    let (s, v) = (s.min(255), v.min(255));
    let h = hue % 360;
    let rem = (h % 60) * 255 / 60;
    let p = v * (255 - s) / 255;
    let q = v * (255 - s * rem / 255) / 255;
    let t = v * (255 - s * (255 - rem) / 255) / 255;
    let rgb = match h / 60 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|c| c as i32)
}

/// Hue in degrees of an RGB colour (0 for greys).
fn hue_of(c: [u8; 3]) -> u32 {
    let [r, g, b] = c.map(i32::from);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    if d == 0 {
        return 0;
    }
    let h = if max == r {
        60 * (g - b) / d
    } else if max == g {
        120 + 60 * (b - r) / d
    } else {
        240 + 60 * (r - g) / d
    };
    h.rem_euclid(360) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isin_tracks_sin() {
        for p in (0..TURN).step_by(97) {
            let want = (f64::from(p) / f64::from(TURN) * std::f64::consts::TAU).sin() * 4096.0;
            let got = f64::from(isin(p));
            assert!((want - got).abs() < 12.0, "phase {p}: {got} vs {want}");
        }
    }

    #[test]
    fn hsv_and_hue_round_trip() {
        assert_eq!(hsv(0, 255, 255), [255, 0, 0]);
        assert_eq!(hsv(120, 255, 255), [0, 255, 0]);
        assert_eq!(hsv(240, 255, 255), [0, 0, 255]);
        for hue in [0, 30, 90, 150, 210, 270, 330] {
            let c = hsv(hue, 255, 255).map(|v| v as u8);
            assert!(hue_of(c).abs_diff(hue) <= 2, "{hue} -> {}", hue_of(c));
        }
    }

    #[test]
    fn frames_change_over_time_and_differ_by_seed() {
        let (w, h) = (64, 48);
        let scene = Scene::new(w, h, 7, None, 24, 192);
        let mut a = vec![0; w * h * 3];
        let mut b = vec![0; w * h * 3];
        scene.render(0, &mut a);
        scene.render(60, &mut b);
        assert_ne!(a, b);
        Scene::new(w, h, 8, None, 24, 192).render(0, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn motion_comes_back_after_each_loop() {
        let (w, h) = (96, 64);
        let render = |scene: &Scene, frame| {
            let mut rgb = vec![0; w * h * 3];
            scene.render(frame, &mut rgb);
            rgb
        };
        for (fps, loop_frames) in [(24, 192), (30, 45), (24, 7)] {
            let scene = Scene::new(w, h, 11, None, fps, loop_frames);
            assert_eq!(render(&scene, 0), render(&scene, loop_frames));
            assert_eq!(render(&scene, 3), render(&scene, 2 * loop_frames + 3));
            assert_ne!(render(&scene, 0), render(&scene, 1));
        }
    }

    #[test]
    fn wash_makes_the_first_frame_the_base_colour() {
        let (w, h) = (96, 64);
        let base = [20, 200, 90];
        let scene = Scene::new(w, h, 3, Some(base), 24, 192);
        let mut rgb = vec![0; w * h * 3];
        scene.render(0, &mut rgb);
        scene.wash(0, &mut rgb);
        let n = (w * h) as u64;
        for (c, want) in base.into_iter().enumerate() {
            let avg = rgb
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| u64::from(v))
                .sum::<u64>()
                / n;
            assert!(avg.abs_diff(u64::from(want)) < 30, "channel {c}: {avg}");
        }
    }
}
