//! Shared validation rules. Each returns an [`ApiError::Validation`] naming the field.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::request::{ImageFormat, ImageRole, ImageSource, InputImage, Upload};

/// Input images are at most 10 MB once decoded (the seed's limit).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// URLs longer than this are refused outright.
pub const MAX_URL_LEN: usize = 2048;

/// Parse a JSON body into `T`, naming the offending field on a type error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would happily read a struct from an array; bodies are objects.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::MalformedJson("body must be a JSON object".into()));
    }
    // Tracking the path costs on every value; it is only wanted to name
    // the field of an error, so a body that parses is parsed once, plainly.
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // An unknown key "" has an empty path: no field to name.
        if inner.is_syntax() || inner.is_eof() || path == "." || path.is_empty() {
            ApiError::MalformedJson(inner.to_string())
        } else {
            // serde's own message carries "at line 1 column 9"; the field name is what helps.
            let msg = inner.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            ApiError::validation(path, msg)
        }
    })
}

/// Length in characters (not bytes), as the seed counts its limits.
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::validation(
            field,
            format!("must be at most {max} characters (got {n})"),
        ));
    }
    Ok(())
}

/// A model name: 1 to `max` characters, none of them spaces or controls
/// (channels map any such name to an upstream's).
pub fn model_name(field: &str, m: &str, max: usize) -> Result<(), ApiError> {
    if m.is_empty()
        || m.chars().count() > max
        || m.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::validation(
            field,
            format!("must be 1 to {max} characters without spaces"),
        ));
    }
    Ok(())
}

/// Empty or only whitespace, as `char::is_whitespace` counts it: the rule
/// [`crate::dialect::schema::NOT_BLANK`] documents.
pub fn is_blank(value: &str) -> bool {
    value.chars().all(char::is_whitespace)
}

/// An integer field that also takes a JSON number with no fractional part
/// (`5.0`), as JSON Schema's `integer` does: `#[serde(default,
/// deserialize_with = "crate::validate::integer")]` on an `Option<T>`.
pub fn integer<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    match <Option<serde_json::Number> as serde::Deserialize>::deserialize(de)? {
        None => Ok(None),
        Some(n) => whole(&n).map(Some),
    }
}

/// A required integer field (not null) read as [`integer`] reads one.
pub fn required_integer<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole(&<serde_json::Number as serde::Deserialize>::deserialize(
        de,
    )?)
}

/// `n` as a `T` when it is a whole number in `T`'s range.
pub fn whole<T: TryFrom<u64>, E: serde::de::Error>(n: &serde_json::Number) -> Result<T, E> {
    let w = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    w.and_then(|w| T::try_from(w).ok()).ok_or_else(|| {
        let shown = n.to_string();
        E::invalid_value(serde::de::Unexpected::Other(&shown), &"an integer in range")
    })
}

/// An optional object field: null, left out, or a JSON object. serde reads
/// a struct from an array too (its fields in order), which the schema does
/// not allow. Used as `#[serde(default, deserialize_with = ...)]`; a type
/// error inside is named by its path within the object.
pub fn object<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::de::Error;
    match <Option<serde_json::Value> as serde::Deserialize>::deserialize(de)? {
        None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => serde_path_to_error::deserialize(v)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner()))),
        Some(_) => Err(D::Error::custom("must be an object or null")),
    }
}

pub fn required_text(field: &str, value: Option<String>, max: usize) -> Result<String, ApiError> {
    let value = value.ok_or_else(|| ApiError::validation(field, "is required"))?;
    if is_blank(&value) {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    max_chars(field, &value, max)?;
    Ok(value)
}

pub fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => max_chars(field, &v, max).map(|()| Some(v)),
        None => Ok(None),
    }
}

/// An absolute http(s) URL with a host. Whether its address may be reached is
/// decided when it is used, after DNS resolution.
pub fn http_url(field: &str, value: &str) -> Result<String, ApiError> {
    if value.len() > MAX_URL_LEN {
        return Err(ApiError::validation(
            field,
            format!("must be at most {MAX_URL_LEN} bytes"),
        ));
    }
    let url = url::Url::parse(value).map_err(|e| {
        ApiError::validation(field, format!("must be an absolute http(s) URL ({e})"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::validation(field, "must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::validation(field, "must name a host"));
    }
    // Kept and echoed normalised (`http://a?q` becomes `http://a/?q`), so
    // the limit holds for that form too.
    let url = url.to_string();
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::validation(
            field,
            format!("must be at most {MAX_URL_LEN} bytes once normalised"),
        ));
    }
    Ok(url)
}

pub fn optional_url(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => http_url(field, &v).map(Some),
        None => Ok(None),
    }
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            format!("must be one of {} (got {value:?})", allowed.join(", ")),
        ))
    }
}

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An inline image: raw base64 or a `data:` URI. Decoded, size-checked, and
/// judged jpg/png by its bytes.
pub fn inline_image(field: &str, value: &str) -> Result<(Vec<u8>, ImageFormat), ApiError> {
    let b64 = match value.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest.split_once(',').ok_or_else(|| {
                ApiError::validation(field, "data URI has no ',' before its data")
            })?;
            if !meta.ends_with(";base64") {
                return Err(ApiError::validation(
                    field,
                    "data URI must be base64-encoded",
                ));
            }
            data
        }
        None => value,
    };
    // Base64 grows data by 4/3; refuse oversized input before decoding it.
    if b64.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
        return Err(ApiError::validation(field, "image must be at most 10 MB"));
    }
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = LENIENT_BASE64
        .decode(compact.as_bytes())
        .map_err(|e| ApiError::validation(field, format!("is not valid base64 ({e})")))?;
    let format = image_bytes(field, &bytes)?;
    Ok((bytes, format))
}

