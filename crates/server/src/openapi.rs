//! The OpenAPI document, generated from the handlers and views, and the
//! error answers every operation shares ([`Errors`]), documented once per
//! envelope.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use axum::Json;
use gengate_core::dialect::DetailError;
use gengate_core::dialect::openai_images::ErrorEnvelope;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::{ErrorBody, KlingError};

/// Which of the shared error statuses an operation can answer.
pub trait Statuses {
    const CODES: &'static [u16];
}

/// Behind a key: 401, and the store's 503 (keys are looked up there).
pub struct Key;
/// Behind a key, with query parameters: 400 too.
pub struct KeyQuery;
/// Behind a key, with a JSON body: 400, 413 and 415 too.
pub struct KeyBody;
/// Creating a task, where the dialect answers a spent balance with 402.
pub struct KeyCreate;
/// Behind an admin key: 403 too.
pub struct Admin;
/// Behind an admin key, with query parameters.
pub struct AdminQuery;
/// Behind an admin key, with a JSON body.
pub struct AdminBody;

impl Statuses for Key {
    const CODES: &'static [u16] = &[401, 429, 503];
}
impl Statuses for KeyQuery {
    const CODES: &'static [u16] = &[400, 401, 429, 503];
}
impl Statuses for KeyBody {
    const CODES: &'static [u16] = &[400, 401, 413, 415, 429, 503];
}
impl Statuses for KeyCreate {
    const CODES: &'static [u16] = &[400, 401, 402, 413, 415, 429, 503];
}
impl Statuses for Admin {
    const CODES: &'static [u16] = &[401, 403, 429, 503];
}
impl Statuses for AdminQuery {
    const CODES: &'static [u16] = &[400, 401, 403, 429, 503];
}
impl Statuses for AdminBody {
    const CODES: &'static [u16] = &[400, 401, 403, 413, 415, 429, 503];
}

/// The error answers `S` lists, each with the envelope `E`: written once
/// here, named in every operation's `responses(...)` (before its own
/// statuses, which then refine a description where they repeat one).
pub struct Errors<E, S>(PhantomData<(E, S)>);

impl<E: ToSchema, S: Statuses> IntoResponses for Errors<E, S> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        S::CODES
            .iter()
            .map(|&code| (code.to_string(), error_response::<E>(code).into()))
            .collect()
    }
}

