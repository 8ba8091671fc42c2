//! The batch get's query on the SQLite backend: 100 ids of one owner among
//! a few thousand stored tasks. `cargo bench -p gengate-store`

use std::sync::Arc;

use gengate_core::{Dialect, GenerationRequest, NewTask, TaskKind};
use gengate_store::TaskStore;
use uuid::Uuid;

fn main() {
    divan::main();
}

const STORED: usize = 2000;

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn TaskStore>,
    owner: Uuid,
    ids: Vec<Uuid>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let (store, owner, ids) = rt.block_on(async {
        let store = gengate_store::open(&url, true).await.expect("a store");
        let owner = Uuid::now_v7();
        let new = NewTask {
            dialect: Dialect::Luma,
            kind: TaskKind::Video,
            model: "ray-2".into(),
            request: GenerationRequest {
                prompt: "bench".into(),
                aspect_ratio: "16:9".into(),
                n: 1,
                ..GenerationRequest::default()
            },
            callback_url: None,
            external_id: None,
            channel: None,
        };
        let mut ids = Vec::with_capacity(STORED);
        for i in 0..STORED {
            let t = store
                .create_task(
                    owner,
                    &new,
                    i as i64,
                    1_000_000,
                    &gengate_core::Admission::FREE,
                )
                .await
                .expect("stored");
            ids.push(t.id);
        }
        (store, owner, ids)
    });
    Fixture {
        rt,
        store,
        owner,
        ids,
        _dir: dir,
    }
}

#[divan::bench(sample_count = 50)]
fn get_100_of_2000_tasks(b: divan::Bencher) {
    let f = fixture();
    let wanted: Vec<Uuid> = f.ids.iter().step_by(STORED / 100).copied().collect();
    b.bench(|| {
        f.rt.block_on(
            f.store
                .get_tasks(f.owner, Dialect::Luma, divan::black_box(&wanted)),
        )
        .expect("tasks")
    });
}
