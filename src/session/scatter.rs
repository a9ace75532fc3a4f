//! Keyless reads answered from several shards (scatter-gather): the statement runs unchanged on
//! every involved shard; rows are concatenated, or, when it has an ORDER BY, merged k-way from the
//! shards' sorted streams (one head row per shard); a LIMIT stops after that many rows. Reads that
//! need more (aggregates, DISTINCT, OFFSET, ...) are refused by the router's
//! `Scatter::Unsupported` before anything is sent. Holds one row per shard, never a whole result.

use bytes::{Bytes, BytesMut};

use super::error::SessionError;
use super::{io, Session};
use crate::backend::BackendManager;
use crate::pool::Pooled;
use std::cmp::Ordering;

use crate::merge::SortType;
use crate::router::{Scatter, SortColumn, SortKey, Target};
use crate::wire::build::{self, Severity};
use crate::wire::server_tag as tag;
use crate::wire::{rows, Frame, TransactionStatus};

/// Output queued for the client beyond this is written before reading more rows.
const FLUSH_AT: usize = 64 * 1024;

/// What the shards have answered so far.
#[derive(Default)]
pub(super) struct Gathered {
    /// Stop forwarding rows after this many.
    pub(super) limit: Option<u64>,
    pub(super) rows: u64,
    /// The first RowDescription, forwarded to the client; the others must agree with it.
    pub(super) described: Option<Bytes>,
    /// The first error (ErrorResponse bytes), sent instead of the row count.
    pub(super) error: Option<Bytes>,
}

impl Session {
    /// Runs a simple query on one connection per shard and streams the concatenated rows.
    pub(super) async fn scatter(
        &mut self,
        frame: &Frame,
        shards: &[usize],
        target: Target,
        how: &Scatter,
    ) -> Result<(), SessionError> {
        let mut conns = Vec::with_capacity(shards.len());
        for &shard in shards {
            conns.push(self.connection_for(shard, target).await?.0);
        }
        // Every shard starts working before any answer is read.
        for conn in conns.iter_mut() {
            conn.in_flight = true;
            conn.write(&frame.bytes).await?;
        }
        let mut gathered = Gathered::default();
        match how {
            Scatter::Concat { order, limit } if order.is_empty() => {
                gathered.limit = *limit;
                for conn in conns.iter_mut() {
                    self.gather(conn, &mut gathered).await?;
                }
            }
            Scatter::Concat { order, limit } => {
                gathered.limit = *limit;
                self.merge_sorted(&mut conns, order, &mut gathered).await?;
            }
            Scatter::Aggregate(combine) => {
                self.combine_aggregates(&mut conns, combine, &mut gathered)
                    .await?;
            }
            Scatter::Unsupported(why) => {
                gathered.error = Some(unsupported_bytes(why));
                for conn in conns.iter_mut() {
                    while self.next_row(conn, &mut gathered).await?.is_some() {}
                }
            }
        }
        match gathered.error {
            Some(error) => self.client_out.extend_from_slice(&error),
            None => {
                build::command_complete(&mut self.client_out, &format!("SELECT {}", gathered.rows))
            }
        }
        build::ready_for_query(&mut self.client_out, TransactionStatus::Idle);
        Ok(())
    }

    /// Reads one shard's answer up to its ReadyForQuery, forwarding what the client should see.
    async fn gather(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        loop {
            let frame = conn.read_frame().await?;
            match frame.tag() {
                tag::ROW_DESCRIPTION => match &gathered.described {
                    None => {
                        self.client_out.extend_from_slice(&frame.bytes);
                        gathered.described = Some(frame.bytes.freeze());
                    }
                    Some(first) if rows::same_columns(&first[5..], frame.body()) => {}
                    Some(_) => {
                        gathered.error.get_or_insert_with(|| {
                            error_bytes("the shards returned different columns for this query; check that every shard has the same schema")
                        });
                    }
                },
                tag::DATA_ROW => {
                    let room = gathered.limit.is_none_or(|limit| gathered.rows < limit);
                    if room && gathered.error.is_none() {
                        self.client_out.extend_from_slice(&frame.bytes);
                        gathered.rows += 1;
                    }
                }
                tag::ERROR_RESPONSE => {
                    gathered.error.get_or_insert(frame.bytes.freeze());
                }
                tag::NOTICE_RESPONSE => self.client_out.extend_from_slice(&frame.bytes),
                tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                tag::READY_FOR_QUERY => {
                    conn.status = frame
                        .body()
                        .first()
                        .and_then(|&b| TransactionStatus::from_byte(b))
                        .unwrap_or(TransactionStatus::Idle);
                    conn.in_flight = false;
                    return Ok(());
                }
                // CommandComplete is replaced by the total; nothing else belongs to a SELECT.
                _ => {}
            }
            if self.client_out.len() > FLUSH_AT {
                let out = std::mem::take(&mut self.client_out);
                io::write_all(&mut self.client, &out).await?;
            }
        }
    }
}

fn error_bytes(message: &str) -> Bytes {
    let mut out = BytesMut::new();
    build::error_response(
        &mut out,
        Severity::Error,
        "XX000",
        &format!("pgshard: {message}"),
    );
    out.freeze()
}

/// A sort key resolved against the result's columns.
struct Key {
    column: usize,
    kind: SortType,
    descending: bool,
    nulls_first: bool,
}

