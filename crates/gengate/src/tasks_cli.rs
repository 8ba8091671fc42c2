//! `gengate tasks`: submit, follow and fetch tasks of a running gengate
//! over its HTTP API (`/v1/tasks`), as any client would: `--url` (or
//! `GENGATE_URL`) with the key in `GENGATE_KEY`. Exit codes: 0 completed (or
//! done), 1 a task failed or was canceled, 2 bad usage or no answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

#[derive(Args)]
pub struct TasksArgs {
    /// Where gengate answers.
    #[arg(long, env = "GENGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Print JSON (one document per task) instead of lines for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Submit a task; with --wait, follow it to its end.
    Submit {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        /// image or video (default: what the model makes).
        #[arg(long)]
        kind: Option<String>,
        /// An input image: an http(s) URL gengate fetches, or a png or jpeg
        /// file sent inside the request (at most 10 MB).
        #[arg(long, value_name = "FILE|URL")]
        image: Option<String>,
        /// Images to make (1 to 9).
        #[arg(long)]
        n: Option<u32>,
        /// W:H, e.g. 16:9.
        #[arg(long)]
        aspect_ratio: Option<String>,
        #[arg(long)]
        wait: bool,
        /// With --wait: download the results into this directory.
        #[arg(long, requires = "wait")]
        output: Option<PathBuf>,
    },
    /// One task as it stands.
    Get { id: String },
    /// Follow tasks to their ends, one progress line each.
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Download the results into this directory.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Your tasks, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Cancel a task that has not finished.
    Cancel { id: String },
}

/// What a command that could be carried out ends with (an error: it could
/// not, exit code 2).
pub enum Outcome {
    /// Exit code 0.
    Done,
    /// A task failed or was canceled: exit code 1.
    Failed,
}

/// How often a waited task is asked for.
const POLL: Duration = Duration::from_millis(500);

struct Client {
    http: reqwest::Client,
    /// For result files: no bound on the whole download (videos are
    /// large), only on silence.
    files: reqwest::Client,
    base: String,
    key: String,
    json: bool,
}

impl Client {
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("no answer from {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            // gengate's envelope, Luma's, or whatever a proxy on the way said.
            let why = body["error"]["message"]
                .as_str()
                .or(body["detail"].as_str())
                .map_or_else(|| text.trim().chars().take(300).collect(), String::from);
            anyhow::bail!("{status}: {why}");
        }
        Ok(body)
    }

    async fn task(&self, id: &str) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}/v1/tasks/{id}", self.base)))
            .await
    }

    fn print(&self, task: &Value) {
        if self.json {
            println!("{task}");
        } else {
            println!("{}", line(task));
        }
    }
}

fn line(task: &Value) -> String {
    let s = |k: &str| task[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{}  {:<10} {:<6} {}",
        s("id"),
        s("state"),
        s("kind"),
        s("model")
    );
    if let Some(why) = task["failure_reason"].as_str() {
        out.push_str(&format!("  ({why})"));
    }
    for o in task["outputs"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n    {} {}",
            o["role"].as_str().unwrap_or("?"),
            o["url"].as_str().unwrap_or("")
        ));
    }
    out
}

fn ended(task: &Value) -> bool {
    matches!(
        task["state"].as_str(),
        Some("completed" | "failed" | "canceled")
    )
}

fn outcome(tasks: &[Value]) -> Outcome {
    if tasks.iter().all(|t| t["state"] == "completed") {
        Outcome::Done
    } else {
        Outcome::Failed
    }
}

/// `--image`: a URL as it is, a file as its bytes (gengate judges the format).
fn image_input(image: &str) -> anyhow::Result<Value> {
    use base64::Engine as _;
    if image.starts_with("http://") || image.starts_with("https://") {
        return Ok(json!({ "url": image }));
    }
    let bytes = std::fs::read(image).with_context(|| format!("--image: reading {image}"))?;
    Ok(json!({ "data": base64::engine::general_purpose::STANDARD.encode(bytes) }))
}

