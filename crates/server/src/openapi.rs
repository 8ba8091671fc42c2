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
        crate::kling::create,
        crate::kling::get_one,
        crate::kling::list,
        crate::health::healthz,
        crate::health::readyz,
    ),
    modifiers(&Bearer),
    tags(
        (name = "luma", description = "The reseller Luma task API, with batch get"),
        (name = "kling", description = "Kling image generation"),
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

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
