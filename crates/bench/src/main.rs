//! `cargo run --release -p bench -- [--quick] [scenario...]`: measures
//! gengate against DESIGN.md's performance targets on this machine, prints
//! one table and writes it to BENCHMARKS.md. Not a test: figures are
//! compared as ratios taken in one run.

use clap::Parser;

mod gateway;
mod load;
mod mirroring;
mod report;
mod sandbox_video;
mod scenarios;
mod sync_images;

#[derive(Parser)]
#[command(about = "gengate's bench harness")]
struct Cli {
    /// About a minute instead of up to ten.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (default: all): batch, scale, submits, e2e, inflight, upstream, slow, mirror, flood, pg, callback, sandbox, sync;
    /// or `crash` alone (the reliability suite's crash loop, not a benchmark).
    scenarios: Vec<String>,
    /// crash: tasks to submit.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// crash: SIGKILLs, evenly through the submits.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// crash: three instances on this (empty) PostgreSQL database instead
    /// of one on SQLite.
    #[arg(long)]
    postgres: Option<String>,
}

fn main() -> anyhow::Result<()> {
    for (name, value) in mirroring::S3_ENV {
        // SAFETY: set before the runtime starts, while this is the only thread.
        unsafe { std::env::set_var(name, value) };
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.scenarios == ["crash"] {
        return crash(&cli).await;
    }
    let all = [
        "batch", "scale", "submits", "e2e", "inflight", "upstream", "slow", "mirror", "flood",
        "pg", "callback", "sandbox", "sync",
    ];
    for s in &cli.scenarios {
        anyhow::ensure!(
            all.contains(&s.as_str()),
            "unknown scenario {s:?}; choose from {all:?}"
        );
    }
    let wanted = |s: &str| cli.scenarios.is_empty() || cli.scenarios.iter().any(|w| w == s);
    let bin = gateway::build()?;
    let plan = scenarios::Plan::new(cli.quick);
    let mut rows = Vec::new();
    if wanted("batch") {
        eprintln!("== batch get");
        rows.extend(scenarios::batch_ratio(&bin, plan).await?);
    }
    if wanted("scale") {
        eprintln!("== scale");
        rows.extend(scenarios::scale(&bin, plan).await?);
    }
    if wanted("submits") {
        eprintln!("== durable submits");
        rows.extend(scenarios::submits(&bin, plan).await?);
    }
    if wanted("e2e") {
        eprintln!("== end to end");
        rows.extend(scenarios::end_to_end(&bin, plan).await?);
    }
    if wanted("inflight") {
        eprintln!("== in flight");
        rows.extend(scenarios::in_flight(&bin, plan).await?);
    }
    if wanted("upstream") {
        eprintln!("== upstream cost");
        rows.extend(scenarios::upstream_cost(&bin, plan).await?);
    }
    if wanted("slow") {
        eprintln!("== slow upstream");
        rows.extend(scenarios::slow_upstream(&bin, plan).await?);
    }
    if wanted("mirror") {
        eprintln!("== result mirroring");
        rows.extend(mirroring::mirroring(cli.quick).await?);
    }
    if wanted("sandbox") {
        eprintln!("== sandbox video");
        rows.extend(sandbox_video::sandbox_video(cli.quick).await?);
    }
    if wanted("flood") {
        eprintln!("== flood");
        rows.extend(scenarios::flood(&bin, plan).await?);
    }
    if wanted("pg") {
        eprintln!("== PostgreSQL");
        rows.extend(scenarios::postgres(&bin, plan).await?);
    }
    if wanted("callback") {
        eprintln!("== callback latency");
        rows.extend(scenarios::callback_latency(&bin, plan).await?);
    }
    if wanted("sync") {
        eprintln!("== synchronous images");
        rows.extend(sync_images::sync_images(&bin, plan).await?);
    }
    let table = report::table(&rows);
    println!("{table}");
    let mut command = String::from("cargo run --release -p bench --");
    if cli.quick {
        command.push_str(" --quick");
    }
    for s in &cli.scenarios {
        command.push(' ');
        command.push_str(s);
    }
    // Each scenario can be rerun alone; say how, for every one in the table.
    let mut notes: Vec<String> = all
        .iter()
        .filter(|s| wanted(s))
        .map(|s| {
            let quick = if cli.quick { " --quick" } else { "" };
            format!("Scenario `{s}` alone: `cargo run --release -p bench --{quick} {s}`")
        })
        .collect();
    notes.push(
        "Micro-benchmarks of the hot paths (rendering, validation, the batch-get query): \
         `cargo bench -p gengate-core` and `cargo bench -p gengate-store`"
            .into(),
    );
    report::write_markdown(&rows, &command, &notes)?;
    eprintln!("wrote BENCHMARKS.md");
    Ok(())
}

/// The crash loop, large: prints its report; fails unless nothing was lost.
async fn crash(cli: &Cli) -> anyhow::Result<()> {
    use gengate_testkit::crash::{self, Database, Plan};
    let bin = gateway::build()?;
    let (db, instances) = match &cli.postgres {
        Some(url) => (Database::Postgres(url.clone()), 3),
        None => (Database::Sqlite, 1),
    };
    let plan = Plan {
        tasks: cli.tasks,
        kills: cli.kills,
        instances,
        clients: 32,
        fault_rate: 0.1,
    };
    let dir = tempfile::tempdir()?;
    eprintln!("== crash loop: {plan:?} (logs in {})", dir.path().display());
    let report = crash::run(&bin, dir.path(), db, &plan).await?;
    println!("{report}");
    anyhow::ensure!(report.lost_nothing(), "the crash loop lost something");
    Ok(())
}
