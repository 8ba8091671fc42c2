//! The crash loop at CI size (`gengate_testkit::crash` says what it does
//! and checks; `cargo run --release -p bench -- crash` runs it large): one
//! instance on SQLite, three on PostgreSQL, each SIGKILLed three times
//! while 10 % of upstream requests, sandbox tasks and callbacks fail.

use gengate_testkit::crash::{self, Database, Plan};

use crate::harness::procs::BIN;

fn plan(instances: usize) -> Plan {
    Plan {
        tasks: 300,
        kills: 3,
        instances,
        clients: 8,
        fault_rate: 0.1,
    }
}

async fn run(db: Database, instances: usize) {
    let dir = tempfile::tempdir().unwrap();
    let report = crash::run(BIN.as_ref(), dir.path(), db, &plan(instances))
        .await
        .expect("the crash loop runs");
    eprintln!("{report}");
    assert!(report.lost_nothing(), "{report}");
    assert_eq!(report.kills, 3);
    assert!(report.acknowledged >= 290, "{report}");
    assert!(
        report.completed > 0 && report.failed > 0,
        "faults were served: {report}"
    );
    assert!(
        report.upstream_faults > 0 && report.callbacks_refused > 0,
        "{report}"
    );
    assert!(report.delivered > report.acknowledged, "{report}");
    assert!(
        report.images_answered > 0,
        "synchronous answers too: {report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_survives_the_crash_loop() {
    let _turn = crate::harness::sharing_the_machine().await;
    run(Database::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_postgres_instances_survive_the_crash_loop() {
    let _turn = crate::harness::sharing_the_machine().await;
    let Some(db) = gengate_testkit::PgTestDb::create().await else {
        return;
    };
    run(Database::Postgres(db.url.clone()), 3).await;
    db.drop_db().await;
}
