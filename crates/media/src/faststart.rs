//! "Faststart": move `moov` in front of `mdat` so a player can start without
//! range requests, shifting every chunk offset (`stco`/`co64`) to match.

use super::MediaError;

/// Boxes whose payload is only child boxes, on the way down to `stbl`.
const CONTAINERS: [&[u8; 4]; 5] = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];

#[derive(Debug, Clone, Copy)]
struct BoxRef {
    kind: [u8; 4],
    start: usize,
    /// Where the payload starts.
    body: usize,
    end: usize,
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let hi = be_u32(data, at)?;
    let lo = be_u32(data, at.checked_add(4)?)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

fn malformed(what: &str) -> MediaError {
    MediaError::Mux(format!("faststart: {what}"))
}

/// The boxes laid end to end in `data[from..to]`.
fn children(data: &[u8], from: usize, to: usize) -> Result<Vec<BoxRef>, MediaError> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let size32 = be_u32(data, pos).ok_or_else(|| malformed("cut-off box header"))?;
        let kind_bytes = data
            .get(pos + 4..pos + 8)
            .ok_or_else(|| malformed("cut-off box header"))?;
        let kind = [kind_bytes[0], kind_bytes[1], kind_bytes[2], kind_bytes[3]];
        let (size, header) = match size32 {
            0 => ((to - pos) as u64, 8),
            1 => (
                be_u64(data, pos + 8).ok_or_else(|| malformed("cut-off large size"))?,
                16,
            ),
            n => (u64::from(n), 8),
        };
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&end| size >= header && end <= to)
            .ok_or_else(|| malformed("box size out of bounds"))?;
        out.push(BoxRef {
            kind,
            start: pos,
            body: pos + header as usize,
            end,
        });
        pos = end;
    }
    Ok(out)
}

/// Rewrites an MP4 so that `moov` precedes the first `mdat`. Files already
/// laid out that way are returned unchanged.
pub(crate) fn faststart(file: Vec<u8>) -> Result<Vec<u8>, MediaError> {
    let top = children(&file, 0, file.len())?;
    let moov = *top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or_else(|| malformed("no moov box"))?;
    let Some(mdat) = top.iter().find(|b| &b.kind == b"mdat") else {
        return Ok(file);
    };
    if moov.start < mdat.start {
        return Ok(file);
    }

    // Everything from the first mdat up to moov moves back by moov's size;
    // anything after moov stays where it was.
    let insert_at = mdat.start;
    let mut new_moov = file[moov.start..moov.end].to_vec();
    let shift = (moov.end - moov.start) as u64;
    let moved = insert_at as u64..moov.start as u64;
    patch_offsets(&mut new_moov, 0, moov.end - moov.start, &|o| {
        if moved.contains(&o) { o + shift } else { o }
    })?;

    let mut out = Vec::with_capacity(file.len());
    out.extend_from_slice(&file[..insert_at]);
    out.extend_from_slice(&new_moov);
    out.extend_from_slice(&file[insert_at..moov.start]);
    out.extend_from_slice(&file[moov.end..]);
    Ok(out)
}

/// Applies `map` to every chunk offset in the boxes within `data[from..to]`.
fn patch_offsets(
    data: &mut [u8],
    from: usize,
    to: usize,
    map: &dyn Fn(u64) -> u64,
) -> Result<(), MediaError> {
    for b in children(data, from, to)? {
        match &b.kind {
            k if CONTAINERS.contains(&k) => {
                // moov's own header is part of the range handed in.
                let (from, to) = (b.body, b.end);
                patch_offsets(data, from, to, map)?;
            }
            b"stco" => patch_table(data, b, 4, map)?,
            b"co64" => patch_table(data, b, 8, map)?,
            _ => {}
        }
    }
    Ok(())
}

