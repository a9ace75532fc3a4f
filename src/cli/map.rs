//! `pgshard map show --config FILE`: prints the live shard map from the catalog (shard, slot
//! ranges, slot count, epoch), and where the config's `[[shards]]` slots disagree with it.
//! Glue only: reads the catalog through `catalog`, never changes it.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::catalog::{self, LiveMap};
use crate::config::Config;

/// Arguments of `pgshard map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    #[command(subcommand)]
    pub command: MapCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MapCommand {
    /// Print the live shard map kept in the catalog.
    Show {
        /// The config file naming the catalog (`[catalog]`, or by default the first shard).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs `pgshard map`.
pub fn run(args: MapArgs) -> anyhow::Result<()> {
    let MapCommand::Show { config } = args.command;
    let config = Config::load(&config)
        .with_context(|| format!("config file {} is not usable", config.display()))?;
    let live = read_live_map(&config)?;
    print!("{}", render(&config, &live));
    Ok(())
}

/// The live map from the catalog `config` names (which must exist already).
pub fn read_live_map(config: &Config) -> anyhow::Result<LiveMap> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client =
            catalog::connect(&config.catalog_url(), config.server_tls()?.as_deref()).await?;
        Ok(catalog::load(&mut client).await?)
    })
}

/// `epoch N`, then one line per shard of the config (and any the catalog names beyond it):
/// `SHARD<TAB>SLOTS<TAB>COUNT`, then the disagreements with the config, as `#` lines.
pub fn render(config: &Config, live: &LiveMap) -> String {
    let mut out = format!("epoch {}\nshard\tslots\tcount\n", live.epoch);
    let by_shard = live.by_shard();
    let mut names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    for (name, _) in &by_shard {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in &names {
        let ranges = by_shard
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let count: usize = ranges.iter().map(|r| r.clone().count()).sum();
        let slots = match catalog::slot_list(&ranges) {
            list if list.is_empty() => "-".to_string(),
            list => list,
        };
        out.push_str(&format!("{name}\t{slots}\t{count}\n"));
    }
    let config_names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    match live.to_shard_map(&config_names) {
        Ok(map) => {
            for (slots, toml, now) in catalog::disagreements(&config.shard_map(), &map) {
                out.push_str(&format!(
                    "# slots {} are {toml}'s in the config, {now}'s in the live map\n",
                    catalog::range(&slots)
                ));
            }
        }
        Err(e) => out.push_str(&format!("# {e}\n")),
    }
    out
}
