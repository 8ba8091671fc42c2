//! Property tests of what every upstream adapter reads from outside: poll
//! and submit answers (from a stand-in upstream that answers whatever the
//! case says), callbacks, and callback signatures. Whatever comes back, an
//! adapter never panics, never reads a failure or garbage as success, and
//! reports the files a success names, no more and no fewer.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::{ChannelSpec, ProviderKind, TaskKind};
use gengate_providers::signing::WebhookKey;
use gengate_providers::{
    OutputData, PollOutcome, Provider, ProviderError, Submission, for_channel,
};
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

const TASK_ID: &str = "0190a07c-7641-7809-a133-10786201bb57";

/// A stand-in upstream on loopback: every request gets the status and body
/// last set, then the connection is closed.
struct Stub {
    base: String,
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
}

impl Stub {
    fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new((200, Vec::new())));
        let shared = answer.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (status, body) = shared.lock().unwrap().clone();
                answer_one(conn, status, &body);
            }
        });
        Stub { base, answer }
    }

    fn set(&self, status: u16, body: &[u8]) {
        *self.answer.lock().unwrap() = (status, body.to_vec());
    }
}

/// Reads one request (headers, then the body its length says) and answers.
fn answer_one(mut conn: std::net::TcpStream, status: u16, body: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
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

/// The stub and an adapter of each kind pointed at it, built once.
struct World {
    stub: Stub,
    /// Held by a test case while it sets the stub's answer and reads it:
    /// the tests run in parallel and share the stub.
    turn: Mutex<()>,
    rt: tokio::runtime::Runtime,
    adapters: Vec<Adapter>,
}

/// An adapter, how one of its jobs is named, the word its upstream marks
/// success with, and a success answer naming some files.
struct Adapter {
    name: &'static str,
    provider: Arc<dyn Provider>,
    upstream_ref: &'static str,
    success_word: &'static str,
    success: fn(&[String]) -> Value,
}

fn spec(kind: ProviderKind, base: &str) -> ChannelSpec {
    let mut s = ChannelSpec::new("c", kind);
    s.base_url = Some(base.into());
    s.credentials.api_key = Some("key".into());
    s
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let stub = Stub::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let workflow =
            std::env::temp_dir().join(format!("gengate-proptest-{}.json", std::process::id()));
        std::fs::write(
            &workflow,
            include_str!("../../testkit/fixtures/comfyui/txt2img.json"),
        )
        .unwrap();
        let make = |kind| {
            let mut s = spec(kind, &stub.base);
            s.workflow = Some(workflow.to_string_lossy().into_owned());
            // Adapters build their HTTP clients inside the runtime.
            let _in_rt = rt.enter();
            for_channel(&s, None).unwrap()
        };
        let adapters = vec![
            Adapter {
                name: "luma",
                provider: make(ProviderKind::Luma),
                upstream_ref: "gen-1",
                success_word: "completed",
                success: |urls| {
                    let assets = urls.first().map_or(json!({}), |u| json!({"video": u}));
                    json!({"id": "gen-1", "state": "completed", "assets": assets})
                },
            },
            Adapter {
                name: "kling",
                provider: make(ProviderKind::Kling),
                upstream_ref: "videos/text2video/t-1",
                success_word: "succeed",
                success: |urls| {
                    let files: Vec<Value> = urls.iter().map(|u| json!({"url": u})).collect();
                    json!({"code": 0, "message": "SUCCEED", "data": {"task_id": "t-1",
                        "task_status": "succeed", "task_result": {"videos": files}}})
                },
            },
            Adapter {
                name: "replicate",
                provider: make(ProviderKind::Replicate),
                upstream_ref: "p-1",
                success_word: "succeeded",
                success: |urls| json!({"id": "p-1", "status": "succeeded", "output": urls}),
            },
            Adapter {
                name: "openai-videos",
                provider: make(ProviderKind::OpenaiVideos),
                upstream_ref: "video_1",
                success_word: "completed",
                // The file is the video's own content URL, not one it names.
                success: |_| json!({"id": "video_1", "status": "completed"}),
            },
            Adapter {
                name: "gemini-veo",
                provider: make(ProviderKind::GeminiVeo),
                upstream_ref: "models/veo-3/operations/op-1",
                success_word: "done",
                success: |urls| {
                    let samples: Vec<Value> =
                        urls.iter().map(|u| json!({"video": {"uri": u}})).collect();
                    json!({"name": "models/veo-3/operations/op-1", "done": true,
                        "response": {"generateVideoResponse": {"generatedSamples": samples}}})
                },
            },
            Adapter {
                name: "comfyui",
                provider: make(ProviderKind::Comfyui),
                upstream_ref: "run-1",
                success_word: "outputs",
                // Files are named, not linked: each becomes a `/view` URL.
                success: |urls| {
                    let images: Vec<Value> = urls
                        .iter()
                        .map(|u| json!({"filename": u, "type": "output"}))
                        .collect();
                    json!({"run-1": {"status": {"completed": true},
                        "outputs": {"9": {"images": images}}}})
                },
            },
            Adapter {
                name: "gengate (luma)",
                provider: make(ProviderKind::Gengate),
                upstream_ref: "luma/0190a07c-7641-7809-a133-10786201bb57",
                success_word: "completed",
                success: |urls| match urls.first() {
                    Some(u) => json!({"id": TASK_ID, "state": "completed", "video": {"url": u}}),
                    None => json!({"id": TASK_ID, "state": "completed"}),
                },
            },
            Adapter {
                name: "gengate (kling)",
                provider: make(ProviderKind::Gengate),
                upstream_ref: "kling/0190a07c-7641-7809-a133-10786201bb57",
                success_word: "succeed",
                success: |urls| {
                    let images: Vec<Value> = urls
                        .iter()
                        .zip(0..)
                        .map(|(u, i)| json!({"index": i, "url": u}))
                        .collect();
                    json!({"code": 0, "data": {"task_id": TASK_ID, "task_status": "succeed",
                        "task_result": {"images": images}}})
                },
            },
        ];
        World {
            stub,
            turn: Mutex::new(()),
            rt,
            adapters,
        }
    })
}

