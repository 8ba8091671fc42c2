//! `/admin/keys`: API keys made, changed, revoked and credited while
//! gengate runs, through the same service as `gengate keys`. Admin keys
//! only. A key's secret and its callback signing secret are answered once,
//! when made (the signing secret again when rotated); never listed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::credits::{EntryKind, LedgerEntry};
use gengate_core::time::rfc3339_ms;
use gengate_core::{ApiError, ApiKey, Credits, KeyLimits};
use gengate_engine::keys::{KeyPatch, NewKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::extract::{JsonBody, Query};
use crate::openapi::{Admin as AdminKey, AdminBody, Errors};

/// An admin's key, refused in gengate's envelope.
type Admin = crate::auth::Admin<ErrorBody>;
type Payload = JsonBody<ErrorBody>;
type Result<T> = std::result::Result<T, Error>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{id}", get(get_one).patch(update))
        .route("/admin/keys/{id}/revoke", post(revoke))
        .route("/admin/keys/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/keys/{id}/credits", post(credit))
        .route("/admin/keys/{id}/ledger", get(ledger))
}

/// A key as shown to admins: never its hash or a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub admin: bool,
    /// A disabled key is refused (403) until enabled again.
    pub enabled: bool,
    /// Never refused for its balance (charges are still recorded).
    pub unlimited: bool,
    pub balance: Credits,
    pub limits: KeyLimits,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> KeyView {
        KeyView {
            id: k.id,
            name: k.name.clone(),
            admin: k.admin,
            enabled: k.enabled,
            unlimited: k.unlimited,
            balance: k.balance,
            limits: k.limits.clone(),
            created_at: rfc3339_ms(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339_ms),
        }
    }
}

/// A key just made: its view, its secret and its callback signing secret,
/// both shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The key itself (`gg_…`), for `Authorization: Bearer`.
    pub key: String,
    /// Signs this key's callbacks (`whsec_…`).
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// An admin key manages keys and channels.
    #[serde(default)]
    pub admin: bool,
    /// Credits it starts with; by default gengate's `default_credits`
    /// (none for an unlimited key).
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000)]
    pub credits: Option<Credits>,
    #[serde(default)]
    pub unlimited: bool,
    // An object or null: serde would read the struct from an array too.
    #[serde(default, deserialize_with = "gengate_core::validate::object")]
    pub limits: Option<KeyLimits>,
}

/// The fields to change; those left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub unlimited: Option<bool>,
    /// Replaces all of the key's limits.
    #[serde(default, deserialize_with = "gengate_core::validate::object")]
    pub limits: Option<KeyLimits>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// Credits given: more than 0.
    #[default]
    Grant,
    /// A correction of either sign.
    Adjustment,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCredits {
    /// A grant: 1 to 1000000000; an adjustment: -1000000000 to 1000000000, not 0.
    pub amount: Credits,
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub reason: String,
    #[serde(default)]
    pub kind: CreditKind,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    pub id: Uuid,
    pub balance: Credits,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    pub id: Uuid,
    /// The new signing secret, shown only this once.
    pub webhook_secret: String,
    /// The old secret also signs until then.
    #[schema(format = DateTime)]
    pub previous_secret_until: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Newest first.
    pub data: Vec<LedgerEntry>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// 1 to 1000, default 50.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Ledger entries in a page unless asked otherwise.
const DEFAULT_LEDGER_PAGE: u32 = 50;

/// The body as `T`, or a 400 naming the field at fault.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::MalformedJson(inner.to_string()).into();
        }
        let rule = inner.to_string();
        // Missing and unknown fields are reported at their object, not at themselves.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| rule.split_once(p))
            .and_then(|(_, rest)| rest.split('`').next());
        let field = match (path.as_str(), named) {
            (".", Some(f)) => f.to_string(),
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => "body".to_string(),
            (p, None) => p.to_string(),
        };
        ApiError::validation(field, rule).into()
    })
}

fn key_id(raw: &str) -> Result<Uuid> {
    raw.parse().map_err(|_| {
        ApiError::validation("id", format!("must be a key id, a UUID (got {raw:?})")).into()
    })
}

