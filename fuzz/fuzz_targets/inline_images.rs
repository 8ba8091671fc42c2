//! An image field's value (a URL, base64 or a data URI), and the other
//! strings clients send that are decoded: list cursors and video ids.
#![no_main]

use gengate_core::dialect::{openai_videos, tasks};
use gengate_core::validate::image_source;
use gengate_core::{ApiError, ImageFormat, ImageRole, ImageSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    match image_source("image", value, ImageRole::Start) {
        Ok((image, upload)) => match image.source {
            ImageSource::Url { url } => assert!(url.starts_with("http") && upload.is_none()),
            ImageSource::Stored { format, key } => {
                let upload = upload.expect("an inline image is uploaded");
                assert_eq!(ImageFormat::sniff(&upload.bytes), Some(format));
                assert_eq!(upload.key, key);
            }
        },
        Err(ApiError::Validation { field, .. }) => assert_eq!(field, "image"),
        Err(other) => panic!("{other:?}"),
    }
    let _ = tasks::decode_cursor(value);
    let _ = openai_videos::parse_id(value);
});
