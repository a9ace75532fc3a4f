//! The verifications: the moving rows on the source and on the target compared, per table, by
//! count and checksum. A full one (scans of both sides), and the cutover's pair: a comparison
//! row by row of the slice's staged rows with the source's rows of the staged keys and the keys
//! changed since the copy ([`pre_verify`], before the hold), then under the hold only the rows
//! whose keys differed then or changed since ([`verify_changed`]). It reads rows and never changes a
//! table; the one thing it writes is the session's temporary key tables on the source's
//! connection (`pgshard_staged_<n>`: the source's keys of the slice, which the clean deletes).

use std::collections::HashMap;

use bytes::Bytes;
use tokio_postgres::{Client, Transaction};
use xxhash_rust::xxh3::xxh3_128;

use super::copy::{copy_in, in_slots, scan, snapshot, Digest, TableCheck, CHUNK_BYTES};
use super::copybin::{RawTuple, TupleWriter};
use super::objects::{list, Table, SLOT_COLUMN};
use super::{MoveError, Mover, SlotSet, TargetSide, Touched};

/// The digest of `table`'s rows in the moving slots as `client` sees `relation`.
async fn digest(
    client: &Transaction<'_>,
    table: &Table,
    relation: &str,
    slots: &SlotSet,
) -> Result<Digest, MoveError> {
    let mut digest = Digest::default();
    let query = format!("SELECT {} FROM {relation}", table.column_list());
    scan(client, &query, &table.name, |tuple| {
        if in_slots(table, slots, tuple, table.key)? {
            digest.add(tuple);
        }
        Ok(())
    })
    .await?;
    Ok(digest)
}

pub(crate) async fn verify(
    mover: &mut Mover,
    side: TargetSide,
    slots: &SlotSet,
) -> Result<Vec<TableCheck>, MoveError> {
    let source = snapshot(&mut mover.source.client, "the source").await?;
    let target = snapshot(&mut mover.target.client, "the target").await?;
    let mut checks = Vec::new();
    for t in &mover.tables {
        let relation = match side {
            TargetSide::Staging => &t.staging_sql,
            TargetSide::Real => &t.target_sql,
        };
        checks.push(TableCheck {
            table: t.name.clone(),
            source: digest(&source, t, &t.source_sql, slots).await?,
            target: digest(&target, t, relation, slots).await?,
        });
    }
    source
        .commit()
        .await
        .map_err(MoveError::pg("ending the source's snapshot"))?;
    target
        .commit()
        .await
        .map_err(MoveError::pg("ending the target's snapshot"))?;
    Ok(checks)
}

/// Fills `table` (the primary key's columns of `t`) with the keys in `keys` (given as text) of
/// rows in `slots` or of no known slot.
pub(super) async fn insert_touched(
    tx: &impl tokio_postgres::GenericClient,
    t: &Table,
    table: &str,
    keys: &super::Touched,
    slots: &SlotSet,
) -> Result<(), MoveError> {
    let wanted: std::collections::HashSet<&Vec<Option<String>>> = keys
        .iter()
        .filter(|(_, slot)| slot.is_none_or(|s| slots.contains(s)))
        .map(|(key, _)| key)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let width = t.primary_key.len();
    let mut columns: Vec<Vec<Option<&str>>> = vec![Vec::with_capacity(wanted.len()); width];
    for key in wanted {
        for (column, value) in columns.iter_mut().zip(key) {
            column.push(value.as_deref());
        }
    }
    let casts = list(
        t.primary_key
            .iter()
            .enumerate()
            .map(|(i, &c)| format!("k{i}::{}", t.columns[c].type_sql)),
    );
    let arrays = list((0..width).map(|i| format!("${}::text[]", i + 1)));
    let names = list((0..width).map(|i| format!("k{i}")));
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {casts} FROM unnest({arrays}) AS u({names})",
        t.primary_key_list()
    );
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    tx.execute(&sql, &params)
        .await
        .map_err(MoveError::pg(format!(
            "noting the changed keys of {}",
            t.name
        )))?;
    Ok(())
}

/// What the comparison before a slice's hold found: per table, how many rows differed and their
/// primary keys (a binary COPY stream of the key columns), to look at again under the hold.
pub(crate) struct PreVerified {
    pub slice: SlotSet,
    differing: Vec<(u64, Vec<Bytes>)>,
}

impl PreVerified {
    /// Rows that differed, all tables (changes not caught up yet, or a damaged copy).
    pub fn differing(&self) -> u64 {
        self.differing.iter().map(|(n, _)| n).sum()
    }
}

/// A row's primary key as one binary COPY tuple of the key columns (a map key, and bytes a
/// key table takes as they are).
fn key_tuple(t: &Table, tuple: &RawTuple) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&(t.primary_key.len() as i16).to_be_bytes());
    for &i in &t.primary_key {
        match tuple.field(i) {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(data) => {
                out.extend_from_slice(&(data.len() as i32).to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }
    out
}

/// A transaction whose lookups by primary key go through its index (a hash join would read the
/// whole table for a fraction of its rows).
async fn by_index<'a>(client: &'a mut Client, what: &str) -> Result<Transaction<'a>, MoveError> {
    let tx = client.transaction().await.map_err(MoveError::pg(what))?;
    tx.batch_execute(
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off",
    )
    .await
    .map_err(MoveError::pg(what))?;
    Ok(tx)
}

