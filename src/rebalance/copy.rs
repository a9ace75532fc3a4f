//! The bulk steps: copy (source snapshot → staging), swap in (staging → real tables) and
//! deleting a side's rows of the moving slots; and the reading helpers the verifications
//! (`verify.rs`) share. Rows are read with binary COPY and their slot found by hashing the
//! shard key in Rust.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{Client, IsolationLevel, Transaction};
use xxhash_rust::xxh3::xxh3_128;

use super::copybin::{RawTuple, TupleReader, TupleWriter};
use super::objects::{
    build_staging_key, quote_ident, set_staging_key, slot_exists, Table, SLOT_COLUMN,
};
use super::{MoveError, MovePlan, Mover, Shard, SlotSet};
use crate::sharding::key_from_binary;

/// Rows per COPY into the target: each batch commits on its own.
const BATCH_ROWS: u64 = 50_000;
/// Bytes handed to the target's COPY at a time.
pub(super) const CHUNK_BYTES: usize = 1 << 20;

/// How far a copy got.
#[derive(Debug, Clone, Default)]
pub struct CopyStats {
    /// The table being copied (the last one, once done).
    pub table: String,
    /// Rows read from the source (every slot) and rows copied (the moving slots).
    pub rows_scanned: u64,
    pub rows_copied: u64,
    /// Bytes of the copied rows (binary COPY tuples).
    pub bytes_copied: u64,
    pub elapsed: Duration,
}

impl CopyStats {
    /// Copied megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes_copied as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An order-independent digest of rows: their count and the wrapping sum of each row's
/// XXH3-128 (a sum, not a XOR, so that a duplicated row changes it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    pub sum: u128,
}

impl Digest {
    pub(super) fn add(&mut self, tuple: &RawTuple) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxh3_128(&tuple.bytes));
    }
}

/// One table's digests on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub source: Digest,
    pub target: Digest,
}

impl TableCheck {
    pub fn equal(&self) -> bool {
        self.source == self.target
    }
}

/// The slot of a tuple's shard key (field `key`); `None` for a NULL key.
pub(super) fn slot_of(
    table: &Table,
    tuple: &RawTuple,
    key: usize,
) -> Result<Option<u16>, MoveError> {
    let Some(bytes) = tuple.field(key) else {
        return Ok(None);
    };
    let value = key_from_binary(table.key_type, bytes).map_err(|source| MoveError::Key {
        table: table.name.clone(),
        source,
    })?;
    Ok(Some(value.slot()))
}

/// Whether a tuple's shard key (field `key`) lies in `slots`.
pub(super) fn in_slots(
    table: &Table,
    slots: &SlotSet,
    tuple: &RawTuple,
    key: usize,
) -> Result<bool, MoveError> {
    Ok(slot_of(table, tuple, key)?.is_some_and(|s| slots.contains(s)))
}

/// The tuples of a `COPY (query) TO STDOUT (FORMAT binary)`, as they arrive, each cut into
/// the same `RawTuple` in turn.
struct TupleStream {
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    reader: TupleReader,
    tuple: RawTuple,
    table: String,
}

impl TupleStream {
    async fn open(
        client: &Transaction<'_>,
        query: &str,
        table: &str,
    ) -> Result<TupleStream, MoveError> {
        let sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(MoveError::pg(format!("reading {table}")))?;
        Ok(TupleStream {
            stream: Box::pin(stream),
            reader: TupleReader::default(),
            tuple: RawTuple::default(),
            table: table.to_string(),
        })
    }

    async fn next(&mut self) -> Result<Option<&RawTuple>, MoveError> {
        loop {
            let bad = |detail: String| MoveError::Copy {
                table: self.table.clone(),
                detail,
            };
            if self.reader.next_into(&mut self.tuple).map_err(bad)? {
                return Ok(Some(&self.tuple));
            }
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(MoveError::pg(format!("reading {}", self.table)))?;
                    self.reader.push(&chunk);
                }
                None if self.reader.finished() => return Ok(None),
                None => return Err(bad("the stream ended before its trailer".to_string())),
            }
        }
    }
}

