//! Values tests build over and over.

use gengate_core::{Dialect, GenerationRequest, NewTask, Task, TaskKind};

/// A pending Kling task of `kind` for `prompt`: 1:1, two outputs, no
/// channel yet. Tests change the fields they care about.
pub fn pending_task(kind: TaskKind, prompt: &str) -> Task {
    let new = NewTask {
        dialect: Dialect::Kling,
        kind,
        model: "m".into(),
        request: GenerationRequest {
            prompt: prompt.into(),
            aspect_ratio: "1:1".into(),
            n: 2,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: None,
        channel: None,
    };
    Task::accepted(uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), new, 0, 0)
}

/// The JSON answer to `request`, whatever its status; panics when there is
/// none (a test's request that cannot be sent or read has failed).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("the request is answered");
    response.json().await.expect("a JSON answer")
}

/// A loopback port nothing listens on (bound, then let go): connecting to
/// it is refused, as to an upstream that is down.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a local address").port()
}
