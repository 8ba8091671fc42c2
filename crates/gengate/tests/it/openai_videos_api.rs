//! OpenAI's Videos API at `/v1/videos` through the sandbox: JSON and
//! multipart creates, the video object checked against OpenAI's own spec,
//! the cursor list, content in its three variants, remix, delete, and bad
//! input refused by name with nothing stored.

use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, poll_until};
use gengate_core::Dialect;
use gengate_testkit::RED_PNG;
use serde_json::{Value, json};

on_both_backends!(
    videos_are_made_listed_fetched_remixed_and_deleted,
    callbacks_post_the_video_object_signed,
    bad_requests_name_the_param_and_store_nothing,
);

fn conforms(method: &str, path: &str, status: u16, body: &Value) {
    gengate_testkit::openapi::openai()
        .check_response(method, path, status, body)
        .unwrap_or_else(|e| panic!("breaks OpenAI's spec: {e}\n{body}"));
}

/// A multipart/form-data body of `(name, file name, bytes)` parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "gengate-test-boundary";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(gw: &Gateway, key: &str, parts: &[(&str, Option<&str>, &[u8])]) -> (u16, Value) {
    let (content_type, body) = multipart(parts);
    let resp = gw
        .http
        .post(format!("{}/v1/videos", gw.base))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn finished(gw: &Gateway, key: &str, id: &str) -> Value {
    poll_until(
        "the video to finish",
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let (_, v) = gw.get(&format!("/v1/videos/{id}"), key).await;
            match v["status"].as_str() {
                Some("completed" | "failed") => Ok(v),
                _ => Err(v.to_string()),
            }
        },
    )
    .await
}

async fn content(gw: &Gateway, key: &str, id: &str, variant: &str) -> (u16, String, Vec<u8>) {
    let resp = gw
        .http
        .get(format!(
            "{}/v1/videos/{id}/content?variant={variant}",
            gw.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, resp.bytes().await.unwrap().to_vec())
}

fn webp_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(bytes, image::ImageFormat::WebP).unwrap();
    (image.width(), image.height())
}

