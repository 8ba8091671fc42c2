//! The contract every TaskStore backend keeps, run against each of them.

use std::sync::Arc;

use std::collections::BTreeMap;

use gengate_core::credits::EntryKind;
use gengate_core::{
    Admission, ApiKey, Artifact, ArtifactRole, ChannelSpec, Charge, Credentials, Credits, Dialect,
    GenerationRequest, KeyLimits, Millis, NewTask, Price, ProviderKind, Refusal, Task, TaskKind,
    TaskState, TaskUpdate,
};
use gengate_store::{StoreError, TaskFilter, TaskStore, UsageGroup, UsageQuery};
use uuid::Uuid;

/// Runs each contract test once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("t.db").display());
                super::$name(gengate_store::open(&url, true).await.unwrap()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let Some(db) = gengate_testkit::PgTestDb::create().await else { return };
                let store = gengate_store::open(&db.url, true).await.unwrap();
                super::$name(store).await;
                db.drop_db().await;
            })*
        }
    };
}

contract!(
    create_records_the_first_event,
    a_task_leased_as_it_is_created_is_claimed_only_once_its_lease_lapses,
    external_ids_are_unique_per_key,
    updates_are_compare_and_swap_and_terminal_is_final,
    steps_applied_together_are_one_change_or_none,
    claims_lease_and_expired_leases_are_retaken,
    a_lease_is_extended_by_its_holder_only,
    listing_is_newest_first_per_dialect,
    concurrent_claimers_never_share_a_task,
    concurrent_creates_fail_alone,
    in_flight_is_counted_per_channel,
    channels_are_created_listed_and_updated_by_name,
    gateway_secrets_are_made_once,
    pages_cover_every_dialect_by_position_with_filters,
    owned_tasks_of_any_dialect_by_id,
    an_external_id_is_forgotten_only_as_asked,
    a_task_is_deleted_with_its_events_and_deliveries,
    callbacks_go_in_order_and_stop_after_a_410,
    deliveries_settled_together_are_each_recorded,
    keys_are_found_rotated_and_revoked,
    a_charge_is_taken_with_the_task_or_nothing_is_stored,
    a_terminal_change_refunds_once_whoever_races,
    in_flight_and_daily_spend_limits_hold,
    grants_adjustments_and_the_ledger_add_up,
    usage_is_grouped_with_its_credits,
    prices_are_put_listed_and_deleted,
    files_are_kept_as_long_as_the_longest_task_needs_them,
    a_file_is_either_kept_or_deleted_whoever_races,
    a_lease_has_one_holder_until_it_lapses,
    events_are_fed_in_time_order_by_position,
);

/// Move `t` (as read) to `state` at `at`: the task after the change.
async fn move_to(s: &dyn TaskStore, t: &Task, state: TaskState, at: Millis) -> Task {
    let update = TaskUpdate::to_state(state);
    let moved = s.update_task(t.id, t.version, &[update], at).await.unwrap();
    moved.expect("the change applies")
}

/// A key holding `balance` credits (granted when it is created).
fn key(name: &str, balance: Credits, unlimited: bool) -> ApiKey {
    ApiKey {
        id: Uuid::now_v7(),
        name: name.into(),
        hash: *Uuid::now_v7().as_bytes().repeat(2).first_chunk().unwrap(),
        admin: false,
        created_at: 1,
        revoked_at: None,
        webhook_secret: None,
        previous_webhook_secret: None,
        previous_secret_until: None,
        enabled: true,
        unlimited,
        balance,
        limits: KeyLimits::default(),
    }
}

/// What a task of `n` images at 2 per task and 5 per image is charged.
fn priced(n: u32) -> Admission {
    Admission {
        charge: Charge {
            per_task: 2,
            per_output: 5,
            outputs: n,
        },
        ..Admission::default()
    }
}

async fn balance(s: &dyn TaskStore, id: Uuid) -> Credits {
    s.get_key(id).await.unwrap().unwrap().balance
}

/// Every key's balance is the sum of its ledger entries.
async fn ledger_holds(s: &dyn TaskStore) {
    for t in s.ledger_totals().await.unwrap() {
        assert_eq!(t.balance, t.entries, "{t:?}");
    }
}

async fn a_charge_is_taken_with_the_task_or_nothing_is_stored(s: Arc<dyn TaskStore>) {
    let k = key("buyer", 20, false);
    s.create_key(&k).await.unwrap();
    let t = s
        .create_task(k.id, &new_task(None), 10, 99, &priced(3))
        .await
        .unwrap();
    assert_eq!(t.charge.total(), 17);
    assert_eq!(t.net_charge(), 17);
    assert_eq!(balance(s.as_ref(), k.id).await, 3);
    let entries = s.ledger(k.id, 10).await.unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        (entries[0].kind, entries[0].amount),
        (EntryKind::Charge, -17)
    );
    assert_eq!(entries[0].task_id, Some(t.id));
    assert_eq!((entries[1].kind, entries[1].amount), (EntryKind::Grant, 20));

    // Not enough left: refused with the balance, and nothing stored.
    let refused = s
        .create_task(k.id, &new_task(Some("x")), 11, 99, &priced(1))
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Refused(Refusal::Credits {
                balance: 3,
                needed: 7
            }))
        ),
        "{refused:?}"
    );
    assert!(
        s.get_task_by_external_id(k.id, "x")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(balance(s.as_ref(), k.id).await, 3);
    assert_eq!(s.ledger(k.id, 10).await.unwrap().len(), 2);

    // An unlimited key is charged for the record but never refused.
    let free = key("operator", 0, true);
    s.create_key(&free).await.unwrap();
    s.create_task(free.id, &new_task(None), 12, 99, &priced(1))
        .await
        .unwrap();
    assert_eq!(balance(s.as_ref(), free.id).await, -7);
    ledger_holds(s.as_ref()).await;
}

async fn a_terminal_change_refunds_once_whoever_races(s: Arc<dyn TaskStore>) {
    let k = key("racer", 1000, false);
    s.create_key(&k).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let t = s
            .create_task(k.id, &new_task(None), 10, 99, &priced(2))
            .await
            .unwrap();
        tasks.push(t);
    }
    assert_eq!(balance(s.as_ref(), k.id).await, 1000 - 20 * 12);
    // Four writers race to end each task from the version they read: a
    // failure, a cancel and two more failures, each carrying the refund.
    let mut racing = Vec::new();
    for t in &tasks {
        for state in [
            TaskState::Failed,
            TaskState::Canceled,
            TaskState::Failed,
            TaskState::Canceled,
        ] {
            let (s, t) = (s.clone(), t.clone());
            racing.push(tokio::spawn(async move {
                let update = TaskUpdate {
                    refund: t.charge.total(),
                    ..TaskUpdate::to_state(state)
                };
                s.update_task(t.id, t.version, &[update], 20).await.unwrap()
            }));
        }
    }
    let mut won = 0;
    for r in racing {
        won += usize::from(r.await.unwrap().is_some());
    }
    assert_eq!(won, tasks.len(), "one writer wins each task");
    assert_eq!(
        balance(s.as_ref(), k.id).await,
        1000,
        "every task refunded once"
    );
    let refunds = s.ledger(k.id, 100).await.unwrap();
    let refunds: Vec<_> = refunds
        .iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .collect();
    assert_eq!(refunds.len(), tasks.len());
    for r in &refunds {
        assert_eq!((r.amount, r.at), (12, 20), "{r:?}");
        assert!(matches!(r.reason.as_deref(), Some("failed" | "canceled")));
        assert_ne!(Some(r.id), r.task_id, "a refund is an entry of its own");
    }
    for t in &tasks {
        let t = s.load_task(t.id).await.unwrap().unwrap();
        assert_eq!((t.refunded, t.net_charge()), (12, 0));
    }
    ledger_holds(s.as_ref()).await;

    // Deleting tasks keeps their charges and refunds in the ledger, as they were.
    let before = s.ledger(k.id, 100).await.unwrap();
    assert_eq!(
        before.len(),
        1 + 2 * tasks.len(),
        "the grant, a charge and a refund each"
    );
    for t in tasks.iter().step_by(2) {
        assert!(s.delete_task(k.id, t.id).await.unwrap());
    }
    assert_eq!(s.ledger(k.id, 100).await.unwrap(), before);
    assert_eq!(balance(s.as_ref(), k.id).await, 1000);
    ledger_holds(s.as_ref()).await;
}

