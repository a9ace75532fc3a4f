//! COPY across shards. `COPY <sharded table> FROM STDIN`: the statement runs in a transaction on
//! every shard's primary; the client's CopyData is cut into rows ([`RowSplitter`]), each row is
//! sent to its key's shard in CopyData batches of up to 64 KiB, and only when every shard has
//! taken every row does each get COMMIT (any failure: CopyFail and ROLLBACK everywhere).
//! `COPY ... TO STDOUT` that reads several shards: runs on every shard (replicas by the read
//! rules) and forwards one CopyOutResponse, every shard's CopyData and one CommandComplete with
//! the total. Holds one partial row and one batch per shard, never the whole input; gives every
//! server connection back idle, outside a transaction and with nothing unread.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Failure, MultiShardError, SessionError, Unsupported};
use super::Session;
use crate::backend::{catalog, BackendError, BackendManager};
use crate::error::{ClientError, SqlState};
use crate::pool::Pooled;
use crate::router::{CopyIn, CopyRow, Router, RowSplitter, Target};
use crate::stats::SlotInUse;
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::extended::{Bind, Parse};
use crate::wire::{client_tag, server_tag, Frame, TransactionStatus};

/// CopyData sent to a shard carries up to this many bytes of rows.
const BATCH: usize = 64 * 1024;
/// CopyData and CopyDone have the same tags both ways.
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';

/// A COPY the session runs on several shards itself.
pub(super) enum CopyJob {
    /// Rows split by key into every shard.
    In(CopyIn),
    /// Output gathered from these shards.
    Out {
        shards: Vec<usize>,
        target: Target,
        header: bool,
    },
}

/// One shard's part of a COPY FROM STDIN.
struct Part {
    conn: Pooled<BackendManager>,
    /// Rows not sent yet (CopyData payload).
    batch: BytesMut,
    /// The shard's ErrorResponse, once it sent one.
    error: Option<Bytes>,
    /// Rows the shard reported in its CommandComplete.
    rows: u64,
}

impl<S: Stream> Session<S> {
    /// Runs a COPY job for `frame` (a Query, or the Bind of an extended-protocol COPY).
    /// `Ok(false)`: the server connection held now must be released first.
    pub(super) async fn run_copy(
        &mut self,
        frame: &Frame,
        job: CopyJob,
        simple: bool,
    ) -> Result<bool, SessionError> {
        if self.server.is_some() {
            if self.proto.awaiting_sync || !self.tx.is_outside() {
                return Err(Unsupported::CopyMidBatch.into());
            }
            return Ok(false);
        }
        let Some(sql) = self.copy_statement(frame, simple).await? else {
            return Ok(true);
        };
        let failed = match job {
            CopyJob::In(copy) => self.copy_in(&sql, copy).await?,
            CopyJob::Out {
                shards,
                target,
                header,
            } => self.copy_out(&sql, &shards, target, header).await?,
        };
        if let Some(error) = failed {
            self.shared.metrics.error(error.sqlstate());
            error.write_to(&mut self.client.output);
            if !simple {
                self.proto.skipping_until_sync = true;
            }
        }
        if simple {
            build::ready_for_query(&mut self.client.output, TransactionStatus::Idle);
        }
        Ok(true)
    }

