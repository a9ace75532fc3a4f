//! Catch-up: the changes committed on the source since the replication slot was made, read with
//! `pg_logical_slot_peek_binary_changes` (pgoutput) and applied to the staging tables, then the
//! slot advanced past them.
//!
//! Applying is idempotent and in commit order (upsert of the new row by primary key, delete by
//! key), so replaying changes the copy's snapshot already holds converges: the last change per
//! key wins. It never writes outside the staging tables and never advances the slot past a change
//! not yet committed on the target.

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use super::objects::{list, quote_ident, slot_exists, Table, SLOT_COLUMN};
use super::pgoutput::{decode, Message, Relation, Value};
use super::{MoveError, MovePlan, Mover, Shard, SlotSet};
use crate::sharding::key_from_text;

/// What one catch-up round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Source transactions decoded (those touching a moved table, and the round's own marker).
    pub transactions: u64,
    /// Row changes decoded, and how many of them touched the staging tables.
    pub changes: u64,
    pub applied: u64,
    /// Rows read back from the source: updates that left TOASTed values unchanged (so the
    /// change lacks them) of rows staging did not hold yet.
    pub fetched: u64,
    /// Every change committed on the source before this round began is now applied.
    pub reached: bool,
    /// Bytes of source WAL after the last change applied.
    pub lag_bytes: u64,
    /// Bytes of source WAL after the point the next round decodes from (the slot's restart
    /// point; see [`move_restart_point`]).
    pub restart_lag_bytes: u64,
    /// Of the changed rows whose keys were noted for the cutover's verifications (those in the
    /// moving slots, of no known slot, or, where the shard key is not part of the primary key,
    /// that may have left the moving slots): the moving slots of their new versions, and how
    /// many had none known (the change lacked the key, the key is NULL, or the row may have
    /// left the slots).
    pub noted_slots: SlotSet,
    pub noted_without_slot: u64,
}

const PEEK_SQL: &str = "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
     'proto_version', '1', 'publication_names', $3, 'messages', 'true')";

pub(crate) async fn catch_up(mover: &mut Mover, max_changes: u32) -> Result<CatchUp, MoveError> {
    let plan = &mover.plan;
    let slot = plan.replication_slot();
    if !slot_exists(&mover.source.client, &slot).await? {
        return Err(MoveError::NotPrepared {
            step: "catch up",
            missing: format!("replication slot {slot} on the source"),
            run: "prepare",
        });
    }
    let marker = emit_marker(&mut mover.source.client, plan.id()).await?;
    let limit = i32::try_from(max_changes).unwrap_or(i32::MAX);
    let rows = mover
        .source
        .client
        .query(PEEK_SQL, &[&slot, &limit, &plan.publication()])
        .await
        .map_err(MoveError::pg(format!("reading changes from slot {slot}")))?;
    let what = "applying changes to the staging tables";
    let tx = mover
        .target
        .client
        .transaction()
        .await
        .map_err(MoveError::pg(what))?;
    let mut apply = Apply {
        tables: &mover.tables,
        slots: &mover.following,
        source: &mover.source.client,
        tx: &tx,
        relations: HashMap::new(),
        statements: HashMap::new(),
        queued: Vec::new(),
        fetched: 0,
        touched: Vec::new(),
        keys_unknown: false,
    };
    let mut round = CatchUp::default();
    let mut last_commit = None;
    for row in &rows {
        match decode(row.get::<_, &[u8]>(0))? {
            Message::Commit {
                commit_lsn,
                end_lsn,
            } => {
                round.transactions += 1;
                last_commit = Some((commit_lsn, end_lsn));
            }
            message => {
                let (decoded, applied) = apply.message(message).await?;
                round.changes += decoded;
                round.applied += applied;
            }
        }
    }
    apply.flush().await?;
    round.fetched = apply.fetched;
    let (touched, keys_unknown) = (std::mem::take(&mut apply.touched), apply.keys_unknown);
    tx.commit().await.map_err(MoveError::pg(what))?;
    note_keys(mover, touched, keys_unknown, &mut round);
    if let Some((commit_lsn, end_lsn)) = last_commit {
        advance(&mover.source.client, &slot, end_lsn).await?;
        round.reached = commit_lsn >= marker;
    }
    (round.lag_bytes, round.restart_lag_bytes) = lags(&mover.plan, &mover.source).await?;
    Ok(round)
}