async fn in_flight_and_daily_spend_limits_hold(s: Arc<dyn TaskStore>) {
    let k = key("limited", 1000, false);
    s.create_key(&k).await.unwrap();
    let in_flight = Admission {
        max_in_flight: Some(2),
        ..Admission::default()
    };
    let a = s
        .create_task(k.id, &new_task(None), 10, 99, &in_flight)
        .await
        .unwrap();
    s.create_task(k.id, &new_task(None), 10, 99, &in_flight)
        .await
        .unwrap();
    let third = s
        .create_task(k.id, &new_task(None), 10, 99, &in_flight)
        .await;
    assert!(
        matches!(
            third,
            Err(StoreError::Refused(Refusal::InFlight { limit: 2 }))
        ),
        "{third:?}"
    );
    // A task that ends makes room.
    s.update_task(a.id, a.version, &[TaskUpdate::fail("x")], 11)
        .await
        .unwrap()
        .unwrap();
    s.create_task(k.id, &new_task(None), 12, 99, &in_flight)
        .await
        .unwrap();

    // 25 credits a day at 7 a task: three fit, the fourth does not; a
    // refund today makes room again.
    let day = 86_400_000 * 20_000;
    let capped = Admission {
        daily_spend: Some(25),
        ..priced(1)
    };
    let mut made = Vec::new();
    for i in 0..3 {
        let new = new_task(None);
        let t = s.create_task(k.id, &new, day + i, day + 99_999, &capped);
        made.push(t.await.unwrap());
    }
    let over = s
        .create_task(k.id, &new_task(None), day + 5, day + 99_999, &capped)
        .await;
    match over {
        Err(StoreError::Refused(Refusal::DailySpend {
            limit: 25,
            spent: 21,
            needed: 7,
            retry_after_secs,
        })) => assert!(retry_after_secs > 86_000, "{retry_after_secs}"),
        other => panic!("{other:?}"),
    }
    let update = TaskUpdate {
        refund: 7,
        ..TaskUpdate::fail("x")
    };
    let t = &made[0];
    s.update_task(t.id, t.version, &[update], day + 6)
        .await
        .unwrap()
        .unwrap();
    s.create_task(k.id, &new_task(None), day + 7, day + 99_999, &capped)
        .await
        .unwrap();
    // The next day starts from nothing spent.
    let next = day + 86_400_000;
    s.create_task(k.id, &new_task(None), next, next + 99, &capped)
        .await
        .unwrap();
    ledger_holds(s.as_ref()).await;
}

async fn grants_adjustments_and_the_ledger_add_up(s: Arc<dyn TaskStore>) {
    let k = key("granted", 0, false);
    s.create_key(&k).await.unwrap();
    assert!(s.ledger(k.id, 10).await.unwrap().is_empty());
    let b = s
        .add_credits(k.id, EntryKind::Grant, 100, "top-up", 5)
        .await
        .unwrap();
    assert_eq!(b, Some(100));
    let b = s
        .add_credits(k.id, EntryKind::Adjustment, -30, "correction", 6)
        .await
        .unwrap();
    assert_eq!(b, Some(70));
    assert_eq!(
        s.add_credits(Uuid::now_v7(), EntryKind::Grant, 1, "nobody", 7)
            .await
            .unwrap(),
        None
    );
    let entries = s.ledger(k.id, 10).await.unwrap();
    let seen: Vec<_> = entries
        .iter()
        .map(|e| (e.kind, e.amount, e.reason.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (EntryKind::Adjustment, -30, Some("correction")),
            (EntryKind::Grant, 100, Some("top-up"))
        ]
    );
    // Settings never move the balance.
    let mut changed = s.get_key(k.id).await.unwrap().unwrap();
    changed.name = "renamed".into();
    changed.enabled = false;
    changed.unlimited = true;
    changed.balance = 999_999;
    changed.limits.max_in_flight = Some(3);
    assert!(s.save_key_settings(&changed).await.unwrap());
    let stored = s.get_key(k.id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.name.as_str(),
            stored.enabled,
            stored.unlimited,
            stored.balance
        ),
        ("renamed", false, true, 70)
    );
    assert_eq!(stored.limits.max_in_flight, Some(3));
    ledger_holds(s.as_ref()).await;
}

async fn usage_is_grouped_with_its_credits(s: Arc<dyn TaskStore>) {
    let (a, b) = (key("a", 1000, false), key("b", 1000, false));
    s.create_key(&a).await.unwrap();
    s.create_key(&b).await.unwrap();
    // Task ids carry the real time: `now` must be it for the range to hold.
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = i64::try_from(since_epoch.unwrap().as_millis()).unwrap();
    let t1 = s
        .create_task(a.id, &new_task(None), now, now + 99, &priced(1))
        .await
        .unwrap();
    s.create_task(a.id, &new_task(None), now, now + 99, &priced(2))
        .await
        .unwrap();
    s.create_task(b.id, &new_task(None), now, now + 99, &priced(1))
        .await
        .unwrap();
    let refund = TaskUpdate {
        refund: 7,
        ..TaskUpdate::fail("x")
    };
    s.update_task(t1.id, t1.version, &[refund], now + 1)
        .await
        .unwrap()
        .unwrap();
    let of_a = UsageQuery {
        owner: Some(a.id),
        from: now - 1000,
        to: now + 1000,
        group_by: UsageGroup::Model,
    };
    let mut rows = s.usage(&of_a).await.unwrap();
    rows.sort_by_key(|r| r.state.as_str());
    let seen: Vec<_> = rows
        .iter()
        .map(|r| (r.group.as_str(), r.state, r.tasks, r.charged, r.refunded))
        .collect();
    assert_eq!(
        seen,
        [
            ("kling-image", TaskState::Failed, 1, 7, 7),
            ("kling-image", TaskState::Pending, 1, 12, 0)
        ]
    );
    let everyone = UsageQuery {
        owner: None,
        group_by: UsageGroup::Day,
        ..of_a.clone()
    };
    let rows = s.usage(&everyone).await.unwrap();
    let tasks: u64 = rows.iter().map(|r| r.tasks).sum();
    assert_eq!(tasks, 3);
    let day = (now - now % 86_400_000).to_string();
    assert!(rows.iter().all(|r| r.group == day), "{rows:?}");
    let before = UsageQuery {
        to: now - 500,
        ..of_a
    };
    assert!(s.usage(&before).await.unwrap().is_empty());
}

