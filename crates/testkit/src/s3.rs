//! A real S3 server for tests: moto's `moto_server` (pinned in
//! `python/s3-requirements.txt`), started on 127.0.0.1 at a free port. It
//! accepts any credentials; gengate reaches it through the standard AWS
//! environment variables ([`S3Server::env`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    child: Option<Child>,
}

impl S3Server {
    /// A running server; `None` (skip, said aloud) when moto cannot be
    /// installed outside CI, a failure under `CI=true`.
    pub async fn start() -> Option<S3Server> {
        let requirements =
            crate::python::workspace().join("crates/testkit/python/s3-requirements.txt");
        let bin = crate::python::venv_bin("moto-venv", "GENGATE_MOTO_VENV", &requirements)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let s3 = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(spawn(&bin, port)),
        };
        s3.wait_ready().await;
        Some(s3)
    }

    /// Make a bucket (moto takes unsigned requests).
    pub async fn create_bucket(&self, name: &str) {
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("moto answers");
        assert!(
            resp.status().is_success(),
            "creating bucket {name}: {}",
            resp.status()
        );
    }

    /// Every object in `bucket` and its size (moto lists for anyone, while
    /// reading an object takes a signed request).
    pub async fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let listing = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .await
            .expect("moto answers")
            .text()
            .await
            .expect("a listing");
        let field = |entry: &str, name: &str| {
            let (open, close) = (format!("<{name}>"), format!("</{name}>"));
            let start = entry.find(&open)? + open.len();
            Some(entry[start..start + entry[start..].find(&close)?].to_string())
        };
        listing
            .split("<Contents>")
            .skip(1)
            .filter_map(|e| Some((field(e, "Key")?, field(e, "Size")?.parse().ok()?)))
            .collect()
    }

    /// The variables gengate reads to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "gengate-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "gengate-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(&self.endpoint).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "moto_server did not answer at {} within 30 s",
            self.endpoint
        );
    }
}

fn spawn(bin: &std::path::Path, port: u16) -> Child {
    Command::new(bin.join("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