async fn videos_are_made_listed_fetched_remixed_and_deleted(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("client").await;

    // As JSON, and as multipart with the first frame uploaded.
    let (s, wide) = gw
        .post(
            "/v1/videos",
            &key,
            json!({"prompt": "a harbour", "seconds": "4", "size": "1280x720"}),
        )
        .await;
    assert_eq!(s, 200, "{wide}");
    conforms("POST", "/videos", 200, &wide);
    assert_eq!(
        (
            &wide["object"],
            &wide["status"],
            &wide["model"],
            &wide["size"]
        ),
        (
            &json!("video"),
            &json!("queued"),
            &json!("sora-2"),
            &json!("1280x720")
        )
    );
    let wide_id = wide["id"].as_str().unwrap().to_string();
    assert!(wide_id.starts_with("video_"), "{wide_id}");
    // Idempotency-Key: a retry is the first video; another body a 409.
    let keyed = |prompt: &str| {
        gw.http
            .post(format!("{}/v1/videos", gw.base))
            .bearer_auth(&key)
            .header("idempotency-key", "v-1")
            .json(&json!({"prompt": prompt, "seconds": "4", "size": "1280x720"}))
            .send()
    };
    let first: Value = keyed("a harbour again")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = keyed("a harbour again")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["id"], again["id"], "{first} {again}");
    assert_eq!(
        keyed("another harbour").await.unwrap().status().as_u16(),
        409
    );
    let resp = gw
        .http
        .delete(format!(
            "{}/v1/videos/{}",
            gw.base,
            first["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (s, tall) = post_form(
        &gw,
        &key,
        &[
            ("prompt", None, b"a red door"),
            ("seconds", None, b"8"),
            ("input_reference", Some("door.png"), RED_PNG),
        ],
    )
    .await;
    assert_eq!(s, 200, "{tall}");
    assert_eq!(
        (&tall["size"], &tall["seconds"]),
        (&json!("720x1280"), &json!("8"))
    );
    let tall_id = tall["id"].as_str().unwrap().to_string();

    let done = finished(&gw, &key, &wide_id).await;
    conforms("GET", "/videos/{video_id}", 200, &done);
    assert_eq!(
        (&done["status"], &done["progress"]),
        (&json!("completed"), &json!(100)),
        "{done}"
    );
    assert!(done["completed_at"].as_i64().unwrap() >= done["created_at"].as_i64().unwrap());
    assert_eq!(finished(&gw, &key, &tall_id).await["status"], "completed");

    // The three variants: the MP4 as long as asked, stills made from it.
    let (s, ct, mp4) = content(&gw, &key, &wide_id, "video").await;
    assert_eq!((s, ct.as_str()), (200, "video/mp4"));
    let info = gengate_media::probe_mp4(&mp4).unwrap();
    assert!((info.duration_secs - 4.0).abs() < 0.1, "{info:?}");
    // The sandbox's 720p step of 16:9.
    assert_eq!((info.width, info.height), (624, 352));
    let (s, ct, thumb) = content(&gw, &key, &wide_id, "thumbnail").await;
    assert_eq!((s, ct.as_str()), (200, "image/webp"));
    assert_eq!(webp_size(&thumb), (info.width, info.height));
    let (s, ct, sheet) = content(&gw, &key, &wide_id, "spritesheet").await;
    assert_eq!((s, ct.as_str()), (200, "image/webp"));
    assert_eq!(webp_size(&sheet).0, 5 * 256);
    // Asked again: the same stored still.
    assert_eq!(content(&gw, &key, &wide_id, "thumbnail").await.2, thumb);
    // The uploaded first frame shows: the tall video starts red.
    let (_, _, first) = content(&gw, &key, &tall_id, "thumbnail").await;
    let image = image::load_from_memory(&first).unwrap().into_rgb8();
    let [r, g, _] = image.get_pixel(image.width() / 2, image.height() / 2).0;
    assert!(r > g.saturating_add(60), "red first frame: {r} {g}");
    // Range, as for every stored file.
    let part = gw
        .http
        .get(format!("{}/v1/videos/{wide_id}/content", gw.base))
        .bearer_auth(&key)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &mp4[..10]);

    // Listed newest first, a page at a time; oldest first on asking; tasks
    // of other APIs are not videos.
    let (s, _) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "ray-2", "kind": "video", "input": {"prompt": "not listed"}}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, all) = gw.get("/v1/videos", &key).await;
    assert_eq!(s, 200, "{all}");
    conforms("GET", "/videos", 200, &all);
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&all), [tall_id.clone(), wide_id.clone()]);
    let (_, first) = gw.get("/v1/videos?limit=1", &key).await;
    assert_eq!(
        (ids(&first), &first["has_more"]),
        (vec![tall_id.clone()], &json!(true))
    );
    let (_, next) = gw
        .get(
            &format!(
                "/v1/videos?limit=1&after={}",
                first["last_id"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    assert_eq!(
        (ids(&next), &next["has_more"]),
        (vec![wide_id.clone()], &json!(false))
    );
    let (_, asc) = gw.get("/v1/videos?order=asc", &key).await;
    assert_eq!(ids(&asc), [wide_id.clone(), tall_id.clone()]);
    // Another key sees none of them.
    let other = gw.new_key("other").await;
    let (_, theirs) = gw.get("/v1/videos", &other).await;
    assert_eq!(ids(&theirs), Vec::<String>::new());
    assert_eq!(
        gw.get(&format!("/v1/videos/{wide_id}"), &other).await.0,
        404
    );

    // A remix continues the video with a new prompt, its size and length.
    let (s, remix) = gw
        .post(
            &format!("/v1/videos/{wide_id}/remix"),
            &key,
            json!({"prompt": "at night"}),
        )
        .await;
    assert_eq!(s, 200, "{remix}");
    conforms("POST", "/videos/{video_id}/remix", 200, &remix);
    assert_eq!(
        (
            &remix["remixed_from_video_id"],
            &remix["size"],
            &remix["seconds"]
        ),
        (&json!(wide_id), &json!("1280x720"), &json!("4"))
    );
    let remix_id = remix["id"].as_str().unwrap();
    assert_eq!(finished(&gw, &key, remix_id).await["status"], "completed");

    // Deleted: gone from every view.
    let resp = gw
        .http
        .delete(format!("{}/v1/videos/{tall_id}", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let deleted: Value = resp.json().await.unwrap();
    conforms("DELETE", "/videos/{video_id}", 200, &deleted);
    assert_eq!(
        deleted,
        json!({"object": "video.deleted", "deleted": true, "id": tall_id})
    );
    let (s, gone) = gw.get(&format!("/v1/videos/{tall_id}"), &key).await;
    assert_eq!(
        (s, &gone["error"]["code"]),
        (404, &json!("not_found")),
        "{gone}"
    );
    gw.stop().await;
}

/// gengate's extension, `callback_url` (a form field, as the SDKs send
/// `extra_body`): each change POSTs the video object, signed as every
/// callback is.
async fn callbacks_post_the_video_object_signed(backend: Backend) {
    let rx = gengate_testkit::receiver::Receiver::start().await;
    let gw = TestApp::on(backend).sandbox_latency_ms(200).start().await;
    let key = gw.new_key("client").await;
    let hook = rx.url("/hook");
    let (s, v) = post_form(
        &gw,
        &key,
        &[
            ("prompt", None, b"called back"),
            ("callback_url", None, hook.as_bytes()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let secret = gw
        .key_record(&key)
        .await
        .webhook_secret
        .expect("a signing secret");
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    let statuses: Vec<String> = got
        .iter()
        .map(|r| {
            wh.verify(&r.body, &r.headers)
                .expect("signed with the key's secret");
            let video: Value = serde_json::from_slice(&r.body).unwrap();
            conforms("GET", "/videos/{video_id}", 200, &video);
            assert_eq!(video["id"], v["id"], "{video}");
            video["status"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(statuses, ["queued", "in_progress", "completed"]);
    gw.stop().await;
}

async fn bad_requests_name_the_param_and_store_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("client").await;
    let param = |status: u16, v: &Value| -> String {
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        v["error"]["param"].as_str().unwrap_or_default().to_string()
    };
    for (body, field) in [
        (json!({}), "prompt"),
        (json!({"prompt": "  "}), "prompt"),
        (json!({"prompt": "a", "seconds": "5"}), "seconds"),
        (json!({"prompt": "a", "seconds": true}), "seconds"),
        (json!({"prompt": "a", "size": "1024x1024"}), "size"),
        (json!({"prompt": "a", "model": "two words"}), "model"),
        (
            json!({"prompt": "a", "input_reference": {"file_id": "file-1"}}),
            "input_reference.file_id",
        ),
        (
            json!({"prompt": "a", "input_reference": {"image_url": "ftp://x.test/a.png"}}),
            "input_reference.image_url",
        ),
        (
            json!({"prompt": "a", "input_reference": {"image_url": "data:image/png;base64,AAAA"}}),
            "input_reference.image_url",
        ),
        (
            json!({"prompt": "a", "callback_url": "not a url"}),
            "callback_url",
        ),
        (json!({"prompt": "a", "colour": "red"}), "colour"),
    ] {
        let (s, v) = gw.post("/v1/videos", &key, body.clone()).await;
        assert_eq!(param(s, &v), field, "{body}");
    }
    for (parts, field) in [
        (
            vec![("prompt", None, &b"a"[..]), ("colour", None, b"red")],
            "colour",
        ),
        (
            vec![
                ("prompt", None, &b"a"[..]),
                ("input_reference", Some("a.gif"), b"GIF89a...."),
            ],
            "input_reference",
        ),
        (vec![("prompt", None, &b"\xff\xfe"[..])], "prompt"),
        (vec![("seconds", None, &b"4"[..])], "prompt"),
    ] {
        let (s, v) = post_form(&gw, &key, &parts).await;
        assert_eq!(param(s, &v), field);
    }
    let (s, _) = gw.get("/v1/videos?limit=101", &key).await;
    assert_eq!(s, 400);
    let (s, v) = gw.get("/v1/videos?order=sideways", &key).await;
    assert_eq!(param(s, &v), "order");
    let (s, v) = gw
        .get(
            "/v1/videos?after=video_00000000000000000000000000000000",
            &key,
        )
        .await;
    assert_eq!(param(s, &v), "after");
    let resp = gw
        .http
        .post(format!("{}/v1/videos", gw.base))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("prompt=a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // Remix and content of what is not this key's video: 404.
    let (s, _) = gw
        .post(
            "/v1/videos/video_00000000000000000000000000000000/remix",
            &key,
            json!({"prompt": "x"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(gw.task_count(&key, Dialect::OpenaiVideos).await, 0);
    // A video not yet made has no content; a bad variant is named.
    let (_, v) = gw.post("/v1/videos", &key, json!({"prompt": "slow"})).await;
    let id = v["id"].as_str().unwrap();
    let (s, _, body) = content(&gw, &key, id, "sideways").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(param(s, &v), "variant");
    gw.stop().await;
}
