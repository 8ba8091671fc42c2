//! This request's id (`x-request-id`: the client's, or one the server
//! made), for the envelopes that carry it in their body (Kling's), errors
//! included: those are rendered far from the request's headers.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being answered ("" outside [`scope`]).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Middleware: answer the request with its id at hand for [`current`].
pub async fn scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    REQUEST_ID.scope(id, next.run(req)).await
}
