//! `pgshard rebalance plan`: proposes slot moves evening out slots (or, `--by rows`, rows)
//! across shards, printed as the `pgshard rebalance move` commands that carry them out and
//! optionally written to a plan file. Glue only: the planning is `sharding::rebalance`, the
//! live map comes from `catalog`; this never changes the catalog or a shard.

use std::ops::RangeInclusive;
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
    /// Move slots to a shard while applications keep reading and writing.
    Move(super::moves::MoveArgs),
    /// Run the moves of a plan file written by `rebalance plan --out`.
    Apply(super::moves::ApplyArgs),
    /// Show the moves recorded in the catalog's journal and how far each got.
    Status(super::moves::JournalArgs),
    /// Continue unfinished moves (after the mover or a router was stopped).
    Resume(super::moves::JournalArgs),
    /// Return unfinished moves that have not flipped the map to the state before them.
    Abort(super::moves::JournalArgs),
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
    let args = match args.command {
        RebalanceCommand::Plan(args) => args,
        RebalanceCommand::Move(args) => return super::moves::run_move(args),
        RebalanceCommand::Apply(args) => {
            let text = std::fs::read_to_string(&args.plan)
                .with_context(|| format!("reading plan file {}", args.plan.display()))?;
            let plan = PlanFile::parse(&text)?;
            let moves: Vec<(String, String)> = plan
                .moves
                .iter()
                .map(|m| (m.slots.clone(), m.to.clone()))
                .collect();
            return super::moves::run_apply(args, plan.epoch, &moves);
        }
        RebalanceCommand::Status(args) => return super::moves::run_status(args),
        RebalanceCommand::Resume(args) => return super::moves::run_resume(args),
        RebalanceCommand::Abort(args) => return super::moves::run_abort(args),
    };
    let config = Config::load(&args.config)
        .with_context(|| format!("config file {} is not usable", args.config.display()))?;
    let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    let targets = target_indices(&names, &args.shards)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (live, weights) = runtime.block_on(async {
        let mut client =
            catalog::connect(&config.catalog_url(), config.server_tls()?.as_deref()).await?;
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
    PlanFile {
        version: PlanFile::VERSION,
        epoch: live.epoch,
        by: if by == Weigh::Rows { "rows" } else { "slots" }.to_string(),
        shards: targets.iter().map(|&t| names[t].clone()).collect(),
        moves: moves
            .iter()
            .map(|m| PlannedMove {
                slots: catalog::range(&m.slots),
                from: names[m.from].clone(),
                to: names[m.to].clone(),
            })
            .collect(),
    }
    .to_toml()
}

/// A plan file, as `rebalance plan --out` writes it and `rebalance apply` is to read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Format of the file: [`PlanFile::VERSION`].
    pub version: u32,
    /// Epoch of the live map the plan was made against.
    pub epoch: u64,
    /// `slots` or `rows`.
    pub by: String,
    /// The shards evened out across.
    pub shards: Vec<String>,
    /// The moves, in the order to run them.
    #[serde(default)]
    pub moves: Vec<PlannedMove>,
}

/// One move of a plan file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedMove {
    /// `A-B` or `A`.
    pub slots: String,
    pub from: String,
    pub to: String,
}

impl PlanFile {
    /// The format this version of pgshard writes and reads.
    pub const VERSION: u32 = 1;

    /// Parses a plan file, checking its version and every move's slots.
    pub fn parse(text: &str) -> anyhow::Result<PlanFile> {
        let plan: PlanFile = toml::from_str(text).context("the plan file is not valid")?;
        anyhow::ensure!(
            plan.version == Self::VERSION,
            "plan file version {} is not {}; make the plan again with this pgshard",
            plan.version,
            Self::VERSION
        );
        for (i, m) in plan.moves.iter().enumerate() {
            m.slot_range()
                .with_context(|| format!("moves[{i}].slots"))?;
        }
        Ok(plan)
    }

    /// The file's text (TOML).
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let shards: Vec<String> = self.shards.iter().map(|s| quote(s)).collect();
        let mut out = format!(
            "# pgshard rebalance plan; `pgshard rebalance apply` runs the moves in order.\n\
             version = {}\nepoch = {}\nby = {}\nshards = [{}]\n",
            self.version,
            self.epoch,
            quote(&self.by),
            shards.join(", ")
        );
        for m in &self.moves {
            out.push_str(&format!(
                "\n[[moves]]\nslots = {}\nfrom = {}\nto = {}\n",
                quote(&m.slots),
                quote(&m.from),
                quote(&m.to)
            ));
        }
        out
    }
}

impl PlannedMove {
    /// The slots as a range.
    pub fn slot_range(&self) -> anyhow::Result<RangeInclusive<u16>> {
        let slot = |t: &str| -> anyhow::Result<u16> {
            match t.trim().parse::<u16>() {
                Ok(s) if s < SLOT_COUNT => Ok(s),
                _ => anyhow::bail!("{t:?} is not a slot (0 to {})", SLOT_COUNT - 1),
            }
        };
        let (a, b) = match self.slots.split_once('-') {
            Some((a, b)) => (slot(a)?, slot(b)?),
            None => (slot(&self.slots)?, slot(&self.slots)?),
        };
        anyhow::ensure!(a <= b, "{:?} runs backwards", self.slots);
        Ok(a..=b)
    }
}

/// Rows per slot across every sharded table, counted on each shard's primary: each key is
/// read (as text, through a cursor) and hashed here with the router's own hash, so the count
/// is exactly where the router would send each row.
async fn rows_per_slot(config: &Config) -> anyhow::Result<Vec<u64>> {
    let mut weights = vec![0u64; usize::from(SLOT_COUNT)];
    let tls = config.server_tls()?;
    for (i, shard) in config.shards.iter().enumerate() {
        let mut client = catalog::connect(&config.primary_url(i), tls.as_deref())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_file_reads_back_what_was_written() {
        let plan = PlanFile {
            version: PlanFile::VERSION,
            epoch: 7,
            by: "rows".into(),
            shards: vec!["s0".into(), "odd \"name\\".into()],
            moves: vec![
                PlannedMove {
                    slots: "0-99".into(),
                    from: "s0".into(),
                    to: "odd \"name\\".into(),
                },
                PlannedMove {
                    slots: "4095".into(),
                    from: "odd \"name\\".into(),
                    to: "s0".into(),
                },
            ],
        };
        let read = PlanFile::parse(&plan.to_toml()).unwrap();
        assert_eq!(read, plan);
        assert_eq!(read.moves[0].slot_range().unwrap(), 0..=99);
        assert_eq!(read.moves[1].slot_range().unwrap(), 4095..=4095);
        let empty = PlanFile {
            moves: Vec::new(),
            ..plan.clone()
        };
        assert_eq!(PlanFile::parse(&empty.to_toml()).unwrap(), empty);
    }

    #[test]
    fn a_plan_file_with_bad_slots_or_version_is_refused() {
        let base = "version = 1\nepoch = 1\nby = \"slots\"\nshards = [\"s0\"]\n";
        for slots in ["5-4", "4096", "a-b", "-1"] {
            let text =
                format!("{base}\n[[moves]]\nslots = \"{slots}\"\nfrom = \"s1\"\nto = \"s0\"\n");
            let err = format!("{:#}", PlanFile::parse(&text).unwrap_err());
            assert!(err.contains("moves[0].slots"), "{slots}: {err}");
        }
        let err = format!(
            "{:#}",
            PlanFile::parse(&base.replace("version = 1", "version = 2")).unwrap_err()
        );
        assert!(err.contains("version 2"), "{err}");
    }
}
