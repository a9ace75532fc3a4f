//! Running one move to its end, recording each step in the catalog's journal so that a killed
//! run resumes where it stopped: prepare, copy, catch up, then the cutover (hold on every
//! router, last changes, verify, swap in, flip the map, clean the source, release), cleanup.
//! Before the flip a move can be aborted (the source stays the owner); after it, only finished.
//! It never flips a map unless every live router holds the slots and the copy verified equal.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{CopyStats, MoveError, Mover, SlotSet};
use crate::catalog::cutover::{self, Journal};
use crate::catalog::{self, CatalogError};

/// Steps a journal records, in order (`aborted` ends a move that did not flip).
pub const STEPS: [&str; 8] = [
    "planned",
    "prepared",
    "copied",
    "caught_up",
    "swapped",
    "flipped",
    "cleaned",
    "done",
];

/// How a move runs its catch-up and cutover.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Changes applied per catch-up round.
    pub batch_changes: u32,
    /// Catch-up goes on until the source wrote less WAL than this since the last change.
    pub lag_bytes: u64,
    /// How long the mover waits for every router's acknowledgement of a hold.
    pub ack_timeout: Duration,
    /// A hold routers let go of by themselves if the mover has not flipped by then.
    pub hold_expiry: Duration,
    /// Cutover attempts before giving up (the move stays resumable).
    pub attempts: u32,
    /// How long the hold waits for replicas to replay the swap and the clean.
    pub replay_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            batch_changes: 10_000,
            lag_bytes: 64 * 1024,
            ack_timeout: Duration::from_secs(5),
            hold_expiry: Duration::from_secs(15),
            attempts: 5,
            replay_timeout: Duration::from_secs(10),
        }
    }
}

/// Which primary a replica follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// A connection to a replica of the source or the target: the hold ends only once it replayed
/// the swap and the clean (a read there then sees each row once).
pub struct Replica {
    pub side: Side,
    pub shard: super::Shard,
}

