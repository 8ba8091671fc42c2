//! Scenario `sandbox`: what one sandbox video costs its upstream, in this process
//! through the sandbox provider's own submit and poll. Every video has a
//! prompt of its own (as a load test's tasks do), so the provider's cache of
//! whole results never answers; the figure is the process's CPU time (user +
//! system, all threads), not wall time, divided by the videos made.

use std::time::Duration;

use gengate_core::{ArtifactRole, TaskKind};
use gengate_providers::sandbox::{Sandbox, SandboxConfig};
use gengate_providers::{OutputData, PollOutcome, Provider, Submission};

use crate::report::{Row, stats};

const SCENARIO: &str = "sandbox";
/// The per-video budget: the sandbox must not cost more than the gateway.
const TARGET_MS: f64 = 20.0;
const SECS: u32 = 5;

pub async fn sandbox_video(quick: bool) -> anyhow::Result<Vec<Row>> {
    // /proc's ticks are 10 ms: batches long enough that rounding is small.
    let (reps, per_rep) = if quick { (5, 24) } else { (9, 32) };
    let sandbox = Sandbox::new(SandboxConfig {
        latency: Duration::ZERO,
        failure_rate: 0.0,
        submit_log: None,
    });
    let mut per_video = Vec::new();
    for rep in 0..reps {
        let before = cpu_secs()?;
        for i in 0..per_rep {
            let mp4 = video(&sandbox, &format!("bench sandbox video {rep}-{i}")).await?;
            // The last of each rep is checked as a player would see it.
            if i + 1 == per_rep {
                let info = gengate_media::probe_mp4(&mp4)?;
                anyhow::ensure!(
                    info.codec == "avc1"
                        && (info.width, info.height) == (512, 288)
                        && (info.duration_secs - f64::from(SECS)).abs() < 1e-6,
                    "not a 5 s 512x288 H.264 video: {info:?}"
                );
            }
        }
        per_video.push((cpu_secs()? - before) * 1000.0 / per_rep as f64);
    }
    let first = per_video[0];
    let (median, lo, hi) = stats(per_video[1..].to_vec());
    Ok(vec![
        Row {
            scenario: SCENARIO,
            figure: format!(
                "CPU per {SECS} s video (512×288, 24 fps), first {per_rep} prompts of the process"
            ),
            unit: "ms",
            values: Some((first, first, first)),
            target: String::new(),
            verdict: String::new(),
        },
        Row {
            scenario: SCENARIO,
            figure: format!(
                "CPU per {SECS} s video, each rep {per_rep} new prompts, {} reps after the first",
                reps - 1
            ),
            unit: "ms",
            values: Some((median, lo, hi)),
            target: format!("≤ {TARGET_MS:.0} ms"),
            verdict: if median <= TARGET_MS {
                "met"
            } else {
                "**missed**"
            }
            .into(),
        },
    ])
}

/// One 16:9 video of `SECS` seconds for `prompt`, submitted and collected
/// as the engine does; its MP4's bytes.
async fn video(sandbox: &Sandbox, prompt: &str) -> anyhow::Result<bytes::Bytes> {
    let mut task = gengate_testkit::fixtures::pending_task(TaskKind::Video, prompt);
    task.request.aspect_ratio = "16:9".into();
    task.request.duration_secs = Some(SECS);
    let submitted = sandbox
        .submit(Submission::new(&task, "sandbox", 0))
        .await
        .map_err(|e| anyhow::anyhow!("sandbox submit: {e}"))?;
    let outcome = sandbox
        .poll(&submitted.upstream_ref, 0)
        .await
        .map_err(|e| anyhow::anyhow!("sandbox poll: {e}"))?;
    let PollOutcome::Succeeded(outputs) = outcome else {
        anyhow::bail!("the sandbox did not finish at zero latency: {outcome:?}");
    };
    outputs
        .into_iter()
        .find(|o| o.role == ArtifactRole::Video)
        .and_then(|o| match o.data {
            OutputData::Inline { bytes, .. } => Some(bytes),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the sandbox gave no inline video"))
}

/// This process's CPU time so far (user + system, every thread), seconds.
fn cpu_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of proc(5), counted from the state (3).
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    // USER_HZ, which Linux fixes at 100 for every user-space interface.
    Ok(ticks as f64 / 100.0)
}
