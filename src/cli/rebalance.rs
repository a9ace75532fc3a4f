//! `pgshard rebalance plan`: proposes slot moves evening out slots (or, `--by rows`, rows)
//! across shards, printed as the `pgshard rebalance move` commands that carry them out and
//! optionally written to a plan file. Glue only: the planning is `sharding::rebalance`, the
//! live map comes from `catalog`; this never changes the catalog or a shard.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::catalog::{self, LiveMap};
use crate::config::Config;
use crate::sharding::rebalance::{self, Move};
use crate::sharding::{key_from_text, SLOT_COUNT};

/// Rows fetched per round trip when counting rows per slot.
const FETCH_ROWS: usize = 10_000;

/// Arguments of `pgshard rebalance`.
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    #[command(subcommand)]
    pub command: RebalanceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RebalanceCommand {
    /// Propose moves that even out the slots (or rows) across shards.
    Plan(PlanArgs),
}

/// What `pgshard rebalance plan` weighs slots by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weigh {
    /// Every slot counts the same.
    Slots,
    /// A slot weighs its rows in every sharded table.
    Rows,
}

/// Arguments of `pgshard rebalance plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The config file naming the shards and the catalog.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The shards to even out across, comma-separated (default: every shard of the config);
    /// shards left out give away all their slots.
    #[arg(long, value_delimiter = ',', value_name = "SHARDS")]
    pub shards: Vec<String>,
    /// Even out slot counts (default) or rows.
    #[arg(long, value_enum, default_value = "slots")]
    pub by: Weigh,
    /// Also write the plan to this file (TOML; see README, "Live shard map").
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `pgshard rebalance`.
pub fn run(args: RebalanceArgs) -> anyhow::Result<()> {
    let RebalanceCommand::Plan(args) = args.command;
    let config = Config::load(&args.config)
        .with_context(|| format!("config file {} is not usable", args.config.display()))?;
    let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    let targets = target_indices(&names, &args.shards)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (live, weights) = runtime.block_on(async {
        let mut client = catalog::connect(&config.catalog_url()).await?;
        let live = catalog::load(&mut client).await?;
        let weights = match args.by {
            Weigh::Slots => vec![1u64; usize::from(SLOT_COUNT)],
            Weigh::Rows => rows_per_slot(&config).await?,
        };
        anyhow::Ok((live, weights))
    })?;
    let map = live.to_shard_map(&names)?;
    let owner: Vec<usize> = (0..SLOT_COUNT).map(|s| map.shard_of_slot(s)).collect();
    let moves = rebalance::plan(&owner, &weights, &targets);
    print!(
        "{}",
        render(&args.config, &names, &owner, &weights, &moves, &live)
    );
    if let Some(out) = &args.out {
        let file = plan_file(&live, args.by, &targets, &names, &moves);
        std::fs::write(out, file).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Indices of the named shards (all when none are named); an unknown name is an error.
fn target_indices(names: &[String], wanted: &[String]) -> anyhow::Result<Vec<usize>> {
    if wanted.is_empty() {
        return Ok((0..names.len()).collect());
    }
    let mut out = Vec::new();
    for w in wanted {
        let Some(i) = names.iter().position(|n| n == w.trim()) else {
            anyhow::bail!(
                "--shards names {w:?}, which is not a shard of the config ({})",
                names.join(", ")
            );
        };
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// `#` lines with each shard's weight before and after, then one `pgshard rebalance move`
/// line per move (nothing but the summary when the map is already even).
fn render(
    config_path: &Path,
    names: &[String],
    owner: &[usize],
    weights: &[u64],
    moves: &[Move],
    live: &LiveMap,
) -> String {
    let mut before = vec![0u64; names.len()];
    for (&o, &w) in owner.iter().zip(weights) {
        before[o] += w;
    }
    let mut after = before.clone();
    for m in moves {
        let w: u64 = m.slots.clone().map(|s| weights[usize::from(s)]).sum();
        after[m.from] -= w;
        after[m.to] += w;
    }
    let slots: usize = moves.iter().map(|m| m.slots.clone().count()).sum();
    let mut out = format!(
        "# live map epoch {}: {} moves, {slots} slots\n",
        live.epoch,
        moves.len()
    );
    for (i, name) in names.iter().enumerate() {
        out.push_str(&format!("# {name}: {} -> {}\n", before[i], after[i]));
    }
    for m in moves {
        out.push_str(&format!(
            "pgshard rebalance move --config {} --slots {} --to {}\n",
            config_path.display(),
            catalog::range(&m.slots),
            names[m.to]
        ));
    }
    out
}

/// The plan file: TOML with the epoch the plan was made against, what it evens out, across
/// which shards, and the moves in order.
fn plan_file(
    live: &LiveMap,
    by: Weigh,
    targets: &[usize],
    names: &[String],
    moves: &[Move],
) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let shards: Vec<String> = targets.iter().map(|&t| quote(&names[t])).collect();
    let mut out = format!(
        "# pgshard rebalance plan; `pgshard rebalance apply` runs the moves in order.\n\
         version = 1\nepoch = {}\nby = \"{}\"\nshards = [{}]\n",
        live.epoch,
        if by == Weigh::Rows { "rows" } else { "slots" },
        shards.join(", ")
    );
    for m in moves {
        out.push_str(&format!(
            "\n[[moves]]\nslots = \"{}\"\nfrom = {}\nto = {}\n",
            catalog::range(&m.slots),
            quote(&names[m.from]),
            quote(&names[m.to])
        ));
    }
    out
}

/// Rows per slot across every sharded table, counted on each shard's primary: each key is
/// read (as text, through a cursor) and hashed here with the router's own hash, so the count
/// is exactly where the router would send each row.
async fn rows_per_slot(config: &Config) -> anyhow::Result<Vec<u64>> {
    let mut weights = vec![0u64; usize::from(SLOT_COUNT)];
    for (i, shard) in config.shards.iter().enumerate() {
        let mut client = catalog::connect(&config.primary_url(i))
            .await
            .with_context(|| format!("counting rows on shard {}", shard.name))?;
        for table in &config.sharding.tables {
            let key_type = table.key_type.unwrap_or(config.sharding.key_type);
            let column = table
                .key_column
                .as_deref()
                .unwrap_or(&config.sharding.key_column);
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "DECLARE pgshard_keys NO SCROLL CURSOR FOR \
                 SELECT ({column})::text FROM {} WHERE ({column}) IS NOT NULL",
                table.name
            ))
            .await
            .with_context(|| format!("reading {} on shard {}", table.name, shard.name))?;
            loop {
                let rows = tx
                    .query(&format!("FETCH {FETCH_ROWS} FROM pgshard_keys"), &[])
                    .await?;
                for row in &rows {
                    let text: &str = row.get(0);
                    let key = key_from_text(key_type, text)
                        .with_context(|| format!("a key of {} on {}", table.name, shard.name))?;
                    weights[usize::from(key.slot())] += 1;
                }
                if rows.len() < FETCH_ROWS {
                    break;
                }
            }
            tx.commit().await?;
        }
    }
    Ok(weights)
}
