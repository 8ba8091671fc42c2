//! `GET /v1/usage`: a key's tasks and credits by day, model or channel (an
//! admin's: any key's, or every key's), as JSON or, with `Accept: text/csv`,
//! as CSV. Errors are gengate's envelope.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gengate_core::usage::{self, UsageParams, UsageReport};
use gengate_engine::now_ms;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Errors, KeyQuery};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", get(report))
}

/// Tasks by outcome and their credits (charged, refunded, net, the
/// upstream cost the channels' cost lists give, and the margin), per group.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    params(UsageParams),
    responses(Errors<ErrorBody, KeyQuery>,
        (status = 200, body = UsageReport, description = "JSON, or CSV (a header line, then one line per group) when `Accept: text/csv`",
            content(
                (UsageReport = "application/json"),
                (String = "text/csv"),
            )),
        (status = 403, body = ErrorBody, description = "`key` names another key and the caller is not an admin")),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    key: crate::auth::Caller<ErrorBody>,
    headers: HeaderMap,
    crate::extract::Query(params, _): crate::extract::Query<UsageParams, ErrorBody>,
) -> Result<Response, Error> {
    let req = params.check(now_ms())?;
    let report = state.tasks.usage(&key, &req).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let csv = usage::csv(&report);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(Json(report).into_response())
}