/// What a running move reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step began.
    Step(&'static str),
    /// The cutover of a slice (`index` of `of`, from 1) begins.
    Slice {
        index: usize,
        of: usize,
        slots: String,
    },
    /// A batch of the copy landed.
    Copy(CopyStats),
    /// A catch-up round: changes applied so far and the remaining lag.
    CatchUp { applied: u64, lag_bytes: u64 },
    /// Creating the replication slot waits for these transactions (that wrote) to end.
    SlotWaits(Vec<String>),
    /// A router has not been heard from for `silent`, but may still route by an older map:
    /// the cutover waits for it to answer again, at most `left` more (then it holds every slot).
    SilentRouter {
        router: String,
        silent: Duration,
        left: Duration,
    },
    /// A cutover attempt ended: how long routers held the slots (and each phase of it, up to
    /// the flip), and why it failed if it did.
    Cutover {
        attempt: u32,
        hold: Duration,
        phases: Vec<(&'static str, Duration)>,
        /// What the attempt did besides its phases (transactions of a silent router ended).
        notes: Vec<String>,
        failed: Option<String>,
    },
}

/// How long each phase of a cutover took.
struct Phases {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
    notes: Vec<String>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The phase `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }
}

fn index(step: &str) -> usize {
    STEPS.iter().position(|s| *s == step).unwrap_or(0)
}

/// The move's slices (cut over one at a time; its copy and catch-up are shared) of `all`, its
/// slots, and the slots of those not yet done, which the mover follows.
pub fn slices(all: &SlotSet, journal: &Journal) -> (Vec<SlotSet>, SlotSet) {
    let size = match journal.slice_size {
        n if n > 0 => u16::try_from(n).unwrap_or(u16::MAX),
        _ => u16::try_from(all.len()).unwrap_or(u16::MAX),
    };
    let slices = all.slices(size);
    let done = usize::try_from(journal.slices_done).unwrap_or(0);
    let remaining = slices[done.min(slices.len())..]
        .iter()
        .fold(SlotSet::default(), |acc, s| acc.union(s));
    (slices, remaining)
}

/// `0-63,100`: a set of slots as the catalog writes them.
pub fn spec(slots: &SlotSet) -> String {
    catalog::slot_list(&slots.ranges())
}

/// Runs the move `journal` describes from its last recorded step to `done`.
pub async fn run(
    catalog: &mut Client,
    mover: &mut Mover,
    journal: &Journal,
    options: &RunOptions,
    replicas: &[Replica],
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<(), MoveError> {
    let id = journal.move_id.clone();
    if !cutover::lock_move(catalog, &id).await? {
        return Err(MoveError::Busy(id));
    }
    let mut step = journal.step.clone();
    if step == "aborted" || step == "done" {
        return Ok(());
    }
    let (slices, remaining) = slices(mover.plan().slots(), journal);
    mover.follow_only(remaining);
    if step == "swapped" {
        // Killed between a slice's swap and its flip: the swap is undone (while routers may
        // still hold the slots), then the hold dropped; writes went on at the source. The
        // slots still moving are copied again.
        mover.undo_swap().await?;
        cutover::drop_hold(catalog, &id).await?;
        step = "prepared".into();
        cutover::journal_step(catalog, &id, "prepared").await?;
    }
    if index(&step) < index("prepared") {
        report(Event::Step("prepare"));
        let mut waits = |open: Vec<String>| report(Event::SlotWaits(open));
        mover.prepare_telling(&mut waits).await?;
        cutover::journal_step(catalog, &id, "prepared").await?;
        step = "prepared".into();
    }
    let mut progress = Progress {
        copied: (
            journal.rows_copied,
            journal.bytes_copied,
            journal.copy_seconds,
        ),
        applied: journal.changes_applied as u64,
    };
    let first = usize::try_from(journal.slices_done).unwrap_or(0);
    for (n, slice) in slices.iter().enumerate().skip(first) {
        report(Event::Slice {
            index: n + 1,
            of: slices.len(),
            slots: spec(slice),
        });
        while index(&step) < index("flipped") {
            // Verification by keys needs this process's copy: a resumed move copies again.
            if index(&step) < index("copied") || !mover.knows_changed_keys() {
                copy(catalog, mover, &id, &mut progress, report).await?;
            }
            let setup = (options, replicas, slice);
            match cut_over(catalog, mover, journal, setup, &mut progress, report).await? {
                CutOver::Flipped => step = "flipped".into(),
                // The swap was undone: copy the slots still moving again.
                CutOver::Restart => step = "prepared".into(),
            }
        }
        finish_slice(
            catalog,
            mover,
            (&id, n, slice),
            &step,
            (options, replicas),
            report,
        )
        .await?;
        step = "copied".into();
    }
    report(Event::Step("cleanup"));
    mover.cleanup().await?;
    cutover::journal_step(catalog, &id, "done").await?;
    Ok(())
}

/// What the journal counts: rows, bytes and seconds of the copy; changes applied.
struct Progress {
    copied: (i64, i64, f64),
    applied: u64,
}

/// Copies the slots still moving (staging emptied first) and records it.
async fn copy(
    catalog: &mut Client,
    mover: &mut Mover,
    id: &str,
    progress: &mut Progress,
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<(), MoveError> {
    report(Event::Step("copy"));
    let stats = mover.copy(|s| report(Event::Copy(s.clone()))).await?;
    progress.copied = (
        stats.rows_copied as i64,
        stats.bytes_copied as i64,
        stats.elapsed.as_secs_f64(),
    );
    let (rows, bytes, seconds) = progress.copied;
    let changes = progress.applied as i64;
    cutover::journal_progress(catalog, id, rows, bytes, seconds, changes, None).await?;
    cutover::journal_step(catalog, id, "copied").await?;
    Ok(())
}

/// How the cutover attempts ended (errors aside).
enum CutOver {
    Flipped,
    /// A hold expired under an attempt after its swap, which was undone.
    Restart,
}

/// Catch-up and cutover attempts of `slice` until one flips the map (or the attempts run out).
async fn cut_over(
    catalog: &mut Client,
    mover: &mut Mover,
    journal: &Journal,
    (options, replicas, slice): (&RunOptions, &[Replica], &SlotSet),
    progress: &mut Progress,
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<CutOver, MoveError> {
    let id = &journal.move_id;
    let mut attempt = 0;
    loop {
        report(Event::Step("catch up"));
        let applied = &mut progress.applied;
        let lag = catch_up_until(mover, options, applied, report).await?;
        let (rows, bytes, seconds) = progress.copied;
        let (changes, lag) = (*applied as i64, Some(lag as i64));
        cutover::journal_progress(catalog, id, rows, bytes, seconds, changes, lag).await?;
        cutover::journal_step(catalog, id, "caught_up").await?;
        wait_for_silent_routers(catalog, mover, options, applied, report).await?;
        // Compared row by row while writes go on, so that the hold looks only at what changed.
        report(Event::Step("verify before the hold"));
        mover.pre_verify(slice).await?;
        // The slice's rows into the real tables, uncommitted: the swap redoes only the rows
        // changed since.
        mover.pre_swap(slice).await?;
        // What was written meanwhile, so that the hold's own catch-up is short; and it
        // decodes from close to now (past the WAL of the swap ahead, when the source and the
        // target share a server).
        mover.move_restart_point().await;
        *applied += mover.catch_up(options.batch_changes).await?.applied;
        attempt += 1;
        report(Event::Step("cutover"));
        let started = Instant::now();
        let mut phases = Phases::new();
        let setup = (options, replicas, slice);
        let outcome = cutover_once(catalog, mover, journal, setup, applied, &mut phases).await;
        let hold = started.elapsed();
        let failed = outcome.as_ref().err().map(|e| e.to_string());
        report(Event::Cutover {
            attempt,
            hold,
            phases: phases.done,
            notes: phases.notes,
            failed: failed.clone(),
        });
        cutover::journal_attempt(catalog, id, failed.as_deref()).await?;
        match outcome {
            Ok(()) => {
                // Statements on the slots waited this long; keyless reads wait on until the
                // source is clean.
                cutover::journal_hold(catalog, id, hold.as_secs_f64() * 1e3).await?;
                return Ok(CutOver::Flipped);
            }
            Err(e @ MoveError::NoAcknowledgement { .. }) if attempt >= options.attempts => {
                return Err(e)
            }
            Err(MoveError::NoAcknowledgement { .. }) => continue,
            Err(MoveError::Catalog(CatalogError::HoldExpired(_))) => return Ok(CutOver::Restart),
            Err(e) => return Err(e),
        }
    }
}

/// Waits, catching up meanwhile, while a router the catalog has not heard from lately could
/// still route by an older map (it would not answer the hold): until it is back, or its lease
/// has run out and it holds every slot by itself.
async fn wait_for_silent_routers(
    catalog: &Client,
    mover: &mut Mover,
    options: &RunOptions,
    applied: &mut u64,
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<(), MoveError> {
    let mut told = std::collections::HashSet::new();
    loop {
        let silent = cutover::silent_routers(catalog).await?;
        if silent.is_empty() {
            return Ok(());
        }
        for (router, silent, left) in silent {
            if told.insert(router.clone()) {
                report(Event::SilentRouter {
                    router,
                    silent: Duration::from_secs_f64(silent.max(0.0)),
                    left: Duration::from_secs_f64(left.max(0.0)),
                });
            }
        }
        catch_up_round(mover, options, applied).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a slice's flip: clean its rows off the source, release the hold (only keyless reads
/// still wait), record the slice done and follow the other slots only.
async fn finish_slice(
    catalog: &mut Client,
    mover: &mut Mover,
    (id, n, slice): (&str, usize, &SlotSet),
    step: &str,
    (options, replicas): (&RunOptions, &[Replica]),
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<(), MoveError> {
    if index(step) < index("cleaned") {
        report(Event::Step("clean source"));
        mover.clean_slice(slice).await?;
        cutover::journal_step(catalog, id, "cleaned").await?;
    }
    wait_replayed(mover, replicas, None, options).await;
    cutover::drop_hold(catalog, id).await?;
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    cutover::journal_slice_done(catalog, id, (n, &spec(slice))).await?;
    let rest = mover.following().without(slice);
    mover.follow_only(rest);
    Ok(())
}

/// Waits until every replica (of side `only`, if given) replayed its primary's WAL as it is now
/// (bounded by `options.replay_timeout`; a replica that cannot be asked is skipped, logged).
async fn wait_replayed(
    mover: &Mover,
    replicas: &[Replica],
    only: Option<Side>,
    options: &RunOptions,
) {
    let deadline = Instant::now() + options.replay_timeout;
    for replica in replicas.iter().filter(|r| only.is_none_or(|s| r.side == s)) {
        let primary = match replica.side {
            Side::Source => &mover.source().client,
            Side::Target => &mover.target().client,
        };
        let wanted: String = match primary
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(e) => {
                tracing::warn!(
                    "reading the WAL position of {}'s primary: {e}",
                    replica.shard.name
                );
                continue;
            }
        };
        loop {
            let replayed = replica
                .shard
                .client
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true)",
                    &[&wanted],
                )
                .await;
            match replayed {
                Ok(row) if row.get::<_, bool>(0) => break,
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Ok(_) => {
                    tracing::warn!(
                        "replica {} has not replayed the move after {:?}; releasing anyway",
                        replica.shard.name,
                        options.replay_timeout
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!("asking replica {} about replay: {e}", replica.shard.name);
                    break;
                }
            }
        }
    }
}

/// Catch-up rounds until the lag is under `options.lag_bytes` (or a round found nothing to
/// apply); returns the lag.
async fn catch_up_until(
    mover: &mut Mover,
    options: &RunOptions,
    applied: &mut u64,
    report: &mut (dyn FnMut(Event) + Send),
) -> Result<u64, MoveError> {
    loop {
        let round = catch_up_round(mover, options, applied).await?;
        report(Event::CatchUp {
            applied: *applied,
            lag_bytes: round.lag_bytes,
        });
        if round.reached && (round.lag_bytes < options.lag_bytes || round.changes == 0) {
            return Ok(round.lag_bytes);
        }
    }
}

/// One catch-up round outside a hold, counted into `applied`; if it found the slot's restart
/// point far behind, the next round gets to move it.
async fn catch_up_round(
    mover: &mut Mover,
    options: &RunOptions,
    applied: &mut u64,
) -> Result<crate::rebalance::CatchUp, MoveError> {
    let round = mover.catch_up(options.batch_changes).await?;
    *applied += round.applied;
    if round.restart_lag_bytes > RESTART_LAG_MOVED {
        mover.move_restart_point().await;
    }
    Ok(round)
}

/// A catch-up round that finds more WAL than this before the slot's restart point has the
/// next one move it (each round decodes from there).
const RESTART_LAG_MOVED: u64 = 16 << 20;

/// One cutover attempt of `slice`: hold, last changes, verify, swap, flip. On failure before
/// the flip the hold is dropped (statements go on at the source) and the target keeps only
/// staging rows.
async fn cutover_once(
    catalog: &mut Client,
    mover: &mut Mover,
    journal: &Journal,
    (options, replicas, slice): (&RunOptions, &[Replica], &SlotSet),
    applied: &mut u64,
    phases: &mut Phases,
) -> Result<(), MoveError> {
    let id = &journal.move_id;
    let routers = cutover::request_hold(catalog, id, &spec(slice), options.hold_expiry).await?;
    let mut swapped = false;
    let state = (applied, &mut swapped, phases);
    let setup = (options, replicas, routers.as_slice(), slice);
    if let Err(e) = held(catalog, mover, journal, setup, state).await {
        if swapped {
            // Undone while routers still hold the slots: a keyless read never sees the rows
            // on both shards. The slice's staging rows went with the swap: copy again.
            mover.undo_swap().await?;
            cutover::drop_hold(catalog, id).await?;
            return Err(MoveError::Catalog(CatalogError::HoldExpired(id.clone())));
        }
        mover.drop_pre_swap().await;
        cutover::drop_hold(catalog, id).await?;
        return Err(e);
    }
    Ok(())
}

/// The part of a cutover under the hold, up to and with the flip.
async fn held(
    catalog: &mut Client,
    mover: &mut Mover,
    journal: &Journal,
    (options, replicas, routers, slice): (&RunOptions, &[Replica], &[String], &SlotSet),
    (applied, swapped, phases): (&mut u64, &mut bool, &mut Phases),
) -> Result<(), MoveError> {
    let id = &journal.move_id;
    // Every transaction that may write has ended (read-only statements may still run).
    wait_for_acks(catalog, id, routers, options, false).await?;
    end_transactions_of_silent_routers(catalog, mover, routers, phases).await?;
    phases.mark("acks");
    // Every transaction that could write the slots has ended: apply up to now.
    loop {
        let round = mover.catch_up(u32::MAX).await?;
        *applied += round.applied;
        if round.reached {
            break;
        }
    }
    phases.mark("catch-up");
    verify(mover, id, slice).await?;
    phases.mark("verify");
    // Verified by keys, a row changed since the last catch-up was not looked at (a write
    // around pgshard, which holds the slots): one more round, and if it saw a change that may
    // concern the slice (a row in it, or of no known slot, or one that may have left it: see
    // `CatchUp::noted_without_slot`), the verification again with those keys. Changes in the
    // other slots go on meanwhile and do not count.
    let late = mover.catch_up(u32::MAX).await?;
    *applied += late.applied;
    let concerned = late.noted_slots.intersects(slice);
    if !mover.knows_changed_keys() || late.noted_without_slot > 0 || concerned {
        verify(mover, id, slice).await?;
    }
    phases.mark("recheck");
    // The swap and the flip must land well before routers would let go on their own; and
    // whatever happens to the mover from here, keyless statements stay held until the swap is
    // undone or flipped. Journaled before the swap: undoing one that did not happen is harmless,
    // resuming as if one that did had not would put the rows twice on the target.
    // A read-only statement older than the hold could read the source, then the target after
    // the swap: they must have ended too.
    wait_for_acks(catalog, id, routers, options, true).await?;
    phases.mark("readers");
    let margin = Duration::from_secs(2);
    cutover::hold_through_swap(catalog, id, margin).await?;
    *swapped = true;
    cutover::journal_step(catalog, id, "swapped").await?;
    mover.swap_slice(slice).await?;
    phases.mark("swap");
    // Statements on the slots go to the target at the flip, its replicas included.
    wait_replayed(mover, replicas, Some(Side::Target), options).await;
    phases.mark("replay");
    let slots: Vec<u16> = slice.iter().collect();
    let tx = catalog.transaction().await.map_err(CatalogError::from)?;
    cutover::keep_hold_in(&tx, id, Duration::from_secs(1)).await?;
    let owners: Vec<i32> = slots.iter().map(|&s| i32::from(s)).collect();
    let foreign: i64 = tx
        .query_one(
            "SELECT count(*) FROM pgshard.slots WHERE slot = ANY($1) AND shard <> $2",
            &[&owners, &journal.source],
        )
        .await
        .map_err(CatalogError::from)?
        .get(0);
    if foreign > 0 {
        return Err(MoveError::NotOwned {
            move_id: id.clone(),
            slots: spec(slice),
            source_shard: journal.source.clone(),
        });
    }
    let epoch = catalog::epoch(&tx).await?;
    let next = catalog::set_owner_in(&tx, &slots, &journal.target, epoch).await?;
    cutover::journal_flipped_in(&tx, id, next).await?;
    tx.commit().await.map_err(CatalogError::from)?;
    phases.mark("flip");
    Ok(())
}

/// The cutover's verification of `slice`: every table equal on both sides, else
/// [`MoveError::Mismatch`].
async fn verify(mover: &mut Mover, id: &str, slice: &SlotSet) -> Result<(), MoveError> {
    for check in mover.verify_cutover(slice).await? {
        if !check.equal() {
            return Err(MoveError::Mismatch {
                move_id: id.to_string(),
                table: check.table.clone(),
                source_rows: check.source.rows,
                target_rows: check.target.rows,
            });
        }
    }
    Ok(())
}

/// A router the hold does not wait for (out of contact past its lease) holds every slot
/// itself, but a transaction it began before could still write or commit on the source after
/// the cutover: those that wrote, or run a statement that writes, are ended.
async fn end_transactions_of_silent_routers(
    catalog: &Client,
    mover: &Mover,
    waited: &[String],
    phases: &mut Phases,
) -> Result<(), MoveError> {
    let Some((silent, before)) = cutover::given_up(catalog, waited).await? else {
        return Ok(());
    };
    for ended in mover.end_transactions_before(before).await? {
        phases.notes.push(format!(
            "ended the transaction of server process {} on the source (it began before \
             router(s) {} went silent, and wrote or is writing: it could land by the old map): {}",
            ended.pid,
            silent.join(", "),
            ended.query
        ));
    }
    Ok(())
}

/// Waits until every router in `routers` acknowledged the hold (`readers`: also for its
/// read-only transactions).
async fn wait_for_acks(
    catalog: &Client,
    id: &str,
    routers: &[String],
    options: &RunOptions,
    readers: bool,
) -> Result<(), MoveError> {
    let deadline = Instant::now() + options.ack_timeout;
    loop {
        let acked = cutover::acknowledged(catalog, id, readers).await?;
        let missing: Vec<&String> = routers.iter().filter(|r| !acked.contains(r)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MoveError::NoAcknowledgement {
                move_id: id.to_string(),
                routers: missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                timeout_ms: options.ack_timeout.as_millis() as u64,
                attempts: options.attempts,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Returns the slots of a move not yet flipped to the state before it: the hold dropped, the
/// target's copies of them deleted, the replication slot, publication and staging dropped;
/// journal `aborted`. Slices already cut over stay with the target (a move back returns them).
pub async fn abort(
    catalog: &mut Client,
    mover: &mut Mover,
    journal: &Journal,
) -> Result<(), MoveError> {
    let id = &journal.move_id;
    if !cutover::lock_move(catalog, id).await? {
        return Err(MoveError::Busy(id.clone()));
    }
    if index(&journal.step) >= index("flipped") {
        return Err(MoveError::PastNoReturn {
            move_id: id.clone(),
            target: journal.target.clone(),
        });
    }
    let (_, remaining) = slices(mover.plan().slots(), journal);
    mover.follow_only(remaining);
    // The target's copies go first, while routers may still hold the slots.
    mover.abort().await?;
    cutover::drop_hold(catalog, id).await?;
    cutover::journal_step(catalog, id, "aborted").await?;
    Ok(())
}