/// Records the keys a round saw change (see [`CatchUp::noted_slots`]) in the mover's sets:
/// `since` all of them, `touched` those in the moving slots or of no known slot; a change
/// without its key turns the record off.
fn note_keys(
    mover: &mut Mover,
    mut touched: Vec<(usize, super::TouchedKey)>,
    keys_unknown: bool,
    round: &mut CatchUp,
) {
    // A row whose new version is outside the moving slots was never in them when its table's
    // primary key holds the shard key (the key, hence the slot, changes only with a new
    // primary key, whose old version is noted apart); otherwise it may have left them.
    let following = &mover.following;
    touched.retain(|(t, (_, slot))| {
        let table = &mover.tables[*t];
        slot.is_none_or(|s| following.contains(s)) || !table.primary_key.contains(&table.key)
    });
    for (_, (_, slot)) in &touched {
        match slot {
            Some(slot) if following.contains(*slot) => round.noted_slots.insert(*slot),
            // No known slot, or one that may have been in the moving slots before.
            _ => round.noted_without_slot += 1,
        }
    }
    match (&mut mover.touched, keys_unknown) {
        (Some(_), true) => {
            (mover.touched, mover.since, mover.pre) = (None, None, None);
            mover.keys_kept = None;
        }
        (Some(sets), false) => {
            if let Some(since) = &mut mover.since {
                for (t, key) in &touched {
                    since[*t].insert(key.clone());
                }
            }
            if let Some(pre) = &mut mover.pre_swap {
                for (t, key) in &touched {
                    pre.keys[*t].insert(key.clone());
                }
            }
            // Since the copy, only rows that are (or may be) in the moving slots: the staged
            // keys cover those that were.
            for (t, key) in touched {
                if key.1.is_none_or(|s| following.contains(s)) {
                    sets[t].insert(key);
                }
            }
        }
        (None, _) => {}
    }
}

/// A transactional logical message, committed with `synchronous_commit = on` so that it and
/// everything committed before it is flushed (decoding reads flushed WAL only): once its
/// transaction is decoded, so is every earlier commit. Returns its LSN.
async fn emit_marker(client: &mut Client, id: &str) -> Result<u64, MoveError> {
    let what = "writing the catch-up marker on the source";
    let tx = client.transaction().await.map_err(MoveError::pg(what))?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(MoveError::pg(what))?;
    let row = tx
        .query_one(
            "SELECT pg_logical_emit_message(true, 'pgshard_move', $1::text)::text",
            &[&id],
        )
        .await
        .map_err(MoveError::pg(what))?;
    tx.commit().await.map_err(MoveError::pg(what))?;
    parse_lsn(row.get(0))
}

async fn advance(client: &Client, slot: &str, lsn: u64) -> Result<(), MoveError> {
    let sql = format!(
        "SELECT 1 FROM pg_replication_slot_advance($1, '{}'::pg_lsn)",
        format_lsn(lsn)
    );
    client
        .query(&sql, &[&slot])
        .await
        .map_err(MoveError::pg(format!("advancing replication slot {slot}")))?;
    Ok(())
}

pub(crate) async fn lag_bytes(plan: &MovePlan, source: &Shard) -> Result<u64, MoveError> {
    Ok(lags(plan, source).await?.0)
}

/// Bytes of source WAL written since the slot's last change applied, and since its restart
/// point.
async fn lags(plan: &MovePlan, source: &Shard) -> Result<(u64, u64), MoveError> {
    let slot = plan.replication_slot();
    let row = source
        .client
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(MoveError::pg("reading the replication slot's lag"))?
        .ok_or_else(|| MoveError::NotPrepared {
            step: "lag",
            missing: format!("replication slot {slot} on the source"),
            run: "prepare",
        })?;
    let bytes = |i: usize| row.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64;
    Ok((bytes(0), bytes(1)))
}

/// Has the source log its running transactions now, so that the next round (which advances
/// the slot past them) can move the slot's restart point up to here. Every round decodes the
/// source's WAL from that point, which PostgreSQL moves only past such a record, and logs one
/// by itself only every 15 s of activity and at checkpoints: before a cutover the last rounds
/// would decode up to that much WAL again, under the hold. Making a temporary logical slot logs
/// one (PostgreSQL 15 has no function for it); it is dropped at once. Best effort: without a
/// free replication slot, or with writes open for over a second that it would wait for, the
/// rounds only decode more.
pub(crate) async fn move_restart_point(mover: &Mover) {
    let client = &mover.source.client;
    let name = format!("{}_restart", mover.plan.replication_slot());
    let made = async {
        client.batch_execute("SET statement_timeout = 1000").await?;
        let made = client
            .query(
                "SELECT pg_drop_replication_slot(slot_name) \
                 FROM pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&name],
            )
            .await;
        client.batch_execute("RESET statement_timeout").await?;
        made
    };
    if let Err(e) = made.await {
        tracing::debug!("logging the source's running transactions (slot {name}): {e}");
    }
}

