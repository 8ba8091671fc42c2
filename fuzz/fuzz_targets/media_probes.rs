//! The probes on any bytes (results from upstreams, images from clients):
//! the first byte picks the probe. They must answer, and say only what
//! can be: a decodable size, a real duration.
#![no_main]

use std::io::Cursor;
use std::sync::Once;

use gengate_media::{
    average_color, palette_grid, probe_image, probe_mp4, spritesheet_webp, thumbnail_webp,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The probes catch the mp4 crate's and the decoder's panics, as they
    // must for hostile files; libFuzzer's hook would abort on them first.
    // A panic that escapes a probe still ends the run (libfuzzer-sys
    // aborts on it).
    static HOOK: Once = Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(info) = probe_image(bytes) {
                assert!(info.width >= 1 && info.height >= 1, "{info:?}");
                assert!(palette_grid(bytes).is_ok() && average_color(bytes).is_ok());
            }
        }
        1 => {
            if let Ok(info) = probe_mp4(bytes) {
                assert!(
                    info.duration_secs.is_finite() && info.duration_secs >= 0.0,
                    "{info:?}"
                );
            }
        }
        2 => {
            let _ = thumbnail_webp(Cursor::new(bytes), bytes.len() as u64);
        }
        _ => {
            let _ = spritesheet_webp(Cursor::new(bytes), bytes.len() as u64);
        }
    }
});
