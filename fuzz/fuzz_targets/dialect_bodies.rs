//! Every dialect's request parser on any body: the first byte picks the
//! parser, the rest is the body. A refusal must be a 400 that names a field
//! (or says the JSON is malformed); anything else, or a panic, is a crash.
#![no_main]

use gengate_core::dialect::{
    dream_machine, kling, kling_video, luma, openai_images, openai_videos, parse_batch, tasks,
};
use gengate_core::{ApiError, Dialect, GenerationRequest, NewTask, Task, TaskKind, TaskState};
use libfuzzer_sys::fuzz_target;

/// A completed video, for the parsers that continue one.
fn parent() -> Task {
    let new = NewTask {
        dialect: Dialect::Luma,
        kind: TaskKind::Video,
        model: "ray-2".into(),
        request: GenerationRequest {
            prompt: "a parent".into(),
            aspect_ratio: "16:9".into(),
            n: 1,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: None,
        channel: None,
    };
    let mut t = Task::accepted(uuid::Uuid::nil(), uuid::Uuid::nil(), new, 0, 1);
    t.state = TaskState::Completed;
    t
}

fn parse(which: u8, body: &[u8]) -> Result<(), ApiError> {
    match which % 12 {
        0 => luma::parse_create(body).map(drop),
        1 => luma::parse_extend(body, &parent(), 0).map(drop),
        2 => kling::parse_create(body).map(drop),
        3 => kling_video::parse_create(body, kling_video::Endpoint::Text2Video).map(drop),
        4 => kling_video::parse_create(body, kling_video::Endpoint::Image2Video).map(drop),
        5 => dream_machine::parse_video(body).map(drop),
        6 => dream_machine::parse_image(body).map(drop),
        7 => openai_images::parse_create(body).map(drop),
        8 => openai_videos::parse_create(openai_videos::json_form(body)?).map(drop),
        9 => openai_videos::parse_remix(body, &parent()).map(drop),
        10 => tasks::parse_create(body, |m| (m == "img").then_some(TaskKind::Image)).map(drop),
        _ => parse_batch(body).map(drop),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if let Err(e) = parse(which, body) {
        assert_eq!(e.status(), 400, "{e:?}");
        if let ApiError::Validation { field, .. } = &e {
            assert!(!field.is_empty(), "{e:?}");
        }
    }
});