fn parse_lsn(text: &str) -> Result<u64, MoveError> {
    let bad = || MoveError::Decode(format!("LSN {text:?}"));
    let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok((hi << 32) | lo)
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A decoded relation mapped onto a moved table: which table column each of its columns is.
struct RelationMap {
    table: usize,
    columns: Vec<usize>,
}

/// One row of a moved table, in its column order; `Unchanged` where the change gave no value.
type Row = Vec<Value>;

/// The apply side of one round: one target transaction, statements prepared once.
struct Apply<'a> {
    tables: &'a [Table],
    slots: &'a SlotSet,
    source: &'a Client,
    tx: &'a Transaction<'a>,
    relations: HashMap<u32, RelationMap>,
    statements: HashMap<String, Statement>,
    /// Writes whose row counts nobody reads, sent together (pipelined, in order) at the next
    /// write that needs its count, at `PIPELINE` writes, or before the commit.
    queued: Vec<(Statement, Vec<Option<String>>)>,
    fetched: u64,
    /// Primary keys of the rows changed in this round, by table, with the row's slot when the
    /// change carried it; `keys_unknown` when a change lacked a key.
    touched: Vec<(usize, super::TouchedKey)>,
    keys_unknown: bool,
}

/// Most writes queued before they are sent.
const PIPELINE: usize = 1_000;