/// Patches a full box of `count` big-endian offsets of `width` bytes.
fn patch_table(
    data: &mut [u8],
    b: BoxRef,
    width: usize,
    map: &dyn Fn(u64) -> u64,
) -> Result<(), MediaError> {
    // Version and flags, then the entry count.
    let count = be_u32(data, b.body + 4).ok_or_else(|| malformed("cut-off offset table"))?;
    let first = b.body + 8;
    let table_end = (count as usize)
        .checked_mul(width)
        .and_then(|n| first.checked_add(n))
        .filter(|&e| e <= b.end)
        .ok_or_else(|| malformed("offset table overruns its box"))?;
    for entry in data[first..table_end].chunks_exact_mut(width) {
        if width == 4 {
            let old = u64::from(u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]));
            let new = u32::try_from(map(old))
                .map_err(|_| malformed("32-bit chunk offset overflows after the move"))?;
            entry.copy_from_slice(&new.to_be_bytes());
        } else {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(entry);
            entry.copy_from_slice(&map(u64::from_be_bytes(buf)).to_be_bytes());
        }
    }
    Ok(())
}

/// Top-level box types in order, for tests and sanity checks.
#[cfg(test)]
pub(crate) fn top_level_kinds(file: &[u8]) -> Result<Vec<[u8; 4]>, MediaError> {
    Ok(children(file, 0, file.len())?
        .into_iter()
        .map(|b| b.kind)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn table(kind: &[u8; 4], offsets: &[u64]) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
        for &o in offsets {
            if kind == b"stco" {
                body.extend_from_slice(&(o as u32).to_be_bytes());
            } else {
                body.extend_from_slice(&o.to_be_bytes());
            }
        }
        mp4_box(kind, &body)
    }

    #[test]
    fn moves_moov_and_shifts_both_offset_kinds() {
        let ftyp = mp4_box(b"ftyp", b"isom\0\0\0\0");
        let mdat = mp4_box(b"mdat", b"ABCDEFGH");
        let data_at = (ftyp.len() + 8) as u64;
        let stbl = |kind: &[u8; 4]| {
            mp4_box(
                b"trak",
                &mp4_box(
                    b"mdia",
                    &mp4_box(
                        b"minf",
                        &mp4_box(b"stbl", &table(kind, &[data_at, data_at + 4])),
                    ),
                ),
            )
        };
        let mut traks = stbl(b"stco");
        traks.extend(stbl(b"co64"));
        let moov = mp4_box(b"moov", &traks);
        let file = [ftyp.clone(), mdat.clone(), moov.clone()].concat();

        let out = faststart(file.clone()).unwrap();
        assert_eq!(out.len(), file.len());
        assert_eq!(
            top_level_kinds(&out).unwrap(),
            [*b"ftyp", *b"moov", *b"mdat"]
        );
        let shifted = data_at + moov.len() as u64;
        assert_eq!(&out[shifted as usize..shifted as usize + 4], b"ABCD");
        let expected_moov = mp4_box(b"moov", &{
            let f = |kind: &[u8; 4]| {
                mp4_box(
                    b"trak",
                    &mp4_box(
                        b"mdia",
                        &mp4_box(
                            b"minf",
                            &mp4_box(b"stbl", &table(kind, &[shifted, shifted + 4])),
                        ),
                    ),
                )
            };
            [f(b"stco"), f(b"co64")].concat()
        });
        assert_eq!(
            &out[ftyp.len()..ftyp.len() + moov.len()],
            &expected_moov[..]
        );

        // Already fast: untouched.
        assert_eq!(faststart(out.clone()).unwrap(), out);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(faststart(b"\0\0\0\x20ftyp".to_vec()).is_err());
        assert!(faststart(mp4_box(b"ftyp", b"isom")).is_err());
        let bad_table = mp4_box(b"moov", &mp4_box(b"stco", &[0, 0, 0, 0, 0, 0, 0, 9]));
        let file = [mp4_box(b"mdat", b"x"), bad_table].concat();
        assert!(faststart(file).is_err());
    }
}