fn error_response<E: ToSchema>(code: u16) -> Response {
    let description = match code {
        400 => "A field breaks a rule (the message names it), or the body is not JSON",
        401 => "No key, or an unknown or revoked one",
        402 => "The key's balance does not cover the task's price",
        403 => "The key is not an admin key",
        413 => "The body is over 15 MiB",
        415 => "The body is not application/json",
        429 => "Over a limit: try again after Retry-After seconds",
        503 => "Storage is unavailable: try again after Retry-After seconds",
        _ => "Error",
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(E::name())))
            .build(),
    );
    if matches!(code, 429 | 503) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(<u64 as PartialSchema>::schema())
                .description(Some("Seconds to wait"))
                .build(),
        );
    }
    response.build()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "gengate", description = "A self-hosted gateway for asynchronous AI image and video generation."),
    paths(
        crate::luma::create,
        crate::luma::get_one,
        crate::luma::extend,
        crate::luma::download_url,
        crate::luma::batch_get,
        crate::dream_machine::create_video,
        crate::dream_machine::create_image,
        crate::dream_machine::get_one,
        crate::dream_machine::list,
        crate::dream_machine::delete,
        crate::dream_machine::ping,
        crate::dream_machine::credits,
        crate::openai_images::create,
        crate::openai_videos::create,
        crate::openai_videos::list,
        crate::openai_videos::retrieve,
        crate::openai_videos::delete,
        crate::openai_videos::remix,
        crate::openai_videos::content,
        crate::kling::create,
        crate::kling::get_one,
        crate::kling::list,
        crate::kling::create_video,
        crate::kling::get_video,
        crate::kling::list_videos,
        crate::tasks_api::create,
        crate::tasks_api::get_one,
        crate::tasks_api::batch_get,
        crate::tasks_api::list,
        crate::tasks_api::cancel,
        crate::tasks_api::events,
        crate::tasks_api::admin_list,
        crate::feed::feed,
        crate::models_api::list,
        crate::deliveries::list,
        crate::deliveries::redeliver,
        crate::admin::list,
        crate::admin::get_one,
        crate::admin::create,
        crate::admin::update,
        crate::admin::disable,
        crate::admin::enable,
        crate::prices::list,
        crate::prices::put,
        crate::prices::delete,
        crate::usage::report,
        crate::admin_keys::list,
        crate::admin_keys::create,
        crate::admin_keys::get_one,
        crate::admin_keys::update,
        crate::admin_keys::revoke,
        crate::admin_keys::rotate_secret,
        crate::admin_keys::credit,
        crate::admin_keys::ledger,
        crate::upstream_callbacks::receive,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::serve,
    ),
    components(schemas(DetailError, ErrorEnvelope, ErrorBody, KlingError)),
    modifiers(&Bearer, &Files, &OldVideoPath),
    tags(
        (name = "luma", description = "The reseller Luma task API, with batch get"),
        (name = "kling", description = "Kling image generation"),
        (name = "dream-machine", description = "Luma's official API (the lumaai SDKs): set the SDK's base URL to <gengate>/dream-machine/v1"),
        (name = "openai", description = "OpenAI images (the openai SDKs' images.generate): set the SDK's base URL to <gengate>/v1"),
        (name = "tasks", description = "gengate's own provider-neutral task API, with live events, and the model catalogue"),
        (name = "callbacks", description = "A task's callback deliveries and redelivery"),
        (name = "admin", description = "Channels, keys and prices, changed while running (admin keys)"),
        (name = "usage", description = "Tasks and credits by day, model or channel"),
        (name = "upstreams", description = "Where upstreams report on the tasks gengate gave them"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("gg_ key")
                    .build(),
            ),
        );
    }
}

/// `files::serve`, whose answers (ranges, redirects, headers) are described by hand.
struct Files;

impl Modify for Files {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::Required;
        use utoipa::openapi::path::{
            HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
        };
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let queries = [
            (
                "download",
                "Present: served as an attachment (Content-Disposition)",
            ),
            (
                "expires",
                "With signed result URLs: when the URL runs out (Unix seconds)",
            ),
            (
                "signature",
                "With signed result URLs: HMAC-SHA256 of the file's key and expires, hex",
            ),
        ]
        .map(|(name, about)| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(about))
        });
        let mut op = OperationBuilder::new()
            .tag("files")
            .summary(Some("A stored result file (video, image, thumbnail, last frame)"))
            .description(Some("Content-addressed, so immutable. Served with its content type; supports HTTP range requests. The URLs appear in task objects."))
            .parameter(
                ParameterBuilder::new()
                    .name("file")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(r"^[0-9a-f]{64}\.[a-z0-9]+$")),
                    ))
                    .description(Some("SHA-256 of the content and its extension, e.g. 3f…a9.mp4")),
            )
            .response("200", ResponseBuilder::new().description("The file"))
            .response("206", ResponseBuilder::new().description("Part of the file (Range)"))
            .response("304", ResponseBuilder::new().description("Not modified (If-None-Match)"))
            .response("307", ResponseBuilder::new().description("At a short-lived presigned storage URL (file_urls = \"presigned\")"))
            .response("403", ResponseBuilder::new().description("With signed result URLs: unsigned, expired or a bad signature"))
            .response("404", ResponseBuilder::new().description("No such file"))
            .response("416", ResponseBuilder::new().description("The Range is outside the file"))
            .response("503", ResponseBuilder::new().description("Storage unavailable; try again after Retry-After"));
        for query in queries {
            op = op.parameter(query);
        }
        let op = op.build();
        openapi.paths.paths.insert(
            "/files/results/{file}".into(),
            PathItem::new(HttpMethod::Get, op),
        );
    }
}

/// `POST /dream-machine/v1/generations`, where SDKs before the image API
/// sent video creates, is the video create under its old path: documented
/// as that operation, deprecated.
struct OldVideoPath;