/// This case's turn at the stub (a failed case's panic does not end it).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    world().turn.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one request to the stand-in is a poll, or OpenAI images' submit
/// (whose answer carries the images).
fn poll(a: &Adapter) -> Result<PollOutcome, ProviderError> {
    let w = world();
    w.rt.block_on(a.provider.poll(a.upstream_ref, 0))
}

fn openai_images_submit(body: &[u8], status: u16) -> Result<PollOutcome, ProviderError> {
    static ADAPTER: OnceLock<Arc<dyn Provider>> = OnceLock::new();
    let w = world();
    let p = ADAPTER.get_or_init(|| {
        let _in_rt = w.rt.enter();
        for_channel(&spec(ProviderKind::OpenaiImages, &w.stub.base), None).unwrap()
    });
    w.stub.set(status, body);
    let mut task = gengate_testkit::fixtures::pending_task(TaskKind::Image, "a cat");
    task.request.n = 1;
    let submitted =
        w.rt.block_on(p.submit(Submission::new(&task, "gpt-image-1", 0)))?;
    Ok(PollOutcome::Succeeded(
        submitted.outputs.unwrap_or_default(),
    ))
}

/// What may be read from any answer: no success from an error status, from
/// an answer without the success word, or without files; progress ≤ 100.
fn outcome_is_possible(
    name: &str,
    status: u16,
    body: &[u8],
    success_word: &str,
    got: &Result<PollOutcome, ProviderError>,
) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(body);
    match got {
        Ok(_) if !(200..300).contains(&status) => {
            prop_assert!(false, "{}: HTTP {} read as {:?}", name, status, got)
        }
        Ok(PollOutcome::Succeeded(outputs)) => {
            prop_assert!(!outputs.is_empty(), "{}: success without files", name);
            prop_assert!(
                text.contains(success_word),
                "{}: {:?} read as success",
                name,
                text
            );
        }
        Ok(PollOutcome::Running {
            progress: Some(p), ..
        }) => prop_assert!(*p <= 100, "{}: progress {}", name, p),
        _ => {}
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e3..1e3f64).prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        // The words adapters look for, so deeper paths are reached.
        prop::sample::select(vec![
            "completed",
            "succeed",
            "succeeded",
            "failed",
            "processing",
            "queued",
            "https://a.b/v.mp4",
            "output",
            "error",
            "gen-1",
            "t-1",
            "p-1",
            "video_1",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec![
                "id",
                "state",
                "status",
                "assets",
                "video",
                "image",
                "code",
                "data",
                "task_id",
                "task_status",
                "task_result",
                "videos",
                "images",
                "url",
                "output",
                "done",
                "response",
                "generateVideoResponse",
                "generatedSamples",
                "uri",
                "name",
                "error",
                "progress",
                "logs",
                "run-1",
                "outputs",
                "filename",
                "completed",
                "status_str",
                "message",
                "failure_reason",
                "index",
            ])
            .prop_map(String::from),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(200u16),
        1 => prop::sample::select(vec![201u16, 204, 301, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503]),
    ]
}

