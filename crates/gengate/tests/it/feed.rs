//! What an operator's console follows: `GET /admin/tasks` (every key's
//! tasks, filtered, each naming its key) and `GET /v1/events` (the live
//! feed of task changes: a key's own, an admin's every key's), resumable.

use std::time::Duration;

use crate::harness::events::{Event, EventStream};
use crate::harness::{Backend, Gateway, TASK_WAIT, TestApp};
use serde_json::{Value, json};

on_both_backends!(
    admins_list_every_keys_tasks_with_filters,
    the_feed_carries_each_keys_changes_live_and_resumes,
);

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

async fn admins_list_every_keys_tasks_with_filters(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (a, b) = (gw.new_key("a").await, gw.new_key("b").await);
    let (a_id, b_id) = (gw.key_record(&a).await.id, gw.key_record(&b).await.id);
    let video = json!({"model": "ray-2", "kind": "video", "input": {"prompt": "a's"}});
    let (s, mine) = gw.post("/v1/tasks", &a, video).await;
    assert_eq!(s, 201, "{mine}");
    let kling = json!({"prompt": "b's", "external_task_id": "order-9"});
    let (s, theirs) = gw.post("/kling/v1/images/generations", &b, kling).await;
    assert_eq!(s, 200, "{theirs}");
    let (mine, theirs) = (
        mine["id"].as_str().unwrap().to_string(),
        theirs["data"]["task_id"].as_str().unwrap().to_string(),
    );

    let (s, all) = gw.get("/admin/tasks", &gw.admin).await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(ids(&all), [theirs.clone(), mine.clone()]);
    assert_eq!(all["data"][0]["key_id"], b_id.to_string().as_str());
    assert_eq!(all["data"][1]["key_id"], a_id.to_string().as_str());
    let only = |q: &str| {
        let gw: &Gateway = &gw;
        let q = q.to_string();
        async move {
            let (s, v) = gw.get(&format!("/admin/tasks?{q}"), &gw.admin).await;
            assert_eq!(s, 200, "{q}: {v}");
            ids(&v)
        }
    };
    assert_eq!(only(&format!("key={a_id}")).await, [mine.as_str()]);
    assert_eq!(only("dialect=kling").await, [theirs.as_str()]);
    assert_eq!(only("q=order-9").await, [theirs.as_str()]);
    assert_eq!(only(&format!("q={mine}")).await, [mine.as_str()]);
    assert_eq!(only("channel=sandbox&limit=1").await.len(), 1);
    assert!(only("channel=elsewhere").await.is_empty());
    assert!(only("created_before=2001-01-01T00:00:00Z").await.is_empty());

    // A key's own listing takes the same filters, its own tasks only, and
    // names no key.
    let (_, v) = gw.get("/v1/tasks?dialect=kling", &b).await;
    assert_eq!(ids(&v), [theirs.as_str()]);
    assert!(v["data"][0].get("key_id").is_none(), "{v}");
    let (_, v) = gw.get(&format!("/v1/tasks?q={theirs}"), &a).await;
    assert!(ids(&v).is_empty());

    // An admin opens, follows and could cancel any key's task by id;
    // another key still cannot.
    for path in [
        format!("/v1/tasks/{theirs}"),
        format!("/v1/tasks/{theirs}/deliveries"),
    ] {
        let (s, v) = gw.get(&path, &gw.admin).await;
        assert_eq!(s, 200, "{path}: {v}");
        let (s, _) = gw.get(&path, &a).await;
        assert_eq!(s, 404, "{path}");
    }

    // Refused: a non-admin key, and bad filters, by name.
    let (s, _) = gw.get("/admin/tasks", &a).await;
    assert_eq!(s, 403);
    for (q, field) in [
        ("key=nope", "key"),
        ("dialect=fax", "dialect"),
        ("created_before=yesterday", "created_before"),
    ] {
        let (s, v) = gw.get(&format!("/admin/tasks?{q}"), &gw.admin).await;
        assert_eq!(s, 400, "{q}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{q}: {v}");
    }
    gw.stop().await;
}

/// The feed of `key`, after `last` when given.
async fn feed(gw: &Gateway, key: &str, last: Option<&str>) -> EventStream {
    let mut req = gw
        .http
        .get(format!("{}/v1/events", gw.base))
        .bearer_auth(key);
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    EventStream::open(req).await
}

/// Events of `stream` until `task`'s terminal one.
async fn until_done(stream: &mut EventStream, task: &str) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        while let Some(e) = stream.next().await {
            let done = e.data["task_id"] == task
                && matches!(e.state.as_str(), "completed" | "failed" | "canceled");
            seen.push(e);
            if done {
                return;
            }
        }
        panic!("the feed ended");
    };
    tokio::time::timeout(TASK_WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("{task} not done on the feed"));
    seen
}

async fn the_feed_carries_each_keys_changes_live_and_resumes(backend: Backend) {
    let gw = TestApp::on(backend).sandbox_latency_ms(300).start().await;
    let (a, b) = (gw.new_key("a").await, gw.new_key("b").await);
    let b_id = gw.key_record(&b).await.id;
    // Opened before the tasks exist: what follows arrives live.
    let mut mine = feed(&gw, &a, None).await;
    let mut everyone = feed(&gw, &gw.admin, None).await;
    let body = |p: &str| json!({"model": "ray-2", "kind": "video", "input": {"prompt": p}});
    let (_, theirs) = gw.post("/v1/tasks", &b, body("b's")).await;
    let (_, t) = gw.post("/v1/tasks", &a, body("a's")).await;
    let (theirs, t) = (
        theirs["id"].as_str().unwrap().to_string(),
        t["id"].as_str().unwrap().to_string(),
    );
    let seen = until_done(&mut mine, &t).await;
    assert!(
        seen.iter().all(|e| e.data["task_id"] == t.as_str()),
        "only a's: {seen:?}"
    );
    let states: Vec<&str> = seen.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states.first(), Some(&"pending"), "{states:?}");
    assert!(states.contains(&"processing"), "{states:?}");
    assert_eq!(states.last(), Some(&"completed"));
    assert_eq!(
        seen.last().unwrap().data["task"]["outputs"][0]["role"],
        "video"
    );
    assert!(seen[0].data["task"].get("key_id").is_none());

    // An admin's feed has both keys' tasks, each naming its key.
    let mut all = until_done(&mut everyone, &theirs).await;
    if !all
        .iter()
        .any(|e| e.data["task_id"] == t.as_str() && e.state == "completed")
    {
        all.extend(until_done(&mut everyone, &t).await);
    }
    let b_event = all
        .iter()
        .find(|e| e.data["task_id"] == theirs.as_str())
        .unwrap();
    assert_eq!(b_event.data["task"]["key_id"], b_id.to_string().as_str());
    assert!(all.iter().any(|e| e.data["task_id"] == t.as_str()));

    // Resumed after its first event: the rest, in the same order, nothing again.
    let mut resumed = feed(&gw, &a, Some(&seen[0].id)).await;
    let again = until_done(&mut resumed, &t).await;
    let ids = |evs: &[Event]| evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&seen[1..]));

    // A bad position is a 400 naming it.
    let (s, v) = gw.get("/v1/events?last_event_id=12", &a).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("last_event_id")
    );
    drop((mine, everyone, resumed));
    tokio::time::sleep(Duration::from_millis(50)).await;
    gw.stop().await;
}