    /// The COPY statement's text. For a Bind: answers the pending Parses and the Bind, and reads
    /// the client's frames up to the Execute (`None` when a Sync comes first: nothing runs).
    async fn copy_statement(
        &mut self,
        frame: &Frame,
        simple: bool,
    ) -> Result<Option<String>, SessionError> {
        if simple {
            let body = frame.body();
            let text = body.strip_suffix(&[0]).unwrap_or(body);
            return Ok(Some(String::from_utf8_lossy(text).into_owned()));
        }
        let bind = Bind::decode(frame.body())?;
        let mut sql = None;
        for pending in std::mem::take(&mut self.proto.pending) {
            if pending.tag() == client_tag::PARSE {
                let parse = Parse::decode(pending.body())?;
                if parse.name == bind.statement {
                    sql = Some(String::from_utf8_lossy(parse.query()).into_owned());
                }
                message(&mut self.client.output, server_tag::PARSE_COMPLETE, &[]);
            }
        }
        if sql.is_none() && !bind.statement.is_empty() {
            if let Some(statement) = self.statements.get(bind.statement) {
                let parse = Parse::decode(&statement.parse[5..])?;
                sql = Some(String::from_utf8_lossy(parse.query()).into_owned());
            }
        }
        let sql = sql.ok_or(Unsupported::CopyUnnamedFromEarlierBatch)?;
        message(&mut self.client.output, server_tag::BIND_COMPLETE, &[]);
        loop {
            let next = self.client_frame().await?;
            match next.tag() {
                client_tag::EXECUTE => return Ok(Some(sql)),
                client_tag::DESCRIBE => message(&mut self.client.output, server_tag::NO_DATA, &[]),
                client_tag::FLUSH => {}
                client_tag::SYNC => {
                    build::ready_for_query(&mut self.client.output, TransactionStatus::Idle);
                    return Ok(None);
                }
                other => {
                    let got = other as char;
                    return Err(Unsupported::CopyExpectedExecute { got }.into());
                }
            }
        }
    }

