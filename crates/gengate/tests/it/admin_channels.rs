//! Channels added and changed while gengate runs: the admin API
//! (`/admin/channels`) and the `gengate channels` command, on both stores.
//! Credentials go in and are used, and never come back out.

use std::time::Duration;

use crate::harness::procs::{ADMIN, Place, cli_env, serve};
use crate::harness::{Backend, Gateway, TestApp, poll_until, sandbox_channel};
use gengate_core::ChannelSpec;
use gengate_testkit::{KlingAccount, KlingEmu};
use serde_json::{Value, json};

on_both_backends!(
    a_channel_added_through_the_api_serves_a_new_model,
    credentials_are_never_shown_and_patches_replace_them_one_by_one,
    bad_channels_are_refused_naming_the_field_and_nothing_is_stored,
    names_are_unique_and_gengate_toml_channels_are_read_only,
    only_admin_keys_manage_channels,
    a_disabled_channel_gets_no_tasks_until_enabled,
    the_cli_manages_stored_channels_and_running_instances_pick_them_up,
);

const ACCESS: &str = "ak-relay-ACCESS-7f3a";
const SECRET: &str = "sk-relay-SECRET-91be";
const API_KEY: &str = "api-relay-KEY-c0d2";
const WHSEC: &str = "whsec_relay-WEBHOOK-55aa";
const SECRETS: [&str; 4] = [ACCESS, SECRET, API_KEY, WHSEC];

/// A gateway whose gengate.toml has one sandbox channel serving only
/// `kling-image` (so `relay-model` is served by nothing at first).
async fn gateway(backend: Backend) -> Gateway {
    TestApp::on(backend)
        .channel(sandbox_channel("toml-sandbox", &["kling-image"], 50))
        .start()
        .await
}

async fn patch(gw: &Gateway, path: &str, key: &str, body: Value) -> (u16, Value) {
    gw.send_json(reqwest::Method::PATCH, path, key, body).await
}

fn assert_no_secret(v: &impl ToString) {
    let shown = v.to_string();
    for s in SECRETS {
        assert!(!shown.contains(s), "a secret is shown: {shown}");
    }
}

/// A gengate error: its status and message.
fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn submit_kling(gw: &Gateway, key: &str, model: &str) -> (u16, Value) {
    gw.post(
        "/kling/v1/images/generations",
        key,
        json!({"model": model, "prompt": "a lighthouse", "aspect_ratio": "1:1"}),
    )
    .await
}

async fn stored(gw: &Gateway) -> Vec<ChannelSpec> {
    gw.store().list_channels().await.unwrap()
}