impl Modify for OldVideoPath {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        let Some(mut op) = paths
            .get("/dream-machine/v1/generations/video")
            .and_then(|p| p.post.clone())
        else {
            return;
        };
        op.operation_id = op.operation_id.map(|id| format!("{id}_old_path"));
        op.deprecated = Some(utoipa::openapi::Deprecated::True);
        op.summary = Some("Create a video generation (the SDKs' old path)".into());
        if let Some(item) = paths.get_mut("/dream-machine/v1/generations") {
            item.post = Some(op);
        }
    }
}

/// The document, with what utoipa's model cannot hold written in: the
/// `/v1/tasks` create body ([`tasks::create_task_schema`]) and the events
/// stream's `data`, a JSON [`EventView`](tasks::EventView).
pub fn document() -> serde_json::Value {
    use gengate_core::dialect::tasks;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let create = tasks::create_task_schema();
    // `input` of either kind, for clients that name the type.
    let inputs: Vec<_> = (0..2)
        .filter_map(|i| {
            create
                .pointer(&format!("/oneOf/{i}/properties/input"))
                .cloned()
        })
        .collect();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        schemas.insert(
            "TaskInput".into(),
            serde_json::json!({"oneOf": inputs, "description": "What to generate: an image task's input, or a video task's"}),
        );
        schemas.insert("CreateTask".into(), create);
    }
    for (path, partial) in [
        ("/paths/~1admin~1channels/post", false),
        ("/paths/~1admin~1channels~1{name}/patch", true),
    ] {
        let body = format!("{path}/requestBody/content/application~1json/schema");
        if let Some(s) = doc.pointer_mut(&body) {
            *s = gengate_core::channel::spec_schema(partial);
        }
    }
    key_schemas(&mut doc);
    let events =
        "/paths/~1v1~1tasks~1{id}~1events/get/responses/200/content/text~1event-stream/schema";
    if let Some(s) = doc.pointer_mut(events) {
        *s = serde_json::json!({
            "type": "object",
            "required": ["data"],
            "properties": {
                "id": {"type": "string", "description": "The event's sequence number"},
                "event": {"type": "string", "description": "The task's state"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/EventView"},
                },
            },
        });
    }
    doc
}

/// What the key bodies' rules say that utoipa's model cannot: a credit's
/// amount depends on its kind, and a limit's models are not blank.
fn key_schemas(doc: &mut serde_json::Value) {
    use serde_json::json;
    let reason = json!({"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"});
    let branch = |kind: &str, amount: serde_json::Value, required: &[&str]| {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": {"kind": {"type": "string", "enum": [kind]}, "amount": amount, "reason": reason},
        })
    };
    let credits = json!({
        "description": "A grant (the default kind) of 1 to 1000000000 credits, or an adjustment of either sign",
        "oneOf": [
            branch("grant", json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": 1_000_000_000}), &["amount", "reason"]),
            branch("adjustment", json!({"type": "integer", "format": "int64", "minimum": -1_000_000_000, "maximum": 1_000_000_000, "not": {"const": 0}}), &["kind", "amount", "reason"]),
        ],
    });
    if let Some(s) = doc.pointer_mut("/components/schemas/AddCredits") {
        *s = credits;
    }
    if let Some(s) = doc.pointer_mut("/components/schemas/KeyLimits/properties/models/items") {
        *s = json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"});
    }
}

pub async fn serve() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

/// The browsable API reference at `/docs/`: Swagger UI, its files compiled
/// into the binary, reading `/openapi.json`. Nothing is fetched from
/// elsewhere (the spec validator badge, which would send the spec out, is off).
pub fn reference_page<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use utoipa_swagger_ui::{Config, SwaggerUi};
    let config = Config::from("/openapi.json")
        .validator_url("none")
        .persist_authorization(true)
        .try_it_out_enabled(true);
    SwaggerUi::new("/docs").config(config).into()
}

/// The `Idempotency-Key` header of the create endpoints that honour it.
/// Visible ASCII, at most 255 characters, not blank; remembered 24 h.
#[derive(utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)] // Never built: only its OpenAPI parameter is used.
pub struct IdempotencyKey(
    #[param(max_length = 255, pattern = "^[\\t -~]*[!-~][\\t -~]*$")] Option<String>,
);
