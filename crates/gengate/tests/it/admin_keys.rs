//! API keys managed while gengate runs: the admin API (`/admin/keys`), on
//! both stores. Secrets are answered once and never listed; bad input is
//! refused naming the field, with nothing stored; a disabled key and one
//! over its request rate are refused.

use crate::harness::{Backend, Gateway, TestApp};
use serde_json::{Value, json};

on_both_backends!(
    keys_are_made_listed_shown_and_changed_over_http,
    credits_are_granted_and_adjusted_into_the_ledger,
    a_revoked_key_stops_at_once_and_a_rotated_secret_overlaps,
    only_admin_keys_manage_keys,
    bad_input_is_refused_naming_the_field_and_nothing_is_stored,
    a_disabled_key_is_refused_until_enabled_again,
    a_burst_beyond_requests_per_sec_gets_429_with_retry_after,
);

/// Credits a key made without any starts with, in these tests.
const DEFAULT_CREDITS: i64 = 25;

async fn gateway(backend: Backend) -> Gateway {
    TestApp::on(backend)
        .with(|s| s.default_credits = DEFAULT_CREDITS)
        .start()
        .await
}

async fn patch(gw: &Gateway, path: &str, key: &str, body: Value) -> (u16, Value) {
    gw.send_json(reqwest::Method::PATCH, path, key, body).await
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

/// Make a key over HTTP; its answer (view, `key`, `webhook_secret`).
async fn create(gw: &Gateway, body: Value) -> Value {
    let (s, v) = gw.post("/admin/keys", &gw.admin, body).await;
    assert_eq!(s, 201, "{v}");
    v
}

/// Any authenticated request: the key's own task list.
async fn use_key(gw: &Gateway, key: &str) -> (u16, Value) {
    gw.get("/v1/tasks", key).await
}

async fn keys_are_made_listed_shown_and_changed_over_http(backend: Backend) {
    let gw = gateway(backend).await;
    let made = create(
        &gw,
        json!({"name": "app", "credits": 500, "limits": {"max_in_flight": 2}}),
    )
    .await;
    let secret = made["key"].as_str().unwrap();
    let whsec = made["webhook_secret"].as_str().unwrap();
    assert!(
        secret.starts_with("gg_") && whsec.starts_with("whsec_"),
        "{made}"
    );
    assert_eq!(made["name"], "app");
    assert_eq!(made["admin"], false);
    assert_eq!(made["enabled"], true);
    assert_eq!(made["unlimited"], false);
    assert_eq!(made["balance"], 500);
    assert_eq!(made["limits"], json!({"max_in_flight": 2}));
    assert_eq!(made["revoked_at"], Value::Null);
    let created_at = made["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 24 && created_at.ends_with('Z'),
        "{created_at}"
    );
    assert!(made.get("hash").is_none(), "{made}");
    assert_eq!(use_key(&gw, secret).await.0, 200);
    let id = made["id"].as_str().unwrap();
    assert_eq!(gw.key_record(secret).await.id.to_string(), id);

    let plain = create(&gw, json!({"name": "plain"})).await;
    assert_eq!(plain["balance"], DEFAULT_CREDITS);
    let unlimited = create(
        &gw,
        json!({"name": "ops", "unlimited": true, "admin": true}),
    )
    .await;
    assert_eq!(unlimited["balance"], 0);
    assert_eq!(unlimited["unlimited"], true);
    assert_eq!(unlimited["admin"], true);

    let (s, list) = gw.get("/admin/keys", &gw.admin).await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "app", "plain", "ops"]);
    let (s, one) = gw.get(&format!("/admin/keys/{id}"), &gw.admin).await;
    assert_eq!(s, 200, "{one}");
    for shown in [&list, &one] {
        let text = shown.to_string();
        for hidden in [secret, whsec, &gw.admin, "webhook_secret", "hash"] {
            assert!(!text.contains(hidden), "{hidden} is shown: {text}");
        }
    }
    let mut view = made.clone();
    let view_fields = view.as_object_mut().unwrap();
    view_fields.remove("key");
    view_fields.remove("webhook_secret");
    assert_eq!(one, view);

    let change = json!({"name": "app-2", "unlimited": true, "limits": {"daily_spend": 70, "models": ["m1"]}});
    let (s, changed) = patch(&gw, &format!("/admin/keys/{id}"), &gw.admin, change).await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(changed["name"], "app-2");
    assert_eq!(changed["unlimited"], true);
    assert_eq!(changed["enabled"], true);
    assert_eq!(
        changed["limits"],
        json!({"daily_spend": 70, "models": ["m1"]})
    );
    let stored = gw.key_record(secret).await;
    assert_eq!(stored.name, "app-2");
    assert!(stored.unlimited);
    assert_eq!(stored.limits.daily_spend, Some(70));
    assert_eq!(stored.limits.max_in_flight, None, "limits are replaced");
    assert_eq!(stored.balance, 500, "a patch never moves the balance");
    gw.stop().await;
}

