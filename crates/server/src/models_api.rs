//! `GET /v1/models`: the models the configured channels serve, in OpenAI's
//! list shape with gengate's fields beside (kinds, accepted inputs).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use gengate_core::channel::ANY_MODEL;
use gengate_core::dialect::tasks::{IMAGE_INPUTS, VIDEO_INPUTS};
use gengate_core::{ProviderKind, TaskKind};
use gengate_engine::Channels;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Errors, Key};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models", get(list))
}

/// What a provider's adapter can make.
pub fn provider_kinds(p: ProviderKind) -> &'static [TaskKind] {
    match p {
        ProviderKind::OpenaiImages | ProviderKind::Comfyui => &[TaskKind::Image],
        ProviderKind::GeminiVeo | ProviderKind::OpenaiVideos => &[TaskKind::Video],
        ProviderKind::Sandbox
        | ProviderKind::Luma
        | ProviderKind::Kling
        | ProviderKind::Replicate
        | ProviderKind::Gengate => &[TaskKind::Image, TaskKind::Video],
    }
}

/// The kinds the enabled channels serving `model` make, image first.
fn kinds_of(channels: &Channels, model: &str) -> Vec<TaskKind> {
    let mut kinds = Vec::new();
    for c in channels.snapshot() {
        if c.spec.enabled && c.spec.upstream_model(model).is_some() {
            for k in provider_kinds(c.spec.provider) {
                if !kinds.contains(k) {
                    kinds.push(*k);
                }
            }
        }
    }
    kinds.sort_by_key(|k| *k == TaskKind::Video);
    kinds
}

/// The one kind `model`'s channels make, when there is only one: what a
/// `/v1/tasks` create that names no kind gets.
pub fn kind_of_model(channels: &Channels, model: &str) -> Option<TaskKind> {
    match kinds_of(channels, model).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always "list".
    pub object: &'static str,
    pub data: Vec<ModelView>,
    /// Some channel serves any model name (a `"*"` entry): models not
    /// listed may be served too.
    pub any_model: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    /// The model name to send (`model` in `/v1/tasks`).
    pub id: String,
    /// Always "model".
    pub object: &'static str,
    /// Unix seconds; 0, as channels do not record it.
    pub created: i64,
    /// Always "gengate": which upstream serves a task is the gateway's choice.
    pub owned_by: &'static str,
    /// image and/or video.
    pub kinds: Vec<&'static str>,
    /// The `input` fields each kind accepts.
    pub inputs: BTreeMap<&'static str, Vec<&'static str>>,
}

/// The models served by the enabled channels, by name.
#[utoipa::path(get, path = "/v1/models", tag = "tasks",
    responses(Errors<ErrorBody, Key>, (status = 200, body = ModelList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: crate::auth::Caller<ErrorBody>,
) -> Result<Json<ModelList>, Error> {
    let channels = state.engine.channels();
    let snapshot = channels.snapshot();
    let enabled = || snapshot.iter().filter(|c| c.spec.enabled);
    let mut names: Vec<&str> = enabled()
        .flat_map(|c| c.spec.models.keys().map(String::as_str))
        .filter(|m| *m != ANY_MODEL)
        .collect();
    names.sort_unstable();
    names.dedup();
    let data = names
        .into_iter()
        .map(|id| {
            let kinds = kinds_of(channels, id);
            ModelView {
                id: id.to_string(),
                object: "model",
                created: 0,
                owned_by: "gengate",
                kinds: kinds.iter().map(|k| k.as_str()).collect(),
                inputs: kinds
                    .iter()
                    .map(|k| {
                        let fields = match k {
                            TaskKind::Image => IMAGE_INPUTS,
                            TaskKind::Video => VIDEO_INPUTS,
                        };
                        (k.as_str(), fields.to_vec())
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
        any_model: enabled().any(|c| c.spec.models.contains_key(ANY_MODEL)),
    }))
}