async fn prices_are_put_listed_and_deleted(s: Arc<dyn TaskStore>) {
    let p = Price {
        model: "ray-2".into(),
        per_task: 3,
        per_image: 0,
        per_video_second: BTreeMap::from([("720p".into(), 2)]),
    };
    s.put_price(&p, 1).await.unwrap();
    let cheaper = Price {
        per_task: 1,
        ..p.clone()
    };
    s.put_price(&cheaper, 2).await.unwrap();
    assert_eq!(s.list_prices().await.unwrap(), [cheaper]);
    assert!(s.delete_price("ray-2").await.unwrap());
    assert!(!s.delete_price("ray-2").await.unwrap());
    assert!(s.list_prices().await.unwrap().is_empty());
}

/// A new task whose every change calls back.
fn hooked_task() -> NewTask {
    NewTask {
        callback_url: Some("https://example.test/hook".into()),
        ..new_task(None)
    }
}

fn new_task(ext: Option<&str>) -> NewTask {
    NewTask {
        dialect: Dialect::Kling,
        kind: TaskKind::Image,
        model: "kling-image".into(),
        request: GenerationRequest {
            prompt: "a cat".into(),
            aspect_ratio: "1:1".into(),
            n: 1,
            ..Default::default()
        },
        callback_url: None,
        external_id: ext.map(String::from),
        channel: None,
    }
}

async fn create_records_the_first_event(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let t = s
        .create_task(owner, &new_task(None), 1000, 9000, &Admission::FREE)
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.request.prompt, "a cat");
    let ev = s.task_events(t.id).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].seq, ev[0].state), (1, TaskState::Pending));
    // Another key sees nothing.
    assert!(s.get_task(Uuid::now_v7(), t.id).await.unwrap().is_none());
    assert_eq!(s.get_task(owner, t.id).await.unwrap().unwrap().id, t.id);
}

async fn external_ids_are_unique_per_key(s: Arc<dyn TaskStore>) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    s.create_task(a, &new_task(Some("x")), 1, 2, &Admission::FREE)
        .await
        .unwrap();
    let dup = s
        .create_task(a, &new_task(Some("x")), 1, 2, &Admission::FREE)
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    s.create_task(b, &new_task(Some("x")), 1, 2, &Admission::FREE)
        .await
        .unwrap();
    assert!(s.get_task_by_external_id(a, "x").await.unwrap().is_some());
    assert!(s.get_task_by_external_id(a, "y").await.unwrap().is_none());
}

/// Writes that arrive together may share a transaction (SQLite's group
/// commit): a conflicting one must fail alone, leaving no trace, while the
/// others are stored with their events.
async fn concurrent_creates_fail_alone(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let results = futures::future::join_all((0..300).map(|i| {
        let s = s.clone();
        // Every third create reuses external id "dup-0".
        let ext = if i % 3 == 0 {
            "dup-0".to_string()
        } else {
            format!("u-{i}")
        };
        async move {
            s.create_task(owner, &new_task(Some(&ext)), 1, 2, &Admission::FREE)
                .await
        }
    }))
    .await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!(
        (ok.len(), conflicts),
        (201, 99),
        "one dup-0 wins, 99 conflict"
    );
    let (_, total) = s.list_tasks(owner, Dialect::Kling, 0, 1).await.unwrap();
    assert_eq!(total, 201, "nothing of a failed create is stored");
    for t in ok {
        let ev = s.task_events(t.id).await.unwrap();
        assert_eq!(ev.len(), 1, "each stored task has its first event");
    }
}

async fn in_flight_is_counted_per_channel(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let submit = |channel: &'static str| TaskUpdate {
        state: Some(TaskState::Processing),
        channel: Some(channel.into()),
        next_due_at: Some(5),
        ..TaskUpdate::default()
    };
    let mut on_a = Vec::new();
    for _ in 0..3 {
        let t = s
            .create_task(owner, &new_task(None), 1, 99, &Admission::FREE)
            .await
            .unwrap();
        on_a.push(
            s.update_task(t.id, t.version, &[submit("a")], 2)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let t = s
        .create_task(owner, &new_task(None), 1, 99, &Admission::FREE)
        .await
        .unwrap();
    s.update_task(t.id, t.version, &[submit("b")], 2)
        .await
        .unwrap();
    // Pending tasks count nowhere; finished ones no longer count.
    s.create_task(owner, &new_task(None), 1, 99, &Admission::FREE)
        .await
        .unwrap();
    let done = &on_a[0];
    s.update_task(done.id, done.version, &[TaskUpdate::fail("x")], 3)
        .await
        .unwrap()
        .unwrap();
    let mut counts = s.in_flight_by_channel().await.unwrap();
    counts.sort();
    assert_eq!(counts, [("a".to_string(), 2), ("b".to_string(), 1)]);
}

async fn steps_applied_together_are_one_change_or_none(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let new = hooked_task();
    let t = s
        .create_task(owner, &new, 1, 100, &Admission::FREE)
        .await
        .unwrap();
    let submitted = TaskUpdate {
        channel: Some("sandbox".into()),
        upstream_ref: Some("job-1".into()),
        ..TaskUpdate::to_state(TaskState::Processing)
    };
    let steps = [submitted, TaskUpdate::to_state(TaskState::Completed)];
    // Stale: neither step applies, nothing is written.
    let stale = s.update_task(t.id, t.version - 1, &steps, 10).await;
    assert!(stale.unwrap().is_none());
    assert_eq!(s.task_events(t.id).await.unwrap().len(), 1);
    let done = s
        .update_task(t.id, t.version, &steps, 10)
        .await
        .unwrap()
        .expect("both steps apply");
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(done.channel.as_deref(), Some("sandbox"));
    assert_eq!(done.upstream_ref.as_deref(), Some("job-1"));
    assert_eq!((done.started_at, done.finished_at), (Some(10), Some(10)));
    assert_eq!((done.version, done.event_seq), (t.version + 2, 3));
    // An event and a callback for each step, in order.
    let events: Vec<_> = s
        .task_events(t.id)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.state))
        .collect();
    use TaskState::*;
    assert_eq!(events, [(1, Pending), (2, Processing), (3, Completed)]);
    let sent: Vec<_> = s
        .task_deliveries(t.id)
        .await
        .unwrap()
        .iter()
        .map(|(d, _)| (d.seq, d.event_state))
        .collect();
    assert_eq!(sent, [(1, Pending), (2, Processing), (3, Completed)]);
    // A step the state machine forbids undoes the steps before it.
    let t = s
        .create_task(owner, &new, 1, 100, &Admission::FREE)
        .await
        .unwrap();
    let broken = [
        TaskUpdate::to_state(TaskState::Processing),
        TaskUpdate::to_state(TaskState::Completed),
        TaskUpdate::fail("after the end"),
    ];
    assert!(s.update_task(t.id, t.version, &broken, 11).await.is_err());
    let still = s.load_task(t.id).await.unwrap().unwrap();
    assert_eq!((still.state, still.version), (Pending, t.version));
    assert_eq!(s.task_events(t.id).await.unwrap().len(), 1);
}

