//! The gengate command: `serve`, `keys`, `channels`, `prices`, `usage`, `migrate`.

mod billing_cli;
mod channels_cli;

use clap::{Parser, Subcommand};
use gengate::app;
use gengate::config::{self, CommonFlags, ServeFlags};
use gengate_engine::now_ms;
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
    /// Create or upgrade the database schema, then exit.
    Migrate,
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
        /// Print one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; requests with it are refused from then on.
    Revoke { id: Uuid },
    /// Give a key a new callback signing secret; the old one keeps signing
    /// (beside the new) for 24 hours, so receivers can switch over.
    RotateSecret { id: Uuid },
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("GENGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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

async fn keys(settings: config::Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = app::open_store(&settings, settings.migrate).await?;
    match cmd {
        KeysCommand::Create { name, admin, json } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let (secret, key) = gengate_server::auth::new_key(&name, admin, now_ms());
            store.create_key(&key).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.id, "name": key.name, "admin": key.admin, "key": secret, "webhook_secret": key.webhook_secret})
                );
            } else {
                println!(
                    "Created key {} ({}{}). Its secret is shown only this once:",
                    key.id,
                    key.name,
                    if admin { ", admin" } else { "" }
                );
                println!("{secret}");
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "admin": k.admin, "created_at": gengate_core::time::rfc3339_ms(k.created_at), "revoked": k.revoked_at.is_some()}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<36}  {:<6}  {:<8}  {:<24}  NAME",
                    "ID", "ADMIN", "STATUS", "CREATED"
                );
                for k in keys {
                    println!(
                        "{:<36}  {:<6}  {:<8}  {:<24}  {}",
                        k.id,
                        if k.admin { "yes" } else { "no" },
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        gengate_core::time::rfc3339_ms(k.created_at),
                        k.name
                    );
                }
            }
        }
        KeysCommand::RotateSecret { id } => {
            let secret = gengate_engine::webhooks::signing::new_secret();
            let overlap_until = now_ms() + 24 * 3600 * 1000;
            anyhow::ensure!(
                store
                    .rotate_webhook_secret(id, &secret, overlap_until)
                    .await?,
                "no key with id {id}"
            );
            println!(
                "New callback signing secret for key {id}; the old one also signs for 24 hours:"
            );
            println!("{secret}");
        }
        KeysCommand::Revoke { id } => {
            anyhow::ensure!(
                store.revoke_key(id, now_ms()).await?,
                "no active key with id {id}"
            );
            println!("revoked key {id}");
        }
    }
    Ok(())
}
