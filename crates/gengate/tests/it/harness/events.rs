//! A task's server-sent events (`GET /v1/tasks/{id}/events`, which serves
//! a key's tasks of every dialect and ends after the terminal event), read
//! as they come: what tests wait on instead of polling the task.

use std::time::Duration;

use serde_json::Value;

/// One event: its task's sequence number, the state it records (SSE
/// `event`), its JSON `data`, and its SSE `id` (the sequence number on a
/// task's stream, a position on the feed of every task).
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    pub state: String,
    pub data: Value,
    pub id: String,
}

/// An open event stream.
pub struct EventStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl EventStream {
    /// Sends `req` (a GET of some task's events) and checks that the answer
    /// is an event stream.
    pub async fn open(req: reqwest::RequestBuilder) -> EventStream {
        let resp = req.send().await.expect("events request sent");
        assert_eq!(resp.status(), 200, "{}", resp.url());
        let ct = resp.headers()["content-type"].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        EventStream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event; `None` once the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                // Keep-alive comments carry no event.
                if let Some(e) = parse(&String::from_utf8_lossy(&block)) {
                    return Some(e);
                }
            }
            match self.resp.chunk().await.expect("the event stream reads") {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }

    /// Every event up to the stream's end, which must come within `within`.
    pub async fn all(mut self, within: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        tokio::time::timeout(within, async {
            while let Some(e) = self.next().await {
                seen.push(e);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {within:?}: {seen:?}"));
        seen
    }
}

fn parse(block: &str) -> Option<Event> {
    let (mut id, mut state, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("event:") {
            state = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.trim());
        }
    }
    // A keep-alive comment (every 15 s) carries no data and no event.
    if data.is_empty() {
        return None;
    }
    let data: Value = serde_json::from_str(&data.join("\n")).expect("JSON data");
    Some(Event {
        seq: data["seq"].as_i64().expect("a sequence number"),
        state: state?,
        id: id?,
        data,
    })
}

fn request(http: &reqwest::Client, base: &str, key: &str, id: &str) -> reqwest::RequestBuilder {
    http.get(format!("{base}/v1/tasks/{id}/events"))
        .bearer_auth(key)
}

/// Task `id`'s events from the first, until one whose state `stop`
/// accepts or the stream's end; panics past `within`.
pub async fn watch(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    within: Duration,
    stop: impl Fn(&str) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        let mut stream = EventStream::open(request(http, base, key, id)).await;
        while let Some(e) = stream.next().await {
            let done = stop(&e.state);
            seen.push(e);
            if done {
                break;
            }
        }
    };
    if tokio::time::timeout(within, read).await.is_err() {
        let states: Vec<&str> = seen.iter().map(|e| e.state.as_str()).collect();
        panic!("task {id}: not done within {within:?} (events so far: {states:?})");
    }
    seen
}

/// Waits for task `id` to reach a terminal state; answers its events.
pub async fn wait_done(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    within: Duration,
) -> Vec<Event> {
    let seen = watch(http, base, key, id, within, |_| false).await;
    assert!(!seen.is_empty(), "task {id}: its event stream was empty");
    seen
}
