//! `/admin/prices`: the price book. gengate.toml's `[[prices]]` are listed
//! read-only beside those set here (kept in the store). A price applies to
//! tasks accepted after it is set; tasks keep the charge they were accepted
//! with. Admin keys only; errors are gengate's envelope.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gengate_core::credits::PriceBody;
use gengate_core::validate::parse_json;
use gengate_core::{ApiError, Price};
use gengate_engine::prices::Source;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Admin as AdminKey, AdminBody, Errors};

type Admin = crate::auth::Admin<ErrorBody>;
type Payload = crate::extract::JsonBody<ErrorBody>;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/prices", get(list)).route(
        "/admin/prices/{model}",
        axum::routing::put(put).delete(delete),
    )
}

/// A price in force and where it is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub model: String,
    pub per_task: i64,
    pub per_image: i64,
    pub per_video_second: std::collections::BTreeMap<String, i64>,
    /// `config` (gengate.toml, read-only here) or `api`.
    pub source: &'static str,
}

impl PriceView {
    fn new(p: Price, source: Source) -> PriceView {
        PriceView {
            model: p.model,
            per_task: p.per_task,
            per_image: p.per_image,
            per_video_second: p.per_video_second,
            source: source.as_str(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceList {
    pub data: Vec<PriceView>,
}

/// Every price in force, by model (`*`: every model without its own).
#[utoipa::path(get, path = "/admin/prices", tag = "admin",
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = PriceList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Json<PriceList> {
    let data = state
        .engine
        .prices()
        .list()
        .into_iter()
        .map(|(price, source)| PriceView::new(price, source))
        .collect();
    Json(PriceList { data })
}

/// Set the price of a model (`*` for every model without its own).
#[utoipa::path(put, path = "/admin/prices/{model}", tag = "admin",
    params(("model" = String, Path, description = "The model as clients name it, or `*`",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    request_body = PriceBody,
    responses(Errors<ErrorBody, AdminBody>,
        (status = 200, body = PriceView),
        (status = 409, body = ErrorBody, description = "The model's price is set in gengate.toml")),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path(model): Path<String>,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Json<PriceView>, Error> {
    // Visible ASCII, as documented: a model name clients can type.
    if model.is_empty() || model.len() > 128 || !model.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            ApiError::validation("model", "must be 1 to 128 visible ASCII characters").into(),
        );
    }
    let price = parse_json::<PriceBody>(&body)?.for_model(&model);
    let prices = state.engine.prices();
    prices.put(state.store.as_ref(), &price).await?;
    state.engine.reload_channels().await?;
    Ok(Json(PriceView::new(price, Source::Api)))
}

/// Remove a stored price: the model then costs what `*` says, or nothing.
#[utoipa::path(delete, path = "/admin/prices/{model}", tag = "admin",
    params(("model" = String, Path, description = "The model, or `*`",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses(Errors<ErrorBody, AdminKey>,
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorBody, description = "No stored price for the model"),
        (status = 409, body = ErrorBody, description = "The model's price is set in gengate.toml")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    _: Admin,
    Path(model): Path<String>,
) -> Result<Response, Error> {
    state
        .engine
        .prices()
        .delete(state.store.as_ref(), &model)
        .await?;
    state.engine.reload_channels().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
