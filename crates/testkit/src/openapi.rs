//! Checks requests and responses against the upstreams' official OpenAPI
//! specs (`specs/`, copied unmodified; `specs/SOURCES.md` says from where),
//! the way a Prism mock does: an emulated upstream answers 422 to a request
//! its spec does not allow, so an adapter that drifts from the real API fails
//! its tests here instead of in production.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

pub struct OpenApi {
    name: &'static str,
    doc: Value,
    /// Path templates split into segments, with their key in `paths`.
    templates: Vec<(Vec<String>, String)>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

fn load(name: &'static str, file: &str) -> OpenApi {
    let path = format!("{}/specs/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut doc: Value = if file.ends_with(".json") {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    } else {
        serde_yaml_ng::from_str(&widen_huge_integers(&text))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    nullable_to_types(&mut doc);
    let templates = doc["paths"]
        .as_object()
        .map(|paths| {
            paths
                .keys()
                .map(|k| (segments(k).map(str::to_owned).collect(), k.clone()))
                .collect()
        })
        .unwrap_or_default();
    OpenApi {
        name,
        doc,
        templates,
        validators: Mutex::new(HashMap::new()),
    }
}

/// Luma's Dream Machine API (paths under `/dream-machine/v1`).
pub fn luma() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| load("luma", "luma-openapi.yaml"))
}

/// OpenAI's API (paths under `/v1`).
pub fn openai() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| load("openai", "openai-openapi.yaml"))
}

/// Replicate's HTTP API (paths under `/v1`).
pub fn replicate() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| load("replicate", "replicate-openapi.json"))
}

/// OpenAI's spec bounds integers beyond i64 (`minimum: -9223372036854776000`),
/// which the YAML parser refuses; written as floats they parse.
fn widen_huge_integers(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end();
        let number = body.rsplit(": ").next().unwrap_or("");
        let digits = number.strip_prefix('-').unwrap_or(number);
        if body.contains(": ") && digits.len() >= 19 && digits.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(body);
            out.push_str(".0");
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
}

/// A JSON pointer token (RFC 6901), as it stands in a URI fragment: path
/// templates' braces are not allowed there unescaped.
fn escape(token: &str) -> String {
    token
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// OpenAPI 3.0's `nullable: true` (which 3.1 specs such as Replicate's
/// still use) as JSON Schema says it: `null` joins the allowed types.
fn nullable_to_types(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type")
            {
                let t = t.clone();
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(nullable_to_types);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_types),
        _ => {}
    }
}

impl OpenApi {
    /// The spec's key for `path` (relative to the server URL, query ignored)
    /// with an operation for `method`; literal segments win over parameters.
    pub fn operation(&self, method: &str, path: &str) -> Option<String> {
        let method = method.to_ascii_lowercase();
        let wanted: Vec<&str> = segments(path).collect();
        self.templates
            .iter()
            .filter(|(t, key)| {
                t.len() == wanted.len()
                    && t.iter()
                        .zip(&wanted)
                        .all(|(t, w)| t == w || (t.starts_with('{') && t.ends_with('}')))
                    && self.doc["paths"][key.as_str()][method.as_str()].is_object()
            })
            .min_by_key(|(t, _)| t.iter().filter(|s| s.starts_with('{')).count())
            .map(|(_, key)| key.clone())
    }