pub async fn run(args: TasksArgs) -> anyhow::Result<Outcome> {
    let key = std::env::var("GENGATE_KEY")
        .map_err(|_| anyhow::anyhow!("set GENGATE_KEY to your API key"))?;
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        files: reqwest::Client::builder()
            .read_timeout(Duration::from_secs(60))
            .build()?,
        base: args.url.trim_end_matches('/').to_string(),
        key,
        json: args.json,
    };
    match args.command {
        TasksCommand::Submit {
            model,
            prompt,
            kind,
            image,
            n,
            aspect_ratio,
            wait,
            output,
        } => {
            let mut input = json!({ "prompt": prompt });
            if let Some(n) = n {
                input["n"] = json!(n);
            }
            if let Some(a) = aspect_ratio {
                input["aspect_ratio"] = json!(a);
            }
            if let Some(image) = image {
                input["images"] = json!([image_input(&image)?]);
            }
            let mut body = json!({ "model": model, "input": input });
            if let Some(kind) = kind {
                body["kind"] = json!(kind);
            }
            let url = format!("{}/v1/tasks", client.base);
            let task = client.call(client.http.post(url).json(&body)).await?;
            if !wait {
                client.print(&task);
                return Ok(Outcome::Done);
            }
            let id = task["id"].as_str().unwrap_or_default().to_string();
            wait_all(&client, &[id], output.as_deref()).await
        }
        TasksCommand::Get { id } => {
            let task = client.task(&id).await?;
            client.print(&task);
            Ok(if ended(&task) {
                outcome(&[task])
            } else {
                Outcome::Done
            })
        }
        TasksCommand::Wait { ids, output } => wait_all(&client, &ids, output.as_deref()).await,
        TasksCommand::List { state, limit } => {
            let mut req = client
                .http
                .get(format!("{}/v1/tasks", client.base))
                .query(&[("limit", limit.to_string())]);
            if let Some(state) = state {
                req = req.query(&[("state", state)]);
            }
            let page = client.call(req).await?;
            if client.json {
                println!("{page}");
            } else {
                for t in page["data"].as_array().into_iter().flatten() {
                    println!("{}", line(t));
                }
            }
            Ok(Outcome::Done)
        }
        TasksCommand::Cancel { id } => {
            let url = format!("{}/v1/tasks/{id}/cancel", client.base);
            let task = client.call(client.http.post(url)).await?;
            client.print(&task);
            Ok(Outcome::Done)
        }
    }
}

/// Follow `ids` until each has ended, drawing a bar per task on a terminal
/// (plain lines of each change otherwise), then download their results.
async fn wait_all(
    client: &Client,
    ids: &[String],
    output: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let bars = MultiProgress::new();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !client.json;
    if !terminal {
        bars.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix} {spinner} {wide_msg} {elapsed}")?;
    let started = Instant::now();
    let mut follow: Vec<(String, ProgressBar, String, Option<Value>)> = ids
        .iter()
        .map(|id| {
            let bar = bars.add(ProgressBar::new_spinner().with_style(style.clone()));
            bar.set_prefix(id.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            (id.clone(), bar, String::new(), None)
        })
        .collect();
    while follow.iter().any(|(_, _, _, done)| done.is_none()) {
        for (id, bar, last, done) in follow.iter_mut().filter(|f| f.3.is_none()) {
            let task = client.task(id).await?;
            let state = task["state"].as_str().unwrap_or("?").to_string();
            let eta = task["expected_seconds"]
                .as_f64()
                .map(|s| s - started.elapsed().as_secs_f64())
                .filter(|left| *left > 0.0)
                .map(|left| format!(", about {left:.0} s left"))
                .unwrap_or_default();
            bar.set_message(format!("{state}{eta}"));
            if state != *last {
                if !terminal && !client.json {
                    eprintln!(
                        "{id} {state} after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                *last = state;
            }
            if ended(&task) {
                bar.finish_with_message(last.clone());
                *done = Some(task);
            }
        }
        if follow.iter().any(|f| f.3.is_none()) {
            tokio::time::sleep(POLL).await;
        }
    }
    let tasks: Vec<Value> = follow.into_iter().filter_map(|f| f.3).collect();
    for task in &tasks {
        if let Some(dir) = output {
            for path in download(client, task, dir).await? {
                if !client.json {
                    eprintln!("wrote {}", path.display());
                }
            }
        }
        client.print(task);
    }
    Ok(outcome(&tasks))
}

/// Write a completed task's outputs into `dir` as `<id>-<role>-<index>.<ext>`,
/// each streamed to its file.
async fn download(client: &Client, task: &Value, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    // Names are made of the server's words: only safe characters kept.
    let safe = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect()
    };
    let id = safe(task["id"].as_str().unwrap_or("task"));
    let mut written = Vec::new();
    for o in task["outputs"].as_array().into_iter().flatten() {
        let Some(url) = o["url"].as_str() else {
            continue;
        };
        let file = url.split('?').next().unwrap_or_default();
        let ext = file
            .rsplit('/')
            .next()
            .and_then(|name| name.rsplit_once('.'))
            .map(|(_, e)| safe(e))
            .filter(|e| !e.is_empty() && e.len() <= 5)
            .unwrap_or_else(|| "bin".into());
        let name = format!(
            "{id}-{}-{}.{ext}",
            safe(o["role"].as_str().unwrap_or("output")),
            o["index"].as_u64().unwrap_or(0)
        );
        // Result URLs are public or signed: the key is not sent with them.
        let mut resp = client
            .files
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("downloading {url}"))?;
        let path = dir.join(name);
        let mut out = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("downloading {url}"))?
        {
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        written.push(path);
    }
    Ok(written)
}
