//! Micro-benchmarks of the per-request hot paths in `core`: rendering a
//! task in each dialect's shape and validating create requests.
//! `cargo bench -p gengate-core`

use gengate_core::dialect::{kling, luma};
use gengate_core::{
    Artifact, ArtifactRole, Dialect, GenerationRequest, NewTask, Task, TaskKind, TaskState,
};

fn main() {
    divan::main();
}

fn artifact(role: ArtifactRole, index: u32) -> Artifact {
    Artifact {
        role,
        index,
        key: format!("results/{}.bin", "ab".repeat(32)),
        content_type: "video/mp4".into(),
        width: 1360,
        height: 752,
        duration_secs: (role == ArtifactRole::Video).then_some(5.041667),
        palette: (role == ArtifactRole::Thumbnail).then(|| vec![7u8; 75]),
    }
}

/// A completed task shaped like the seed's example.
fn completed(dialect: Dialect) -> Task {
    let (kind, artifacts) = match dialect {
        Dialect::Luma | Dialect::DreamMachine | Dialect::OpenaiVideos | Dialect::KlingVideo => (
            TaskKind::Video,
            vec![
                artifact(ArtifactRole::Video, 0),
                artifact(ArtifactRole::Thumbnail, 0),
                artifact(ArtifactRole::LastFrame, 0),
            ],
        ),
        Dialect::Kling | Dialect::Gengate | Dialect::OpenaiImages => (
            TaskKind::Image,
            (0..4).map(|i| artifact(ArtifactRole::Image, i)).collect(),
        ),
    };
    let new = NewTask {
        dialect,
        kind,
        model: "ray-2".into(),
        request: GenerationRequest {
            prompt: "cat dance".into(),
            aspect_ratio: "16:9".into(),
            n: 1,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: Some("ext-1".into()),
        channel: Some("sandbox".into()),
    };
    let (id, owner) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    Task {
        attempts: 1,
        state: TaskState::Completed,
        progress: 100,
        artifacts,
        updated_at: 1_734_874_730_000,
        started_at: Some(1_734_874_720_200),
        finished_at: Some(1_734_874_730_000),
        version: 4,
        event_seq: 3,
        ..Task::accepted(id, owner, new, 1_734_874_720_139, 1_734_878_320_139)
    }
}

const BASE: &str = "https://gengate.example.com/files";

#[divan::bench]
fn render_luma_task_to_json(b: divan::Bencher) {
    let t = completed(Dialect::Luma);
    let links = gengate_core::FileLinks::plain(BASE);
    b.bench(|| serde_json::to_vec(&luma::render(divan::black_box(&t), &links.at(0))));
}

#[divan::bench]
fn render_kling_task_to_json(b: divan::Bencher) {
    let t = completed(Dialect::Kling);
    let links = gengate_core::FileLinks::plain(BASE);
    b.bench(|| serde_json::to_vec(&kling::render(divan::black_box(&t), &links.at(0))));
}

#[divan::bench]
fn validate_luma_create(b: divan::Bencher) {
    let body = br#"{"user_prompt":"cat dance","aspect_ratio":"9:16","callback_url":"https://hooks.example.com/x","loop":true}"#;
    b.bench(|| luma::parse_create(divan::black_box(body)));
}

#[divan::bench]
fn validate_kling_create(b: divan::Bencher) {
    let body = br#"{"prompt":"a red fox","negative_prompt":"blur","n":4,"aspect_ratio":"3:2","image_fidelity":0.5,"external_task_id":"x-1"}"#;
    b.bench(|| kling::parse_create(divan::black_box(body)));
}

#[divan::bench]
fn validate_batch_of_100_ids(b: divan::Bencher) {
    let ids: Vec<String> = (0..100)
        .map(|_| format!("\"{}\"", uuid::Uuid::now_v7()))
        .collect();
    let body = format!("{{\"ids\":[{}]}}", ids.join(","));
    b.bench(|| gengate_core::dialect::parse_batch(divan::black_box(body.as_bytes())));
}
