//! The gengate command: `serve`, `keys`, `ledger`, `channels`, `prices`,
//! `usage`, `storage`, `migrate`, and `tasks` (a client of a running gengate).

mod billing_cli;
mod channels_cli;
mod storage_cli;
mod tasks_cli;

use clap::{Parser, Subcommand};
use gengate::app;
use gengate::config::{self, CommonFlags, ServeFlags};
use gengate_core::credits::EntryKind;
use gengate_core::time::rfc3339_ms;
use gengate_core::{ApiKey, KeyLimits};
use gengate_engine::keys::{KeyPatch, KeyService, NewKey};
use gengate_server::admin_keys::{CreatedKey, KeyView};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "gengate",
    version,
    about = "A self-hosted gateway for asynchronous AI image and video generation"
)]
struct Cli {
    #[command(flatten)]
    common: CommonFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: HTTP API and background engine.
    Serve(Box<ServeFlags>),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage stored channels (upstreams added while gengate runs).
    #[command(subcommand)]
    Channels(Box<channels_cli::ChannelsCommand>),
    /// Manage the price book (gengate.toml's `[[prices]]` are read-only here).
    #[command(subcommand)]
    Prices(billing_cli::PricesCommand),
    /// Tasks and credits by day, model or channel.
    Usage(billing_cli::UsageCommand),
    /// Check the credits ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Result storage: what it holds, and copying it elsewhere.
    #[command(subcommand)]
    Storage(storage_cli::StorageCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Submit, follow and fetch tasks of a running gengate (`--url` or
    /// GENGATE_URL, the key in GENGATE_KEY).
    Tasks(tasks_cli::TasksArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key; its secret is printed once, alone on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// An admin key manages keys and channels.
        #[arg(long)]
        admin: bool,
        /// Credits it starts with (default: `default_credits`, none when unlimited).
        #[arg(long)]
        credits: Option<gengate_core::Credits>,
        /// Never refused for its balance.
        #[arg(long)]
        unlimited: bool,
        /// Print one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One key: its settings, balance and last ledger entries.
    Show {
        id: Uuid,
        /// Ledger entries shown, newest first.
        #[arg(long, default_value_t = 10)]
        entries: u32,
    },
    /// Change a key's settings; only those given change.
    Update {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Refuse the key (403) until enabled again.
        #[arg(long)]
        disable: bool,
        #[arg(long)]
        unlimited: Option<bool>,
        /// Tasks in flight at most.
        #[arg(long)]
        max_in_flight: Option<u32>,
        /// Credits charged per UTC day at most.
        #[arg(long)]
        daily_spend: Option<gengate_core::Credits>,
        /// Requests per second on each instance.
        #[arg(long)]
        rps: Option<u32>,
        /// The only models the key may use, comma-separated.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
    },
    /// Give a key credits (or, with --adjust, correct its balance).
    Credit {
        id: Uuid,
        #[arg(allow_hyphen_values = true)]
        amount: gengate_core::Credits,
        /// Recorded in the ledger.
        #[arg(long)]
        reason: Option<String>,
        /// An adjustment (either sign) instead of a grant.
        #[arg(long)]
        adjust: bool,
    },
    /// Revoke a key by id; requests with it are refused from then on.
    Revoke { id: Uuid },
    /// Give a key a new callback signing secret; the old one keeps signing
    /// (beside the new) for 24 hours, so receivers can switch over.
    RotateSecret { id: Uuid },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check every key's balance against the sum of its ledger entries;
    /// exits non-zero when any differs.
    Verify,
}

/// Standard error for log lines, dropping a line it cannot write (a full
/// disk under the log file): tracing-subscriber reports a failed write with
/// `eprintln!`, which panics when standard error itself fails, taking the
/// request or task that logged down with it.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(std::io::stderr().write(buf).unwrap_or(buf.len()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("GENGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let serve_flags = match &cli.command {
        Command::Serve(f) => (**f).clone(),
        _ => ServeFlags::default(),
    };
    let settings = config::load(&cli.common, &serve_flags)?;
    init_logging(settings.log_format == "json");
    match cli.command {
        Command::Serve(_) => serve(settings).await,
        Command::Migrate => {
            app::open_store(&settings, true).await?;
            println!("database at {} is up to date", settings.database_url());
            Ok(())
        }
        Command::Keys(cmd) => keys(settings, cmd).await,
        Command::Channels(cmd) => channels_cli::run(settings, *cmd).await,
        Command::Prices(cmd) => billing_cli::prices(settings, cmd).await,
        Command::Usage(cmd) => billing_cli::usage(settings, cmd).await,
        Command::Ledger(LedgerCommand::Verify) => ledger_verify(settings).await,
        Command::Storage(cmd) => storage_cli::run(settings, cmd).await,
        // A client of a running gengate, with its own exit codes.
        Command::Tasks(args) => std::process::exit(match tasks_cli::run(args).await {
            Ok(tasks_cli::Outcome::Done) => 0,
            Ok(tasks_cli::Outcome::Failed) => 1,
            Err(e) => {
                eprintln!("gengate: {e:#}");
                2
            }
        }),
    }
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let running = app::start(settings).await?;
    if let Some(key) = &running.new_admin_key {
        println!("Created the first admin key. It is shown only this once; keep it:");
        println!("{key}");
        if let Some(whsec) = &running.new_admin_webhook_secret {
            println!(
                "Its callback signing secret (rotate with `gengate keys rotate-secret`): {whsec}"
            );
        }
    }
    println!("gengate listening on http://{}", running.addr);
    let stop = running.shutdown_sender();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The keys in the configured store, as the admin API manages them.
async fn key_service(settings: &config::Settings) -> anyhow::Result<KeyService> {
    let store = app::open_store(settings, settings.migrate).await?;
    Ok(KeyService::new(store, settings.default_credits))
}

async fn keys(settings: config::Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let keys = key_service(&settings).await?;
    match cmd {
        KeysCommand::Create {
            name,
            admin,
            credits,
            unlimited,
            json,
        } => {
            let new = NewKey {
                name,
                admin,
                credits,
                unlimited,
                ..NewKey::default()
            };
            let (secret, key) = keys.create(new).await?;
            let whsec = key.webhook_secret.clone().unwrap_or_default();
            if json {
                let created = CreatedKey {
                    view: KeyView::from(&key),
                    key: secret,
                    webhook_secret: key.webhook_secret,
                };
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "Created key {} ({}{}), balance {}{}.",
                    key.id,
                    key.name,
                    if admin { ", admin" } else { "" },
                    key.balance,
                    if key.unlimited { ", unlimited" } else { "" },
                );
                println!("Its callback signing secret: {whsec}");
                println!("Its secret is shown only this once:");
                println!("{secret}");
            }
        }
        KeysCommand::List { json } => {
            let all = keys.list().await?;
            if json {
                let rows: Vec<_> = all.iter().map(KeyView::from).collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<6}  {:<8}  {:>12}  {:<24}  NAME",
                    "ID", "ADMIN", "STATUS", "BALANCE", "CREATED"
                );
                for k in all {
                    println!(
                        "{:<36}  {:<6}  {:<8}  {:>12}  {:<24}  {}",
                        k.id,
                        if k.admin { "yes" } else { "no" },
                        status(&k),
                        balance(&k),
                        rfc3339_ms(k.created_at),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Show { id, entries } => {
            let k = keys.get(id).await?;
            println!("id:         {}", k.id);
            println!("name:       {}", k.name);
            println!("admin:      {}", k.admin);
            println!("status:     {}", status(&k));
            println!("balance:    {}", balance(&k));
            println!("limits:     {}", serde_json::to_string(&k.limits)?);
            println!("created at: {}", rfc3339_ms(k.created_at));
            println!("ledger, newest first:");
            for e in keys.ledger(id, entries).await? {
                println!(
                    "  {}  {:<10}  {:>+12}  {}",
                    rfc3339_ms(e.at),
                    e.kind.as_str(),
                    e.amount,
                    e.task_id
                        .map(|t| format!("task {t}"))
                        .or(e.reason)
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Update {
            id,
            name,
            enable,
            disable,
            unlimited,
            max_in_flight,
            daily_spend,
            rps,
            models,
        } => {
            let current = keys.get(id).await?;
            let given = max_in_flight.is_some()
                || daily_spend.is_some()
                || rps.is_some()
                || models.is_some();
            let limits = given.then(|| KeyLimits {
                requests_per_sec: rps.or(current.limits.requests_per_sec),
                max_in_flight: max_in_flight.or(current.limits.max_in_flight),
                daily_spend: daily_spend.or(current.limits.daily_spend),
                models: models.or(current.limits.models),
            });
            let patch = KeyPatch {
                name,
                enabled: (enable || disable).then_some(enable),
                unlimited,
                limits,
            };
            let k = keys.update(id, patch).await?;
            println!(
                "updated key {} ({}): {}, limits {}",
                k.id,
                k.name,
                status(&k),
                serde_json::to_string(&k.limits)?
            );
        }
        KeysCommand::Credit {
            id,
            amount,
            reason,
            adjust,
        } => {
            let (kind, default_reason) = if adjust {
                (EntryKind::Adjustment, "adjusted with gengate keys credit")
            } else {
                (EntryKind::Grant, "granted with gengate keys credit")
            };
            let reason = reason.as_deref().unwrap_or(default_reason);
            let balance = keys.credit(id, kind, amount, reason).await?;
            println!("key {id}: {} {amount:+}, balance {balance}", kind.as_str());
        }
        KeysCommand::RotateSecret { id } => {
            let r = keys.rotate_secret(id).await?;
            println!(
                "New callback signing secret for key {id}; the old one also signs until {}:",
                rfc3339_ms(r.previous_secret_until)
            );
            println!("{}", r.webhook_secret);
        }
        KeysCommand::Revoke { id } => {
            keys.revoke(id).await?;
            println!("revoked key {id}");
        }
    }
    Ok(())
}

fn status(k: &ApiKey) -> &'static str {
    match (k.revoked_at, k.enabled) {
        (Some(_), _) => "revoked",
        (None, false) => "disabled",
        (None, true) => "active",
    }
}

fn balance(k: &ApiKey) -> String {
    if k.unlimited {
        format!("{} (unlimited)", k.balance)
    } else {
        k.balance.to_string()
    }
}

async fn ledger_verify(settings: config::Settings) -> anyhow::Result<()> {
    let v = key_service(&settings).await?.verify().await?;
    for t in &v.mismatched {
        println!(
            "key {}: balance {} but its entries sum to {}",
            t.key_id, t.balance, t.entries
        );
    }
    anyhow::ensure!(
        v.mismatched.is_empty(),
        "{} of {} keys do not match their ledger",
        v.mismatched.len(),
        v.keys
    );
    println!("ledger verified: {} keys", v.keys);
    Ok(())
}