fn url() -> impl Strategy<Value = String> {
    "[a-z]{1,8}\\.[a-z]{2,4}/[a-z0-9]{1,8}\\.(mp4|png|jpg)".prop_map(|s| format!("https://{s}"))
}

/// The URLs of a success's files, in order.
fn urls(outcome: &PollOutcome) -> Vec<String> {
    match outcome {
        PollOutcome::Succeeded(outputs) => outputs
            .iter()
            .filter_map(|o| match &o.data {
                OutputData::Url(u) | OutputData::Keyed { url: u, .. } => Some(u.clone()),
                OutputData::Inline { .. } => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_json_answer_is_read_safely(status in status(), body in json_value()) {
        let _turn = turn();
        let w = world();
        let bytes = serde_json::to_vec(&body).unwrap();
        w.stub.set(status, &bytes);
        for a in &w.adapters {
            outcome_is_possible(a.name, status, &bytes, a.success_word, &poll(a))?;
        }
        let got = openai_images_submit(&bytes, status);
        outcome_is_possible("openai-images", status, &bytes, "data", &got)?;
    }

    /// An HTML error page or a cut-off body is an error, even under a 200.
    #[test]
    fn answers_that_are_not_json_are_errors(
        status in status().prop_filter("a 204 carries no body", |s| *s != 204),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _turn = turn();
        let w = world();
        let body = [&b"<html>"[..], &tail].concat();
        w.stub.set(status, &body);
        for a in &w.adapters {
            let got = poll(a);
            prop_assert!(got.is_err(), "{}: {:?}", a.name, got);
        }
        let got = openai_images_submit(&body, status);
        prop_assert!(got.is_err(), "openai-images: {:?}", got);
    }

    /// A success names its files: each is reported, in order; a success
    /// that names none is a failure.
    #[test]
    fn successes_report_the_files_they_name(files in prop::collection::vec(url(), 0..4)) {
        let _turn = turn();
        let w = world();
        for a in &w.adapters {
            let body = serde_json::to_vec(&(a.success)(&files)).unwrap();
            w.stub.set(200, &body);
            let got = poll(a).map_err(|e| TestCaseError::fail(format!("{}: {e}", a.name)))?;
            let reported = urls(&got);
            match a.name {
                "openai-videos" => prop_assert_eq!(reported.len(), 1),
                "luma" | "gengate (luma)" if !files.is_empty() => {
                    prop_assert_eq!(&reported, &files[..1].to_vec(), "{}", a.name)
                }
                "comfyui" => {
                    prop_assert_eq!(reported.len(), files.len(), "{}", a.name);
                    for (r, f) in reported.iter().zip(&files) {
                        let name = url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>();
                        prop_assert!(r.contains(&name), "{}: {} for {}", a.name, r, f);
                    }
                }
                _ => prop_assert_eq!(&reported, &files, "{}", a.name),
            }
            if files.is_empty() && a.name != "openai-videos" {
                prop_assert!(matches!(got, PollOutcome::Failed(_)), "{}: {:?}", a.name, got);
            }
        }
        let data: Vec<Value> = files.iter().map(|u| json!({"url": u})).collect();
        let got = openai_images_submit(&serde_json::to_vec(&json!({"data": data})).unwrap(), 200);
        match got {
            Ok(outcome) => prop_assert_eq!(urls(&outcome), files),
            Err(_) => prop_assert!(files.is_empty(), "openai-images refused {:?}", files),
        }
    }
}

// ---- callbacks -------------------------------------------------------------------

/// Every string in a JSON value.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(fields) => fields.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Adapters whose upstreams call back, unsigned.
fn callback_adapters() -> Vec<&'static Adapter> {
    let calls_back = ["luma", "kling", "replicate", "gengate (luma)"];
    world()
        .adapters
        .iter()
        .filter(|a| calls_back.contains(&a.name))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any callback body is refused, or is JSON read as news of a job it
    /// names.
    #[test]
    fn any_callback_is_read_safely(body in prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]) {
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        for a in callback_adapters() {
            if let Ok(news) = a.provider.read_callback(&HeaderMap::new(), &body) {
                let named = parsed.as_ref().is_some_and(|v| strings(v).contains(&news.upstream_id.as_str()));
                prop_assert!(named, "{}: {:?} from {:?}", a.name, news, parsed);
                outcome_is_possible(a.name, 200, &body, a.success_word, &Ok(news.outcome))?;
            }
        }
    }
}

// ---- signatures ------------------------------------------------------------------

/// A `whsec_` secret of random key bytes.
fn secret() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 1..48).prop_map(|k| format!("whsec_{}", STANDARD.encode(k)))
}

