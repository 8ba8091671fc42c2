//! What charging adds to accepting a task, in the store alone: 256 tasks
//! accepted at once (so group commit batches them, as under load), free or
//! each charged to one key. `cargo bench -p gengate-store --bench accept`

use std::sync::Arc;

use gengate_core::credits::{Charge, EntryKind, KeyLimits};
use gengate_core::{Admission, ApiKey, Dialect, GenerationRequest, NewTask, TaskKind};
use gengate_store::TaskStore;
use uuid::Uuid;

fn main() {
    divan::main();
}

const AT_ONCE: usize = 256;

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn TaskStore>,
    owner: Uuid,
    new: NewTask,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let owner = Uuid::now_v7();
    let store = rt.block_on(async {
        let store = gengate_store::open(&url, true).await.expect("a store");
        let key = ApiKey {
            id: owner,
            name: "bench".into(),
            hash: *owner.as_bytes().repeat(2).first_chunk().expect("32 bytes"),
            admin: false,
            created_at: 0,
            revoked_at: None,
            webhook_secret: None,
            previous_webhook_secret: None,
            previous_secret_until: None,
            enabled: true,
            unlimited: false,
            balance: 0,
            limits: KeyLimits::default(),
        };
        store.create_key(&key).await.expect("a key");
        store
            .add_credits(owner, EntryKind::Grant, i64::MAX / 2, "bench", 0)
            .await
            .expect("credits");
        store
    });
    let new = NewTask {
        dialect: Dialect::Luma,
        kind: TaskKind::Image,
        model: "photon-1".into(),
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
    Fixture {
        rt,
        store,
        owner,
        new,
        _dir: dir,
    }
}

fn accept(b: divan::Bencher, admission: Admission) {
    let f = fixture();
    b.counter(divan::counter::ItemsCount::new(AT_ONCE))
        .bench(|| {
            f.rt.block_on(async {
                let accepts = (0..AT_ONCE).map(|_| {
                    let (store, new) = (f.store.clone(), f.new.clone());
                    tokio::spawn(async move {
                        store
                            .create_task(f.owner, &new, 1, 1_000_000, &admission)
                            .await
                    })
                });
                for accepted in futures::future::join_all(accepts).await {
                    accepted.expect("joined").expect("accepted");
                }
            })
        });
}

#[divan::bench(sample_count = 40)]
fn free(b: divan::Bencher) {
    accept(b, Admission::FREE);
}

#[divan::bench(sample_count = 40)]
fn charged(b: divan::Bencher) {
    let charge = Charge {
        per_task: 1,
        per_output: 1,
        outputs: 1,
    };
    accept(
        b,
        Admission {
            charge,
            ..Admission::FREE
        },
    );
}