async fn updates_are_compare_and_swap_and_terminal_is_final(s: Arc<dyn TaskStore>) {
    let t = s
        .create_task(Uuid::now_v7(), &new_task(None), 1, 100, &Admission::FREE)
        .await
        .unwrap();
    let up = TaskUpdate {
        next_due_at: Some(50),
        ..TaskUpdate::to_state(TaskState::Processing)
    };
    let t2 = s
        .update_task(t.id, t.version, &[up], 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t2.state, TaskState::Processing);
    assert_eq!(t2.started_at, Some(10));
    // The loser of a race changes nothing.
    assert!(
        s.update_task(t.id, t.version, &[TaskUpdate::fail("x")], 11)
            .await
            .unwrap()
            .is_none()
    );
    let done = s
        .update_task(
            t.id,
            t2.version,
            &[TaskUpdate::to_state(TaskState::Completed)],
            12,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.finished_at, Some(12));
    assert!(
        s.update_task(t.id, done.version, &[TaskUpdate::fail("late")], 13)
            .await
            .unwrap()
            .is_none()
    );
    let ev: Vec<_> = s
        .task_events(t.id)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.state))
        .collect();
    assert_eq!(
        ev,
        vec![
            (1, TaskState::Pending),
            (2, TaskState::Processing),
            (3, TaskState::Completed)
        ]
    );
    assert_eq!(s.open_task_count().await.unwrap(), 0);
}

async fn claims_lease_and_expired_leases_are_retaken(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    for _ in 0..3 {
        s.create_task(owner, &new_task(None), 100, 10_000, &Admission::FREE)
            .await
            .unwrap();
    }
    assert!(
        s.claim_due("w1", 99, 1000, 10).await.unwrap().is_empty(),
        "not due yet"
    );
    assert_eq!(s.claim_due("w1", 100, 1000, 2).await.unwrap().len(), 2);
    assert_eq!(s.claim_due("w2", 200, 1000, 10).await.unwrap().len(), 1);
    assert!(
        s.claim_due("w2", 300, 1000, 10).await.unwrap().is_empty(),
        "all leased"
    );
    // w1 died: its leases expire and another worker takes them.
    assert_eq!(s.claim_due("w3", 1100, 1000, 10).await.unwrap().len(), 2);
    assert_eq!(s.next_due_at().await.unwrap(), Some(100));
}

async fn a_lease_is_extended_by_its_holder_only(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    s.create_task(owner, &new_task(None), 100, 10_000, &Admission::FREE)
        .await
        .unwrap();
    let task = s.claim_due("w1", 100, 1000, 10).await.unwrap().remove(0);
    // w1's request runs long: it keeps the task past the first lease.
    assert!(s.extend_lease(task.id, "w1", 5000).await.unwrap());
    assert!(!s.extend_lease(task.id, "w2", 9000).await.unwrap());
    assert!(s.claim_due("w2", 4000, 1000, 10).await.unwrap().is_empty());
    assert_eq!(s.claim_due("w2", 5000, 1000, 10).await.unwrap().len(), 1);
    // Now w2's: w1 can no longer extend it.
    assert!(!s.extend_lease(task.id, "w1", 9000).await.unwrap());
}

async fn a_task_leased_as_it_is_created_is_claimed_only_once_its_lease_lapses(
    s: Arc<dyn TaskStore>,
) {
    let owner = Uuid::now_v7();
    let free = Admission::FREE;
    let task = s
        .create_leased_task(owner, &new_task(None), (100, 10_000), &free, ("w1", 1100))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Pending);
    let events = s.task_events(task.id).await.unwrap();
    assert_eq!(events.len(), 1, "the first event, as for any new task");
    // w1 handles it; no claim takes it meanwhile, w1 may keep it longer.
    assert!(s.claim_due("w2", 500, 1000, 10).await.unwrap().is_empty());
    assert!(s.extend_lease(task.id, "w1", 2000).await.unwrap());
    assert!(s.claim_due("w2", 1500, 1000, 10).await.unwrap().is_empty());
    // w1 died: once the lease lapses the task is due like any other.
    let retaken = s.claim_due("w2", 2000, 1000, 10).await.unwrap();
    assert_eq!(retaken.iter().map(|t| t.id).collect::<Vec<_>>(), [task.id]);
    // A worker that stops gives its leases back at once.
    let other = s
        .create_leased_task(owner, &new_task(None), (100, 10_000), &free, ("w3", 9000))
        .await
        .unwrap();
    assert_eq!(s.release_leases("w3").await.unwrap(), 1);
    let claimed = s.claim_due("w4", 2100, 1000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [other.id]);
}

async fn listing_is_newest_first_per_dialect(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.create_task(owner, &new_task(None), i, 100, &Admission::FREE)
                .await
                .unwrap()
                .id,
        );
    }
    let (page, total) = s.list_tasks(owner, Dialect::Kling, 1, 2).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );
    let (none, total) = s.list_tasks(owner, Dialect::Luma, 0, 10).await.unwrap();
    assert!(none.is_empty() && total == 0);
    let got = s
        .get_tasks(owner, Dialect::Kling, &[ids[0], Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        s.get_tasks(owner, Dialect::Luma, &[ids[0]])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn schema_must_be_migrated(url: &str) {
    let refused = gengate_store::open(url, false).await;
    match refused {
        Err(e) => assert!(e.to_string().contains("gengate migrate"), "{e}"),
        Ok(_) => panic!("an empty database was accepted without migrating"),
    }
    drop(gengate_store::open(url, true).await.unwrap());
    // Migrating twice is harmless, and a migrated schema opens as it is.
    drop(gengate_store::open(url, true).await.unwrap());
    drop(gengate_store::open(url, false).await.unwrap());
}

#[tokio::test]
async fn sqlite_schema_must_be_migrated() {
    let dir = tempfile::tempdir().unwrap();
    schema_must_be_migrated(&format!("sqlite://{}", dir.path().join("t.db").display())).await;
}

#[tokio::test]
async fn postgres_schema_must_be_migrated() {
    let Some(db) = gengate_testkit::PgTestDb::create().await else {
        return;
    };
    schema_must_be_migrated(&db.url).await;
    db.drop_db().await;
}

#[tokio::test]
async fn unknown_url_schemes_are_refused() {
    let err = gengate_store::open("mysql://x/y", true)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("mysql"), "{err}");
}

async fn concurrent_claimers_never_share_a_task(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    for _ in 0..200 {
        s.create_task(owner, &new_task(None), 100, 1_000_000, &Admission::FREE)
            .await
            .unwrap();
    }
    let claimers = (0..4).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_due(&format!("w{w}"), 500, 60_000, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|t| t.id));
            }
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (200, 200),
        "every task claimed exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_wakes_other_instances_when_work_arrives() {
    let Some(db) = gengate_testkit::PgTestDb::create().await else {
        return;
    };
    let idle = gengate_store::open(&db.url, true).await.unwrap();
    let busy = gengate_store::open(&db.url, true).await.unwrap();
    // The listener connects in the background; give it a moment before the
    // NOTIFY it must hear (a missed one is covered by polling, not here).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiter = {
        let idle = idle.clone();
        tokio::spawn(async move { idle.wait_for_work().await })
    };
    busy.create_task(Uuid::now_v7(), &new_task(None), 1, 2, &Admission::FREE)
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the other instance was woken by NOTIFY")
        .unwrap();
    drop((idle, busy));
    db.drop_db().await;
}

fn kling_spec(name: &str, api_key: &str) -> ChannelSpec {
    ChannelSpec {
        base_url: Some("https://kling.example".into()),
        credentials: Credentials {
            api_key: Some(api_key.into()),
            webhook_secret: Some("whsec_abc".into()),
            ..Credentials::default()
        },
        models: BTreeMap::from([("kling-image".into(), "kling-v1-5".into())]),
        priority: 3,
        weight: 2,
        max_in_flight: Some(10),
        rate_limit_per_sec: Some(2.5),
        deadline_secs: BTreeMap::from([("kling-image".into(), 120)]),
        ..ChannelSpec::new(name, ProviderKind::Kling)
    }
}