fn key(secret: &str) -> WebhookKey {
    WebhookKey::parse(secret).unwrap()
}

fn headers(id: &str, ts: &str, signature: &str) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert("webhook-id", HeaderValue::from_str(id).ok()?);
    h.insert("webhook-timestamp", HeaderValue::from_str(ts).ok()?);
    h.insert("webhook-signature", HeaderValue::from_str(signature).ok()?);
    Some(h)
}

const NOW: i64 = 1_700_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A signature made with the key verifies within five minutes; any one
    /// byte of the body or the signature changed, it does not.
    #[test]
    fn signatures_verify_and_one_byte_breaks_them(
        secret in secret(),
        id in "msg_[A-Za-z0-9]{1,24}",
        body in "\\PC{0,80}",
        drift in -300i64..=300,
        at in any::<prop::sample::Index>(),
        x in 1..=255u8,
        to in "[!-~]",
    ) {
        let key = key(&secret);
        let body = body.into_bytes();
        let sig = key.sign(&id, NOW, &body).unwrap();
        let h = headers(&id, &NOW.to_string(), &sig).unwrap();
        prop_assert!(key.verify("x", &h, &body, NOW + drift).is_ok());

        if !body.is_empty() {
            let mut changed = body.clone();
            changed[at.index(body.len())] ^= x;
            prop_assert!(matches!(key.verify("x", &h, &changed, NOW), Err(ProviderError::Auth(_))));
        }
        let i = at.index(sig.len());
        let mut forged = sig.clone().into_bytes();
        prop_assume!(forged[i] != to.as_bytes()[0]);
        forged[i] = to.as_bytes()[0];
        let forged = String::from_utf8(forged).unwrap();
        let h = headers(&id, &NOW.to_string(), &forged).unwrap();
        prop_assert!(matches!(key.verify("x", &h, &body, NOW), Err(ProviderError::Auth(_))));
    }

    /// Headers made up, or a genuine signature sent too late or too early,
    /// never verify.
    #[test]
    fn made_up_or_stale_headers_never_verify(
        secret in secret(),
        id in "\\PC{0,20}",
        ts in prop_oneof!["-?[0-9]{1,12}", "\\PC{0,12}"],
        signature in prop_oneof![
            "v1,[A-Za-z0-9+/]{43}=",
            "\\PC{0,60}",
        ],
        body in prop::collection::vec(any::<u8>(), 0..64),
        late in 301i64..1_000_000,
        early in any::<bool>(),
    ) {
        let key = key(&secret);
        if let Some(h) = headers(&id, &ts, &signature) {
            prop_assert!(key.verify("x", &h, &body, NOW).is_err());
        }
        let body = String::from_utf8_lossy(&body).into_owned().into_bytes();
        let sig = key.sign("msg_1", NOW, &body).unwrap();
        let h = headers("msg_1", &NOW.to_string(), &sig).unwrap();
        let now = if early { NOW - late } else { NOW + late };
        prop_assert!(matches!(key.verify("x", &h, &body, now), Err(ProviderError::Permanent(_))));
    }

    /// A signed upstream (Replicate with a webhook secret) reads a callback
    /// signed with its key, and refuses it changed or signed with another.
    #[test]
    fn signed_callbacks_are_read_only_when_genuine(
        secret in secret(),
        other in secret(),
        at in any::<prop::sample::Index>(),
        x in 1..=255u8,
    ) {
        let _turn = turn();
        let w = world();
        let (key, other) = (key(&secret), key(&other));
        let mut s = spec(ProviderKind::Replicate, &w.stub.base);
        s.credentials.webhook_secret = Some(secret);
        let replicate = {
            let _in_rt = w.rt.enter();
            for_channel(&s, None).unwrap()
        };
        let body = br#"{"id": "p-1", "status": "processing"}"#.to_vec();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signed = |k: &WebhookKey| {
            headers("msg_1", &now.to_string(), &k.sign("msg_1", now, &body).unwrap()).unwrap()
        };
        let news = replicate.read_callback(&signed(&key), &body);
        prop_assert!(news.is_ok_and(|n| n.upstream_id == "p-1"));
        let mut changed = body.clone();
        changed[at.index(body.len())] ^= x;
        prop_assert!(replicate.read_callback(&signed(&key), &changed).is_err());
        prop_assume!(other.sign("m", 0, b"") != key.sign("m", 0, b""));
        prop_assert!(replicate.read_callback(&signed(&other), &body).is_err());
        prop_assert!(replicate.read_callback(&HeaderMap::new(), &body).is_err());
    }
}
