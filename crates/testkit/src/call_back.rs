//! How emulated upstreams call back: a JSON POST, to loopback only, so a
//! test can never make an emulation send traffic off the machine.

use std::sync::OnceLock;
use std::time::Duration;

/// POSTs `body` (JSON) with `headers` to `url`, whose host must be
/// 127.0.0.1; answers the status.
pub async fn post_json(
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<u16, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("callback URL {url:?}: {e}"))?;
    if parsed.host_str() != Some("127.0.0.1") {
        return Err(format!(
            "emulations call back to 127.0.0.1 only, not {url:?}"
        ));
    }
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("a reqwest client")
    });
    let mut req = client
        .post(parsed)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}