impl Apply<'_> {
    /// Applies one message; returns (row changes decoded, changes that touched staging).
    async fn message(&mut self, message: Message) -> Result<(u64, u64), MoveError> {
        match message {
            Message::Relation(relation) => self.relation(relation).map(|()| (0, 0)),
            Message::Insert { relation, new } => {
                let Some((t, row)) = self.row(relation, new)? else {
                    return Ok((1, 0));
                };
                self.touch(t, &row);
                if self.in_slots(t, &row)? == Some(true) {
                    self.upsert(t, &row).await?;
                    return Ok((1, 1));
                }
                Ok((1, 0))
            }
            Message::Update { relation, old, new } => {
                let Some((t, row)) = self.row(relation, new)? else {
                    return Ok((1, 0));
                };
                let old = match old {
                    Some(old) => self.row(relation, old)?.map(|(_, row)| row),
                    None => None,
                };
                self.touch(t, &row);
                if let Some(old) = &old {
                    self.touch(t, old);
                }
                self.update(t, old, row).await.map(|()| (1, 1))
            }
            Message::Delete { relation, old } => {
                let Some((t, row)) = self.row(relation, old)? else {
                    return Ok((1, 0));
                };
                self.touch(t, &row);
                // A delete carries the replica identity: the primary key, the other columns
                // NULL. Its slot is known only when the shard key is part of the primary key;
                // otherwise deleting by key from staging is safe whatever the slot.
                let table = &self.tables[t];
                let key_carried = table.primary_key.contains(&table.key);
                if key_carried && self.in_slots(t, &row)? == Some(false) {
                    return Ok((1, 0));
                }
                self.delete(t, &row).await.map(|()| (1, 1))
            }
            Message::Truncate { relations } => {
                match relations.iter().find_map(|id| self.relations.get(id)) {
                    Some(map) => Err(MoveError::Truncated {
                        table: self.tables[map.table].name.clone(),
                    }),
                    None => Ok((0, 0)),
                }
            }
            Message::Begin { .. }
            | Message::Commit { .. }
            | Message::Logical { .. }
            | Message::Ignored(_) => Ok((0, 0)),
        }
    }

    /// Notes the primary key of a changed row, with the slot of this version when known.
    fn touch(&mut self, t: usize, row: &Row) {
        let slot = self.slot(t, row).ok().flatten().flatten();
        let mut key = Vec::with_capacity(self.tables[t].primary_key.len());
        for &i in &self.tables[t].primary_key {
            match &row[i] {
                Value::Text(text) => key.push(Some(text.clone())),
                Value::Null => key.push(None),
                Value::Unchanged => {
                    self.keys_unknown = true;
                    return;
                }
            }
        }
        self.touched.push((t, (key, slot)));
    }

    fn relation(&mut self, relation: Relation) -> Result<(), MoveError> {
        let Some(table) = self
            .tables
            .iter()
            .position(|t| t.source_schema == relation.namespace && t.source_table == relation.name)
        else {
            return Ok(());
        };
        let t = &self.tables[table];
        let mut columns = Vec::with_capacity(relation.columns.len());
        for c in &relation.columns {
            let at = t
                .columns
                .iter()
                .position(|col| col.name == c.name)
                .ok_or_else(|| MoveError::TableMismatch {
                    table: t.name.clone(),
                    detail: format!("column {} appeared on the source during the move", c.name),
                })?;
            columns.push(at);
        }
        self.relations
            .insert(relation.id, RelationMap { table, columns });
        Ok(())
    }

    /// The change's tuple as a row of its moved table, or `None` for a table not moved.
    fn row(&self, relation: u32, tuple: Vec<Value>) -> Result<Option<(usize, Row)>, MoveError> {
        let Some(map) = self.relations.get(&relation) else {
            return Ok(None);
        };
        let mut row = vec![Value::Unchanged; self.tables[map.table].columns.len()];
        for (value, &at) in tuple.into_iter().zip(&map.columns) {
            row[at] = value;
        }
        Ok(Some((map.table, row)))
    }

    /// Whether the row's shard key is in the moving slots; `None` when the change did not
    /// carry it (an unchanged TOASTed key, or a delete's key-only tuple).
    fn in_slots(&self, t: usize, row: &Row) -> Result<Option<bool>, MoveError> {
        Ok(self
            .slot(t, row)?
            .map(|slot| slot.is_some_and(|s| self.slots.contains(s))))
    }

    /// The slot of the row's shard key: `Some(None)` for a NULL key, `None` when the change
    /// did not carry the key.
    fn slot(&self, t: usize, row: &Row) -> Result<Option<Option<u16>>, MoveError> {
        let table = &self.tables[t];
        match &row[table.key] {
            Value::Text(text) => {
                let key = key_from_text(table.key_type, text).map_err(|source| MoveError::Key {
                    table: table.name.clone(),
                    source,
                })?;
                Ok(Some(Some(key.slot())))
            }
            Value::Null => Ok(Some(None)),
            Value::Unchanged => Ok(None),
        }
    }

    /// The row's slot as text (the staging table's slot column), when its key is carried.
    fn slot_text(&self, t: usize, row: &Row) -> Result<Option<String>, MoveError> {
        Ok(self.slot(t, row)?.flatten().map(|s| s.to_string()))
    }

    async fn update(&mut self, t: usize, old: Option<Row>, row: Row) -> Result<(), MoveError> {
        let table = &self.tables[t];
        let pk_of = |row: &Row| -> Vec<Value> {
            table.primary_key.iter().map(|&i| row[i].clone()).collect()
        };
        if let Some(old) = old {
            if pk_of(&old) != pk_of(&row) {
                self.delete(t, &old).await?;
            }
        }
        let complete = !row.contains(&Value::Unchanged);
        match self.in_slots(t, &row)? {
            // Its key is unique on the source, and the row lives outside the moving slots now.
            Some(false) => self.delete(t, &row).await,
            Some(true) if complete => self.upsert(t, &row).await,
            _ => {
                if self.update_given(t, &row).await? == 0 {
                    // Not in staging and not whole (unchanged TOASTed values): take the row as
                    // the source has it now; later changes, replayed after, still win.
                    if let Some(current) = self.fetch(t, &row).await? {
                        if self.in_slots(t, &current)? == Some(true) {
                            self.upsert(t, &current).await?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    async fn upsert(&mut self, t: usize, row: &Row) -> Result<(), MoveError> {
        let table = &self.tables[t];
        let n = table.columns.len();
        let values = list((0..n).map(|i| format!("${}::{}", i + 1, table.columns[i].type_sql)));
        let mut updates: Vec<String> = (0..n)
            .filter(|i| !table.primary_key.contains(i))
            .map(|i| {
                let c = quote_ident(&table.columns[i].name);
                format!("{c} = EXCLUDED.{c}")
            })
            .collect();
        updates.push(format!("{SLOT_COLUMN} = EXCLUDED.{SLOT_COLUMN}"));
        let sql = format!(
            "INSERT INTO {} ({}, {SLOT_COLUMN}) VALUES ({values}, ${}::int2) \
             ON CONFLICT ({}) DO UPDATE SET {}",
            table.staging_sql,
            table.column_list(),
            n + 1,
            table.primary_key_list(),
            updates.join(", ")
        );
        let mut params: Vec<Option<String>> = (0..n).map(|i| text_of(&row[i])).collect();
        params.push(self.slot_text(t, row)?);
        self.queue(sql, params).await
    }

    /// Sets the columns the change gave on the staging row with its key; returns rows updated.
    async fn update_given(&mut self, t: usize, row: &Row) -> Result<u64, MoveError> {
        let table = &self.tables[t];
        let mut params = Vec::new();
        let mut sets = Vec::new();
        for (i, c) in table.columns.iter().enumerate() {
            if table.primary_key.contains(&i) || row[i] == Value::Unchanged {
                continue;
            }
            params.push(text_of(&row[i]));
            sets.push(format!(
                "{} = ${}::{}",
                quote_ident(&c.name),
                params.len(),
                c.type_sql
            ));
        }
        // A changed shard key may change the slot.
        if let Some(slot) = self.slot_text(t, row)? {
            params.push(Some(slot));
            sets.push(format!("{SLOT_COLUMN} = ${}::int2", params.len()));
        }
        if sets.is_empty() {
            let c = quote_ident(&table.columns[table.primary_key[0]].name);
            sets.push(format!("{c} = {c}"));
        }
        let filter = self.key_filter(t, row, &mut params);
        let sql = format!(
            "UPDATE {} SET {} WHERE {filter}",
            table.staging_sql,
            sets.join(", ")
        );
        self.run(sql, params).await
    }

    async fn delete(&mut self, t: usize, row: &Row) -> Result<(), MoveError> {
        let mut params = Vec::new();
        let filter = self.key_filter(t, row, &mut params);
        let sql = format!("DELETE FROM {} WHERE {filter}", self.tables[t].staging_sql);
        self.queue(sql, params).await
    }

    /// The source's current row with the key of `row`, every column as text.
    async fn fetch(&mut self, t: usize, row: &Row) -> Result<Option<Row>, MoveError> {
        let table = &self.tables[t];
        let mut params = Vec::new();
        let filter = self.key_filter(t, row, &mut params);
        let cols = list(
            table
                .columns
                .iter()
                .map(|c| format!("{}::text", quote_ident(&c.name))),
        );
        let sql = format!("SELECT {cols} FROM {} WHERE {filter}", table.source_sql);
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let types = vec![Type::TEXT; params.len()];
        let what = || format!("reading a row of {} on the source", table.name);
        let statement = self
            .source
            .prepare_typed(&sql, &types)
            .await
            .map_err(MoveError::pg(what()))?;
        self.fetched += 1;
        let found = self
            .source
            .query_opt(&statement, &refs)
            .await
            .map_err(MoveError::pg(what()))?;
        Ok(found.map(|r| {
            (0..table.columns.len())
                .map(|i| match r.get::<_, Option<String>>(i) {
                    Some(text) => Value::Text(text),
                    None => Value::Null,
                })
                .collect()
        }))
    }

    /// `"pk1" = $n::type AND ...`, pushing the key's values onto `params`.
    fn key_filter(&self, t: usize, row: &Row, params: &mut Vec<Option<String>>) -> String {
        let table = &self.tables[t];
        let parts: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| {
                params.push(text_of(&row[i]));
                let c = &table.columns[i];
                format!(
                    "{} = ${}::{}",
                    quote_ident(&c.name),
                    params.len(),
                    c.type_sql
                )
            })
            .collect();
        parts.join(" AND ")
    }

    /// Queues `sql` behind the writes already queued; sends them all once there are enough.
    async fn queue(&mut self, sql: String, params: Vec<Option<String>>) -> Result<(), MoveError> {
        let statement = self.statement(&sql, params.len()).await?;
        self.queued.push((statement, params));
        if self.queued.len() >= PIPELINE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the queued writes at once (tokio-postgres pipelines futures polled together, in
    /// the order polled) and waits for all of them.
    async fn flush(&mut self) -> Result<(), MoveError> {
        let queued = std::mem::take(&mut self.queued);
        let sends = queued
            .iter()
            .map(|(statement, params)| self.tx.execute_raw(statement, params.iter()));
        futures_util::future::try_join_all(sends)
            .await
            .map_err(MoveError::pg("applying changes to the staging tables"))?;
        Ok(())
    }

    async fn statement(&mut self, sql: &str, count: usize) -> Result<Statement, MoveError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let types = vec![Type::TEXT; count];
        let s = self
            .tx
            .prepare_typed(sql, &types)
            .await
            .map_err(MoveError::pg(format!("preparing {sql}")))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs `sql` after the queued writes and returns its row count.
    async fn run(&mut self, sql: String, params: Vec<Option<String>>) -> Result<u64, MoveError> {
        self.flush().await?;
        let statement = self.statement(&sql, params.len()).await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.tx
            .execute(&statement, &refs)
            .await
            .map_err(MoveError::pg(format!("applying a change: {sql}")))
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Text(text) => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgres_does() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0x152_BEE0), "0/152BEE0");
        assert!(parse_lsn("nonsense").is_err());
    }
}
