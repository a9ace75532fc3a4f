//! `pgshard rebalance move | apply | status | resume | abort`: glue between the command line, the
//! catalog's journal and the mover (`rebalance::run`). Makes one move per source shard of the
//! slots named (copied once, cut over a batch of slots at a time), records them, runs them one
//! after another with progress on the terminal (plain lines otherwise). It never decides a
//! cutover step itself.

use std::io::IsTerminal as _;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::cutover::{self, Journal};
use crate::catalog::{self, LiveMap};
use crate::config::Config;
use crate::rebalance::run::{self, Event, Replica, RunOptions, Side};
use crate::rebalance::{MovePlan, Mover, Shard, SlotSet, TableSpec};
use crate::sharding::parse_slot_spec;

/// Options shared by the commands that run moves.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Slots per cutover: the move copies all its slots at once, then holds, verifies and
    /// flips this many at a time.
    #[arg(long, default_value_t = 16, value_name = "SLOTS")]
    pub batch: u16,
    /// How long to wait for every router's acknowledgement of a cutover hold.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub ack_timeout_ms: u64,
    /// Cutover attempts per move before giving up (the move stays resumable).
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// Print the steps without doing them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pgshard rebalance move`.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The config file naming the shards and the catalog.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The slots to move: `0-127`, `5`, or a list of them (`0-15,100`).
    #[arg(long, value_name = "SLOTS")]
    pub slots: String,
    /// The shard that will own them.
    #[arg(long, value_name = "SHARD")]
    pub to: String,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `pgshard rebalance apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The config file naming the shards and the catalog.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// A plan file written by `pgshard rebalance plan --out`.
    pub plan: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `pgshard rebalance status`, `resume` and `abort`.
#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    /// The config file naming the shards and the catalog.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Only this move (an id from `pgshard rebalance status`).
    #[arg(long = "move", value_name = "ID")]
    pub move_id: Option<String>,
}

/// Everything a command needs: the config, a runtime, a catalog connection.
struct Context {
    config: Config,
    runtime: tokio::runtime::Runtime,
    catalog: tokio_postgres::Client,
}

impl Context {
    fn open(path: &std::path::Path) -> anyhow::Result<Context> {
        let config = Config::load(path)
            .with_context(|| format!("config file {} is not usable", path.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let catalog = runtime.block_on(async {
            let tls = config.server_tls()?;
            let mut client = catalog::connect(&config.catalog_url(), tls.as_deref()).await?;
            catalog::open(&mut client, &config.shard_map()).await?;
            anyhow::Ok(client)
        })?;
        Ok(Context {
            config,
            runtime,
            catalog,
        })
    }

    fn live(&mut self) -> anyhow::Result<LiveMap> {
        Ok(self.runtime.block_on(catalog::load(&mut self.catalog))?)
    }

    fn names(&self) -> Vec<String> {
        self.config.shards.iter().map(|s| s.name.clone()).collect()
    }

    /// The moves carrying `slots` to `to`, one per source shard (cut over `batch` slots at a
    /// time), each recorded in the journal (a move aborted before starts over).
    fn plan_moves(
        &mut self,
        slots: &[RangeInclusive<u16>],
        to: &str,
        batch: u16,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Journal>> {
        let names = self.names();
        if !names.iter().any(|n| n == to) {
            anyhow::bail!(
                "--to names {to:?}, which is not a shard of the config ({})",
                names.join(", ")
            );
        }
        let live = self.live()?;
        let wanted = SlotSet::from_ranges(slots.iter().cloned());
        // Per source, in the order the slots first name them.
        let mut sources: Vec<(String, Vec<u16>)> = Vec::new();
        for slot in wanted.iter() {
            let owner = &live.owners[usize::from(slot)];
            if owner == to {
                continue;
            }
            match sources.iter_mut().find(|(from, _)| from == owner) {
                Some((_, slots)) => slots.push(slot),
                None => sources.push((owner.clone(), vec![slot])),
            }
        }
        let slice_size = i32::from(batch.max(1));
        let mut moves = Vec::new();
        for (from, list) in sources {
            let (first, last) = (list[0], list[list.len() - 1]);
            let id = format!("m{}_{first}_{last}", live.epoch);
            let set = SlotSet::from_ranges(list.iter().map(|&s| s..=s));
            let slots = run::spec(&set);
            let journal = Journal {
                move_id: id.clone(),
                slots: slots.clone(),
                source: from.clone(),
                target: to.to_string(),
                step: "planned".into(),
                slice_size,
                ..blank_journal()
            };
            if dry_run {
                moves.push(journal);
                continue;
            }
            let journal = self.runtime.block_on(async {
                let found =
                    cutover::journal_start(&self.catalog, &id, (&slots, slice_size), &from, to)
                        .await?;
                if found.step == "aborted" && found.slices_done == 0 {
                    cutover::journal_step(&self.catalog, &id, "planned").await?;
                    return anyhow::Ok(Journal {
                        step: "planned".into(),
                        ..found
                    });
                }
                anyhow::Ok(found)
            })?;
            moves.push(journal);
        }
        if moves.is_empty() {
            println!("nothing to move: shard {to} already owns every slot named");
        }
        Ok(moves)
    }

    /// A mover between the journal's shards, their tables described.
    fn mover(&self, journal: &Journal) -> anyhow::Result<Mover> {
        let names = self.names();
        let index = |name: &str| {
            names.iter().position(|n| n == name).with_context(|| {
                format!(
                    "move {} names shard {name:?}, which the config does not define",
                    journal.move_id
                )
            })
        };
        let (source, target) = (index(&journal.source)?, index(&journal.target)?);
        let ranges = parse_slot_spec(&journal.slots).map_err(anyhow::Error::msg)?;
        let plan = MovePlan::new(
            &journal.move_id,
            SlotSet::from_ranges(ranges),
            TableSpec::from_config(&self.config.sharding),
        )?;
        let tls = self.config.server_tls()?;
        Ok(self.runtime.block_on(async {
            let source = Shard::connect_tls(
                &journal.source,
                &self.config.primary_url(source),
                tls.as_deref(),
            )
            .await?;
            let target_url = self.config.primary_url(target);
            let connect = || Shard::connect_tls(&journal.target, &target_url, tls.as_deref());
            let (target, swap) = (connect().await?, connect().await?);
            Ok::<_, crate::rebalance::MoveError>(
                Mover::open(plan, source, target)
                    .await?
                    .with_swap_connection(swap),
            )
        })?)
    }

    /// Connections to the replicas of the move's source and target (one that cannot be
    /// reached is left out, with a warning: it is not serving reads either).
    fn replicas(&self, journal: &Journal) -> anyhow::Result<Vec<Replica>> {
        let tls = self.config.server_tls()?;
        let mut out = Vec::new();
        for (side, name) in [
            (Side::Source, &journal.source),
            (Side::Target, &journal.target),
        ] {
            let Some(idx) = self.config.shards.iter().position(|s| &s.name == name) else {
                continue;
            };
            for addr in &self.config.shards[idx].replicas {
                let url = self.config.server_url(idx, addr);
                let label = format!("{name} ({addr})");
                match self
                    .runtime
                    .block_on(Shard::connect_tls(&label, &url, tls.as_deref()))
                {
                    Ok(shard) => out.push(Replica { side, shard }),
                    Err(e) => eprintln!("warning: replica {label} left out: {e}"),
                }
            }
        }
        Ok(out)
    }

    /// Runs each move to its end, printing what it did.
    fn run_moves(&mut self, moves: &[Journal], args: &RunArgs) -> anyhow::Result<()> {
        if args.dry_run {
            for m in moves {
                print_dry_run(m);
            }
            return Ok(());
        }
        let options = RunOptions {
            ack_timeout: Duration::from_millis(args.ack_timeout_ms),
            attempts: args.attempts.max(1),
            ..RunOptions::default()
        };
        for journal in moves {
            let mut mover = self.mover(journal)?;
            let replicas = self.replicas(journal)?;
            let mut progress = Progress::new(journal);
            let outcome = self.runtime.block_on(run::run(
                &mut self.catalog,
                &mut mover,
                journal,
                &options,
                &replicas,
                &mut |e| progress.event(e),
            ));
            progress.finish();
            outcome.with_context(|| format!("move {} stopped", journal.move_id))?;
            let (done, holds) = self.runtime.block_on(async {
                let id = &journal.move_id;
                let done = cutover::journal_get(&self.catalog, id).await?;
                let holds = cutover::slice_holds(&self.catalog, id).await?;
                anyhow::Ok((done.unwrap_or_else(|| journal.clone()), holds))
            })?;
            println!("{}", summary(&done, &holds));
        }
        Ok(())
    }

    fn journal(&mut self, only: Option<&str>) -> anyhow::Result<Vec<Journal>> {
        let all = self
            .runtime
            .block_on(cutover::journal_list(&self.catalog))?;
        let picked: Vec<Journal> = all
            .into_iter()
            .filter(|j| only.is_none_or(|id| j.move_id == id))
            .collect();
        if let (Some(id), true) = (only, picked.is_empty()) {
            anyhow::bail!("no move {id:?} in the journal; `pgshard rebalance status` lists them");
        }
        Ok(picked)
    }
}

fn blank_journal() -> Journal {
    Journal {
        move_id: String::new(),
        slots: String::new(),
        source: String::new(),
        target: String::new(),
        step: String::new(),
        rows_copied: 0,
        bytes_copied: 0,
        copy_seconds: 0.0,
        changes_applied: 0,
        lag_bytes: None,
        attempts: 0,
        hold_ms: None,
        epoch_after: None,
        error: None,
        started: String::new(),
        updated: String::new(),
        slice_size: 0,
        slices_done: 0,
    }
}

fn unfinished(j: &Journal) -> bool {
    j.step != "done" && j.step != "aborted"
}

/// `pgshard rebalance move`.
pub fn run_move(args: MoveArgs) -> anyhow::Result<()> {
    let slots = parse_slot_spec(&args.slots)
        .map_err(|e| anyhow::anyhow!("--slots {:?}: {e}", args.slots))?;
    let mut cx = Context::open(&args.config)?;
    let moves = cx.plan_moves(&slots, &args.to, args.run.batch, args.run.dry_run)?;
    cx.run_moves(&moves, &args.run)
}

/// `pgshard rebalance apply`: `moves` are the plan file's `(slots, to)` in order, made against
/// the map of `epoch`.
pub fn run_apply(args: ApplyArgs, epoch: u64, moves: &[(String, String)]) -> anyhow::Result<()> {
    let mut cx = Context::open(&args.config)?;
    let live = cx.live()?;
    if live.epoch != epoch {
        eprintln!(
            "note: the plan was made at epoch {epoch}, the map is at {}; slots already on their \
             target are skipped",
            live.epoch
        );
    }
    for (slots, to) in moves {
        let slots = parse_slot_spec(slots).map_err(anyhow::Error::msg)?;
        let moves = cx.plan_moves(&slots, to, args.run.batch, args.run.dry_run)?;
        cx.run_moves(&moves, &args.run)?;
    }
    Ok(())
}

/// `pgshard rebalance resume`: every unfinished move (or the one named), in order.
pub fn run_resume(args: JournalArgs) -> anyhow::Result<()> {
    let mut cx = Context::open(&args.config)?;
    let moves: Vec<Journal> = cx
        .journal(args.move_id.as_deref())?
        .into_iter()
        .filter(unfinished)
        .collect();
    if moves.is_empty() {
        println!("no unfinished moves");
    }
    let run = RunArgs {
        batch: 16,
        ack_timeout_ms: 5000,
        attempts: 5,
        dry_run: false,
    };
    cx.run_moves(&moves, &run)
}

/// `pgshard rebalance abort`: every unfinished move (or the one named), newest first.
pub fn run_abort(args: JournalArgs) -> anyhow::Result<()> {
    let mut cx = Context::open(&args.config)?;
    let mut moves: Vec<Journal> = cx
        .journal(args.move_id.as_deref())?
        .into_iter()
        .filter(unfinished)
        .collect();
    moves.reverse();
    if moves.is_empty() {
        println!("no unfinished moves");
    }
    for journal in &moves {
        let mut mover = cx.mover(journal)?;
        cx.runtime
            .block_on(run::abort(&mut cx.catalog, &mut mover, journal))
            .with_context(|| format!("aborting move {}", journal.move_id))?;
        let (stay, moved) = split(journal);
        println!(
            "aborted move {}: slots {} stay on {}",
            journal.move_id, stay, journal.source
        );
        if !moved.is_empty() {
            println!(
                "slots {moved} were cut over before and stay on {to}; to return them: \
                 pgshard rebalance move --config {} --slots {moved} --to {from}",
                args.config.display(),
                to = journal.target,
                from = journal.source
            );
        }
    }
    Ok(())
}

/// `pgshard rebalance status`.
pub fn run_status(args: JournalArgs) -> anyhow::Result<()> {
    let mut cx = Context::open(&args.config)?;
    let moves = cx.journal(args.move_id.as_deref())?;
    let live = cx.live()?;
    println!("live map epoch {}", live.epoch);
    let (routers, holds) = cx.runtime.block_on(async {
        let routers = cutover::routers(&cx.catalog).await?;
        let holds = cutover::router_view(&cx.catalog).await?.holds;
        anyhow::Ok((routers, holds))
    })?;
    for (id, host, ago, standing) in &routers {
        println!("router {id} on {host}: seen {ago:.1} s ago, {standing}");
    }
    for hold in &holds {
        let what = if hold.slots_held {
            "statements on them and keyless statements wait"
        } else {
            "flipped; keyless statements wait"
        };
        println!(
            "hold of move {}: slots {} ({what})",
            hold.move_id, hold.slots
        );
    }
    if moves.is_empty() {
        println!("no moves recorded");
        return Ok(());
    }
    println!(
        "{:<22} {:<11} {:<15} {:<9} {:>7} {:>9} {:>9} {:>7} {:>8} {:>9} {:>4} {:>8}  updated",
        "move",
        "slots",
        "from -> to",
        "step",
        "slices",
        "rows",
        "MB",
        "MB/s",
        "changes",
        "lag",
        "try",
        "hold ms"
    );
    for j in &moves {
        println!("{}", status_line(j));
        if let Some(error) = j.error.as_deref().filter(|_| unfinished(j)) {
            println!("    last error: {error}");
        }
    }
    Ok(())
}

/// A move's slots as its journal row lists them.
fn slots_of(j: &Journal) -> SlotSet {
    SlotSet::from_ranges(parse_slot_spec(&j.slots).unwrap_or_default())
}

/// A move's slots not yet cut over, and those cut over (as slot lists).
fn split(j: &Journal) -> (String, String) {
    let all = slots_of(j);
    let (_, remaining) = run::slices(&all, j);
    (run::spec(&remaining), run::spec(&all.without(&remaining)))
}

/// `2/4`: slices cut over of all.
fn slices_text(j: &Journal) -> String {
    let (slices, _) = run::slices(&slots_of(j), j);
    format!("{}/{}", j.slices_done, slices.len())
}

fn status_line(j: &Journal) -> String {
    let mb = j.bytes_copied as f64 / 1e6;
    let rate = if j.copy_seconds > 0.0 {
        format!("{:.1}", mb / j.copy_seconds)
    } else {
        "-".into()
    };
    format!(
        "{:<22} {:<11} {:<15} {:<9} {:>7} {:>9} {:>9.1} {:>7} {:>8} {:>9} {:>4} {:>8}  {}",
        j.move_id,
        j.slots,
        format!("{} -> {}", j.source, j.target),
        j.step,
        slices_text(j),
        j.rows_copied,
        mb,
        rate,
        j.changes_applied,
        j.lag_bytes.map_or("-".into(), |l| l.to_string()),
        j.attempts,
        j.hold_ms.map_or("-".into(), |h| format!("{h:.0}")),
        j.updated
    )
}

/// What a finished move did; `holds`: each slice's hold (ms).
fn summary(j: &Journal, holds: &[f64]) -> String {
    let mb = j.bytes_copied as f64 / 1e6;
    let mut sorted = holds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let held = match (sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(median), Some(max)) => format!("{median:.0} ms (median), {max:.0} ms (max)"),
        _ => "- ms".to_string(),
    };
    format!(
        "moved slots {} from {} to {}: {} rows, {mb:.1} MB copied at {:.1} MB/s, {} changes \
         caught up; {} slice(s) held {held}, {} cutover attempt(s); map epoch {}",
        j.slots,
        j.source,
        j.target,
        j.rows_copied,
        if j.copy_seconds > 0.0 {
            mb / j.copy_seconds
        } else {
            0.0
        },
        j.changes_applied,
        holds.len(),
        j.attempts,
        j.epoch_after.map_or("-".into(), |e| e.to_string())
    )
}

fn print_dry_run(j: &Journal) {
    println!(
        "move {} (slots {}, {} -> {}), would:",
        j.move_id, j.slots, j.source, j.target
    );
    for step in [
        "check wal_level = logical on the source, primary keys and equal table definitions",
        "create a publication and a logical replication slot on the source, staging tables on the target",
        "copy the slots' rows from one snapshot into the staging tables",
        "apply changes decoded since the snapshot until the lag is small",
        "hold statements on these slots on every router, apply the last changes, verify rows and checksums",
        "swap the staging rows in, flip the map to the target, delete the rows from the source",
        "release the hold, drop the replication slot, publication and staging tables",
    ] {
        println!("  - {step}");
    }
}

/// The time of day (UTC) to the millisecond, for plain progress lines.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A spinner on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    id: String,
    last_line: std::time::Instant,
}

impl Progress {
    fn new(journal: &Journal) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(format!(
                "{} ({} -> {})",
                journal.move_id, journal.source, journal.target
            ));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            id: journal.move_id.clone(),
            last_line: std::time::Instant::now(),
        }
    }

    fn event(&mut self, event: Event) {
        let (line, always) = match event {
            Event::Step(step) => (step.to_string(), true),
            Event::Slice { index, of, slots } => {
                (format!("slice {index}/{of}: slots {slots}"), true)
            }
            Event::Copy(s) => (
                format!(
                    "copy: {} of {} rows, {:.1} MB at {:.1} MB/s ({})",
                    s.rows_copied,
                    s.rows_scanned,
                    s.bytes_copied as f64 / 1e6,
                    s.mb_per_s(),
                    s.table
                ),
                false,
            ),
            Event::CatchUp { applied, lag_bytes } => (
                format!("catch up: {applied} changes applied, lag {lag_bytes} bytes"),
                false,
            ),
            Event::SlotWaits(open) => (
                format!(
                    "the replication slot waits for the transactions open on the source that \
                     wrote to end (PostgreSQL builds it from a point with none open): {}",
                    if open.is_empty() {
                        "none this role may see".to_string()
                    } else {
                        open.join(", ")
                    }
                ),
                true,
            ),
            Event::SilentRouter {
                router,
                silent,
                left,
            } => (
                format!(
                    "waiting for router {router}: not heard from for {:.1} s, it may still \
                     route by an older map; the cutover goes on once it answers, or in {:.1} s \
                     when its lease has run out and it holds every slot itself",
                    silent.as_secs_f64(),
                    left.as_secs_f64()
                ),
                true,
            ),
            Event::Cutover {
                attempt,
                hold,
                phases,
                notes,
                failed,
            } => (
                {
                    for note in notes {
                        self.note(&format!("cutover {attempt}: {note}"));
                    }
                    match failed {
                        None => format!(
                            "cutover {attempt}: flipped, slots held {:.0} ms ({})",
                            hold.as_secs_f64() * 1e3,
                            phases
                                .iter()
                                .map(|(name, d)| format!("{name} {:.0}", d.as_secs_f64() * 1e3))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Some(why) => format!("cutover {attempt} gave up: {why}"),
                    }
                },
                true,
            ),
        };
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if always || self.last_line.elapsed() >= Duration::from_secs(1) => {
                self.last_line = std::time::Instant::now();
                eprintln!("{} {}: {line}", clock(), self.id);
            }
            None => {}
        }
    }

    /// A line that stays (above the bar on a terminal).
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{} {}: {line}", clock(), self.id),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
