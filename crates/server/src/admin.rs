//! `/admin/channels`: channels added and changed while gengate runs, kept in
//! the store; gengate.toml's are listed beside them, read-only. Admin keys
//! only. Credentials are written here but never read back: every answer
//! says only which of them are set.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::{ApiError, ChannelSpec, Credentials, ProviderKind};
use gengate_engine::stored_channels::{Source, StoredChannels, credentials_set, view};
use serde_json::{Map, Value};

use crate::AppState;
use crate::body::read_json;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Admin as AdminKey, AdminBody, Errors};

/// An admin's key, refused in gengate's envelope.
type Admin = crate::auth::Admin<ErrorBody>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/channels", get(list).post(create))
        .route("/admin/channels/{name}", get(get_one).patch(update))
        .route("/admin/channels/{name}/disable", post(disable))
        .route("/admin/channels/{name}/enable", post(enable))
}

type Result<T> = std::result::Result<T, Error>;

fn in_use(state: &AppState) -> std::collections::HashSet<String> {
    state
        .engine
        .channels()
        .snapshot()
        .iter()
        .filter(|c| c.spec.enabled)
        .map(|c| c.name().to_string())
        .collect()
}

/// The stored channels beside this instance's.
fn channels(state: &AppState) -> StoredChannels<'_> {
    StoredChannels::new(state.store.as_ref(), state.engine.channels())
}

/// Put the store's channels to use in this instance at once (others
/// re-read them within seconds).
async fn reload(state: &AppState) -> Result<()> {
    state.engine.reload_channels().await?;
    Ok(())
}

/// One channel's view as this instance now runs it.
fn shown(state: &AppState, spec: &ChannelSpec, source: Source) -> Value {
    view(spec, source, Some(in_use(state).contains(&spec.name)))
}

/// `v` (channel `name`'s view) with its health: this instance's view of
/// its cooling, failures and last minute's requests, the jobs' learned
/// durations, and its tasks in flight (every instance's, from the store).
fn with_health(state: &AppState, mut v: Value, name: &str, in_flight: &[(String, u64)]) -> Value {
    let engine = &state.engine;
    let mut health = serde_json::to_value(engine.channels().health(name)).unwrap_or_default();
    let learned: Map<String, Value> = engine
        .learned_durations(name)
        .into_iter()
        .map(|(model, d)| (model, Value::from(d.as_secs_f64())))
        .collect();
    if let Value::Object(h) = &mut health {
        let n = in_flight
            .iter()
            .find(|(c, _)| c == name)
            .map_or(0, |(_, n)| *n);
        h.insert("in_flight".into(), n.into());
        h.insert("learned_seconds".into(), Value::Object(learned));
    }
    if let Value::Object(m) = &mut v {
        m.insert("health".into(), health);
    }
    v
}

/// Every channel, gengate.toml's first, then the stored ones by name.
#[utoipa::path(get, path = "/admin/channels", tag = "admin",
    responses((status = 200, description = "`{\"data\": [channel, ...]}`: gengate.toml's (`\"source\": \"config\"`) then stored ones (`\"api\"`); credentials as true/false; `health`: `cooling`, `cool_remaining_secs`, `consecutive_failures`, `requests_last_minute`, `errors_last_minute` (as this instance saw them), `in_flight` (every instance's), `learned_seconds` by model", body = serde_json::Value),
        Errors<ErrorBody, AdminKey>),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<Value>> {
    let running = in_use(&state);
    let in_flight = state.store.in_flight_by_channel().await?;
    let data = channels(&state)
        .all()
        .await
        .map_err(ApiError::from)?
        .iter()
        .map(|(s, src)| {
            let v = view(s, *src, Some(running.contains(&s.name)));
            with_health(&state, v, &s.name, &in_flight)
        })
        .collect();
    Ok(Json(serde_json::json!({ "data": Value::Array(data) })))
}

/// One channel, by name.
#[utoipa::path(get, path = "/admin/channels/{name}", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    responses(Errors<ErrorBody, AdminKey>,
        (status = 200, description = "The channel, credentials as true/false", body = serde_json::Value),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let (spec, src) = channels(&state).get(&name).await.map_err(ApiError::from)?;
    let in_flight = state.store.in_flight_by_channel().await?;
    Ok(Json(with_health(
        &state,
        shown(&state, &spec, src),
        &name,
        &in_flight,
    )))
}

/// Add a channel: the body is a `[[channels]]` table as JSON.
#[utoipa::path(post, path = "/admin/channels", tag = "admin",
    request_body(content = serde_json::Value, description = "One `[[channels]]` table of gengate.toml, as JSON"),
    responses(Errors<ErrorBody, AdminBody>,
        (status = 201, description = "The channel, credentials as true/false", body = serde_json::Value),
        (status = 400, description = "A field is wrong; the message names it", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let fields = json_object(&headers, body).await?;
    check_credentials(&fields)?;
    let spec = parse_spec(fields)?;
    channels(&state)
        .create(&spec)
        .await
        .map_err(ApiError::from)?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(shown(&state, &spec, Source::Api))).into_response())
}