impl Session {
    /// Merges the shards' sorted rows: each step forwards the smallest head row and reads the
    /// next row of that shard only.
    async fn merge_sorted(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        order: &[SortKey],
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        let mut heads = Vec::with_capacity(conns.len());
        let mut finished = vec![false; conns.len()];
        for (i, conn) in conns.iter_mut().enumerate() {
            let head = self.next_row(conn, gathered).await?;
            finished[i] = head.is_none();
            heads.push(head);
        }
        let bytewise = self
            .shared
            .text_is_bytewise
            .load(std::sync::atomic::Ordering::Relaxed);
        let resolved = gathered
            .described
            .as_ref()
            .map(|d| resolve_keys(&d[5..], order, bytewise));
        let keys = match resolved {
            Some(Ok(keys)) => keys,
            Some(Err(why)) => {
                gathered
                    .error
                    .get_or_insert_with(|| unsupported_bytes(&why));
                Vec::new()
            }
            None => Vec::new(),
        };
        while gathered.error.is_none() && gathered.limit.is_none_or(|limit| gathered.rows < limit) {
            let Some(best) = smallest(&heads, &keys) else {
                break;
            };
            if let Some(row) = heads[best].take() {
                self.client_out.extend_from_slice(&row);
                gathered.rows += 1;
            }
            if self.client_out.len() > FLUSH_AT {
                let out = std::mem::take(&mut self.client_out);
                io::write_all(&mut self.client, &out).await?;
            }
            heads[best] = self.next_row(&mut conns[best], gathered).await?;
            finished[best] = heads[best].is_none();
        }
        // Whatever is left is read and dropped, so every connection ends clean.
        for (i, conn) in conns.iter_mut().enumerate() {
            while !finished[i] {
                finished[i] = self.next_row(conn, gathered).await?.is_none();
            }
        }
        Ok(())
    }

    /// A shard's next DataRow, handling what comes before it; `None` once its ReadyForQuery is read.
    pub(super) async fn next_row(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        gathered: &mut Gathered,
    ) -> Result<Option<BytesMut>, SessionError> {
        loop {
            let frame = conn.read_frame().await?;
            match frame.tag() {
                tag::DATA_ROW => return Ok(Some(frame.bytes)),
                tag::ROW_DESCRIPTION => self.describe(frame, gathered),
                tag::ERROR_RESPONSE => {
                    gathered.error.get_or_insert(frame.bytes.freeze());
                }
                tag::NOTICE_RESPONSE => self.client_out.extend_from_slice(&frame.bytes),
                tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                tag::READY_FOR_QUERY => {
                    conn.in_flight = false;
                    return Ok(None);
                }
                _ => {}
            }
        }
    }

    /// Forwards the first RowDescription; later ones must describe the same columns.
    fn describe(&mut self, frame: Frame, gathered: &mut Gathered) {
        match &gathered.described {
            None => {
                self.client_out.extend_from_slice(&frame.bytes);
                gathered.described = Some(frame.bytes.freeze());
            }
            Some(first) if rows::same_columns(&first[5..], frame.body()) => {}
            Some(_) => {
                gathered
                    .error
                    .get_or_insert_with(|| error_bytes(DIFFERENT_COLUMNS));
            }
        }
    }
}

const DIFFERENT_COLUMNS: &str =
    "the shards returned different columns for this query; check that every shard has the same schema";

/// Index of the head row that sorts first (ties: the lower shard).
fn smallest(heads: &[Option<BytesMut>], keys: &[Key]) -> Option<usize> {
    let mut best: Option<(usize, &BytesMut)> = None;
    for (i, head) in heads.iter().enumerate() {
        let Some(row) = head else { continue };
        match best {
            Some((_, current))
                if compare_rows(keys, &row[5..], &current[5..]) != Ordering::Less => {}
            _ => best = Some((i, row)),
        }
    }
    best.map(|(i, _)| i)
}

fn compare_rows(keys: &[Key], a: &[u8], b: &[u8]) -> Ordering {
    for key in keys {
        let fa = rows::data_row_field(a, key.column).flatten();
        let fb = rows::data_row_field(b, key.column).flatten();
        let ordering = match (fa, fb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if key.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if key.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if key.descending => key.kind.compare(x, y).reverse(),
            (Some(x), Some(y)) => key.kind.compare(x, y),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// Resolves the router's sort keys against the RowDescription body; `Err` names what cannot be
/// merged.
fn resolve_keys(description: &[u8], order: &[SortKey], bytewise: bool) -> Result<Vec<Key>, String> {
    let columns =
        rows::column_types(description).ok_or("a result with a malformed row description")?;
    order
        .iter()
        .map(|key| {
            let column = match &key.column {
                SortColumn::Index(i) => *i,
                SortColumn::Name(name) => {
                    let mut found = columns.iter().enumerate().filter(|(_, c)| c.0 == *name);
                    match (found.next(), found.next()) {
                        (Some((i, _)), None) => i,
                        _ => return Err(format!("ORDER BY {name}, which is not exactly one column of the result")),
                    }
                }
            };
            let (name, oid, format) =
                columns.get(column).ok_or("ORDER BY a column the result does not have")?;
            let kind = SortType::of(*oid, bytewise).filter(|_| *format == 0).ok_or_else(|| {
                format!(
                    "rows sorted by column {name} (type OID {oid}); pgshard merges integers, floats, \
                     numeric, bool, uuid, and text under the C collation"
                )
            })?;
            Ok(Key { column, kind, descending: key.descending, nulls_first: key.nulls_first })
        })
        .collect()
}

pub(super) fn unsupported_bytes(why: &str) -> Bytes {
    let mut out = BytesMut::new();
    let message =
        format!("pgshard cannot merge {why} across shards yet: add WHERE <shard key> = ... to read one shard");
    build::error_response(&mut out, Severity::Error, "0A000", &message);
    out.freeze()
}