async fn channels_are_created_listed_and_updated_by_name(s: Arc<dyn TaskStore>) {
    assert!(s.list_channels().await.unwrap().is_empty());
    let b = kling_spec("b-chan", "key-b");
    let a = ChannelSpec {
        latency_ms: Some(5),
        ..ChannelSpec::new("a-chan", ProviderKind::Sandbox)
    };
    assert!(s.create_channel(&b, 10).await.unwrap());
    assert!(s.create_channel(&a, 11).await.unwrap());
    // Every field comes back, credentials included; listed by name.
    assert_eq!(s.list_channels().await.unwrap(), vec![a.clone(), b.clone()]);

    // A taken name is refused and the stored channel is left as it was.
    let dup = kling_spec("b-chan", "another-key");
    assert!(!s.create_channel(&dup, 12).await.unwrap());
    assert_eq!(s.list_channels().await.unwrap(), vec![a.clone(), b.clone()]);

    let mut b2 = b.clone();
    b2.enabled = false;
    b2.credentials.api_key = Some("key-b-rotated".into());
    b2.models.insert("*".into(), "*".into());
    assert!(s.update_channel(&b2, 13).await.unwrap());
    assert_eq!(s.list_channels().await.unwrap(), vec![a.clone(), b2]);

    // Updating an unknown channel changes nothing and creates nothing.
    let ghost = ChannelSpec::new("ghost", ProviderKind::Sandbox);
    assert!(!s.update_channel(&ghost, 14).await.unwrap());
    let names: Vec<_> = s
        .list_channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a-chan", "b-chan"]);
}

async fn gateway_secrets_are_made_once(s: Arc<dyn TaskStore>) {
    // Concurrent first uses (separate connections on PostgreSQL) agree.
    let all = futures::future::join_all((0..16).map(|_| {
        let s = s.clone();
        async move { s.gateway_secret("callbacks").await.unwrap() }
    }))
    .await;
    assert_eq!(all[0].len(), 32);
    assert!(all.iter().all(|v| v == &all[0]), "one secret: {all:?}");
    assert_ne!(all[0], vec![0u8; 32]);
    assert_eq!(s.gateway_secret("callbacks").await.unwrap(), all[0]);
    let other = s.gateway_secret("something-else").await.unwrap();
    assert_eq!(other.len(), 32);
    assert_ne!(other, all[0], "each name has its own secret");
}