    /// Checks a JSON request body for `method path`. `Err` says what the spec
    /// refuses, in words fit for a 422 body.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), String> {
        let key = self.known(method, path)?;
        let m = method.to_ascii_lowercase();
        let request = &self.doc["paths"][key.as_str()][m.as_str()]["requestBody"];
        let request = self.deref(request);
        let Some(body) = body else {
            return if request["required"].as_bool() == Some(true) {
                Err(format!("{}: {method} {key} requires a body", self.name))
            } else {
                Ok(())
            };
        };
        if !request["content"]["application/json"].is_object() {
            return Err(format!("{}: {method} {key} takes no JSON body", self.name));
        }
        let pointer = format!(
            "#/paths/{}/{m}/requestBody/content/application~1json/schema",
            escape(&key)
        );
        self.validate(&pointer, body)
    }

    /// Checks a JSON response body an emulation sends for `method path`
    /// with `status`, so emulations stay as faithful as the adapters.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        let key = self.known(method, path)?;
        let m = method.to_ascii_lowercase();
        let responses = &self.doc["paths"][key.as_str()][m.as_str()]["responses"];
        let code = status.to_string();
        let code = if responses[code.as_str()].is_object() {
            code
        } else {
            "default".into()
        };
        let response = self.deref(&responses[code.as_str()]);
        if !response["content"]["application/json"]["schema"].is_object() {
            return Err(format!(
                "{}: {method} {key} has no JSON response for {status}",
                self.name
            ));
        }
        let pointer = format!(
            "#/paths/{}/{m}/responses/{code}/content/application~1json/schema",
            escape(&key)
        );
        // A response given by $ref is validated at its target.
        let pointer = match self.doc["paths"][key.as_str()][m.as_str()]["responses"][code.as_str()]
            ["$ref"]
            .as_str()
        {
            Some(target) => format!("{target}/content/application~1json/schema"),
            None => pointer,
        };
        self.validate(&pointer, body)
    }

    fn known(&self, method: &str, path: &str) -> Result<String, String> {
        self.operation(method, path)
            .ok_or_else(|| format!("{}: the spec has no operation {method} {path}", self.name))
    }

    /// Follows a local `$ref` (request bodies and responses may be shared).
    fn deref<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => v,
        }
    }

    fn validate(&self, pointer: &str, instance: &Value) -> Result<(), String> {
        let validator = self.validator(pointer)?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.name, errors.join("; ")))
        }
    }

    fn validator(&self, pointer: &str) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.validators.lock().unwrap().get(pointer) {
            return Ok(v.clone());
        }
        // The whole spec is the root so that its `#/components/...` refs
        // resolve; validation starts at `pointer`. Keywords OpenAPI adds
        // (`discriminator`, `example`) are unknown to JSON Schema and ignored.
        let mut root = self.doc.clone();
        root["$ref"] = json!(pointer);
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("{}: schema at {pointer} does not compile: {e}", self.name))?;
        let v = Arc::new(v);
        self.validators
            .lock()
            .unwrap()
            .insert(pointer.to_owned(), v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_video_request_is_checked() {
        let spec = luma();
        assert_eq!(
            spec.operation("POST", "/generations/video").as_deref(),
            Some("/generations/video")
        );
        assert_eq!(
            spec.operation("GET", "/generations/abc").as_deref(),
            Some("/generations/{id}")
        );
        spec.check_request(
            "POST",
            "/generations/video",
            Some(&json!({"prompt": "a cat", "model": "ray-2", "aspect_ratio": "16:9"})),
        )
        .unwrap();
        let err = spec
            .check_request(
                "POST",
                "/generations/video",
                Some(&json!({"prompt": "a cat", "model": "ray-9"})),
            )
            .unwrap_err();
        assert!(err.contains("ray-9"), "{err}");
        assert!(
            spec.check_request("POST", "/generations/video", None)
                .is_err()
        );
        assert!(
            spec.check_request("PUT", "/generations/video", None)
                .is_err()
        );
    }

    #[test]
    fn openai_images_request_is_checked() {
        let spec = openai();
        spec.check_request(
            "POST",
            "/images/generations",
            Some(&json!({"prompt": "a cat", "model": "dall-e-3", "size": "1024x1024", "response_format": "url"})),
        )
        .unwrap();
        let err = spec
            .check_request(
                "POST",
                "/images/generations",
                Some(&json!({"prompt": "a cat", "n": "two"})),
            )
            .unwrap_err();
        assert!(err.contains("/n"), "{err}");
    }

    #[test]
    fn replicate_prediction_request_is_checked() {
        let spec = replicate();
        spec.check_request(
            "POST",
            "/predictions",
            Some(&json!({"version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa", "input": {"prompt": "a cat"}})),
        )
        .unwrap();
        assert!(
            spec.check_request("POST", "/predictions", Some(&json!({"input": 3})))
                .is_err()
        );
    }
}
