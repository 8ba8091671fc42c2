//! `gengate storage`: what the configured storage holds, copying it to
//! another (moving from the local default to a bucket without losing
//! history), and deleting expired files now rather than at the next
//! sweep. Instances may keep running.

use clap::Subcommand;
use gengate_engine::storage::{Copied, MediaStore};
use gengate_engine::sweeper::Sweeper;

use gengate::config::Settings;

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Objects and bytes stored, by kind (results, inputs).
    Usage {
        #[arg(long)]
        json: bool,
    },
    /// Copy every object to another storage (`file:///dir` or
    /// `s3://bucket/prefix`, reached with the same `[s3]` settings and AWS
    /// environment); objects already there are left alone, so it can be run
    /// again until the switch.
    Copy {
        #[arg(long, value_name = "STORAGE_URL")]
        to: String,
    },
    /// Delete the files whose retention has passed (what the serving
    /// instances' sweep does every ten minutes), one sweep at a time.
    Gc {
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Judge expiry as at this time (RFC 3339) instead of now: with
        /// --dry-run, what a date will free.
        #[arg(long, value_name = "TIME")]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Let a later --as-of delete files before their term (and files
        /// being written), not only count them.
        #[arg(long, requires = "as_of")]
        early: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: Settings, cmd: StorageCommand) -> anyhow::Result<()> {
    let from = MediaStore::open(&settings.storage_url()?, &settings.s3)?;
    match cmd {
        StorageCommand::Gc {
            dry_run,
            as_of,
            early,
            json,
        } => {
            let now = gengate_engine::now_ms();
            let as_of = as_of.map_or(now, |t| t.timestamp_millis());
            anyhow::ensure!(
                as_of <= now || dry_run || early,
                "--as-of later than now would delete files before their term: \
                 add --dry-run to count them, or --early to delete them"
            );
            let store = gengate::app::open_store(&settings, settings.migrate).await?;
            let report = Sweeper::new(store, from).sweep(as_of, dry_run).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!("{verb} {} files ({} bytes)", report.files, report.bytes);
            }
            Ok(())
        }
        StorageCommand::Usage { json } => {
            let usage = from.usage().await?;
            if json {
                println!("{}", serde_json::to_string(&usage)?);
                return Ok(());
            }
            println!("storage {}", from.url());
            println!("{:<10} {:>10} {:>16}", "kind", "objects", "bytes");
            for u in &usage {
                println!("{:<10} {:>10} {:>16}", u.kind, u.objects, u.bytes);
            }
            let (objects, bytes) = usage
                .iter()
                .fold((0, 0), |(o, b), u| (o + u.objects, b + u.bytes));
            println!("{:<10} {:>10} {:>16}", "total", objects, bytes);
            Ok(())
        }
        StorageCommand::Copy { to } => {
            let target = MediaStore::open(&to, &settings.s3)?;
            anyhow::ensure!(
                !target.overlaps(&from),
                "--to {} is, or is inside or around, the storage in use ({})",
                target.url(),
                from.url()
            );
            eprintln!("copying {} to {}", from.url(), target.url());
            let report = from
                .copy_to(&target, |key, what| match what {
                    Copied::Copied(bytes) => eprintln!("copied {key} ({bytes} bytes)"),
                    Copied::Present => {}
                })
                .await?;
            println!(
                "copied {} objects ({} bytes); {} were there already",
                report.copied, report.bytes, report.present
            );
            Ok(())
        }
    }
}
