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

use super::cancel::SlotInUse;
use super::error::SessionError;
use super::{io, Session};
use crate::backend::{BackendError, BackendManager};
use crate::config::PoolMode;
use crate::pool::Pooled;
use crate::router::{
    CopyIn, CopyPlan, CopyRow, Plan, Route, RouteError, Router, RowSplitter, Target,
};
use crate::wire::build::{self, Severity};
use crate::wire::extended::{Bind, Parse};
use crate::wire::{client_tag, rows, server_tag, split_frame, Frame, TransactionStatus};

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

/// Why a COPY stopped: an ErrorResponse for the client.
type Failure = Bytes;

fn failure(sqlstate: &str, message: &str) -> Failure {
    let mut out = BytesMut::new();
    build::error_response(
        &mut out,
        Severity::Error,
        sqlstate,
        &format!("pgshard: {message}"),
    );
    out.freeze()
}

impl Session {
    /// The COPY job for `plan`, if it is a COPY that needs several shards; `Err` refuses it.
    pub(super) fn copy_job(
        &self,
        plan: &Plan,
        route: &Result<Route, RouteError>,
    ) -> Result<Option<CopyJob>, SessionError> {
        let job = match (plan.copy(), route) {
            (Some(CopyPlan::In(copy)), Ok(_)) => CopyJob::In(copy.clone()),
            (Some(CopyPlan::Out(gather)), Ok(Route::Shards { shards, target }))
                if shards.len() > 1 =>
            {
                let out = gather.as_ref().map_err(|why| {
                    SessionError::Unsupported(format!(
                        "this COPY reads every shard ({}), and pgshard cannot merge {why} by \
                         concatenating the shards' output: remove it, or add WHERE <shard key> = \
                         ... to read one shard",
                        plan.sharded_tables().join(", ")
                    ))
                })?;
                CopyJob::Out {
                    shards: shards.clone(),
                    target: *target,
                    header: out.header,
                }
            }
            _ => return Ok(None),
        };
        let what = match &job {
            CopyJob::In(copy) => format!("COPY into sharded table {}", copy.table.name),
            CopyJob::Out { .. } => "COPY out of several shards".to_string(),
        };
        if self.status != TransactionStatus::Idle || self.begin.is_some() {
            return Err(SessionError::Unsupported(format!(
                "{what} runs only outside an explicit transaction (pgshard runs it in a \
                 transaction on every shard and commits them together): COMMIT or ROLLBACK first"
            )));
        }
        if self.mode == PoolMode::Session {
            return Err(SessionError::Unsupported(format!(
                "{what} needs a connection to every shard, and pool_mode = \"session\" holds one: \
                 use pool_mode = \"transaction\""
            )));
        }
        Ok(Some(job))
    }