/// Before the hold (writes go on): staging's rows of `slice` (found by the slot index) and the
/// source's rows with those keys or keys changed since the copy, compared row by row. Rows
/// equal here and not changed afterwards (the catch-up notes every later change in
/// `Mover::since`, which the caller emptied before) are equal under the hold too. Leaves the
/// staged keys in `pgshard_staged_<n>` on the source's connection.
pub(crate) async fn pre_verify(
    mover: &mut Mover,
    slice: &SlotSet,
    touched: &[Touched],
) -> Result<PreVerified, MoveError> {
    let target = snapshot(&mut mover.target.client, "the target").await?;
    let mut staged = Vec::new();
    for t in &mover.tables {
        let (mut hashes, mut writer, mut chunks) = (HashMap::new(), TupleWriter::new(), vec![]);
        let query = format!(
            "SELECT {} FROM {} WHERE {SLOT_COLUMN} = ANY({})",
            t.column_list(),
            t.staging_sql,
            slice.sql_array()
        );
        scan(&target, &query, &t.name, |tuple| {
            let key = key_tuple(t, tuple);
            writer.encoded(&key);
            hashes.insert(key, xxh3_128(&tuple.bytes));
            writer.spill(&mut chunks, CHUNK_BYTES);
            Ok(())
        })
        .await?;
        writer.finish_into(&mut chunks);
        staged.push((hashes, chunks));
    }
    target
        .commit()
        .await
        .map_err(MoveError::pg("ending the target's snapshot"))?;
    let what = "comparing the slice's rows with the source before the hold";
    let source = by_index(&mut mover.source.client, what).await?;
    let mut differing = Vec::new();
    for (n, (t, (mut hashes, chunks))) in mover.tables.iter().zip(staged).enumerate() {
        let (keys, changed) = key_tables(&source, t, n, what).await?;
        copy_in(&source, &keys, chunks).await?;
        insert_touched(&source, t, &changed, &touched[n], slice).await?;
        analyze(&source, &[&keys, &changed], what).await?;
        let (mut writer, mut count) = (TupleWriter::new(), 0u64);
        let pk = t.primary_key_list();
        let query = lookup(
            t,
            &format!("SELECT {pk} FROM {keys} UNION SELECT {pk} FROM {changed}"),
        );
        scan(&source, &query, &t.name, |tuple| {
            if in_slots(t, slice, tuple, t.key)? {
                let key = key_tuple(t, tuple);
                if hashes.remove(&key) != Some(xxh3_128(&tuple.bytes)) {
                    writer.encoded(&key);
                    count += 1;
                }
            }
            Ok(())
        })
        .await?;
        // Staged rows the source no longer has in the slice.
        for key in hashes.keys() {
            writer.encoded(key);
            count += 1;
        }
        writer.finish();
        differing.push((count, vec![writer.take()]));
    }
    source.commit().await.map_err(MoveError::pg(what))?;
    Ok(PreVerified {
        slice: slice.clone(),
        differing,
    })
}

/// [`verify_changed`]'s target side: per table, the digest of staging's rows with the keys that
/// differed or changed since, in the slice.
async fn changed_on_target(
    client: &mut Client,
    tables: &[Table],
    pre: &PreVerified,
    since: &[Touched],
) -> Result<Vec<Digest>, MoveError> {
    let slice = &pre.slice;
    let what = "comparing the rows changed since the first comparison";
    // Not a read-only snapshot: the keys go into a temporary table. One query reads staging.
    let target = by_index(client, what).await?;
    let mut targets = Vec::new();
    for (n, t) in tables.iter().enumerate() {
        let keys = (&pre.differing[n].1, &since[n]);
        let changed = changed_keys(&target, (t, n, slice), &t.staging_sql, keys, what).await?;
        let query = format!(
            "SELECT {cols} FROM {stg} WHERE ({pk}) IN (SELECT {pk} FROM {changed})",
            cols = t.column_list(),
            stg = t.staging_sql,
            pk = t.primary_key_list()
        );
        let mut digest = Digest::default();
        scan(&target, &query, &t.name, |tuple| {
            if in_slots(t, slice, tuple, t.key)? {
                digest.add(tuple);
            }
            Ok(())
        })
        .await?;
        targets.push(digest);
    }
    target.commit().await.map_err(MoveError::pg(what))?;
    Ok(targets)
}