/// Calls `each` on every tuple of `query`.
pub(super) async fn scan(
    client: &Transaction<'_>,
    query: &str,
    table: &str,
    mut each: impl FnMut(&RawTuple) -> Result<(), MoveError>,
) -> Result<(), MoveError> {
    let mut tuples = TupleStream::open(client, query, table).await?;
    while let Some(tuple) = tuples.next().await? {
        each(tuple)?;
    }
    Ok(())
}

/// Writes whole COPY streams of tuples to `COPY target FROM STDIN (FORMAT binary)`.
pub(super) async fn copy_in(
    client: &Transaction<'_>,
    target: &str,
    data: Vec<Bytes>,
) -> Result<u64, MoveError> {
    let what = || format!("writing {target}");
    let sink = client
        .copy_in(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(MoveError::pg(what()))?;
    let mut sink = std::pin::pin!(sink);
    for chunk in data {
        sink.send(chunk).await.map_err(MoveError::pg(what()))?;
    }
    sink.as_mut().finish().await.map_err(MoveError::pg(what()))
}

pub(crate) async fn copy(
    mover: &mut Mover,
    mut progress: impl FnMut(&CopyStats),
) -> Result<CopyStats, MoveError> {
    let slot = mover.plan.replication_slot();
    if !slot_exists(&mover.source.client, &slot).await? {
        return Err(MoveError::NotPrepared {
            step: "copy",
            missing: format!("replication slot {slot} on the source"),
            run: "prepare",
        });
    }
    // No slice swapped in ahead stays open: its transaction would hold the staging tables
    // (the TRUNCATE below would wait for it) and the index builds use its connection.
    mover.drop_pre_swap().await;
    let target = &mover.target.client;
    // Empty, and without its primary key until the rows are in: one index build afterwards
    // is much cheaper than an index insertion per row.
    for t in &mover.tables {
        target
            .batch_execute(&format!("TRUNCATE {}", t.staging_sql))
            .await
            .map_err(MoveError::pg(format!("emptying {}", t.staging_sql)))?;
        set_staging_key(target, t, false).await?;
    }
    // The snapshot is taken by the first statement below, after the slot was seen to exist:
    // every change after it is in the slot.
    let tx = mover
        .source
        .client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(MoveError::pg("starting the copy's snapshot"))?;
    let started = Instant::now();
    let mut stats = CopyStats::default();
    for t in &mover.tables {
        stats.table = t.name.clone();
        let base = (stats.rows_scanned, stats.rows_copied, stats.bytes_copied);
        // Reading the source and writing the target overlap: the scan hands finished chunks
        // to the writer through a short queue.
        let (chunks, mut received) = tokio::sync::mpsc::channel(8);
        let read = read_table(&tx, t, &mover.following, chunks);
        let write = async {
            let copy_sql = format!(
                "COPY {} ({}, {SLOT_COLUMN}) FROM STDIN (FORMAT binary)",
                t.staging_sql,
                t.column_list()
            );
            let (mut sink, mut landed) = (None, 0u64);
            while let Some(piece) = received.recv().await {
                match piece {
                    Piece::Chunk(bytes) => send_chunk(target, &copy_sql, &mut sink, bytes).await?,
                    Piece::Batch(scanned, copied, bytes) => {
                        if let Some(mut open) = sink.take() {
                            let what = format!("writing {}", t.staging_sql);
                            landed += open.as_mut().finish().await.map_err(MoveError::pg(what))?;
                        }
                        stats.rows_scanned = base.0 + scanned;
                        stats.rows_copied = base.1 + copied;
                        stats.bytes_copied = base.2 + bytes;
                        stats.elapsed = started.elapsed();
                        progress(&stats);
                    }
                }
            }
            Ok(landed)
        };
        let ((), landed) = tokio::try_join!(read, write)?;
        // The cutover's verification by keys relies on staging holding every row the
        // snapshot had in the slots.
        if landed != stats.rows_copied - base.1 {
            return Err(MoveError::Copy {
                table: t.name.clone(),
                detail: format!(
                    "{} rows were sent to the staging table but it took {landed}",
                    stats.rows_copied - base.1
                ),
            });
        }
    }
    tx.commit()
        .await
        .map_err(MoveError::pg("ending the copy's snapshot"))?;
    // Both indexes of each staging table at once when a second connection to the target is
    // there (the one the swap ahead uses).
    let second = mover.swap_conn.as_ref().map(|shard| &shard.client);
    for t in &mover.tables {
        build_staging_key(target, second, t).await?;
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// What the scan of a table hands the writer: a chunk of a COPY stream, or the end of a batch
/// (one COPY, committed) with the table's counts so far: rows scanned, copied, bytes.
enum Piece {
    Chunk(Bytes),
    Batch(u64, u64, u64),
}

type Sink = std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>;

/// Scans `t` on the source and queues its moving rows as COPY chunks, a batch at a time. Stops
/// quietly when the writer is gone (its error is the one reported).
async fn read_table(
    tx: &Transaction<'_>,
    t: &Table,
    slots: &SlotSet,
    out: tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), MoveError> {
    let query = format!("SELECT {} FROM {}", t.column_list(), t.source_sql);
    let mut tuples = TupleStream::open(tx, &query, &t.name).await?;
    let mut writer = TupleWriter::new();
    let (mut batch_rows, mut scanned, mut copied, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    while let Some(tuple) = tuples.next().await? {
        scanned += 1;
        let Some(slot) = slot_of(t, tuple, t.key)?.filter(|&s| slots.contains(s)) else {
            continue;
        };
        writer.raw_with_int2(tuple, slot as i16);
        (batch_rows, copied, bytes) =
            (batch_rows + 1, copied + 1, bytes + tuple.bytes.len() as u64);
        let full = batch_rows >= BATCH_ROWS;
        if full {
            writer.finish();
        }
        if (full || writer.len() >= CHUNK_BYTES)
            && out.send(Piece::Chunk(writer.take())).await.is_err()
        {
            return Ok(());
        }
        if full {
            if out
                .send(Piece::Batch(scanned, copied, bytes))
                .await
                .is_err()
            {
                return Ok(());
            }
            (writer, batch_rows) = (TupleWriter::new(), 0);
        }
    }
    if batch_rows > 0 {
        writer.finish();
        let _ = out.send(Piece::Chunk(writer.take())).await;
    }
    let _ = out.send(Piece::Batch(scanned, copied, bytes)).await;
    Ok(())
}

/// Sends a chunk to the batch's COPY, starting the COPY with its first chunk.
async fn send_chunk(
    target: &Client,
    copy_sql: &str,
    sink: &mut Option<Sink>,
    bytes: Bytes,
) -> Result<(), MoveError> {
    let what = || format!("writing the target: {copy_sql}");
    if sink.is_none() {
        let opened = target
            .copy_in(copy_sql)
            .await
            .map_err(MoveError::pg(what()))?;
        *sink = Some(Box::pin(opened));
    }
    let open = sink.as_mut().expect("opened above");
    open.send(bytes).await.map_err(MoveError::pg(what()))
}

/// Deletes the rows of `relation` (a table of `t`'s shape) whose primary key is in the table
/// `keys`; returns how many.
pub(super) async fn delete_keyed(
    tx: &impl tokio_postgres::GenericClient,
    t: &Table,
    relation: &str,
    keys: &str,
    what: &str,
) -> Result<u64, MoveError> {
    let sql = format!(
        "DELETE FROM {relation} t USING {keys} d WHERE {}",
        t.key_join("t", "d")
    );
    tx.execute(&sql, &[]).await.map_err(MoveError::pg(what))
}

/// Deletes from the source the rows whose keys a verification kept in `pgshard_staged_<n>`
/// (exactly the slice's rows, verified equal to staging, while routers hold the slots), in one
/// transaction. Only when the caller knows those tables are this slice's and exact
/// (`Mover::keys_kept`).
pub(crate) async fn delete_staged_keys(
    tables: &[Table],
    source: &mut Shard,
) -> Result<u64, MoveError> {
    let what = format!("deleting the moved rows on {}", source.name);
    let tx = source
        .client
        .transaction()
        .await
        .map_err(MoveError::pg(what.clone()))?;
    let mut deleted = 0;
    for (n, t) in tables.iter().enumerate() {
        let keys = format!("pgshard_staged_{n}");
        deleted += delete_keyed(&tx, t, &t.source_sql, &keys, &what).await?;
        tx.batch_execute(&format!("DROP TABLE pgshard_staged_{n}"))
            .await
            .map_err(MoveError::pg(what.clone()))?;
    }
    tx.commit().await.map_err(MoveError::pg(what))?;
    Ok(deleted)
}

pub(super) async fn snapshot<'a>(
    client: &'a mut Client,
    side: &str,
) -> Result<tokio_postgres::Transaction<'a>, MoveError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(MoveError::pg(format!("taking a snapshot of {side}")))
}

/// Copies the staging rows of `slots` into the real tables, in one transaction. They stay in
/// staging (no one reads them there again: the slots are no longer followed once their flip
/// is done, and a swap undone is followed by a new copy, which empties staging first), which
/// saves deleting them inside the hold.
pub(crate) async fn swap_in(
    plan: &MovePlan,
    tables: &[Table],
    target: &mut Shard,
    slots: &SlotSet,
) -> Result<u64, MoveError> {
    let what = "moving the staging rows into the real tables";
    let tx = target
        .client
        .transaction()
        .await
        .map_err(MoveError::pg(what))?;
    let mut rows = 0;
    for t in tables {
        let filter = format!("{SLOT_COLUMN} = ANY({})", slots.sql_array());
        rows += tx
            .execute(&insert_from_staging(t, &filter), &[])
            .await
            .map_err(MoveError::pg(format!(
                "{what} (into {}, staging schema {})",
                t.target_sql,
                plan.staging_schema()
            )))?;
    }
    tx.commit().await.map_err(MoveError::pg(what))?;
    Ok(rows)
}

/// `INSERT INTO real (cols) SELECT cols FROM staging WHERE filter`.
pub(super) fn insert_from_staging(t: &Table, filter: &str) -> String {
    let cols = t.column_list();
    format!(
        "INSERT INTO {real} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stg} \
         WHERE {filter}",
        real = t.target_sql,
        stg = t.staging_sql
    )
}

/// Whose real tables a deletion reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RealOf {
    Source,
    Target,
}

/// Deletes the rows of `slots` from `shard`'s real tables (the source's when cleaning it, the
/// target's when aborting) in one transaction: their primary keys are found by a scan and
/// collected in a temporary table.
pub(crate) async fn delete_slot_rows(
    tables: &[Table],
    shard: &mut Shard,
    side: RealOf,
    slots: &SlotSet,
) -> Result<u64, MoveError> {
    let what = format!("deleting the moving slots' rows on {}", shard.name);
    let tx = shard
        .client
        .transaction()
        .await
        .map_err(MoveError::pg(what.clone()))?;
    let mut deleted = 0;
    for t in tables {
        let relation = match side {
            RealOf::Source => &t.source_sql,
            RealOf::Target => &t.target_sql,
        };
        let pk = t.primary_key_list();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE pgshard_doomed ON COMMIT DROP AS SELECT {pk} FROM {relation} \
             WITH NO DATA"
        ))
        .await
        .map_err(MoveError::pg(what.clone()))?;
        // Selected: the key columns, then the shard key last.
        let query = format!(
            "SELECT {pk}, {} FROM {relation}",
            quote_ident(&t.columns[t.key].name)
        );
        let key_at = t.primary_key.len();
        let mut writer = TupleWriter::new();
        let mut chunks = Vec::new();
        scan(&tx, &query, &t.name, |tuple| {
            if in_slots(t, slots, tuple, key_at)? {
                writer.fields((0..key_at).map(|i| tuple.field(i)));
                writer.spill(&mut chunks, CHUNK_BYTES);
            }
            Ok(())
        })
        .await?;
        writer.finish_into(&mut chunks);
        copy_in(&tx, "pgshard_doomed", chunks).await?;
        deleted += delete_keyed(&tx, t, relation, "pgshard_doomed", &what).await?;
        tx.batch_execute("DROP TABLE pgshard_doomed")
            .await
            .map_err(MoveError::pg(what.clone()))?;
    }
    tx.commit().await.map_err(MoveError::pg(what))?;
    Ok(deleted)
}
