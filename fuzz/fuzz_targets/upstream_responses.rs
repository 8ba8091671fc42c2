//! Every upstream adapter reading any answer: the first byte picks the
//! adapter and whether the bytes come as its poll's (or OpenAI images'
//! submit's) answer, from a loopback stand-in, or as a callback; the second
//! the HTTP status; the rest is the body. No panic, no success from an error
//! status, no success without files.
#![no_main]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};

use gengate_core::{
    ChannelSpec, Dialect, GenerationRequest, NewTask, ProviderKind, Task, TaskKind,
};
use gengate_providers::{PollOutcome, Provider, ProviderError, Submission, for_channel};
use libfuzzer_sys::fuzz_target;

const STATUSES: &[u16] = &[
    200, 201, 202, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503,
];

/// Each adapter and one of its jobs' names.
const ADAPTERS: &[(ProviderKind, &str)] = &[
    (ProviderKind::Luma, "gen-1"),
    (ProviderKind::Kling, "videos/text2video/t-1"),
    (ProviderKind::Replicate, "p-1"),
    (ProviderKind::OpenaiVideos, "video_1"),
    (ProviderKind::GeminiVeo, "models/veo-3/operations/op-1"),
    (ProviderKind::Comfyui, "run-1"),
    (
        ProviderKind::Gengate,
        "luma/0190a07c-7641-7809-a133-10786201bb57",
    ),
    (
        ProviderKind::Gengate,
        "kling/0190a07c-7641-7809-a133-10786201bb57",
    ),
    (ProviderKind::OpenaiImages, ""),
];

struct World {
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
    rt: tokio::runtime::Runtime,
    adapters: Vec<Arc<dyn Provider>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new((200, Vec::new())));
        let shared = answer.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (status, body) = shared.lock().unwrap().clone();
                respond(conn, status, &body);
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let workflow = std::env::temp_dir().join("gengate-fuzz-workflow.json");
        std::fs::write(
            &workflow,
            include_str!("../../crates/testkit/fixtures/comfyui/txt2img.json"),
        )
        .unwrap();
        let _in_rt = rt.enter();
        let adapters = ADAPTERS
            .iter()
            .map(|(kind, _)| {
                let mut s = ChannelSpec::new("c", *kind);
                s.base_url = Some(base.clone());
                s.credentials.api_key = Some("key".into());
                s.workflow = Some(workflow.to_string_lossy().into_owned());
                for_channel(&s, None).unwrap()
            })
            .collect();
        drop(_in_rt);
        World {
            answer,
            rt,
            adapters,
        }
    })
}

/// Reads one request (headers and the body its length says), answers it
/// and closes the connection.
fn respond(mut conn: TcpStream, status: u16, body: &[u8]) {
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    let head_end = loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while seen.len() < head_end + length {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// One image to make, for OpenAI images' submit (its answer has the images).
fn image_task() -> Task {
    let new = NewTask {
        dialect: Dialect::OpenaiImages,
        kind: TaskKind::Image,
        model: "gpt-image-1".into(),
        request: GenerationRequest {
            prompt: "a cat".into(),
            aspect_ratio: "1:1".into(),
            n: 1,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: None,
        channel: None,
    };
    Task::accepted(uuid::Uuid::nil(), uuid::Uuid::nil(), new, 0, 1)
}

fn check(status: u16, got: &Result<PollOutcome, ProviderError>) {
    match got {
        Ok(_) if !(200..300).contains(&status) => panic!("HTTP {status} read as {got:?}"),
        Ok(PollOutcome::Succeeded(outputs)) => assert!(!outputs.is_empty(), "{got:?}"),
        Ok(PollOutcome::Running {
            progress: Some(p), ..
        }) => assert!(*p <= 100, "{got:?}"),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, status, body @ ..] = data else {
        return;
    };
    let w = world();
    let which = usize::from(*pick) % (ADAPTERS.len() * 2);
    let (adapter, upstream_ref) = (
        &w.adapters[which % ADAPTERS.len()],
        ADAPTERS[which % ADAPTERS.len()].1,
    );
    if which >= ADAPTERS.len() {
        // As a callback (unsigned; adapters that take none refuse it).
        if let Ok(news) = adapter.read_callback(&reqwest::header::HeaderMap::new(), body) {
            check(200, &Ok(news.outcome));
        }
        return;
    }
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    *w.answer.lock().unwrap() = (status, body.to_vec());
    let got = if upstream_ref.is_empty() {
        let task = image_task();
        w.rt.block_on(adapter.submit(Submission::new(&task, "gpt-image-1", 0)))
            .map(|s| PollOutcome::Succeeded(s.outputs.unwrap_or_default()))
    } else {
        w.rt.block_on(adapter.poll(upstream_ref, 0))
    };
    check(status, &got);
});