    /// Runs a COPY job for `frame` (a Query, or the Bind of an extended-protocol COPY).
    /// `Ok(false)`: the server connection held now must be released first.
    pub(super) async fn run_copy(
        &mut self,
        frame: &Frame,
        job: CopyJob,
        simple: bool,
    ) -> Result<bool, SessionError> {
        if self.server.is_some() {
            if self.awaiting_sync || self.status != TransactionStatus::Idle {
                return Err(SessionError::Unsupported(
                    "COPY across shards cannot start in the middle of an extended-protocol batch \
                     that already runs on a server: send Sync first"
                        .into(),
                ));
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
            self.client_out.extend_from_slice(&error);
            if !simple {
                self.skipping_until_sync = true;
            }
        }
        if simple {
            build::ready_for_query(&mut self.client_out, TransactionStatus::Idle);
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
        for pending in std::mem::take(&mut self.pending) {
            if pending.tag() == client_tag::PARSE {
                let parse = Parse::decode(pending.body())?;
                if parse.name == bind.statement {
                    sql = Some(String::from_utf8_lossy(parse.query()).into_owned());
                }
                message(&mut self.client_out, server_tag::PARSE_COMPLETE, &[]);
            }
        }
        if sql.is_none() && !bind.statement.is_empty() {
            if let Some(statement) = self.statements.get(bind.statement) {
                let parse = Parse::decode(&statement.parse[5..])?;
                sql = Some(String::from_utf8_lossy(parse.query()).into_owned());
            }
        }
        let sql = sql.ok_or_else(|| {
            SessionError::Unsupported(
                "send the Parse of an unnamed COPY statement in the same batch as its Bind, or \
                 use a named statement"
                    .into(),
            )
        })?;
        message(&mut self.client_out, server_tag::BIND_COMPLETE, &[]);
        loop {
            let next = self.client_frame().await?;
            match next.tag() {
                client_tag::EXECUTE => return Ok(Some(sql)),
                client_tag::DESCRIBE => message(&mut self.client_out, server_tag::NO_DATA, &[]),
                client_tag::FLUSH => {}
                client_tag::SYNC => {
                    build::ready_for_query(&mut self.client_out, TransactionStatus::Idle);
                    return Ok(None);
                }
                other => {
                    return Err(SessionError::Unsupported(format!(
                        "expected Execute after the Bind of a COPY statement, got message type \
                         {:?}",
                        other as char
                    )))
                }
            }
        }
    }

    /// The client's next frame, waiting for it (and writing queued output first).
    async fn client_frame(&mut self) -> Result<Frame, SessionError> {
        loop {
            if let Some(frame) = split_frame(&mut self.client_in, self.max_message)? {
                return Ok(frame);
            }
            if !self.client_out.is_empty() {
                let out = std::mem::take(&mut self.client_out);
                io::write_all(&mut self.client, &out).await?;
            }
            self.client.readable().await?;
            if !self.read_client()? {
                return Err(SessionError::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// COPY FROM STDIN split by key; `Ok(Some(error))` when it failed and nothing was kept.
    async fn copy_in(&mut self, sql: &str, copy: CopyIn) -> Result<Option<Failure>, SessionError> {
        let router = self.shared.router.load_full();
        let mut parts = Vec::with_capacity(router.shard_map().len());
        for shard in 0..router.shard_map().len() {
            let (conn, _) = self.connection_for(shard, Target::Primary).await?;
            parts.push(Part {
                conn,
                batch: BytesMut::new(),
                error: None,
                rows: 0,
            });
        }
        // A CancelRequest from the client reaches every shard until each has taken its rows.
        let cancel = self
            .cancel
            .slot
            .reach_all(parts.iter().map(|p| &p.conn.cancel_key));
        let copy = match copy.key_index {
            Some(_) => copy,
            None => match table_columns(&mut parts[0].conn, &copy.table_sql).await? {
                Ok(columns) => match copy.with_columns(&columns) {
                    Ok(resolved) => resolved,
                    Err(why) => return Ok(Some(failure("0A000", &why))),
                },
                Err(error) => return Ok(Some(error)),
            },
        };
        let described = match start_copy_in(&mut parts, sql).await? {
            Ok(described) => described,
            Err(error) => {
                abort(&mut parts, "").await?;
                return Ok(Some(error));
            }
        };
        self.client_out.extend_from_slice(&described);
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
                build::command_complete(&mut self.client_out, &format!("COPY {total}"));
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
                    return Ok(Some(first_error(parts).unwrap_or_else(|| {
                        failure("57014", &format!("COPY from stdin failed: {reason}"))
                    })));
                }
                // Ignored in copy-in mode, as PostgreSQL does.
                client_tag::SYNC | client_tag::FLUSH => continue,
                other => {
                    return Ok(Some(failure(
                        "08P01",
                        &format!(
                            "unexpected message type {:?} during COPY from stdin; the COPY was \
                             rolled back on every shard",
                            other as char
                        ),
                    )))
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
                    Err(e) => return Ok(Some(failure(e.sqlstate(), &e.to_string()))),
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
        let mut conns = Vec::with_capacity(shards.len());
        for &shard in shards {
            conns.push(self.connection_for(shard, target).await?.0);
        }
        // A CancelRequest from the client reaches every shard while they work.
        let _cancel = self
            .cancel
            .slot
            .reach_all(conns.iter().map(|c| &c.cancel_key));
        let mut query = BytesMut::new();
        build::query(&mut query, sql);
        for conn in conns.iter_mut() {
            conn.in_flight = true;
            conn.write(&query).await?;
        }
        let mut gathered = Gathered::default();
        for (i, conn) in conns.iter_mut().enumerate() {
            self.gather_copy(conn, &mut gathered, header && i > 0)
                .await?;
        }
        if let Some(error) = gathered.error {
            return Ok(Some(error));
        }
        if gathered.started {
            message(&mut self.client_out, COPY_DONE, &[]);
        }
        let total = gathered.rows;
        build::command_complete(&mut self.client_out, &format!("COPY {total}"));
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
                    self.client_out.extend_from_slice(&frame.bytes);
                    gathered.started = true;
                }
                COPY_DATA if gathered.error.is_none() => {
                    if std::mem::take(&mut skip) {
                        continue;
                    }
                    self.client_out.extend_from_slice(&frame.bytes);
                }
                server_tag::COMMAND_COMPLETE => gathered.rows += copy_count(frame.body()),
                server_tag::ERROR_RESPONSE => {
                    gathered.error.get_or_insert(frame.bytes.freeze());
                }
                server_tag::NOTICE_RESPONSE => self.client_out.extend_from_slice(&frame.bytes),
                server_tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                server_tag::READY_FOR_QUERY => {
                    conn.note_ready_for_query(frame.body());
                    return Ok(());
                }
                _ => {}
            }
            if self.client_out.len() > BATCH {
                let out = std::mem::take(&mut self.client_out);
                io::write_all(&mut self.client, &out).await?;
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
                Err(e) => return Some(failure(e.sqlstate(), &e.to_string())),
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
    let mut chunk = [0u8; 4096];
    loop {
        match conn.stream.try_read(&mut chunk) {
            Ok(0) => {
                conn.broken = true;
                return Err(SessionError::Backend(BackendError::Io {
                    addr: conn.addr.clone(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                }));
            }
            Ok(n) => conn.read_buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(source) => {
                conn.broken = true;
                return Err(SessionError::Backend(BackendError::Io {
                    addr: conn.addr.clone(),
                    source,
                }));
            }
        }
    }
    if part.error.is_none() && conn.read_buf.first() == Some(&server_tag::ERROR_RESPONSE) {
        if let Ok(Some(frame)) = split_frame(&mut conn.read_buf, usize::MAX >> 1) {
            part.error = Some(frame.bytes.freeze());
            return Ok(part.error.clone());
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
        part.conn.in_flight = true;
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
                    part.conn.status = ready_status(&frame);
                    ready += 1;
                    if ready == 2 {
                        break;
                    }
                }
                server_tag::COPY_IN_RESPONSE => {
                    described.get_or_insert_with(|| frame.bytes.freeze());
                    break;
                }
                server_tag::ERROR_RESPONSE => {
                    let e = frame.bytes.freeze();
                    part.error = Some(e.clone());
                    error.get_or_insert(e);
                }
                server_tag::PARAMETER_STATUS => part.conn.note_parameter_status(frame.body()),
                _ => {}
            }
        }
    }
    Ok(match (error, described) {
        (Some(e), _) => Err(e),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(failure("XX000", "no shard answered the COPY")),
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
        Some(BackendError::Server { sqlstate, message }) => Ok(Some(failure(
            &sqlstate,
            &format!(
                "COMMIT of the COPY failed on a shard after the others may have committed; \
                 check the table on every shard: {message}"
            ),
        ))),
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
    parts.iter().find_map(|p| p.error.clone())
}

/// Ends the COPY on every shard without keeping anything: CopyFail where it is still running,
/// then ROLLBACK, so every connection goes back idle.
async fn abort(parts: &mut [Part], reason: &str) -> Result<(), SessionError> {
    for part in parts.iter_mut() {
        if !part.conn.in_flight {
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
        if part.conn.status != TransactionStatus::Idle {
            part.conn.run_internal("ROLLBACK").await?;
        }
    }
    Ok(())
}

/// The table's column names in COPY's default order (no dropped or generated columns).
async fn table_columns(
    conn: &mut Pooled<BackendManager>,
    table_sql: &str,
) -> Result<Result<Vec<String>, Failure>, SessionError> {
    let literal = table_sql.replace('\'', "''");
    let sql = format!(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = '{literal}'::regclass \
         AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
    );
    let mut out = BytesMut::new();
    build::query(&mut out, &sql);
    conn.in_flight = true;
    conn.write(&out).await?;
    let mut columns = Vec::new();
    let mut error = None;
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag() {
            server_tag::DATA_ROW => {
                if let Some(Some(name)) = rows::data_row_field(frame.body(), 0) {
                    columns.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            server_tag::ERROR_RESPONSE => {
                error.get_or_insert(frame.bytes.freeze());
            }
            server_tag::READY_FOR_QUERY => {
                conn.note_ready_for_query(frame.body());
                return Ok(error.map_or(Ok(columns), Err));
            }
            _ => {}
        }
    }
}