/// Instances sharing a store see the same gateway secrets and channels.
async fn instances_share_secrets_and_channels(url: &str) {
    let one = gengate_store::open(url, true).await.unwrap();
    let two = gengate_store::open(url, true).await.unwrap();
    let secret = one.gateway_secret("callbacks").await.unwrap();
    assert_eq!(two.gateway_secret("callbacks").await.unwrap(), secret);
    let spec = kling_spec("shared", "k");
    assert!(one.create_channel(&spec, 1).await.unwrap());
    assert_eq!(two.list_channels().await.unwrap(), vec![spec]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_instances_share_secrets_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    instances_share_secrets_and_channels(&format!(
        "sqlite://{}",
        dir.path().join("t.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_instances_share_secrets_and_channels() {
    let Some(db) = gengate_testkit::PgTestDb::create().await else {
        return;
    };
    instances_share_secrets_and_channels(&db.url).await;
    db.drop_db().await;
}

/// Tasks of two dialects, some sharing a creation time: pages by position
/// cover each exactly once, newest first, whatever is inserted meanwhile,
/// and the filters apply.
async fn pages_cover_every_dialect_by_position_with_filters(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let mut made = Vec::new();
    for i in 0..30i64 {
        let mut n = new_task(None);
        if i % 3 == 0 {
            n.dialect = Dialect::Luma;
            n.model = "ray-2".into();
        }
        // Three tasks per millisecond: ties are broken by id.
        made.push(
            s.create_task(owner, &n, 1000 + i / 3, 9000, &Admission::FREE)
                .await
                .unwrap(),
        );
    }
    s.create_task(
        Uuid::now_v7(),
        &new_task(None),
        1005,
        9000,
        &Admission::FREE,
    )
    .await
    .unwrap();
    let mut expected = made.clone();
    expected.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
    let (mut seen, mut filter) = (Vec::new(), TaskFilter::default());
    loop {
        let page = s.page_tasks(Some(owner), &filter, 7).await.unwrap();
        // An insert between pages lands before the position: never seen twice.
        s.create_task(owner, &new_task(None), 5000, 9000, &Admission::FREE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        filter.past = Some((last.created_at, last.id));
        seen.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(seen, expected.iter().map(|t| t.id).collect::<Vec<_>>());
    // Oldest first, page by page: the same tasks the other way round.
    let (mut seen, mut filter) = (
        Vec::new(),
        TaskFilter {
            oldest_first: true,
            created_before: Some(5000),
            ..TaskFilter::default()
        },
    );
    loop {
        let page = s.page_tasks(Some(owner), &filter, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        filter.past = Some((last.created_at, last.id));
        seen.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(
        seen,
        expected.iter().rev().map(|t| t.id).collect::<Vec<_>>()
    );

    let luma = TaskFilter {
        model: Some("ray-2".into()),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(Some(owner), &luma, 100).await.unwrap();
    assert_eq!(page.len(), 10);
    assert!(page.iter().all(|t| t.dialect == Dialect::Luma));
    let recent = TaskFilter {
        created_after: Some(1008),
        state: Some(TaskState::Pending),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(Some(owner), &recent, 100).await.unwrap();
    // 1009 (three tasks) and the six inserted at 5000 (one per page read).
    assert_eq!(page.len(), 9, "{page:?}");
    let done = TaskFilter {
        state: Some(TaskState::Completed),
        ..TaskFilter::default()
    };
    assert!(
        s.page_tasks(Some(owner), &done, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // By dialect, before a time, by id or external id, and every key's.
    let kling_before = TaskFilter {
        dialect: Some(Dialect::Kling),
        created_before: Some(1003),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(Some(owner), &kling_before, 100).await.unwrap();
    // 1000..=1002, three per ms, one of each three a Luma task.
    assert_eq!(page.len(), 6, "{page:?}");
    assert!(page.iter().all(|t| t.dialect == Dialect::Kling));
    let by_id = TaskFilter {
        search: Some(made[4].id.to_string()),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(Some(owner), &by_id, 100).await.unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [made[4].id]);
    assert!(
        s.page_tasks(Some(Uuid::now_v7()), &by_id, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let ext = s
        .create_task(
            owner,
            &new_task(Some("order-17")),
            6000,
            9000,
            &Admission::FREE,
        )
        .await
        .unwrap();
    let by_external = TaskFilter {
        search: Some("order-17".into()),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(None, &by_external, 100).await.unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [ext.id]);
    let at_1005 = TaskFilter {
        created_after: Some(1004),
        created_before: Some(1006),
        ..TaskFilter::default()
    };
    let everyone = s.page_tasks(None, &at_1005, 100).await.unwrap();
    assert_eq!(
        everyone.len(),
        4,
        "three of this key's and another's: {everyone:?}"
    );
    assert!(everyone.iter().any(|t| t.owner != owner));
    let mut pinned = new_task(None);
    pinned.channel = Some("spare".into());
    let pinned = s
        .create_task(Uuid::now_v7(), &pinned, 7000, 9000, &Admission::FREE)
        .await
        .unwrap();
    let on_channel = TaskFilter {
        channel: Some("spare".into()),
        ..TaskFilter::default()
    };
    let page = s.page_tasks(None, &on_channel, 100).await.unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [pinned.id]);
}

async fn owned_tasks_of_any_dialect_by_id(s: Arc<dyn TaskStore>) {
    let owner = Uuid::now_v7();
    let kling = s
        .create_task(owner, &new_task(None), 1, 9, &Admission::FREE)
        .await
        .unwrap();
    let mut l = new_task(None);
    l.dialect = Dialect::Luma;
    let luma = s
        .create_task(owner, &l, 1, 9, &Admission::FREE)
        .await
        .unwrap();
    let foreign = s
        .create_task(Uuid::now_v7(), &new_task(None), 1, 9, &Admission::FREE)
        .await
        .unwrap();
    let got = s
        .get_owned_tasks(owner, &[kling.id, luma.id, foreign.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(sorted_ids(&got), sorted_ids(&[kling.clone(), luma.clone()]));
    assert!(s.get_owned_tasks(owner, &[]).await.unwrap().is_empty());

    // The engine's view: any key's tasks among the ids, unknown ids skipped.
    let got = s
        .load_tasks(&[kling.id, foreign.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(sorted_ids(&got), sorted_ids(&[kling, foreign]));
    assert!(s.load_tasks(&[]).await.unwrap().is_empty());
}

/// The ids of `tasks`, sorted: lookups answer in no given order.
fn sorted_ids(tasks: &[Task]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    ids.sort();
    ids
}

async fn an_external_id_is_forgotten_only_as_asked(s: Arc<dyn TaskStore>) {
    let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
    let t = s
        .create_task(owner, &new_task(Some("k")), 1, 9, &Admission::FREE)
        .await
        .unwrap();
    // Not another key's, not another value.
    assert!(!s.forget_external_id(other, t.id, "k").await.unwrap());
    assert!(!s.forget_external_id(owner, t.id, "j").await.unwrap());
    assert!(
        s.get_task_by_external_id(owner, "k")
            .await
            .unwrap()
            .is_some()
    );
    assert!(s.forget_external_id(owner, t.id, "k").await.unwrap());
    assert!(
        s.get_task_by_external_id(owner, "k")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_task(owner, t.id).await.unwrap().unwrap().external_id,
        None
    );
    // The id is free again.
    s.create_task(owner, &new_task(Some("k")), 2, 9, &Admission::FREE)
        .await
        .unwrap();
    assert!(!s.forget_external_id(owner, t.id, "k").await.unwrap());
}

async fn a_task_is_deleted_with_its_events_and_deliveries(s: Arc<dyn TaskStore>) {
    let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
    let new = hooked_task();
    let t = s
        .create_task(owner, &new, 1, 9, &Admission::FREE)
        .await
        .unwrap();
    let kept = s
        .create_task(owner, &new_task(None), 1, 9, &Admission::FREE)
        .await
        .unwrap();
    move_to(s.as_ref(), &t, TaskState::Canceled, 2).await;
    // A delivery with an attempt recorded, and one claimed (in flight).
    let claimed = s.claim_deliveries(3, 60_000, 10).await.unwrap();
    let first = claimed
        .iter()
        .find(|d| d.task_id == t.id)
        .expect("a due delivery")
        .clone();
    let attempt = gengate_core::DeliveryAttempt {
        attempt: 1,
        at: 3,
        status: Some(500),
        error: None,
        latency_ms: 5,
        next_attempt_at: Some(4),
    };
    s.finish_deliveries(
        &[settle(
            &first,
            &attempt,
            gengate_core::DeliveryOutcome::RetryAt(4),
        )],
        3,
    )
    .await
    .unwrap();
    assert_eq!(s.task_deliveries(t.id).await.unwrap()[0].1.len(), 1);
    // Another key's delete finds nothing and changes nothing.
    assert!(!s.delete_task(other, t.id).await.unwrap());
    assert!(s.get_task(owner, t.id).await.unwrap().is_some());
    assert!(s.delete_task(owner, t.id).await.unwrap());
    assert!(s.get_task(owner, t.id).await.unwrap().is_none());
    assert!(s.load_task(t.id).await.unwrap().is_none());
    assert!(s.task_events(t.id).await.unwrap().is_empty());
    assert!(s.task_deliveries(t.id).await.unwrap().is_empty());
    // An attempt finishing after the delete records nothing, and is no error.
    let late_attempt = gengate_core::DeliveryAttempt {
        attempt: 2,
        ..attempt
    };
    s.finish_deliveries(
        &[settle(
            &first,
            &late_attempt,
            gengate_core::DeliveryOutcome::Delivered,
        )],
        5,
    )
    .await
    .unwrap();
    assert!(s.task_deliveries(t.id).await.unwrap().is_empty());
    // Gone: a second delete and a late update find nothing.
    assert!(!s.delete_task(owner, t.id).await.unwrap());
    let open = s
        .create_task(owner, &new_task(None), 1, 9, &Admission::FREE)
        .await
        .unwrap();
    assert!(s.delete_task(owner, open.id).await.unwrap());
    let late = TaskUpdate::to_state(TaskState::Processing);
    assert!(
        s.update_task(open.id, open.version, &[late], 3)
            .await
            .unwrap()
            .is_none()
    );
    // The key's other task is untouched.
    assert!(s.get_task(owner, kept.id).await.unwrap().is_some());
}

fn settle(
    d: &gengate_core::Delivery,
    a: &gengate_core::DeliveryAttempt,
    outcome: gengate_core::DeliveryOutcome,
) -> gengate_core::Settlement {
    gengate_core::Settlement {
        delivery: d.clone(),
        attempt: a.clone(),
        outcome,
    }
}

fn attempt(n: u32, at: i64, status: u16) -> gengate_core::DeliveryAttempt {
    gengate_core::DeliveryAttempt {
        attempt: n,
        at,
        status: Some(status),
        error: None,
        latency_ms: 5,
        next_attempt_at: None,
    }
}

async fn callbacks_go_in_order_and_stop_after_a_410(s: Arc<dyn TaskStore>) {
    use gengate_core::{DeliveryOutcome, DeliveryState};
    let owner = Uuid::now_v7();
    let new = hooked_task();
    let t = s
        .create_task(owner, &new, 1, 9, &Admission::FREE)
        .await
        .unwrap();
    let t = move_to(s.as_ref(), &t, TaskState::Processing, 2).await;
    // One delivery per event; the second waits for the first.
    let claimed = s.claim_deliveries(3, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let first = &claimed[0];
    assert_eq!((first.seq, first.event_state), (1, TaskState::Pending));
    assert!(s.claim_deliveries(3, 60_000, 10).await.unwrap().is_empty());
    s.finish_deliveries(
        &[settle(first, &attempt(1, 3, 410), DeliveryOutcome::Gone)],
        3,
    )
    .await
    .unwrap();
    // The 410 settled the later delivery too, and later events are
    // recorded but not sent.
    move_to(s.as_ref(), &t, TaskState::Completed, 4).await;
    assert!(s.claim_deliveries(5, 60_000, 10).await.unwrap().is_empty());
    let all = s.task_deliveries(t.id).await.unwrap();
    let states: Vec<_> = all.iter().map(|(d, _)| (d.seq, d.state)).collect();
    assert_eq!(
        states,
        [
            (1, DeliveryState::Gone),
            (2, DeliveryState::Gone),
            (3, DeliveryState::Gone)
        ]
    );
    assert_eq!(all[0].1.len(), 1);
    assert_eq!(all[0].1[0].status, Some(410));
    assert_eq!(s.task_events(t.id).await.unwrap().len(), 3);
    // Asked to, the same event goes again at once, under the same id.
    let again = s
        .redeliver(t.id, first.id, 6)
        .await
        .unwrap()
        .expect("redelivered");
    assert_eq!(
        (again.event_id, again.state),
        (first.event_id, DeliveryState::Pending)
    );
    assert_ne!(again.id, first.id);
    assert!(
        s.redeliver(Uuid::now_v7(), first.id, 6)
            .await
            .unwrap()
            .is_none()
    );
    let claimed = s.claim_deliveries(6, 60_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), [again.id]);
    s.finish_deliveries(
        &[settle(
            &claimed[0],
            &attempt(1, 6, 200),
            DeliveryOutcome::Delivered,
        )],
        6,
    )
    .await
    .unwrap();
    let all = s.task_deliveries(t.id).await.unwrap();
    let (sent, _) = all.iter().find(|(d, _)| d.id == again.id).unwrap();
    assert_eq!((sent.state, sent.attempts), (DeliveryState::Delivered, 1));
}

async fn deliveries_settled_together_are_each_recorded(s: Arc<dyn TaskStore>) {
    use gengate_core::{DeliveryOutcome, DeliveryState};
    let owner = Uuid::now_v7();
    let new = hooked_task();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let t = s
            .create_task(owner, &new, 1, 9, &Admission::FREE)
            .await
            .unwrap();
        tasks.push(move_to(s.as_ref(), &t, TaskState::Processing, 2).await);
    }
    let claimed = s.claim_deliveries(3, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 4, "each task's first delivery");
    let of = |t: &Task| claimed.iter().find(|d| d.task_id == t.id).unwrap();
    // The last task is deleted while its attempt is in flight.
    assert!(s.delete_task(owner, tasks[3].id).await.unwrap());
    let retry = gengate_core::DeliveryAttempt {
        next_attempt_at: Some(50),
        ..attempt(1, 3, 503)
    };
    let settled = [
        settle(
            of(&tasks[0]),
            &attempt(1, 3, 200),
            DeliveryOutcome::Delivered,
        ),
        settle(of(&tasks[1]), &retry, DeliveryOutcome::RetryAt(50)),
        settle(of(&tasks[2]), &attempt(1, 3, 410), DeliveryOutcome::Gone),
        settle(
            of(&tasks[3]),
            &attempt(1, 3, 200),
            DeliveryOutcome::Delivered,
        ),
    ];
    s.finish_deliveries(&settled, 4).await.unwrap();
    let states = |all: Vec<(gengate_core::Delivery, Vec<gengate_core::DeliveryAttempt>)>| {
        all.iter()
            .map(|(d, a)| (d.seq, d.state, a.len()))
            .collect::<Vec<_>>()
    };
    use DeliveryState::*;
    let delivered = s.task_deliveries(tasks[0].id).await.unwrap();
    assert_eq!(states(delivered), [(1, Delivered, 1), (2, Pending, 0)]);
    let retried = s.task_deliveries(tasks[1].id).await.unwrap();
    assert_eq!(retried[0].0.next_attempt_at, Some(50));
    assert_eq!(states(retried), [(1, Pending, 1), (2, Pending, 0)]);
    let gone = s.task_deliveries(tasks[2].id).await.unwrap();
    assert_eq!(states(gone), [(1, Gone, 1), (2, Gone, 0)]);
    assert!(s.task_deliveries(tasks[3].id).await.unwrap().is_empty());
    // Only the delivered task's next delivery is due now: the retried one
    // waits for its first, and the gone one has nothing left to send.
    let next = s.claim_deliveries(5, 60_000, 10).await.unwrap();
    let next: Vec<_> = next.iter().map(|d| (d.task_id, d.seq)).collect();
    assert_eq!(next, [(tasks[0].id, 2)]);
}

async fn keys_are_found_rotated_and_revoked(s: Arc<dyn TaskStore>) {
    let key = gengate_core::ApiKey {
        hash: [7; 32],
        admin: true,
        created_at: 1,
        webhook_secret: Some("whsec_one".into()),
        ..key("ci", 0, false)
    };
    s.create_key(&key).await.unwrap();
    assert!(matches!(
        s.create_key(&key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.count_keys().await.unwrap(), 1);
    assert_eq!(s.get_key(key.id).await.unwrap().unwrap().name, "ci");
    let found = s.key_by_hash(&[7; 32]).await.unwrap().expect("by hash");
    assert_eq!((found.id, found.admin), (key.id, true));
    assert!(s.key_by_hash(&[8; 32]).await.unwrap().is_none());
    assert!(
        s.rotate_webhook_secret(key.id, "whsec_two", 50)
            .await
            .unwrap()
    );
    assert!(
        !s.rotate_webhook_secret(Uuid::now_v7(), "x", 50)
            .await
            .unwrap()
    );
    let rotated = s.get_key(key.id).await.unwrap().unwrap();
    assert_eq!(rotated.webhook_secret.as_deref(), Some("whsec_two"));
    assert_eq!(
        rotated.previous_webhook_secret.as_deref(),
        Some("whsec_one")
    );
    assert_eq!(rotated.previous_secret_until, Some(50));
    assert!(s.revoke_key(key.id, 9).await.unwrap());
    assert!(!s.revoke_key(key.id, 10).await.unwrap());
    let keys = s.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].revoked_at, Some(9));
}

/// An image result stored under `key`.
fn image_at(index: u32, key: &str) -> Artifact {
    Artifact {
        role: ArtifactRole::Image,
        index,
        key: key.into(),
        content_type: "image/png".into(),
        width: 1,
        height: 1,
        duration_secs: None,
        palette: None,
    }
}

/// A new task of its own key, pending.
async fn any_task(s: &dyn TaskStore) -> Task {
    let (owner, new) = (Uuid::now_v7(), new_task(None));
    s.create_task(owner, &new, 1, 1_000_000, &Admission::FREE)
        .await
        .unwrap()
}

/// Complete a new task of its own key with files `keys`, its results kept
/// until `keep_until`.
async fn complete_with(s: &dyn TaskStore, keys: &[&str], keep_until: Option<Millis>) -> Task {
    let t = any_task(s).await;
    let done = TaskUpdate {
        artifacts: Some((0..).zip(keys).map(|(i, k)| image_at(i, k)).collect()),
        keep_until,
        ..TaskUpdate::to_state(TaskState::Completed)
    };
    s.update_task(t.id, t.version, &[done], 10)
        .await
        .unwrap()
        .unwrap()
}

async fn doomed(s: &dyn TaskStore, as_of: Millis) -> Vec<String> {
    let files = s.doom_files(as_of, 100).await.unwrap();
    files.into_iter().map(|f| f.key).collect()
}

async fn files_are_kept_as_long_as_the_longest_task_needs_them(s: Arc<dyn TaskStore>) {
    // Writes hold their files (sizes known) before the tasks complete.
    assert!(s.keep_file("results/a.png", 10, Some(50)).await.unwrap());
    assert!(
        s.keep_file("results/shared.png", 7, Some(50))
            .await
            .unwrap()
    );
    let one = complete_with(
        s.as_ref(),
        &["results/a.png", "results/shared.png"],
        Some(200),
    )
    .await;
    assert_eq!(one.keep_until, Some(200));
    complete_with(s.as_ref(), &["results/shared.png"], Some(500)).await;
    let forever = complete_with(s.as_ref(), &["results/kept.png"], None).await;
    assert_eq!(forever.keep_until, None);
    // Files kept as long already: the tasks complete all the same.
    for (key, term) in [
        ("results/shared.png", Some(300)),
        ("results/kept.png", None),
    ] {
        let again = complete_with(s.as_ref(), &[key], term).await;
        assert_eq!(
            (again.state, again.keep_until),
            (TaskState::Completed, term)
        );
    }
    // A shorter term never shortens a longer one.
    assert!(
        s.keep_file("results/shared.png", 0, Some(100))
            .await
            .unwrap()
    );

    let totals = s.file_totals(300).await.unwrap();
    assert_eq!((totals.files, totals.bytes), (3, 17));
    assert_eq!((totals.expired_files, totals.expired_bytes), (1, 10));
    assert_eq!(doomed(s.as_ref(), 199).await, Vec::<String>::new());
    assert_eq!(doomed(s.as_ref(), 300).await, ["results/a.png"]);
    // Being deleted: nothing can keep it now; asked again, it is still doomed.
    assert!(!s.keep_file("results/a.png", 10, Some(1000)).await.unwrap());
    assert_eq!(doomed(s.as_ref(), 0).await, ["results/a.png"]);
    s.forget_files(&["results/a.png".into()]).await.unwrap();
    // Once forgotten, it can be stored and kept again.
    assert!(s.keep_file("results/a.png", 10, Some(400)).await.unwrap());
    assert_eq!(doomed(s.as_ref(), 450).await, ["results/a.png"]);
    s.forget_files(&["results/a.png".into()]).await.unwrap();
    // The shared file lives as long as its longest-lived task; the file of
    // a task kept for ever is never due.
    assert_eq!(doomed(s.as_ref(), 499).await, Vec::<String>::new());
    assert_eq!(doomed(s.as_ref(), i64::MAX).await, ["results/shared.png"]);
    s.forget_files(&["results/shared.png".into()])
        .await
        .unwrap();
    assert_eq!(doomed(s.as_ref(), i64::MAX).await, Vec::<String>::new());
    let left = s.file_totals(i64::MAX).await.unwrap();
    assert_eq!((left.files, left.expired_files), (1, 0));

    // A task cannot complete pointing at a file being deleted: nothing of
    // the completion is written, and it can complete once the file is back.
    assert!(s.keep_file("results/late.png", 1, Some(5)).await.unwrap());
    assert_eq!(doomed(s.as_ref(), 10).await, ["results/late.png"]);
    let t = any_task(s.as_ref()).await;
    let done = TaskUpdate {
        artifacts: Some(vec![image_at(0, "results/late.png")]),
        keep_until: Some(100),
        ..TaskUpdate::to_state(TaskState::Completed)
    };
    assert!(matches!(
        s.update_task(t.id, t.version, std::slice::from_ref(&done), 10)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let still = s.load_task(t.id).await.unwrap().unwrap();
    assert_eq!(
        (still.state, still.version),
        (TaskState::Pending, t.version)
    );
    assert_eq!(s.task_events(t.id).await.unwrap().len(), 1);
    s.forget_files(&["results/late.png".into()]).await.unwrap();
    assert!(s.keep_file("results/late.png", 1, Some(50)).await.unwrap());
    let done = s
        .update_task(t.id, t.version, &[done], 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, TaskState::Completed);
}

async fn a_file_is_either_kept_or_deleted_whoever_races(s: Arc<dyn TaskStore>) {
    // Every file expired; a sweep dooms them while writers keep each one.
    let keys: Vec<String> = (0..64).map(|i| format!("results/{i}.png")).collect();
    for k in &keys {
        assert!(s.keep_file(k, 1, Some(10)).await.unwrap());
    }
    let sweep = {
        let s = s.clone();
        tokio::spawn(async move { s.doom_files(100, 1000).await.unwrap() })
    };
    let kept = futures::future::join_all(keys.iter().map(|k| {
        let (s, k) = (s.clone(), k.clone());
        async move { (s.keep_file(&k, 1, Some(10_000)).await.unwrap(), k) }
    }))
    .await;
    let mut doomed: Vec<String> = sweep.await.unwrap().into_iter().map(|f| f.key).collect();
    doomed.extend(
        s.doom_files(100, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.key),
    );
    for (was_kept, key) in kept {
        assert_ne!(
            was_kept,
            doomed.contains(&key),
            "{key}: kept {was_kept}; a file is kept or doomed, never both or neither"
        );
    }
}

async fn a_lease_has_one_holder_until_it_lapses(s: Arc<dyn TaskStore>) {
    assert!(s.take_lease("sweep", "a", 0, 100).await.unwrap());
    assert!(!s.take_lease("sweep", "b", 50, 150).await.unwrap());
    // Its holder renews it; another name is another lease.
    assert!(s.take_lease("sweep", "a", 60, 160).await.unwrap());
    assert!(s.take_lease("other", "b", 60, 160).await.unwrap());
    assert!(!s.take_lease("sweep", "b", 150, 250).await.unwrap());
    // Lapsed, anyone may take it; released, too.
    assert!(s.take_lease("sweep", "b", 170, 270).await.unwrap());
    s.release_lease("sweep", "a").await.unwrap();
    assert!(!s.take_lease("sweep", "a", 180, 280).await.unwrap());
    s.release_lease("sweep", "b").await.unwrap();
    assert!(s.take_lease("sweep", "a", 180, 280).await.unwrap());
}

async fn events_are_fed_in_time_order_by_position(s: Arc<dyn TaskStore>) {
    let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
    let a = s
        .create_task(mine, &new_task(None), 100, 9000, &Admission::FREE)
        .await
        .unwrap();
    let b = s
        .create_task(theirs, &new_task(None), 110, 9000, &Admission::FREE)
        .await
        .unwrap();
    let a2 = move_to(s.as_ref(), &a, TaskState::Processing, 120).await;
    move_to(s.as_ref(), &a2, TaskState::Completed, 130).await;
    move_to(s.as_ref(), &b, TaskState::Failed, 140).await;
    let start = (0, Uuid::nil());
    let seen = |rows: Vec<(gengate_core::TaskEvent, Task)>| {
        rows.into_iter()
            .map(|(e, t)| (e.created_at, e.state, t.id))
            .collect::<Vec<_>>()
    };
    let all = s.events_since(None, start, 1000, 100).await.unwrap();
    // Each with its task as it is now.
    assert!(all.iter().all(|(e, t)| e.task_id == t.id));
    assert_eq!(all[1].1.state, TaskState::Failed);
    assert_eq!(
        seen(all.clone()),
        [
            (100, TaskState::Pending, a.id),
            (110, TaskState::Pending, b.id),
            (120, TaskState::Processing, a.id),
            (130, TaskState::Completed, a.id),
            (140, TaskState::Failed, b.id),
        ]
    );
    let own = s.events_since(Some(mine), start, 1000, 100).await.unwrap();
    assert_eq!(own.len(), 3);
    assert!(own.iter().all(|(_, t)| t.owner == mine));
    // Not past `until`; resumed strictly after a position; a page at a time.
    assert_eq!(
        s.events_since(None, start, 119, 100).await.unwrap().len(),
        2
    );
    let third = (all[2].0.created_at, all[2].0.id);
    let rest = s.events_since(None, third, 1000, 100).await.unwrap();
    assert_eq!(seen(rest), seen(all[3..].to_vec()));
    assert_eq!(s.events_since(None, start, 1000, 2).await.unwrap().len(), 2);
}