/// Under the hold, after [`pre_verify`] of `slice`: per table, the rows whose keys differed
/// then or changed since (`since`, whatever their slot), on both sides, restricted to the slice
/// and compared; and the staged key table brought up to date with the source's keys of the
/// slice among them (the clean deletes exactly the source's rows of the slice).
pub(crate) async fn verify_changed(
    mover: &mut Mover,
    pre: &PreVerified,
    since: &[Touched],
) -> Result<Vec<TableCheck>, MoveError> {
    // The two sides at once, on their own connections: the slice's rows change on neither
    // side under the hold.
    let (source, target, tables) = (
        &mut mover.source.client,
        &mut mover.target.client,
        &mover.tables,
    );
    let (sources, targets) = tokio::try_join!(
        changed_on_source(source, tables, pre, since),
        changed_on_target(target, tables, pre, since)
    )?;
    Ok(tables
        .iter()
        .zip(sources.into_iter().zip(targets))
        .map(|(t, (source, target))| TableCheck {
            table: t.name.clone(),
            source,
            target,
        })
        .collect())
}

/// [`verify_changed`]'s source side: per table, the digest of the source's rows with the keys
/// that differed or changed since, in the slice; the staged key tables brought up to date.
async fn changed_on_source(
    client: &mut Client,
    tables: &[Table],
    pre: &PreVerified,
    since: &[Touched],
) -> Result<Vec<Digest>, MoveError> {
    let slice = &pre.slice;
    let what = "comparing the rows changed since the first comparison";
    let source = by_index(client, what).await?;
    let mut digests = Vec::new();
    for (n, t) in tables.iter().enumerate() {
        let keys = format!("pgshard_staged_{n}");
        let changed_of = (&pre.differing[n].1, &since[n]);
        let changed = changed_keys(&source, (t, n, slice), &t.source_sql, changed_of, what).await?;
        let (mut digest, mut writer) = (Digest::default(), TupleWriter::new());
        let query = lookup(
            t,
            &format!("SELECT {} FROM {changed}", t.primary_key_list()),
        );
        scan(&source, &query, &t.name, |tuple| {
            if in_slots(t, slice, tuple, t.key)? {
                digest.add(tuple);
                writer.encoded(&key_tuple(t, tuple));
            }
            Ok(())
        })
        .await?;
        writer.finish();
        // The keys looked at leave the staged keys (a hash join: the key table has no index);
        // those in the slice now come back.
        source
            .batch_execute(&format!(
                "SET LOCAL enable_hashjoin = on; \
                 DELETE FROM {keys} s USING {changed} c WHERE {}; \
                 SET LOCAL enable_hashjoin = off",
                t.key_join("s", "c")
            ))
            .await
            .map_err(MoveError::pg(what))?;
        copy_in(&source, &keys, vec![writer.take()]).await?;
        digests.push(digest);
    }
    source.commit().await.map_err(MoveError::pg(what))?;
    Ok(digests)
}

/// Creates `pgshard_changed_<n>` for the transaction, of `relation`'s key columns, filled with
/// the keys that differed (a binary COPY stream) and those changed since that may concern
/// `slice`: of any slot, or only of the slice's where the primary key holds the shard key (such
/// a row's slot never changes).
async fn changed_keys(
    tx: &Transaction<'_>,
    (t, n, slice): (&Table, usize, &SlotSet),
    relation: &str,
    (differing, since): (&Vec<Bytes>, &Touched),
    what: &str,
) -> Result<String, MoveError> {
    let changed = format!("pgshard_changed_{n}");
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {changed} ON COMMIT DROP AS SELECT {pk} FROM {relation} WITH NO DATA",
        pk = t.primary_key_list(),
    ))
    .await
    .map_err(MoveError::pg(what))?;
    copy_in(tx, &changed, differing.clone()).await?;
    let all = SlotSet::all();
    let slots = if t.primary_key.contains(&t.key) {
        slice
    } else {
        &all
    };
    insert_touched(tx, t, &changed, since, slots).await?;
    analyze(tx, &[&changed], what).await?;
    Ok(changed)
}

/// `SELECT cols FROM source WHERE (pk) IN (keys)`: the source's rows with those keys.
fn lookup(t: &Table, keys: &str) -> String {
    format!(
        "SELECT {cols} FROM {src} WHERE ({pk}) IN ({keys})",
        cols = t.column_list(),
        src = t.source_sql,
        pk = t.primary_key_list()
    )
}

/// Creates the staged key table `pgshard_staged_<n>` (for the session, emptied) and the
/// changed key table `pgshard_touched_<n>` (for the transaction) of `t` on the source.
async fn key_tables(
    source: &Transaction<'_>,
    t: &Table,
    n: usize,
    what: &str,
) -> Result<(String, String), MoveError> {
    let pk = t.primary_key_list();
    let (keys, changed) = (
        format!("pgshard_staged_{n}"),
        format!("pgshard_touched_{n}"),
    );
    source
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.{keys}; \
             CREATE TEMP TABLE {keys} AS SELECT {pk} FROM {src} WITH NO DATA; \
             CREATE TEMP TABLE {changed} ON COMMIT DROP AS SELECT {pk} FROM {src} WITH NO DATA",
            src = t.source_sql
        ))
        .await
        .map_err(MoveError::pg(what))?;
    Ok((keys, changed))
}

async fn analyze(tx: &Transaction<'_>, tables: &[&str], what: &str) -> Result<(), MoveError> {
    tx.batch_execute(&format!("ANALYZE {}", tables.join(", ")))
        .await
        .map_err(MoveError::pg(what))
}
