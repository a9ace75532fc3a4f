//! The slot mover's engine: copies the rows of some slots of every sharded table from a source
//! shard's primary to a target's (into staging tables), catches up with later changes by logical
//! decoding (`pgoutput`), verifies both sides, swaps the staging rows in and cleans the source.
//!
//! Each step is idempotent and can be re-run after a crash; the caller (the journal and the
//! cutover, elsewhere) decides their order: `prepare`, `copy`, `catch_up` until the lag is
//! small, then under the router's hold the last `catch_up`, `verify`, `swap_in`, the map flip,
//! `clean_source`, and `cleanup`; or `abort` before the flip. See ARCHITECTURE.md, "Moving a
//! slot". It never changes the shard map, never touches rows outside the moving slots (on the
//! target: outside its staging schema, until `swap_in`), and never deletes from the source
//! before `clean_source`. I/O over tokio-postgres connections the caller opens.

mod catchup;
mod copy;
mod copybin;
mod error;
mod objects;
mod pgoutput;
mod preswap;
pub mod run;
mod stale;
mod verify;

use std::ops::RangeInclusive;

use crate::config::ShardingConfig;
use crate::sharding::{KeyType, SLOT_COUNT};

pub use catchup::CatchUp;
pub use copy::{CopyStats, Digest, TableCheck};
pub use error::MoveError;
pub use objects::{Column, Table};

/// One sharded table to move: its name as configured and its shard key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub key_column: String,
    pub key_type: KeyType,
}

impl TableSpec {
    /// Every sharded table of `[sharding]`, with its key (the table's own or the default).
    pub fn from_config(sharding: &ShardingConfig) -> Vec<TableSpec> {
        sharding
            .tables
            .iter()
            .map(|t| TableSpec {
                name: t.name.clone(),
                key_column: t
                    .key_column
                    .clone()
                    .unwrap_or_else(|| sharding.key_column.clone()),
                key_type: t.key_type.unwrap_or(sharding.key_type),
            })
            .collect()
    }
}

/// A set of slots, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSet([u64; SLOT_COUNT as usize / 64]);

impl Default for SlotSet {
    fn default() -> SlotSet {
        SlotSet([0; SLOT_COUNT as usize / 64])
    }
}

impl SlotSet {
    pub fn from_ranges(ranges: impl IntoIterator<Item = RangeInclusive<u16>>) -> SlotSet {
        let mut set = SlotSet::default();
        for slot in ranges.into_iter().flatten() {
            set.insert(slot);
        }
        set
    }

    pub fn insert(&mut self, slot: u16) {
        if slot < SLOT_COUNT {
            self.0[usize::from(slot / 64)] |= 1 << (slot % 64);
        }
    }

