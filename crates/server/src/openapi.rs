//! The OpenAPI document, generated from the handlers and views.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        crate::kling::create,
        crate::kling::get_one,
        crate::kling::list,
        crate::tasks_api::create,
        crate::tasks_api::get_one,
        crate::tasks_api::batch_get,
        crate::tasks_api::list,
        crate::tasks_api::cancel,
        crate::tasks_api::events,
        crate::models_api::list,
        crate::deliveries::list,
        crate::deliveries::redeliver,
        crate::admin::list,
        crate::admin::get_one,
        crate::admin::create,
        crate::admin::update,
        crate::admin::disable,
        crate::admin::enable,
        crate::upstream_callbacks::receive,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::serve,
    ),
    modifiers(&Bearer, &Files),
    tags(
        (name = "luma", description = "The reseller Luma task API, with batch get"),
        (name = "kling", description = "Kling image generation"),
        (name = "dream-machine", description = "Luma's official API (the lumaai SDKs): set the SDK's base URL to <gengate>/dream-machine/v1"),
        (name = "openai", description = "OpenAI images (the openai SDKs' images.generate): set the SDK's base URL to <gengate>/v1"),
        (name = "tasks", description = "gengate's own provider-neutral task API, with live events, and the model catalogue"),
        (name = "callbacks", description = "A task's callback deliveries and redelivery"),
        (name = "admin", description = "Channels added and changed while running (admin keys)"),
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

/// Stored results are served by a file service, not a handler; described here.
struct Files;

impl Modify for Files {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{
            HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
        };
        use utoipa::openapi::{Required, ResponseBuilder};
        let op = OperationBuilder::new()
            .tag("files")
            .summary(Some("A stored result file (video, image, thumbnail, last frame)"))
            .description(Some("Content-addressed, so immutable. Served with its content type; supports HTTP range requests. The URLs appear in task objects."))
            .parameter(
                ParameterBuilder::new()
                    .name("file")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("SHA-256 of the content and its extension, e.g. 3f…a9.mp4")),
            )
            .response("200", ResponseBuilder::new().description("The file"))
            .response("206", ResponseBuilder::new().description("Part of the file (Range)"))
            .response("404", ResponseBuilder::new().description("No such file"))
            .build();
        openapi.paths.paths.insert(
            "/files/results/{file}".into(),
            PathItem::new(HttpMethod::Get, op),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