/// Image bytes a client sent: at most 10 MB, a jpg or png by content.
pub fn image_bytes(field: &str, bytes: &[u8]) -> Result<ImageFormat, ApiError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(ApiError::validation(field, "image must be at most 10 MB"));
    }
    ImageFormat::sniff(bytes)
        .ok_or_else(|| ApiError::validation(field, "image must be a jpg, jpeg or png"))
}

/// An image field that takes an http(s) URL (fetched at dispatch) or the
/// image itself (base64 or a data URI): the input, and the upload to store
/// when it came inline.
pub fn image_source(
    field: &str,
    value: &str,
    role: ImageRole,
) -> Result<(InputImage, Option<Upload>), ApiError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        let url = http_url(field, value)?;
        return Ok((
            InputImage {
                role,
                source: ImageSource::Url { url },
            },
            None,
        ));
    }
    let (bytes, format) = inline_image(field, value)?;
    let (image, upload) = InputImage::inline(role, bytes, format);
    Ok((image, Some(upload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            n: Option<u32>,
        }
        let err = parse_json::<B>(br#"{"n": "three"}"#).unwrap_err();
        match err {
            ApiError::Validation { field, .. } => assert_eq!(field, "n"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json::<B>(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<B>(b"[1]"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    /// An unknown key `""` was refused as a field with an empty name.
    #[test]
    fn unknown_empty_key_is_not_a_nameless_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct B {
            n: Option<u32>,
        }
        for body in [&br#"{"": 1}"#[..], br#"{"""#] {
            assert!(
                matches!(parse_json::<B>(body), Err(ApiError::MalformedJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(http_url("u", "https://example.com/a.png").is_ok());
        assert!(http_url("u", "ftp://example.com/a.png").is_err());
        assert!(http_url("u", "not a url").is_err());
        assert!(http_url("u", "file:///etc/passwd").is_err());
        // 2048 bytes, but 2049 once the path's `/` is added.
        let long = format!("http://a?{}", "q".repeat(MAX_URL_LEN - 9));
        assert_eq!(long.len(), MAX_URL_LEN);
        assert!(http_url("u", &long).is_err());
        let with_path = format!("http://a/?{}", "q".repeat(MAX_URL_LEN - 10));
        assert!(http_url("u", &with_path).is_ok_and(|u| u.len() == MAX_URL_LEN));
    }

    #[test]
    fn inline_images_by_content() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        assert_eq!(inline_image("image", &b64).unwrap().1, ImageFormat::Png);
        let uri = format!("data:image/jpeg;base64,{b64}");
        // Declared type is ignored; the bytes say png.
        assert_eq!(inline_image("image", &uri).unwrap().1, ImageFormat::Png);
        let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a....");
        assert!(inline_image("image", &gif).is_err());
        assert!(inline_image("image", "!!!notbase64").is_err());
    }

    #[test]
    fn blank_is_the_documented_whitespace() {
        // NOT_BLANK's class, written out: what it says is whitespace.
        let listed = |c: char| {
            matches!(c, '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}'
                | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}'
                | '\u{205f}' | '\u{3000}')
        };
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(is_blank(&c.to_string()), listed(c), "U+{:04X}", c as u32);
        }
        assert!(is_blank("") && !is_blank(" a "));
    }

    #[test]
    fn integers_may_be_written_as_floats() {
        #[derive(serde::Deserialize, Debug)]
        struct B {
            #[serde(default, deserialize_with = "integer")]
            n: Option<u32>,
        }
        let n = |s: &str| serde_json::from_str::<B>(s).map(|b| b.n);
        assert_eq!(n(r#"{"n": 5}"#).unwrap(), Some(5));
        assert_eq!(n(r#"{"n": 5.0}"#).unwrap(), Some(5));
        assert_eq!(n(r#"{"n": 1e2}"#).unwrap(), Some(100));
        assert_eq!(n(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(n(r#"{}"#).unwrap(), None);
        assert!(n(r#"{"n": 5.5}"#).is_err());
        assert!(n(r#"{"n": -1}"#).is_err());
        assert!(n(r#"{"n": 5e10}"#).is_err());
        assert!(n(r#"{"n": "5"}"#).is_err());
    }

    #[test]
    fn lengths_count_characters() {
        assert!(max_chars("p", &"é".repeat(500), 500).is_ok());
        assert!(max_chars("p", &"é".repeat(501), 500).is_err());
    }
}