/// Change some of a stored channel's fields. Credentials given replace
/// those fields; `null` removes one. The name cannot change.
#[utoipa::path(patch, path = "/admin/channels/{name}", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    request_body(content = serde_json::Value, description = "Any channel fields; within credentials, each given one replaces that one (null removes it)"),
    responses(Errors<ErrorBody, AdminBody>,
        (status = 200, description = "The channel, credentials as true/false", body = serde_json::Value),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A gengate.toml channel: edit the file", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>> {
    let patch = json_object(&headers, body).await?;
    let current = channels(&state)
        .stored(&name)
        .await
        .map_err(ApiError::from)?;
    check_credentials(&patch)?;
    let spec = parse_spec(merge(&current, patch)?)?;
    save(&state, &spec).await?;
    Ok(Json(shown(&state, &spec, Source::Api)))
}

/// Stop routing new tasks to a stored channel (tasks already on it finish there).
#[utoipa::path(post, path = "/admin/channels/{name}/disable", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = serde_json::Value),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    set_enabled(state, name, false).await
}

/// Route tasks to a stored channel again.
#[utoipa::path(post, path = "/admin/channels/{name}/enable", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = serde_json::Value),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    set_enabled(state, name, true).await
}

async fn set_enabled(state: AppState, name: String, enabled: bool) -> Result<Json<Value>> {
    let mut spec = channels(&state)
        .stored(&name)
        .await
        .map_err(ApiError::from)?;
    spec.enabled = enabled;
    save(&state, &spec).await?;
    Ok(Json(shown(&state, &spec, Source::Api)))
}

async fn save(state: &AppState, spec: &ChannelSpec) -> Result<()> {
    channels(state).save(spec).await.map_err(ApiError::from)?;
    reload(state).await
}

/// The body, which must be one JSON object.
async fn json_object(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>> {
    let bytes = read_json(headers, body).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::MalformedJson("the body must be a JSON object".into()).into()),
        Err(e) => Err(ApiError::MalformedJson(e.to_string()).into()),
    }
}

/// The fields of a channel, each set to a valid value.
fn template() -> Map<String, Value> {
    match serde_json::to_value(ChannelSpec::new("x", ProviderKind::Sandbox)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `credentials`, when given, is an object of known fields, each a
/// non-empty string or `null`.
fn check_credentials(fields: &Map<String, Value>) -> Result<()> {
    let Some(c) = fields.get("credentials") else {
        return Ok(());
    };
    let Value::Object(c) = c else {
        return Err(ApiError::validation("credentials", "must be an object").into());
    };
    let known = credentials_set(&Credentials::default());
    for (k, v) in c {
        let field = format!("credentials.{k}");
        if !known.contains_key(k) {
            let names: Vec<_> = known.keys().map(String::as_str).collect();
            return Err(ApiError::validation(
                field,
                format!("is not a credential (known: {})", names.join(", ")),
            )
            .into());
        }
        match v {
            Value::Null => {}
            Value::String(s) if !s.is_empty() => {}
            _ => {
                return Err(ApiError::validation(field, "must be a non-empty string").into());
            }
        }
    }
    Ok(())
}

/// A channel from its fields, or a 400 naming the field that is wrong.
pub fn parse_spec(fields: Map<String, Value>) -> Result<ChannelSpec> {
    let template = template();
    if let Some(k) = fields.keys().find(|k| !template.contains_key(*k)) {
        return Err(ApiError::validation(
            k.as_str(),
            "is not a channel field (the fields are those of [[channels]] in gengate.toml)",
        )
        .into());
    }
    let e = match serde_json::from_value::<ChannelSpec>(Value::Object(fields.clone())) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    // Find the field at fault: each given field alone, beside valid others.
    for (k, v) in &fields {
        let mut probe = template.clone();
        probe.insert(k.clone(), v.clone());
        if let Err(e) = serde_json::from_value::<ChannelSpec>(Value::Object(probe)) {
            return Err(ApiError::validation(k.as_str(), e.to_string()).into());
        }
    }
    let msg = e.to_string();
    Err(match msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        Some(field) => ApiError::validation(field, "is required"),
        None => ApiError::validation("body", msg),
    }
    .into())
}

/// `current` with `patch` applied: fields given replace those stored;
/// within `credentials`, each given one replaces (or, `null`, removes) that
/// one alone.
fn merge(current: &ChannelSpec, patch: Map<String, Value>) -> Result<Map<String, Value>> {
    let Ok(Value::Object(mut merged)) = serde_json::to_value(current) else {
        return Err(ApiError::Internal.into());
    };
    let template = template();
    for (k, v) in patch {
        if !template.contains_key(&k) {
            return Err(ApiError::validation(
                k,
                "is not a channel field (the fields are those of [[channels]] in gengate.toml)",
            )
            .into());
        }
        match (k.as_str(), v) {
            ("name", v) if v != Value::String(current.name.clone()) => {
                return Err(ApiError::validation("name", "cannot be changed").into());
            }
            ("credentials", Value::Object(given)) => {
                if let Some(Value::Object(c)) = merged.get_mut("credentials") {
                    for (ck, cv) in given {
                        c.insert(ck, cv);
                    }
                }
            }
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    Ok(merged)
}