async fn credits_are_granted_and_adjusted_into_the_ledger(backend: Backend) {
    let gw = gateway(backend).await;
    let made = create(&gw, json!({"name": "app", "credits": 40})).await;
    let id = made["id"].as_str().unwrap();
    let credits = format!("/admin/keys/{id}/credits");

    let (s, v) = gw
        .post(
            &credits,
            &gw.admin,
            json!({"amount": 100, "reason": "top up"}),
        )
        .await;
    assert_eq!((s, &v), (200, &json!({"id": id, "balance": 140})));
    let adjust = json!({"amount": -30, "reason": "refund by hand", "kind": "adjustment"});
    let (s, v) = gw.post(&credits, &gw.admin, adjust).await;
    assert_eq!((s, &v), (200, &json!({"id": id, "balance": 110})));

    let (s, ledger) = gw.get(&format!("/admin/keys/{id}/ledger"), &gw.admin).await;
    assert_eq!(s, 200, "{ledger}");
    let entries: Vec<_> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["amount"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [("adjustment", -30), ("grant", 100), ("grant", 40)],
        "newest first"
    );
    assert_eq!(ledger["data"][0]["reason"], "refund by hand");
    assert_eq!(ledger["data"][0]["key_id"], id);
    let (s, page) = gw
        .get(&format!("/admin/keys/{id}/ledger?limit=1"), &gw.admin)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    for limit in ["0", "1001", "x"] {
        let (s, v) = gw
            .get(&format!("/admin/keys/{id}/ledger?limit={limit}"), &gw.admin)
            .await;
        assert_eq!(s, 400, "{limit}: {v}");
        assert!(message(&v).starts_with("limit"), "{v}");
    }

    for (body, field) in [
        (json!({"amount": 0, "reason": "r"}), "amount"),
        (json!({"amount": -5, "reason": "r"}), "amount"),
        (json!({"amount": 1_000_000_001, "reason": "r"}), "amount"),
        (
            json!({"amount": 0, "reason": "r", "kind": "adjustment"}),
            "amount",
        ),
        (json!({"amount": 5}), "reason"),
        (json!({"amount": 5, "reason": "  "}), "reason"),
        (json!({"amount": 5, "reason": "r".repeat(501)}), "reason"),
        (
            json!({"amount": 5, "reason": "r", "kind": "charge"}),
            "kind",
        ),
        (json!({"amount": "5", "reason": "r"}), "amount"),
    ] {
        let (s, v) = gw.post(&credits, &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(message(&v).starts_with(field), "{body}: {v}");
    }
    let key = stored_key(&gw, id).await;
    assert_eq!(key.balance, 110, "refused credits move nothing");
    assert_eq!(gw.store().ledger(key.id, 100).await.unwrap().len(), 3);

    let unknown = uuid::Uuid::now_v7();
    let grant = json!({"amount": 5, "reason": "r"});
    let (s, v) = gw
        .post(&format!("/admin/keys/{unknown}/credits"), &gw.admin, grant)
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = gw
        .get(&format!("/admin/keys/{unknown}/ledger"), &gw.admin)
        .await;
    assert_eq!(s, 404);
    let totals = gw.store().ledger_totals().await.unwrap();
    assert!(totals.iter().all(|t| t.balance == t.entries), "{totals:?}");
    gw.stop().await;
}

async fn a_revoked_key_stops_at_once_and_a_rotated_secret_overlaps(backend: Backend) {
    let gw = gateway(backend).await;
    let made = create(&gw, json!({"name": "app"})).await;
    let (id, secret) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    let old = made["webhook_secret"].as_str().unwrap();

    let (s, r) = gw
        .post(
            &format!("/admin/keys/{id}/rotate-secret"),
            &gw.admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let new = r["webhook_secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old, "{r}");
    let record = gw.key_record(secret).await;
    assert_eq!(record.webhook_secret.as_deref(), Some(new));
    assert_eq!(record.previous_webhook_secret.as_deref(), Some(old));
    let day_ms = 24 * 3600 * 1000;
    let until = record.previous_secret_until.unwrap() - gengate_engine::now_ms();
    assert!((day_ms - 60_000..=day_ms).contains(&until), "{until}");

    assert_eq!(use_key(&gw, secret).await.0, 200);
    let revoke = format!("/admin/keys/{id}/revoke");
    let (s, v) = gw.post(&revoke, &gw.admin, json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["revoked_at"].as_str().unwrap().ends_with('Z'), "{v}");
    // This instance forgets the key at once (others within a second).
    assert_eq!(use_key(&gw, secret).await.0, 401);
    let (s, v) = gw.post(&revoke, &gw.admin, json!({})).await;
    assert_eq!(s, 409, "{v}");
    let unknown = uuid::Uuid::now_v7();
    for path in ["revoke", "rotate-secret"] {
        let (s, v) = gw
            .post(
                &format!("/admin/keys/{unknown}/{path}"),
                &gw.admin,
                json!({}),
            )
            .await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    gw.stop().await;
}

async fn only_admin_keys_manage_keys(backend: Backend) {
    let gw = gateway(backend).await;
    let user = gw.new_key("user").await;
    let id = gw.key_record(&user).await.id;
    let grant = json!({"amount": 5, "reason": "r"});
    let calls = [
        ("GET", "/admin/keys".to_string(), None),
        (
            "POST",
            "/admin/keys".to_string(),
            Some(json!({"name": "x"})),
        ),
        ("GET", format!("/admin/keys/{id}"), None),
        ("POST", format!("/admin/keys/{id}/credits"), Some(grant)),
        ("POST", format!("/admin/keys/{id}/revoke"), Some(json!({}))),
    ];
    for (method, path, body) in calls {
        let method: reqwest::Method = method.parse().unwrap();
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let (s, v) = gw
            .send(method.clone(), &path, Some(&user), body.clone())
            .await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(v["error"]["status"], 403, "{v}");
        let (s, _) = gw.send(method, &path, None, body).await;
        assert_eq!(s, 401, "{path}");
    }
    assert_eq!(gw.store().count_keys().await.unwrap(), 2, "nothing made");
    let user_key = gw.key_record(&user).await;
    assert_eq!(user_key.balance, 0, "nothing granted");
    assert!(user_key.revoked_at.is_none(), "nothing revoked");
    gw.stop().await;
}

async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored(backend: Backend) {
    let gw = gateway(backend).await;
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "n".repeat(201)}), "name"),
        (json!({"name": "a", "credits": -1}), "credits"),
        (json!({"name": "a", "credits": 1_000_000_001}), "credits"),
        (json!({"name": "a", "admin": "yes"}), "admin"),
        (json!({"name": "a", "color": "red"}), "color"),
        (
            json!({"name": "a", "limits": {"max_in_flight": 0}}),
            "limits.max_in_flight",
        ),
        (
            json!({"name": "a", "limits": {"requests_per_sec": 100_001}}),
            "limits.requests_per_sec",
        ),
        (
            json!({"name": "a", "limits": {"daily_spend": -1}}),
            "limits.daily_spend",
        ),
        (
            json!({"name": "a", "limits": {"models": [""]}}),
            "limits.models",
        ),
        (json!({"name": "a", "limits": {"tempo": 1}}), "limits.tempo"),
        (json!({"name": "a", "limits": [null, null]}), "limits"),
        (json!(["a"]), "body"),
    ] {
        let (s, v) = gw.post("/admin/keys", &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(message(&v).starts_with(field), "{body}: {v}");
    }
    let (s, v) = gw
        .send(
            reqwest::Method::POST,
            "/admin/keys",
            Some(&gw.admin),
            Some(("application/json", b"{\"name\":".to_vec())),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(gw.store().count_keys().await.unwrap(), 1, "nothing stored");

    let made = create(&gw, json!({"name": "app", "limits": {"max_in_flight": 3}})).await;
    let id = made["id"].as_str().unwrap();
    let path = format!("/admin/keys/{id}");
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"enabled": "no"}), "enabled"),
        (
            json!({"limits": {"max_in_flight": 0}}),
            "limits.max_in_flight",
        ),
        (json!({"balance": 9}), "balance"),
        (json!({"limits": [3]}), "limits"),
    ] {
        let (s, v) = patch(&gw, &path, &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(message(&v).starts_with(field), "{body}: {v}");
    }
    let key = stored_key(&gw, id).await;
    assert_eq!(
        (key.name.as_str(), key.enabled, key.limits.max_in_flight),
        ("app", true, Some(3)),
        "nothing changed"
    );

    for path in ["/admin/keys/nope", "/admin/keys/nope/ledger"] {
        let (s, v) = gw.get(path, &gw.admin).await;
        assert_eq!(s, 400, "{path}: {v}");
        assert!(message(&v).starts_with("id"), "{v}");
    }
    let unknown = uuid::Uuid::now_v7();
    let (s, v) = gw.get(&format!("/admin/keys/{unknown}"), &gw.admin).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = patch(
        &gw,
        &format!("/admin/keys/{unknown}"),
        &gw.admin,
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    gw.stop().await;
}

async fn a_disabled_key_is_refused_until_enabled_again(backend: Backend) {
    let gw = gateway(backend).await;
    let made = create(&gw, json!({"name": "app"})).await;
    let (id, secret) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    let path = format!("/admin/keys/{id}");
    assert_eq!(use_key(&gw, secret).await.0, 200);

    let (s, v) = patch(&gw, &path, &gw.admin, json!({"enabled": false})).await;
    assert_eq!((s, &v["enabled"]), (200, &json!(false)), "{v}");
    let (s, v) = use_key(&gw, secret).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(message(&v), "this key is disabled");
    // Every dialect refuses it, in its own envelope.
    let (s, v) = gw.get("/kling/v1/images/generations", secret).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = gw.get("/dream-machine/v1/generations", secret).await;
    assert_eq!(
        (s, v["detail"].as_str()),
        (403, Some("this key is disabled"))
    );

    let (s, v) = patch(&gw, &path, &gw.admin, json!({"enabled": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(use_key(&gw, secret).await.0, 200);
    gw.stop().await;
}

async fn a_burst_beyond_requests_per_sec_gets_429_with_retry_after(backend: Backend) {
    let gw = gateway(backend).await;
    let made = create(
        &gw,
        json!({"name": "app", "limits": {"requests_per_sec": 3}}),
    )
    .await;
    let (id, secret) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    let url = format!("{}/v1/tasks", gw.base);
    let burst =
        futures::future::join_all((0..10).map(|_| gw.http.get(&url).bearer_auth(secret).send()))
            .await;
    let mut ok = 0;
    let mut limited = Vec::new();
    for r in burst {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited.push(r),
            other => panic!("{other}"),
        }
    }
    // At most the burst of 3, and what refills while the ten are answered.
    assert!((3..10).contains(&ok), "{ok} of 10 passed");
    let refused = limited.pop().expect("some refused");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["status"], 429, "{v}");

    // A new limit applies from the next request, with a fresh burst.
    let change = json!({"limits": {"requests_per_sec": 1000}});
    let (s, _) = patch(&gw, &format!("/admin/keys/{id}"), &gw.admin, change).await;
    assert_eq!(s, 200);
    for _ in 0..10 {
        assert_eq!(use_key(&gw, secret).await.0, 200);
    }
    gw.stop().await;
}

/// Key `id` as stored.
async fn stored_key(gw: &Gateway, id: &str) -> gengate_core::ApiKey {
    let id = id.parse().expect("a key id");
    gw.store().get_key(id).await.unwrap().expect("a stored key")
}
