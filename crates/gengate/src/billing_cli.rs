//! `gengate prices` and `gengate usage`: the price book and the usage
//! report, on the store directly, through the same engine functions as the
//! admin API. Running instances re-read stored prices within seconds.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Subcommand;
use gengate_core::Price;
use gengate_core::usage::{self, UsageParams};
use gengate_engine::now_ms;
use gengate_engine::prices::Prices;

use crate::app;
use crate::config::Settings;

#[derive(Subcommand)]
pub enum PricesCommand {
    /// Every price in force: gengate.toml's and the stored ones.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a model's price (`*`: every model without its own); tasks already
    /// accepted keep theirs.
    Set {
        model: String,
        #[arg(long, default_value_t = 0)]
        per_task: i64,
        #[arg(long, default_value_t = 0)]
        per_image: i64,
        /// Per second of video at a resolution, e.g. `720p=4` or `*=2` (repeatable).
        #[arg(long, value_name = "RESOLUTION=CREDITS")]
        per_second: Vec<String>,
    },
    /// Remove a stored price.
    Delete { model: String },
}

/// `gengate usage`: every key's tasks and credits (or one key's).
#[derive(clap::Args)]
pub struct UsageCommand {
    /// From this instant (RFC 3339 or Unix ms); default 30 days ago.
    #[arg(long)]
    from: Option<String>,
    /// Until this instant; default now.
    #[arg(long)]
    to: Option<String>,
    /// day, model or channel.
    #[arg(long, default_value = "day")]
    group_by: String,
    /// Only this key's tasks (its id).
    #[arg(long)]
    key: Option<String>,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn prices(settings: Settings, cmd: PricesCommand) -> anyhow::Result<()> {
    let store = app::open_store(&settings, settings.migrate).await?;
    let prices = Prices::new(settings.prices.clone());
    prices.set_stored(store.list_prices().await?);
    match cmd {
        PricesCommand::List { json } => {
            let rows = prices.list();
            if json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|(p, src)| {
                        let mut v = serde_json::to_value(p).unwrap_or_default();
                        v["source"] = src.as_str().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            println!(
                "{:<24}  {:>9}  {:>9}  {:<28}  SOURCE",
                "MODEL", "PER_TASK", "PER_IMAGE", "PER_VIDEO_SECOND"
            );
            for (p, src) in rows {
                let secs: Vec<_> = p
                    .per_video_second
                    .iter()
                    .map(|(r, c)| format!("{r}={c}"))
                    .collect();
                println!(
                    "{:<24}  {:>9}  {:>9}  {:<28}  {}",
                    p.model,
                    p.per_task,
                    p.per_image,
                    secs.join(","),
                    src.as_str()
                );
            }
        }
        PricesCommand::Set {
            model,
            per_task,
            per_image,
            per_second,
        } => {
            let mut per_video_second = BTreeMap::new();
            for s in &per_second {
                let (res, credits) = s
                    .split_once('=')
                    .with_context(|| format!("--per-second {s:?}: write RESOLUTION=CREDITS"))?;
                let credits = credits
                    .parse()
                    .with_context(|| format!("--per-second {s:?}: credits must be an integer"))?;
                per_video_second.insert(res.to_string(), credits);
            }
            let price = Price {
                model,
                per_task,
                per_image,
                per_video_second,
            };
            prices.put(store.as_ref(), &price).await?;
            println!("price of {} set", price.model);
        }
        PricesCommand::Delete { model } => {
            prices.delete(store.as_ref(), &model).await?;
            println!("price of {model} removed");
        }
    }
    Ok(())
}

pub async fn usage(settings: Settings, cmd: UsageCommand) -> anyhow::Result<()> {
    let store = app::open_store(&settings, settings.migrate).await?;
    let req = UsageParams {
        from: cmd.from,
        to: cmd.to,
        group_by: Some(cmd.group_by),
        key: cmd.key,
    }
    .check(now_ms())?;
    let report = gengate_engine::service::usage_report(store.as_ref(), req.key, &req).await?;
    if cmd.csv {
        print!("{}", usage::csv(&report));
    } else if cmd.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let head: Vec<String> = usage::COLUMNS[1..]
            .iter()
            .map(|c| format!("{c:>13}"))
            .collect();
        println!(
            "{:<24}{}",
            usage::COLUMNS[0].to_uppercase(),
            head.join("").to_uppercase()
        );
        for l in &report.data {
            let cells: Vec<String> = l.figures().iter().map(|f| format!("{f:>13}")).collect();
            println!("{:<24}{}", l.group, cells.join(""));
        }
    }
    Ok(())
}