    /// The client's next frame, waiting for it (and writing queued output first).
    async fn client_frame(&mut self) -> Result<Frame, SessionError> {
        loop {
            if let Some(frame) = self.client.next_frame(self.max_message)? {
                return Ok(frame);
            }
            self.client.drain().await?;
            if self.client.fill().await? == 0 {
                return Err(SessionError::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// COPY FROM STDIN split by key; `Ok(Some(error))` when it failed and nothing was kept.
    async fn copy_in(&mut self, sql: &str, copy: CopyIn) -> Result<Option<Failure>, SessionError> {
        let router = self.shared.router.load_full();
        // A CancelRequest from the client reaches every shard until each has taken its rows.
        let (conns, cancel) = self
            .shard_connections(&every_shard(&router), Target::Primary)
            .await?
            .into_parts();
        let mut parts: Vec<Part> = conns
            .into_iter()
            .map(|conn| Part {
                conn,
                batch: BytesMut::new(),
                error: None,
                rows: 0,
            })
            .collect();
        let copy = match copy.key_index {
            Some(_) => copy,
            None => match catalog::table_columns(&mut parts[0].conn, &copy.table_sql).await {
                Ok(columns) => match copy.with_columns(&columns) {
                    Ok(resolved) => resolved,
                    Err(why) => return Ok(Some(MultiShardError::CopyColumns(why).into())),
                },
                // No such table, say: the server's own error, as it would answer the COPY.
                Err(BackendError::Server { sqlstate, message }) => {
                    let error = ClientError::new(SqlState::from_server(&sqlstate), message);
                    return Ok(Some(Failure::Own(error)));
                }
                Err(e) => return Err(e.into()),
            },
        };
        let described = match start_copy_in(&mut parts, sql).await? {
            Ok(described) => described,
            Err(error) => {
                abort(&mut parts, "").await?;
                return Ok(Some(error));
            }
        };
        self.client.output.extend_from_slice(&described);
        let outcome = self.stream_rows(&mut parts, &copy, &router).await;
        let failed = match outcome {
            Ok(None) => finish_copy_in(&mut parts, cancel).await?,
            Ok(Some(error)) => Some(error),
            Err(e) => {
                abort(&mut parts, "the client connection failed").await?;
                return Err(e);
            }
        };
        match failed {
            Some(error) => {
                abort(&mut parts, "pgshard stopped this COPY").await?;
                Ok(Some(error))
            }
            None => {
                let total: u64 = parts.iter().map(|p| p.rows).sum();
                build::command_complete(&mut self.client.output, &format!("COPY {total}"));
                Ok(None)
            }
        }
    }

    /// Reads the client's CopyData up to CopyDone, sending each row to its shard. `Ok(Some)`:
    /// the COPY must fail with this error (a bad row, CopyFail, a shard's error).
    async fn stream_rows(
        &mut self,
        parts: &mut [Part],
        copy: &CopyIn,
        router: &Arc<Router>,
    ) -> Result<Option<Failure>, SessionError> {
        let mut splitter = RowSplitter::new(copy.format.clone(), self.max_message);
        loop {
            let frame = self.client_frame().await?;
            let done = match frame.tag() {
                client_tag::COPY_DATA => {
                    splitter.push(frame.body());
                    false
                }
                client_tag::COPY_DONE => true,
                client_tag::COPY_FAIL => {
                    let reason = frame.body().strip_suffix(&[0]).unwrap_or(frame.body());
                    let reason = String::from_utf8_lossy(reason).into_owned();
                    abort(parts, &reason).await?;
                    return Ok(Some(
                        first_error(parts)
                            .unwrap_or_else(|| MultiShardError::CopyFailed(reason).into()),
                    ));
                }
                // Ignored in copy-in mode, as PostgreSQL does.
                client_tag::SYNC | client_tag::FLUSH => continue,
                other => {
                    let got = other as char;
                    return Ok(Some(MultiShardError::CopyUnexpectedMessage(got).into()));
                }
            };
            loop {
                let row = if done {
                    splitter.finish()
                } else {
                    splitter.next_row()
                };
                let row = match row {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => return Ok(Some(ClientError::from(&e).into())),
                };
                if let Some(error) = place_row(parts, copy, router, row, splitter.lines()) {
                    return Ok(Some(error));
                }
                if parts.iter().any(|p| p.batch.len() >= BATCH) {
                    if let Some(error) = send_batches(parts, false).await? {
                        return Ok(Some(error));
                    }
                }
            }
            if let Some(error) = send_batches(parts, done).await? {
                return Ok(Some(error));
            }
            if done {
                return Ok(None);
            }
        }
    }

    /// COPY TO STDOUT on several shards, concatenated; `Ok(Some(error))` when it failed.
    async fn copy_out(
        &mut self,
        sql: &str,
        shards: &[usize],
        target: Target,
        header: bool,
    ) -> Result<Option<Failure>, SessionError> {
        let mut conns = self.shard_connections(shards, target).await?;
        let mut query = BytesMut::new();
        build::query(&mut query, sql);
        conns.send_all(&query).await?;
        let mut gathered = Gathered::default();
        for (i, conn) in conns.iter_mut().enumerate() {
            self.gather_copy(conn, &mut gathered, header && i > 0)
                .await?;
        }
        if let Some(error) = gathered.error {
            return Ok(Some(error));
        }
        if gathered.started {
            message(&mut self.client.output, COPY_DONE, &[]);
        }
        let total = gathered.rows;
        build::command_complete(&mut self.client.output, &format!("COPY {total}"));
        Ok(None)
    }

    /// Reads one shard's COPY TO answer up to its ReadyForQuery, forwarding its rows.
    async fn gather_copy(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        gathered: &mut Gathered,
        skip_header: bool,
    ) -> Result<(), SessionError> {
        let mut skip = skip_header;
        loop {
            let frame = conn.read_frame().await?;
            match frame.tag() {
                server_tag::COPY_OUT_RESPONSE if !gathered.started && gathered.error.is_none() => {
                    self.client.output.extend_from_slice(&frame.bytes);
                    gathered.started = true;
                }
                COPY_DATA if gathered.error.is_none() => {
                    if std::mem::take(&mut skip) {
                        continue;
                    }
                    self.client.output.extend_from_slice(&frame.bytes);
                }
                server_tag::COMMAND_COMPLETE => gathered.rows += copy_count(frame.body()),
                server_tag::ERROR_RESPONSE => {
                    gathered
                        .error
                        .get_or_insert(Failure::Server(frame.bytes.freeze()));
                }
                server_tag::NOTICE_RESPONSE => self.client.output.extend_from_slice(&frame.bytes),
                server_tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                server_tag::READY_FOR_QUERY => {
                    conn.note_ready_for_query(frame.body());
                    return Ok(());
                }
                _ => {}
            }
            if self.client.output.len() > BATCH {
                self.client.drain().await?;
            }
        }
    }
}

/// What the shards of a COPY TO have answered so far.
#[derive(Default)]
struct Gathered {
    /// A CopyOutResponse went to the client.
    started: bool,
    rows: u64,
    error: Option<Failure>,
}

/// Appends a frame with `tag` and `body` (messages `wire::build` has no builder for).
fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    // Infallible: bodies here are at most a batch (64 KiB) plus one row.
    out.put_i32((body.len() + 4) as i32);
    out.put_slice(body);
}

/// The row count of a `COPY n` CommandComplete.
fn copy_count(body: &[u8]) -> u64 {
    let body = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(body)
        .ok()
        .and_then(|tag| tag.strip_prefix("COPY "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn ready_status(frame: &Frame) -> TransactionStatus {
    frame
        .body()
        .first()
        .and_then(|&b| TransactionStatus::from_byte(b))
        .unwrap_or(TransactionStatus::Idle)
}

/// Queues a row for its shard (the header for every shard); `Some` when it cannot be placed.
fn place_row(
    parts: &mut [Part],
    copy: &CopyIn,
    router: &Router,
    row: CopyRow,
    line: u64,
) -> Option<Failure> {
    match row {
        CopyRow::Header(bytes) => parts
            .iter_mut()
            .for_each(|p| p.batch.extend_from_slice(&bytes)),
        CopyRow::Data { bytes, key } => {
            match copy.shard_of(router.shard_map(), key.as_deref(), line) {
                Ok(shard) => parts[shard].batch.extend_from_slice(&bytes),
                Err(e) => return Some(ClientError::from(&e).into()),
            }
        }
        CopyRow::End => {}
    }
    None
}

/// Sends each shard's full batches (all of them when `all`); `Some` when a shard has failed.
async fn send_batches(parts: &mut [Part], all: bool) -> Result<Option<Failure>, SessionError> {
    for part in parts.iter_mut() {
        if part.batch.len() >= BATCH || (all && !part.batch.is_empty()) {
            let batch = std::mem::take(&mut part.batch);
            let mut out = BytesMut::with_capacity(batch.len() + 5);
            message(&mut out, COPY_DATA, &batch);
            part.conn.write(&out).await?;
            if let Some(error) = early_error(part)? {
                return Ok(Some(error));
            }
        }
    }
    Ok(None)
}

/// A shard in copy-in mode sends nothing until the end, except an ErrorResponse when it fails
/// (and notices): looks without waiting.
fn early_error(part: &mut Part) -> Result<Option<Failure>, SessionError> {
    let conn = &mut *part.conn;
    loop {
        match conn.io().try_fill() {
            Ok(Some(0)) => {
                let eof = std::io::ErrorKind::UnexpectedEof.into();
                return Err(SessionError::Backend(conn.lost(eof)));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(source) => return Err(SessionError::Backend(conn.lost(source))),
        }
    }
    if part.error.is_none() && conn.io().input.first() == Some(&server_tag::ERROR_RESPONSE) {
        if let Ok(Some(frame)) = conn.io().next_frame(usize::MAX >> 1) {
            let error = frame.bytes.freeze();
            part.error = Some(error.clone());
            return Ok(Some(Failure::Server(error)));
        }
    }
    Ok(None)
}

/// Sends `BEGIN` and the COPY to every shard and reads up to each CopyInResponse. `Ok(Ok)` is
/// the CopyInResponse for the client; `Ok(Err)` the first shard's error.
async fn start_copy_in(
    parts: &mut [Part],
    sql: &str,
) -> Result<Result<Bytes, Failure>, SessionError> {
    let mut out = BytesMut::new();
    build::query(&mut out, "BEGIN");
    build::query(&mut out, sql);
    for part in parts.iter_mut() {
        part.conn.set_in_flight(true);
        part.conn.write(&out).await?;
    }
    let mut described = None;
    let mut error = None;
    for part in parts.iter_mut() {
        // BEGIN's answer, then the COPY's: CopyInResponse, or an error and ReadyForQuery.
        let mut ready = 0;
        loop {
            let frame = part.conn.read_frame().await?;
            match frame.tag() {
                server_tag::READY_FOR_QUERY => {
                    ready += 1;
                    if ready == 2 {
                        // The COPY ended without copy-in mode (refused): this shard owes
                        // nothing more, and `abort` must not wait for it.
                        part.conn.note_ready_for_query(frame.body());
                        break;
                    }
                    part.conn.set_status(ready_status(&frame));
                }
                server_tag::COPY_IN_RESPONSE => {
                    described.get_or_insert_with(|| frame.bytes.freeze());
                    break;
                }
                server_tag::ERROR_RESPONSE => {
                    let e = frame.bytes.freeze();
                    part.error = Some(e.clone());
                    error.get_or_insert(Failure::Server(e));
                }
                server_tag::PARAMETER_STATUS => part.conn.note_parameter_status(frame.body()),
                _ => {}
            }
        }
    }
    Ok(match (error, described) {
        (Some(e), _) => Err(e),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(MultiShardError::NoShardAnswered.into()),
    })
}

/// CopyDone to every shard, then COMMIT on every shard once all of them took their rows.
/// `Some` when a shard failed before COMMIT (nothing is kept anywhere, after [`abort`]).
async fn finish_copy_in(
    parts: &mut [Part],
    cancel: SlotInUse,
) -> Result<Option<Failure>, SessionError> {
    let mut done = BytesMut::new();
    message(&mut done, COPY_DONE, &[]);
    for part in parts.iter_mut().filter(|p| p.error.is_none()) {
        part.conn.write(&done).await?;
    }
    for part in parts.iter_mut() {
        read_to_ready(part).await?;
    }
    if let Some(error) = first_error(parts) {
        return Ok(Some(error));
    }
    // A cancel from here on could only fail some shards' COMMIT after others committed.
    drop(cancel);
    // Every shard holds its rows, uncommitted: commit them all. A COMMIT failing on one shard
    // after another committed is the one case that leaves rows behind (see README).
    let mut commit_error = None;
    for part in parts.iter_mut() {
        if let Err(e) = part.conn.run_internal("COMMIT").await {
            commit_error.get_or_insert(e);
        }
    }
    match commit_error {
        Some(BackendError::Server { sqlstate, message }) => Ok(Some(
            MultiShardError::CopyCommit {
                code: SqlState::from_server(&sqlstate),
                message,
            }
            .into(),
        )),
        Some(other) => Err(other.into()),
        None => Ok(None),
    }
}

/// Reads a shard's answer up to ReadyForQuery, keeping its row count or error.
async fn read_to_ready(part: &mut Part) -> Result<(), SessionError> {
    loop {
        let frame = part.conn.read_frame().await?;
        match frame.tag() {
            server_tag::COMMAND_COMPLETE => part.rows = copy_count(frame.body()),
            server_tag::ERROR_RESPONSE => {
                part.error.get_or_insert(frame.bytes.freeze());
            }
            server_tag::PARAMETER_STATUS => part.conn.note_parameter_status(frame.body()),
            server_tag::READY_FOR_QUERY => {
                part.conn.note_ready_for_query(frame.body());
                return Ok(());
            }
            _ => {}
        }
    }
}

fn first_error(parts: &[Part]) -> Option<Failure> {
    parts
        .iter()
        .find_map(|p| p.error.clone().map(Failure::Server))
}

/// Ends the COPY on every shard without keeping anything: CopyFail where it is still running,
/// then ROLLBACK, so every connection goes back idle.
async fn abort(parts: &mut [Part], reason: &str) -> Result<(), SessionError> {
    for part in parts.iter_mut() {
        if !part.conn.in_flight() {
            continue;
        }
        if part.error.is_none() {
            let mut fail = BytesMut::new();
            let mut body = reason.as_bytes().to_vec();
            body.push(0);
            message(&mut fail, client_tag::COPY_FAIL, &body);
            part.conn.write(&fail).await?;
        }
        read_to_ready(part).await?;
    }
    for part in parts.iter_mut() {
        if part.conn.status() != TransactionStatus::Idle {
            part.conn.run_internal("ROLLBACK").await?;
        }
    }
    Ok(())
}

/// Every shard's index, in order.
fn every_shard(router: &Router) -> Vec<usize> {
    (0..router.shard_map().len()).collect()
}
