//! OpenAPI schemas of request fields whose rule an attribute cannot say
//! (a set of values, text that is not only whitespace, a URL), built from
//! the same constants the parsers check, so the document and the server
//! agree. Used as `#[schema(schema_with = ...)]`.

use serde_json::Value;
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ObjectBuilder, Type};

/// At least one character that is not whitespace as Rust's
/// `char::is_whitespace` (and so `str::trim`) counts it: the Unicode
/// White_Space characters, spelled out because regex engines' `\s` differ.
/// [`crate::validate::is_blank`] is the server's side of this rule.
pub const NOT_BLANK: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// An http(s) URL with a DNS name (its last label not a number, so not an
/// IP address), an optional port and a path, query and fragment of URL
/// characters. IP literals are taken too where they are not internal.
/// gengate keeps (and echoes) the URL normalised, at most
/// [`MAX_URL_LEN`](crate::validate::MAX_URL_LEN) bytes too: so `'`, which a
/// query gets percent-encoded (3 bytes), is left out, and a URL without a
/// path, which gains a `/`, is at most 2047 bytes (the lookahead).
pub const HTTP_URL: &str = "^(?=https?://[^/?#]*/|.{0,2047}$)https?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?([/?#][A-Za-z0-9._~%!$&()*+,;=:@/?#-]*)?$";

/// An image inside a request: base64 of a png or a jpeg, judged by its
/// first bytes (decoded at most 10 MB), padded or not; as a data URL, or
/// (`bare`) also without the `data:` prefix.
pub fn inline_image(bare: bool) -> String {
    let prefix = if bare {
        "(data:image/[a-z]+;base64,)?"
    } else {
        "data:image/[a-z]+;base64,"
    };
    format!(
        "^{prefix}(iVBORw0KGgo[A-Za-z0-9+/]|/9j/)([A-Za-z0-9+/]{{4}})*([A-Za-z0-9+/]{{2}}==|[A-Za-z0-9+/]{{3}}=)?$"
    )
}

/// Required text: 1 to `MAX` characters, not only whitespace.
pub fn text<const MAX: usize>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(NOT_BLANK))
        .description(Some(format!("1 to {MAX} characters, not only whitespace")))
        .build()
}

/// One of `values`; null (or leaving it out) takes the default.
pub fn choice(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .enum_values(Some(
            values.iter().map(|v| Value::from(*v)).chain([Value::Null]),
        ))
        .build()
}

/// An optional URL gengate calls or fetches: empty or null means none.
/// It is refused when it is not one, or when its host resolves to an
/// internal address (loopback, private, link-local, metadata); a name
/// that does not resolve yet is taken, and checked again at each use.
pub fn url() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .max_length(Some(crate::validate::MAX_URL_LEN))
        .pattern(Some(format!("^$|{HTTP_URL}")))
        .description(Some(
            "An http(s) URL (at most 2048 bytes, also once normalised: a URL without a path \
             gains a /), or empty for none. Refused when its host \
             resolves to an internal address; a name that does not resolve yet is taken and \
             checked again when it is used.",
        ))
        .build()
}

/// A required URL, as [`url`] describes, not empty.
pub fn required_url() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(crate::validate::MAX_URL_LEN))
        .pattern(Some(HTTP_URL))
        .description(Some(
            "An http(s) URL (at most 2048 bytes, also once normalised: a URL without a path \
             gains a /), fetched when the task is dispatched. Refused \
             when its host resolves to an internal address.",
        ))
        .build()
}

/// What `validate::model_name` refuses: whitespace and control characters.
const MODEL_CHARS: &str =
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// A required model name: 1 to `MAX` characters, no whitespace or controls.
pub fn model<const MAX: usize>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(format!("^{MODEL_CHARS}+$")))
        .description(Some("A model a channel serves (see GET /v1/models)"))
        .build()
}

/// An optional model name, as [`model`]; empty or null takes the default.
pub fn optional_model<const MAX: usize>() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .max_length(Some(MAX))
        .pattern(Some(format!("^{MODEL_CHARS}*$")))
        .description(Some(
            "A model a channel serves (see GET /v1/models); empty or null for the default",
        ))
        .build()
}

/// A field gengate does not support: leave it out (null is the same).
pub fn unsupported() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Not supported by this gateway: leave it out"))
        .build()
}