async fn a_channel_added_through_the_api_serves_a_new_model(backend: Backend) {
    let emu = KlingEmu::start(
        KlingAccount::Keys {
            access_key: ACCESS.into(),
            secret_key: SECRET.into(),
        },
        Duration::from_millis(200),
    )
    .await;
    let gw = gateway(backend).await;
    let client = gw.new_key("client").await;

    let (s, v) = submit_kling(&gw, &client, "relay-model").await;
    assert_eq!(s, 400, "no channel serves it yet: {v}");
    assert!(v["message"].as_str().unwrap().contains("model"), "{v}");

    let (s, v) = gw
        .post(
            "/admin/channels",
            &gw.admin,
            json!({
                "name": "relay",
                "provider": "kling",
                "base_url": emu.base_url(),
                "credentials": {"access_key": ACCESS, "secret_key": SECRET},
                "models": {"relay-model": "kling-v1-5"},
                "priority": 5,
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_no_secret(&v);
    assert_eq!(v["name"], "relay");
    assert_eq!(v["source"], "api");
    assert_eq!(v["in_use"], true);
    assert_eq!(v["models"], json!({"relay-model": "kling-v1-5"}));

    let (s, v) = submit_kling(&gw, &client, "relay-model").await;
    assert_eq!(s, 200, "{v}");
    let id = v["data"]["task_id"].as_str().unwrap().to_string();
    let done = gw.wait_kling(&client, &id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    let task = gw.task(&id).await;
    assert_eq!(task.channel.as_deref(), Some("relay"));
    // The stored keys signed the upstream request the emulation accepted.
    assert_eq!(emu.submits(), 1);
    assert_eq!(emu.tasks_by_external_id().get(&id), Some(&1));
    gw.stop().await;
}

async fn credentials_are_never_shown_and_patches_replace_them_one_by_one(backend: Backend) {
    let gw = gateway(backend).await;
    let (s, v) = gw
        .post(
            "/admin/channels",
            &gw.admin,
            json!({
                "name": "secretive",
                "provider": "kling",
                "base_url": "http://127.0.0.1:9",
                "credentials": {"api_key": API_KEY, "webhook_secret": WHSEC},
                "models": {"*": "*"},
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_no_secret(&v);
    assert_eq!(
        v["credentials"],
        json!({"api_key": true, "access_key": false, "secret_key": false, "webhook_secret": true})
    );

    let (s, list) = gw.get("/admin/channels", &gw.admin).await;
    assert_eq!(s, 200, "{list}");
    assert_no_secret(&list);
    let rows = list["data"].as_array().unwrap();
    let names: Vec<_> = rows
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("toml-sandbox", "config"), ("secretive", "api")]);
    assert_eq!(rows[0]["in_use"], true);
    let (s, one) = gw.get("/admin/channels/secretive", &gw.admin).await;
    assert_eq!(s, 200, "{one}");
    assert_no_secret(&one);
    assert_eq!(one["credentials"]["api_key"], true);

    // Given credential fields replace those fields; null removes one; the
    // rest are kept.
    let (s, v) = patch(
        &gw,
        "/admin/channels/secretive",
        &gw.admin,
        json!({"credentials": {"access_key": ACCESS, "secret_key": SECRET, "webhook_secret": null}, "priority": 7}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_no_secret(&v);
    assert_eq!(
        v["credentials"],
        json!({"api_key": true, "access_key": true, "secret_key": true, "webhook_secret": false})
    );
    assert_eq!(v["priority"], 7);
    let saved = &stored(&gw).await[0];
    assert_eq!(saved.credentials.api_key.as_deref(), Some(API_KEY));
    assert_eq!(saved.credentials.access_key.as_deref(), Some(ACCESS));
    assert_eq!(saved.credentials.secret_key.as_deref(), Some(SECRET));
    assert_eq!(saved.credentials.webhook_secret, None);
    assert_eq!(saved.priority, 7);
    let (_, one) = gw.get("/admin/channels/secretive", &gw.admin).await;
    assert_eq!(one["priority"], 7);
    gw.stop().await;
}

async fn bad_channels_are_refused_naming_the_field_and_nothing_is_stored(backend: Backend) {
    let gw = gateway(backend).await;
    let good = json!({
        "name": "ok-name",
        "provider": "kling",
        "base_url": "http://127.0.0.1:9",
        "credentials": {"api_key": API_KEY},
        "models": {"relay-model": "kling-v1-5"},
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = [
        (with("provider", json!("openai")), "provider"),
        (with("name", json!("bad name!")), "name"),
        (without("base_url"), "base_url"),
        (with("base_url", json!("ftp://x")), "base_url"),
        (with("colour", json!("blue")), "colour"),
        (with("weight", json!(0)), "weight"),
        (with("weight", json!(-1)), "weight"),
        (with("priority", json!("high")), "priority"),
        (without("models"), "models"),
        (with("models", json!({})), "models"),
        (
            with("rate_limit_per_sec", json!(-2.0)),
            "rate_limit_per_sec",
        ),
        (with("max_in_flight", json!(0)), "max_in_flight"),
        (
            with("deadline_secs", json!({"relay-model": 0})),
            "deadline_secs",
        ),
        (with("credentials", json!({})), "credentials.api_key"),
        (
            with("credentials", json!({"api_key": 5})),
            "credentials.api_key",
        ),
        (
            with("credentials", json!({"password": "x"})),
            "credentials.password",
        ),
        (with("credentials", json!("x")), "credentials"),
        (with("latency_ms", json!(10)), "latency_ms/failure_rate"),
        (without("name"), "name"),
        (without("provider"), "provider"),
    ];
    for (body, field) in cases {
        let (s, v) = gw.post("/admin/channels", &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        let msg = error_message(&v);
        assert!(
            msg.starts_with(&format!("{field}: ")),
            "{body} -> {msg:?} should name {field}"
        );
        assert_no_secret(&v);
    }
    // Not JSON, not an object, wrong content type.
    let (s, v) = gw
        .send(
            reqwest::Method::POST,
            "/admin/channels",
            Some(&gw.admin),
            Some(("application/json", b"{".to_vec())),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = gw.post("/admin/channels", &gw.admin, json!([good])).await;
    assert_eq!(s, 400);
    let (s, _) = gw
        .send(
            reqwest::Method::POST,
            "/admin/channels",
            Some(&gw.admin),
            Some(("text/plain", good.to_string().into_bytes())),
        )
        .await;
    assert_eq!(s, 415);
    assert!(stored(&gw).await.is_empty(), "nothing stored");

    // A bad patch leaves the stored channel as it was.
    let (s, v) = gw.post("/admin/channels", &gw.admin, good.clone()).await;
    assert_eq!(s, 201, "{v}");
    let before = stored(&gw).await;
    for (body, field) in [
        (json!({"weight": 0}), "weight"),
        (json!({"base_url": null}), "base_url"),
        (
            json!({"credentials": {"api_key": null}}),
            "credentials.api_key",
        ),
        (json!({"name": "renamed"}), "name"),
        (json!({"colour": "blue"}), "colour"),
        (json!({"provider": "nope"}), "provider"),
    ] {
        let (s, v) = patch(&gw, "/admin/channels/ok-name", &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        let msg = error_message(&v);
        assert!(
            msg.starts_with(&format!("{field}: ")),
            "{body} -> {msg:?} should name {field}"
        );
    }
    assert_eq!(stored(&gw).await, before, "a refused patch changes nothing");
    gw.stop().await;
}

async fn names_are_unique_and_gengate_toml_channels_are_read_only(backend: Backend) {
    let gw = gateway(backend).await;
    let spec = |name: &str, latency: u64| json!({"name": name, "provider": "sandbox", "models": {"*": "*"}, "latency_ms": latency});
    let (s, v) = gw.post("/admin/channels", &gw.admin, spec("dup", 10)).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = gw.post("/admin/channels", &gw.admin, spec("dup", 20)).await;
    assert_eq!(s, 409, "{v}");
    assert!(error_message(&v).contains("already exists"), "{v}");
    assert_eq!(stored(&gw).await[0].latency_ms, Some(10), "the first kept");

    let (s, v) = gw
        .post("/admin/channels", &gw.admin, spec("toml-sandbox", 10))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_message(&v).contains("gengate.toml"), "{v}");
    let (s, v) = patch(
        &gw,
        "/admin/channels/toml-sandbox",
        &gw.admin,
        json!({"priority": 3}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_message(&v).contains("edit it there"), "{v}");
    let (s, v) = gw
        .post("/admin/channels/toml-sandbox/disable", &gw.admin, json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = gw.get("/admin/channels/toml-sandbox", &gw.admin).await;
    assert_eq!(
        (s, &v["source"], &v["enabled"]),
        (200, &json!("config"), &json!(true)),
        "{v}"
    );

    for (method, path) in [
        (reqwest::Method::GET, "/admin/channels/ghost"),
        (reqwest::Method::PATCH, "/admin/channels/ghost"),
        (reqwest::Method::POST, "/admin/channels/ghost/disable"),
        (reqwest::Method::POST, "/admin/channels/ghost/enable"),
    ] {
        let (s, v) = gw
            .send(
                method.clone(),
                path,
                Some(&gw.admin),
                Some(("application/json", b"{}".to_vec())),
            )
            .await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert!(error_message(&v).contains("ghost"), "{v}");
    }
    assert_eq!(stored(&gw).await.len(), 1, "nothing made by a 404");
    gw.stop().await;
}

async fn only_admin_keys_manage_channels(backend: Backend) {
    let gw = gateway(backend).await;
    let user = gw.new_key("user").await;
    let body = json!({"name": "x", "provider": "sandbox", "models": {"*": "*"}});
    let (s, v) = gw.get("/admin/channels", &user).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["status"], 403, "gengate's envelope: {v}");
    assert!(error_message(&v).contains("admin"), "{v}");
    let (s, _) = gw.post("/admin/channels", &user, body.clone()).await;
    assert_eq!(s, 403);
    let (s, _) = gw
        .post("/admin/channels/toml-sandbox/disable", &user, json!({}))
        .await;
    assert_eq!(s, 403);
    let (s, v) = gw
        .send(reqwest::Method::GET, "/admin/channels", None, None)
        .await;
    assert_eq!(s, 401, "{v}");
    let (s, _) = gw
        .send(
            reqwest::Method::POST,
            "/admin/channels",
            None,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = gw
        .get(
            "/admin/channels",
            "gg_not_a_real_key_at_all_0123456789abcdef",
        )
        .await;
    assert_eq!(s, 401);
    assert!(stored(&gw).await.is_empty());
    // The same body from the admin is fine.
    let (s, v) = gw.post("/admin/channels", &gw.admin, body).await;
    assert_eq!(s, 201, "{v}");
    gw.stop().await;
}

async fn a_disabled_channel_gets_no_tasks_until_enabled(backend: Backend) {
    let gw = gateway(backend).await;
    let client = gw.new_key("client").await;
    let (s, v) = gw
        .post(
            "/admin/channels",
            &gw.admin,
            json!({"name": "relay", "provider": "sandbox", "models": {"relay-model": "x"}, "latency_ms": 20}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = submit_kling(&gw, &client, "relay-model").await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = gw
        .post("/admin/channels/relay/disable", &gw.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["enabled"], &v["in_use"]),
        (&json!(false), &json!(false))
    );
    let (s, v) = submit_kling(&gw, &client, "relay-model").await;
    assert_eq!(s, 400, "a disabled channel serves nothing: {v}");
    assert!(
        v["message"].as_str().unwrap().contains("relay-model"),
        "{v}"
    );
    assert!(!stored(&gw).await[0].enabled);
    let (_, list) = gw.get("/admin/channels", &gw.admin).await;
    assert_eq!(list["data"][1]["enabled"], false);

    let (s, v) = gw
        .post("/admin/channels/relay/enable", &gw.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((&v["enabled"], &v["in_use"]), (&json!(true), &json!(true)));
    let (s, v) = submit_kling(&gw, &client, "relay-model").await;
    assert_eq!(s, 200, "{v}");
    let id = v["data"]["task_id"].as_str().unwrap().to_string();
    let done = gw.wait_kling(&client, &id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    gw.stop().await;
}

/// Submits for `relay-model` until one is answered `status` (as the
/// instance rereads the stored channels), for up to 15 s.
async fn served_within_seconds(
    what: &str,
    submit: &impl AsyncFn(&'static str) -> u16,
    status: u16,
) {
    poll_until(
        what,
        Duration::from_secs(15),
        Duration::from_millis(200),
        async || match submit("relay-model").await {
            s if s == status => Ok(()),
            s => Err(format!("answered {s}")),
        },
    )
    .await;
}

/// `gengate channels ...` with the given environment.
async fn channels_cli(
    place: &Place,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    cli_env(place, &[&["channels"], args].concat(), env).await
}

async fn the_cli_manages_stored_channels_and_running_instances_pick_them_up(backend: Backend) {
    let place = Place::new(backend).await;
    let config = place.dir.path().join("gengate.toml");
    std::fs::write(
        &config,
        "[[channels]]\nname = \"toml-sandbox\"\nprovider = \"sandbox\"\nmodels = { \"kling-image\" = \"kling-image\" }\nlatency_ms = 50\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let mut p = serve(&place, &["--config", &config]).await;
    let http = reqwest::Client::new();
    let submit = |model: &'static str| {
        let (http, base) = (http.clone(), p.base.clone());
        async move {
            let r = http
                .post(format!("{base}/kling/v1/images/generations"))
                .bearer_auth(ADMIN)
                .json(&json!({"model": model, "prompt": "a boat"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(submit("relay-model").await, 400);
    let env = [("RELAY_KEY", API_KEY), ("RELAY_WHSEC", WHSEC)];

    // Flags; secrets from the environment.
    let (ok, out, err) = channels_cli(
        &place,
        &[
            "add",
            "--config",
            &config,
            "--name",
            "relay",
            "--provider",
            "kling",
            "--base-url",
            "http://127.0.0.1:9",
            "--model",
            "other-model=kling-v1-5",
            "--priority",
            "-2",
            "--weight",
            "3",
            "--max-in-flight",
            "4",
            "--rate-limit",
            "1.5",
            "--deadline",
            "other-model=90",
            "--api-key-env",
            "RELAY_KEY",
            "--webhook-secret-env",
            "RELAY_WHSEC",
        ],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_no_secret(&out);

    // A file: one channel table.
    let file = place.dir.path().join("sandbox.toml");
    std::fs::write(
        &file,
        "name = \"from-file\"\nprovider = \"sandbox\"\nmodels = { \"relay-model\" = \"relay-model\" }\nlatency_ms = 30\n",
    )
    .unwrap();
    let (ok, out, err) = channels_cli(
        &place,
        &[
            "add",
            "--config",
            &config,
            "--file",
            &file.display().to_string(),
        ],
        &[],
    )
    .await;
    assert!(ok, "{out}{err}");

    // Refused, naming the field or the reason; nothing stored by them.
    for (args, says) in [
        (
            vec![
                "add",
                "--name",
                "w0",
                "--provider",
                "sandbox",
                "--model",
                "*=*",
                "--weight",
                "0",
            ],
            "weight",
        ),
        (
            vec![
                "add",
                "--name",
                "k",
                "--provider",
                "kling",
                "--model",
                "*=*",
                "--api-key-env",
                "RELAY_KEY",
            ],
            "base_url",
        ),
        (
            vec![
                "add",
                "--name",
                "k",
                "--provider",
                "kling",
                "--base-url",
                "http://x",
                "--model",
                "*=*",
            ],
            "credentials.api_key",
        ),
        (
            vec![
                "add",
                "--name",
                "p",
                "--provider",
                "openai",
                "--model",
                "*=*",
            ],
            "--provider",
        ),
        (
            vec![
                "add",
                "--name",
                "bad name",
                "--provider",
                "sandbox",
                "--model",
                "*=*",
            ],
            "channel name",
        ),
        (
            vec![
                "add",
                "--name",
                "m",
                "--provider",
                "sandbox",
                "--model",
                "nope",
            ],
            "--model",
        ),
        (
            vec![
                "add",
                "--name",
                "e",
                "--provider",
                "kling",
                "--base-url",
                "http://x",
                "--model",
                "*=*",
                "--api-key-env",
                "UNSET_VAR_FOR_TEST",
            ],
            "UNSET_VAR_FOR_TEST",
        ),
        (
            vec![
                "add",
                "--name",
                "relay",
                "--provider",
                "sandbox",
                "--model",
                "*=*",
            ],
            "already exists",
        ),
        (
            vec![
                "add",
                "--name",
                "toml-sandbox",
                "--provider",
                "sandbox",
                "--model",
                "*=*",
            ],
            "gengate.toml",
        ),
        (
            vec!["update", "toml-sandbox", "--priority", "1"],
            "gengate.toml",
        ),
        (vec!["update", "ghost", "--priority", "1"], "ghost"),
        (vec!["update", "relay", "--weight", "0"], "weight"),
        (vec!["disable", "toml-sandbox"], "gengate.toml"),
    ] {
        let mut a = args.clone();
        a.extend(["--config", &config]);
        let (ok, out, err) = channels_cli(&place, &a, &env).await;
        assert!(!ok, "{args:?} should fail: {out}");
        assert!(err.contains(says), "{args:?}: {err:?} should say {says}");
    }

    // list: table and JSON, no secrets, credentials as set/unset.
    let (ok, out, err) = channels_cli(&place, &["list", "--config", &config], &env).await;
    assert!(ok, "{err}");
    assert_no_secret(&out);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with("toml-sandbox") && lines[1].contains("config"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("from-file") && lines[2].contains("api"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("relay") && lines[3].contains("api_key,webhook_secret"),
        "{out}"
    );
    let (ok, out, _) = channels_cli(&place, &["list", "--json", "--config", &config], &env).await;
    assert!(ok);
    assert_no_secret(&out);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    let relay = &list[2];
    assert_eq!(relay["name"], "relay");
    assert_eq!(relay["source"], "api");
    assert_eq!(
        relay["credentials"],
        json!({"api_key": true, "access_key": false, "secret_key": false, "webhook_secret": true})
    );
    assert_eq!(
        (
            &relay["priority"],
            &relay["weight"],
            &relay["max_in_flight"],
            &relay["rate_limit_per_sec"]
        ),
        (&json!(-2), &json!(3), &json!(4), &json!(1.5))
    );
    assert_eq!(relay["deadline_secs"], json!({"other-model": 90}));

    // The secrets were stored as given.
    let store = gengate_store::open(
        &place.pg.as_ref().map_or_else(
            || format!("sqlite://{}", place.dir.path().join("gengate.db").display()),
            |db| db.url.clone(),
        ),
        false,
    )
    .await
    .unwrap();
    let saved = store.list_channels().await.unwrap();
    let r = saved.iter().find(|c| c.name == "relay").unwrap();
    assert_eq!(r.credentials.api_key.as_deref(), Some(API_KEY));
    assert_eq!(r.credentials.webhook_secret.as_deref(), Some(WHSEC));
    assert_eq!(saved.len(), 2, "refused commands stored nothing");

    // update: only what is given changes.
    let (ok, out, err) = channels_cli(
        &place,
        &[
            "update",
            "relay",
            "--priority",
            "9",
            "--unset",
            "webhook_secret",
            "--config",
            &config,
        ],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    let r = store
        .list_channels()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "relay")
        .unwrap();
    assert_eq!((r.priority, r.weight), (9, 3));
    assert_eq!(r.credentials.api_key.as_deref(), Some(API_KEY));
    assert_eq!(r.credentials.webhook_secret, None);

    // The running instance picks the CLI's channels up within seconds.
    served_within_seconds("the new channel picked up", &submit, 200).await;
    let r = http
        .get(format!("{}/admin/channels/from-file", p.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["source"], &v["in_use"]),
        (&json!("api"), &json!(true)),
        "{v}"
    );

    // disable: the instance stops taking tasks for its model.
    let (ok, out, err) =
        channels_cli(&place, &["disable", "from-file", "--config", &config], &[]).await;
    assert!(ok, "{out}{err}");
    served_within_seconds("the disabled channel no longer serving", &submit, 400).await;
    let (ok, _, err) =
        channels_cli(&place, &["enable", "from-file", "--config", &config], &[]).await;
    assert!(ok, "{err}");
    assert!(
        store
            .list_channels()
            .await
            .unwrap()
            .iter()
            .all(|c| c.enabled)
    );

    p.child.kill().await.unwrap();
    drop(store);
    place.finish().await;
}