/// Every key, oldest first.
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = KeyList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<KeyList>> {
    let keys = state.keys.list().await.map_err(ApiError::from)?;
    Ok(Json(KeyList {
        data: keys.iter().map(KeyView::from).collect(),
    }))
}

/// Make a key: its secret and callback signing secret are answered only here.
#[utoipa::path(post, path = "/admin/keys", tag = "admin",
    request_body = CreateKey,
    responses(Errors<ErrorBody, AdminBody>, (status = 201, body = CreatedKey)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body, _): Payload,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    let b: CreateKey = parse(&body)?;
    let new = NewKey {
        name: b.name,
        admin: b.admin,
        credits: b.credits,
        unlimited: b.unlimited,
        limits: b.limits.unwrap_or_default(),
    };
    let (secret, key) = state.keys.create(new).await.map_err(ApiError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            view: KeyView::from(&key),
            key: secret,
            webhook_secret: key.webhook_secret,
        }),
    ))
}

/// One key, by id.
#[utoipa::path(get, path = "/admin/keys/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = KeyView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>> {
    let key = state.keys.get(key_id(&id)?).await.map_err(ApiError::from)?;
    Ok(Json(KeyView::from(&key)))
}

/// Change a key's name, enabled flag, unlimited flag or limits. A
/// disabled key is refused until enabled again.
#[utoipa::path(patch, path = "/admin/keys/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id")),
    request_body = UpdateKey,
    responses(Errors<ErrorBody, AdminBody>, (status = 200, body = KeyView),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body, _): Payload,
) -> Result<Json<KeyView>> {
    let id = key_id(&id)?;
    let b: UpdateKey = parse(&body)?;
    let patch = KeyPatch {
        name: b.name,
        enabled: b.enabled,
        unlimited: b.unlimited,
        limits: b.limits,
    };
    let key = state.keys.update(id, patch).await.map_err(ApiError::from)?;
    Ok(Json(KeyView::from(&key)))
}

/// Revoke a key for good: requests with it are refused from then on.
#[utoipa::path(post, path = "/admin/keys/{id}/revoke", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = KeyView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>> {
    let key = state
        .keys
        .revoke(key_id(&id)?)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(KeyView::from(&key)))
}

/// A new callback signing secret, answered only here; the old one keeps
/// signing beside it for 24 hours, so receivers can switch over.
#[utoipa::path(post, path = "/admin/keys/{id}/rotate-secret", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = Rotated),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Rotated>> {
    let id = key_id(&id)?;
    let r = state.keys.rotate_secret(id).await.map_err(ApiError::from)?;
    Ok(Json(Rotated {
        id,
        webhook_secret: r.webhook_secret,
        previous_secret_until: rfc3339_ms(r.previous_secret_until),
    }))
}

/// Give a key credits (a grant) or correct its balance (an adjustment);
/// either is a ledger entry. Answers the new balance.
#[utoipa::path(post, path = "/admin/keys/{id}/credits", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id")),
    request_body = AddCredits,
    responses(Errors<ErrorBody, AdminBody>, (status = 200, body = Balance),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn credit(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body, _): Payload,
) -> Result<Json<Balance>> {
    let id = key_id(&id)?;
    let b: AddCredits = parse(&body)?;
    let kind = match b.kind {
        CreditKind::Grant => EntryKind::Grant,
        CreditKind::Adjustment => EntryKind::Adjustment,
    };
    let balance = state
        .keys
        .credit(id, kind, b.amount, &b.reason)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(Balance { id, balance }))
}

/// A key's ledger, newest first.
#[utoipa::path(get, path = "/admin/keys/{id}/ledger", tag = "admin",
    params(("id" = Uuid, Path, description = "Key id"), LedgerQuery),
    responses(Errors<ErrorBody, AdminKey>, (status = 200, body = LedgerPage),
        (status = 400, description = "The id is not a UUID, or limit is out of range", body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(q, _): Query<LedgerQuery, ErrorBody>,
) -> Result<Json<LedgerPage>> {
    let id = key_id(&id)?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LEDGER_PAGE,
        Some(raw) => raw
            .parse()
            .map_err(|_| ApiError::validation("limit", "must be from 1 to 1000"))?,
    };
    let data = state.keys.ledger(id, limit).await.map_err(ApiError::from)?;
    Ok(Json(LedgerPage { data }))
}