    /// Whether the two share a slot.
    pub fn intersects(&self, other: &SlotSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    pub fn contains(&self, slot: u16) -> bool {
        slot < SLOT_COUNT && self.0[usize::from(slot / 64)] & (1 << (slot % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slot.
    pub fn all() -> SlotSet {
        SlotSet([u64::MAX; SLOT_COUNT as usize / 64])
    }

    /// The slots in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOT_COUNT).filter(|&s| self.contains(s))
    }

    /// The slots in either.
    pub fn union(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for (word, more) in out.0.iter_mut().zip(other.0.iter()) {
            *word |= more;
        }
        out
    }

    /// The slots of `self` not in `other`.
    pub fn without(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        for (word, gone) in out.0.iter_mut().zip(other.0.iter()) {
            *word &= !gone;
        }
        out
    }

    /// Consecutive pieces of at most `size` slots each (in slot order): a move's slices.
    pub fn slices(&self, size: u16) -> Vec<SlotSet> {
        let slots: Vec<u16> = self.iter().collect();
        slots
            .chunks(usize::from(size.max(1)))
            .map(|c| SlotSet::from_ranges(c.iter().map(|&s| s..=s)))
            .collect()
    }

    /// Maximal runs of consecutive slots.
    pub fn ranges(&self) -> Vec<RangeInclusive<u16>> {
        let mut out: Vec<RangeInclusive<u16>> = Vec::new();
        for slot in self.iter() {
            match out.last_mut() {
                Some(r) if *r.end() + 1 == slot => *r = *r.start()..=slot,
                _ => out.push(slot..=slot),
            }
        }
        out
    }

    /// `{1,2,3}`: the slots as a SQL array literal of `smallint`s.
    pub(crate) fn sql_array(&self) -> String {
        let slots: Vec<String> = self.iter().map(|s| s.to_string()).collect();
        format!("'{{{}}}'::int2[]", slots.join(","))
    }
}

/// What one move is: its id (naming its replication slot, publication and staging schema), the
/// slots and the tables.
#[derive(Debug, Clone)]
pub struct MovePlan {
    id: String,
    slots: SlotSet,
    tables: Vec<TableSpec>,
}

impl MovePlan {
    /// `id`: 1 to 40 characters of `a-z`, `0-9`, `_`, unique among moves running at once.
    pub fn new(id: &str, slots: SlotSet, tables: Vec<TableSpec>) -> Result<MovePlan, MoveError> {
        let fits = !id.is_empty()
            && id.len() <= 40
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !fits {
            return Err(MoveError::BadMoveId(id.to_string()));
        }
        Ok(MovePlan {
            id: id.to_string(),
            slots,
            tables,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn slots(&self) -> &SlotSet {
        &self.slots
    }

    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }

    /// The logical replication slot on the source: `pgshard_move_<id>`.
    pub fn replication_slot(&self) -> String {
        format!("pgshard_move_{}", self.id)
    }

    /// The publication on the source: `pgshard_move_<id>`.
    pub fn publication(&self) -> String {
        format!("pgshard_move_{}", self.id)
    }

    /// The schema of the staging tables on the target: `pgshard_staging_<id>`.
    pub fn staging_schema(&self) -> String {
        format!("pgshard_staging_{}", self.id)
    }
}

/// One side of a move: a shard's name (for messages) and a connection to its primary.
pub struct Shard {
    pub name: String,
    pub client: tokio_postgres::Client,
}

impl Shard {
    /// Connects without TLS with a libpq-style connection string (as [`Shard::connect_tls`]).
    pub async fn connect(name: &str, conninfo: &str) -> Result<Shard, MoveError> {
        Shard::connect_tls(name, conninfo, None).await
    }
}

impl Shard {
    /// Connects with a libpq-style connection string, over TLS as `[backend_tls]` says.
    pub async fn connect_tls(
        name: &str,
        conninfo: &str,
        tls: Option<&crate::tls::BackendTls>,
    ) -> Result<Shard, MoveError> {
        let mut config: tokio_postgres::Config = conninfo.parse().map_err(MoveError::pg(
            format!("reading the connection string of shard {name}"),
        ))?;
        let (mode, connector) = crate::tls::for_tokio_postgres(tls);
        // Commits of a move must be durable before the map flips (a lost swap or clean would
        // lose or duplicate rows), and flushed WAL reaches replicas at once. No JIT: the
        // lookups by index turn the other plans off, which prices them past `jit_above_cost`,
        // and compiling then took 35-80 ms a statement, under the hold.
        let (client, connection) = config
            .ssl_mode(mode)
            .application_name("pgshard-mover")
            .options("-c synchronous_commit=on -c jit=off")
            .connect(connector)
            .await
            .map_err(MoveError::pg(format!("connecting to shard {name}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("mover connection ended: {e}");
            }
        });
        Ok(Shard {
            name: name.to_string(),
            client,
        })
    }
}

/// Which table of the target a step reads: the staging copy or the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSide {
    Staging,
    Real,
}

/// A move between two shards, with its tables described on both. Every method is one
/// idempotent step.
pub struct Mover {
    plan: MovePlan,
    source: Shard,
    target: Shard,
    tables: Vec<Table>,
    /// The slots the copy copies and the catch-up follows: the plan's, less those whose
    /// cutover is over (see [`Mover::follow_only`]).
    following: SlotSet,
    /// Per table, the primary keys of every row the catch-up saw change since this process's
    /// copy, with the row's slot when the change carried it (`None`: no copy here, or a change
    /// without its key): with the staged rows, every row that can be in the moving slots, so
    /// the cutover verifies those rows only.
    touched: Option<Vec<Touched>>,
    /// The keys changed since the last [`Mover::pre_verify`] (same form), and what it found.
    since: Option<Vec<Touched>>,
    pre: Option<verify::PreVerified>,
    /// The slice whose source keys the last verification left, exact, in the source
    /// connection's key tables (`clean_slice` deletes by them).
    keys_kept: Option<SlotSet>,
    /// A second connection to the target, and the slice swapped in ahead on it (uncommitted).
    swap_conn: Option<Shard>,
    pre_swap: Option<preswap::PreSwap>,
}

/// Primary keys (as text, `None` for NULL) of rows changed during a move, of one table, each
/// with the slot of the row version that changed (`None`: not carried by the change).
pub(crate) type Touched = std::collections::HashSet<TouchedKey>;

/// A changed row's primary key (as text) and the slot of the changed version, if carried.
pub(crate) type TouchedKey = (Vec<Option<String>>, Option<u16>);

impl Mover {
    /// Checks what a move needs before anything is created (the source's `wal_level`, every
    /// table present on both sides with the same columns, a primary key, a replica identity
    /// carrying it) and describes the tables. Changes nothing.
    pub async fn open(plan: MovePlan, source: Shard, target: Shard) -> Result<Mover, MoveError> {
        objects::check_wal_level(&source).await?;
        let tables = objects::describe(&plan, &source, &target).await?;
        Ok(Mover {
            following: plan.slots.clone(),
            plan,
            source,
            target,
            tables,
            touched: None,
            since: None,
            pre: None,
            keys_kept: None,
            swap_conn: None,
            pre_swap: None,
        })
    }

    pub fn plan(&self) -> &MovePlan {
        &self.plan
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The source's connection (for callers' own checks and tests).
    pub fn source(&self) -> &Shard {
        &self.source
    }

    pub fn target(&self) -> &Shard {
        &self.target
    }

    /// The slots still moving: copied, followed by the catch-up, undone by [`Mover::abort`].
    pub fn following(&self) -> &SlotSet {
        &self.following
    }

    /// Narrows the move to `slots` (a part of the plan's) once the others were cut over: their
    /// rows belong to the target, and the source's deletions of them are not followed.
    pub fn follow_only(&mut self, slots: SlotSet) {
        if let Some(sets) = &mut self.touched {
            for set in sets {
                set.retain(|(_, slot)| slot.is_none_or(|s| slots.contains(s)));
            }
        }
        self.pre = None;
        self.following = slots;
    }

    /// Whether this process copied and noted every change since: the cutover can verify by
    /// keys (else it scans whole tables under the hold).
    pub fn knows_changed_keys(&self) -> bool {
        self.touched.is_some()
    }

    /// Creates, unless they exist, the publication and the logical replication slot on the
    /// source (the slot before any copy's snapshot) and the staging tables on the target.
    pub async fn prepare(&mut self) -> Result<(), MoveError> {
        self.prepare_telling(&mut |_| {}).await
    }

    /// [`Mover::prepare`], telling `waits` which open transactions the replication slot's
    /// creation waits for, every few seconds while it waits.
    pub async fn prepare_telling(
        &mut self,
        waits: &mut (dyn FnMut(Vec<String>) + Send),
    ) -> Result<(), MoveError> {
        let (source, target) = (&mut self.source, &mut self.target);
        objects::prepare(&self.plan, &self.tables, source, target, waits).await
    }

    /// Copies the followed slots' rows from one snapshot of the source into the (first emptied)
    /// staging tables, in batches; `progress` is called after each batch.
    pub async fn copy(&mut self, progress: impl FnMut(&CopyStats)) -> Result<CopyStats, MoveError> {
        (self.touched, self.since, self.pre, self.keys_kept) = (None, None, None, None);
        let stats = copy::copy(self, progress).await?;
        self.touched = Some(vec![Touched::new(); self.tables.len()]);
        Ok(stats)
    }

    /// Applies up to about `max_changes` decoded changes (whole transactions) to the staging
    /// tables, then reports how far behind the source it is.
    pub async fn catch_up(&mut self, max_changes: u32) -> Result<CatchUp, MoveError> {
        catchup::catch_up(self, max_changes).await
    }

    /// Lets the next catch-up round move the replication slot's restart point up to now (see
    /// `catchup::move_restart_point`), so that the rounds after it decode less.
    pub async fn move_restart_point(&self) {
        catchup::move_restart_point(self).await
    }

    /// Bytes of WAL the source wrote since the last change applied.
    pub async fn lag_bytes(&self) -> Result<u64, MoveError> {
        catchup::lag_bytes(&self.plan, &self.source).await
    }

    /// Row count and checksum of the followed slots' rows, per table, on the source and on the
    /// target's staging or real table. Meaningful while no one writes to those slots.
    pub async fn verify(&mut self, side: TargetSide) -> Result<Vec<TableCheck>, MoveError> {
        let slots = self.following.clone();
        verify::verify(self, side, &slots).await
    }

    /// Before a slice's hold, while writes go on: compares the slice's staging rows with the
    /// source's row by row (the staged keys and those changed since the copy, looked up), so
    /// that under the hold [`Mover::verify_cutover`] looks only at rows that differed here or
    /// changed since. Does nothing without this process's copy (the cutover then scans).
    /// Returns how many rows differed (changes not caught up yet).
    pub async fn pre_verify(&mut self, slice: &SlotSet) -> Result<u64, MoveError> {
        (self.pre, self.keys_kept) = (None, None);
        let Some(touched) = self.touched.take() else {
            return Ok(0);
        };
        // Every change after the last one applied is noted from here on.
        self.since = Some(vec![Touched::new(); self.tables.len()]);
        let found = verify::pre_verify(self, slice, &touched).await;
        self.touched = Some(touched);
        let pre = found?;
        let differing = pre.differing();
        self.pre = Some(pre);
        Ok(differing)
    }

    /// The cutover's verification of `slice` (followed slots, under the hold). When this
    /// process copied and followed every change since: after [`Mover::pre_verify`] of the
    /// slice (run here first if it did not run), only the rows that differed then or changed
    /// since, on both sides, with indexed lookups instead of scans of the whole source table;
    /// it leaves the source's keys of the slice for [`Mover::clean_slice`]. Otherwise a full
    /// [`Mover::verify`] of the slice's staging rows. The digests cover the rows compared.
    pub async fn verify_cutover(&mut self, slice: &SlotSet) -> Result<Vec<TableCheck>, MoveError> {
        self.keys_kept = None;
        if self.touched.is_none() {
            return verify::verify(self, TargetSide::Staging, slice).await;
        }
        if self.pre.as_ref().is_none_or(|p| &p.slice != slice) {
            self.pre_verify(slice).await?;
        }
        let (Some(pre), Some(since)) = (self.pre.take(), self.since.take()) else {
            return verify::verify(self, TargetSide::Staging, slice).await;
        };
        let checks = verify::verify_changed(self, &pre, &since).await;
        (self.pre, self.since) = (Some(pre), Some(since));
        let checks = checks?;
        self.keys_kept = Some(slice.clone());
        Ok(checks)
    }

    /// Moves every staging row into the real tables in one target transaction.
    pub async fn swap_in(&mut self) -> Result<u64, MoveError> {
        let slots = self.following.clone();
        self.swap_slice(&slots).await
    }

    /// Moves the staging rows of `slice` into the real tables in one target transaction (the
    /// one [`Mover::pre_swap`] left open, if it can be finished).
    pub async fn swap_slice(&mut self, slice: &SlotSet) -> Result<u64, MoveError> {
        if let Some(rows) = self.finish_pre_swap(slice).await? {
            return Ok(rows);
        }
        copy::swap_in(&self.plan, &self.tables, &mut self.target, slice).await
    }

    /// Deletes the followed slots' rows from the source's tables (one transaction); returns
    /// how many. Only after the map names the target as their owner.
    pub async fn clean_source(&mut self) -> Result<u64, MoveError> {
        let slots = self.following.clone();
        self.clean_slice(&slots).await
    }

    /// Deletes the rows of `slice` from the source's tables (one transaction); returns how
    /// many. Only after the map names the target as their owner.
    pub async fn clean_slice(&mut self, slice: &SlotSet) -> Result<u64, MoveError> {
        // The keys `verify_cutover` kept on this connection, when it ran here for this slice.
        if self.keys_kept.take().as_ref() == Some(slice) {
            return copy::delete_staged_keys(&self.tables, &mut self.source).await;
        }
        copy::delete_slot_rows(&self.tables, &mut self.source, copy::RealOf::Source, slice).await
    }

    /// Drops the replication slot and the publication on the source and the staging schema on
    /// the target.
    pub async fn cleanup(&mut self) -> Result<(), MoveError> {
        objects::cleanup(&self.plan, &self.source, &self.target).await
    }

    /// Undoes the part of a move whose map has not flipped (the followed slots): deletes their
    /// rows from the target's real tables (put there by a swap), then [`Mover::cleanup`]. The
    /// source, never changed before a clean, stays their owner with every row.
    pub async fn abort(&mut self) -> Result<(), MoveError> {
        self.undo_swap().await?;
        self.cleanup().await
    }

    /// Deletes the followed slots' rows from the target's real tables (a swap undone before
    /// its flip); staging and the replication slot stay.
    pub async fn undo_swap(&mut self) -> Result<u64, MoveError> {
        let slots = self.following.clone();
        copy::delete_slot_rows(&self.tables, &mut self.target, copy::RealOf::Target, &slots).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sets_hold_exactly_their_ranges() {
        let set = SlotSet::from_ranges([0..=2, 4095..=4095, 64..=64]);
        assert_eq!(set.len(), 5);
        for slot in [0, 1, 2, 64, 4095] {
            assert!(set.contains(slot), "{slot}");
        }
        for slot in [3, 63, 65, 4094, 4096] {
            assert!(!set.contains(slot), "{slot}");
        }
        assert_eq!(set.ranges(), vec![0..=2, 64..=64, 4095..=4095]);
        assert_eq!(set.sql_array(), "'{0,1,2,64,4095}'::int2[]");
    }

    #[test]
    fn slices_cover_the_set_in_order_and_without_overlap() {
        let set = SlotSet::from_ranges([10..=19, 100..=104]);
        let slices = set.slices(4);
        let sizes: Vec<usize> = slices.iter().map(SlotSet::len).collect();
        assert_eq!(sizes, vec![4, 4, 4, 3]);
        assert_eq!(slices[2].ranges(), vec![18..=19, 100..=101]);
        let mut rest = set.clone();
        for slice in &slices {
            assert_eq!(rest.without(slice).len(), rest.len() - slice.len());
            rest = rest.without(slice);
        }
        assert!(rest.is_empty());
        assert_eq!(set.slices(0).len(), 15, "a size of 0 counts as 1");
    }

    #[test]
    fn move_ids_name_postgres_objects_safely() {
        let set = SlotSet::from_ranges([0..=0]);
        assert!(MovePlan::new("m_1", set.clone(), vec![]).is_ok());
        for bad in ["", "M1", "a-b", "x\"y", &"a".repeat(41)] {
            assert!(MovePlan::new(bad, set.clone(), vec![]).is_err(), "{bad}");
        }
        let plan = MovePlan::new("m1", set, vec![]).unwrap();
        assert_eq!(plan.replication_slot(), "pgshard_move_m1");
        assert_eq!(plan.staging_schema(), "pgshard_staging_m1");
    }
}
