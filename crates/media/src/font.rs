//! A tiny 5×7 bitmap font with just the letters of "SANDBOX", and the badge
//! drawn with it, so every sandbox picture says where it came from.

const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;
const LABEL: &[u8] = b"SANDBOX";

/// Rows top to bottom; bit 4 is the leftmost column.
fn glyph(c: u8) -> [u8; GLYPH_H] {
    match c {
        b'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        b'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        b'N' => [
            0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b10001,
        ],
        b'D' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
        ],
        b'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        b'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        b'X' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
        _ => [0; GLYPH_H],
    }
}

/// Pixel scale of the badge for a picture of this size: readable but small.
pub(crate) fn label_scale(width: usize, height: usize) -> usize {
    (width.min(height) + 72) / 144
}

/// Draws a darkened box with "SANDBOX" in near-white in the bottom-right
/// corner of an RGB8 buffer, clipped to the picture.
pub(crate) fn draw_label(rgb: &mut [u8], width: usize, height: usize) {
    let s = label_scale(width, height).max(1);
    let text_w = LABEL.len() * (GLYPH_W + 1) * s - s;
    let text_h = GLYPH_H * s;
    let pad = 2 * s;
    let margin = 3 * s;
    let box_w = text_w + 2 * pad;
    let box_h = text_h + 2 * pad;
    // Signed so that a picture smaller than the badge just clips it.
    let box_x = width as isize - (box_w + margin) as isize;
    let box_y = height as isize - (box_h + margin) as isize;

    for by in 0..box_h {
        let y = box_y + by as isize;
        if y < 0 || y >= height as isize {
            continue;
        }
        for bx in 0..box_w {
            let x = box_x + bx as isize;
            if x < 0 || x >= width as isize {
                continue;
            }
            let i = (y as usize * width + x as usize) * 3;
            let Some(px) = rgb.get_mut(i..i + 3) else {
                continue;
            };
            let (tx, ty) = (bx as isize - pad as isize, by as isize - pad as isize);
            if ink(tx, ty, s) {
                px.copy_from_slice(&[244, 244, 240]);
            } else {
                for c in px.iter_mut() {
                    *c = ((u16::from(*c) * 90) >> 8) as u8;
                }
            }
        }
    }
}

/// Whether text-space pixel (tx, ty) is inked at scale `s`.
fn ink(tx: isize, ty: isize, s: usize) -> bool {
    if tx < 0 || ty < 0 {
        return false;
    }
    let (col, row) = (tx as usize / s, ty as usize / s);
    let (ch, cx) = (col / (GLYPH_W + 1), col % (GLYPH_W + 1));
    if row >= GLYPH_H || cx >= GLYPH_W {
        return false;
    }
    let Some(&c) = LABEL.get(ch) else {
        return false;
    };
    glyph(c)[row] & (1 << (GLYPH_W - 1 - cx)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_letter_has_a_glyph() {
        for &c in LABEL {
            assert!(glyph(c).iter().any(|&r| r != 0), "{}", c as char);
        }
    }

    #[test]
    fn label_is_drawn_in_the_bottom_right_and_clips_on_tiny_pictures() {
        let (w, h) = (200, 100);
        let mut rgb = vec![128u8; w * h * 3];
        draw_label(&mut rgb, w, h);
        let bright = |x: usize, y: usize| rgb[(y * w + x) * 3] > 200;
        let lit = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| bright(x, y))
            .collect::<Vec<_>>();
        assert!(!lit.is_empty());
        assert!(lit.iter().all(|&(x, y)| x > w / 2 && y > h / 2));
        assert_eq!(&rgb[..3], &[128, 128, 128]);

        for (w, h) in [(1, 1), (3, 50), (50, 3), (16, 16)] {
            let mut rgb = vec![0u8; w * h * 3];
            draw_label(&mut rgb, w, h);
        }
    }
}
