//! Writes that run on several shards' primaries at once, outside a transaction: a write to a
//! reference table runs unchanged on every shard, over either protocol (the client sees one
//! shard's answer), and a multi-row INSERT whose rows belong to several shards runs as one INSERT
//! per shard, cut by the router (the counts add up; RETURNING rows of every shard are forwarded;
//! simple query protocol only).
//!
//! Every shard gets its statement before any answer is read. Not atomic: each shard commits its
//! own part, so when some shards fail the client is told which applied and which failed. Nothing
//! is sent anywhere unless a connection to every involved primary was checked out first. Never
//! hands a connection back with unread results (each is read to its ReadyForQuery, or dropped
//! as in flight, which closes it).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{MultiShardError, SessionError, Unsupported};
use super::Session;
use crate::backend::{BackendError, BackendManager};
use crate::error::{ClientError, SqlState};
use crate::pool::Pooled;
use crate::router::{FanOutPlan, SplitPart, Target};
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::server_tag as tag;
use crate::wire::{rows, Frame, TransactionStatus};

/// Output queued for the client beyond this is written before reading more.
const FLUSH_AT: usize = 64 * 1024;

/// A write that runs on several shards.
#[derive(Debug)]
pub(super) enum FanOut {
    /// The client's statement, unchanged, on every shard (a write to a reference table).
    Everywhere,
    /// One INSERT per shard with only that shard's rows (simple protocol).
    Split(Vec<SplitPart>),
    /// A split INSERT over the extended protocol: cut at its Bind, with the parameters.
    SplitAtBind,
    /// Each shard's extended-protocol request (Parse, Bind, ..., Sync) of a split INSERT.
    SplitRequests(Vec<(usize, BytesMut)>),
}

impl From<FanOutPlan> for FanOut {
    fn from(plan: FanOutPlan) -> FanOut {
        match plan {
            FanOutPlan::Everywhere => FanOut::Everywhere,
            FanOutPlan::Split(parts) => FanOut::Split(parts),
            FanOutPlan::SplitAtBind => FanOut::SplitAtBind,
        }
    }
}

/// An ErrorResponse from a server, with the fields the client's message is built from.
struct ServerError {
    code: SqlState,
    message: String,
    detail: Option<String>,
    bytes: Bytes,
}

/// How one shard's part ended.
enum Outcome {
    /// CommandComplete tags, in order.
    Applied(Vec<String>),
    Failed(ServerError),
    /// The connection failed before the answer was complete: whether it applied is unknown.
    Lost(BackendError),
}

/// What the answers so far decided for the client.
#[derive(Default)]
struct Answer {
    /// The first RowDescription forwarded; the others must agree with it.
    described: Option<Bytes>,
    /// A shard failed (or the shards disagree): stop forwarding results.
    failed: bool,
    /// The shards returned different columns.
    mismatch: bool,
    /// The statement was a COPY FROM STDIN, ended on every shard with CopyFail.
    copy_in: bool,
}

impl<S: Stream> Session<S> {
    /// Runs a simple-query write on every involved shard's primary and answers the client once.
    pub(super) async fn fan_out(
        &mut self,
        frame: &Frame,
        work: FanOut,
    ) -> Result<(), SessionError> {
        self.fan_out_request(&frame.bytes, work, true).await
    }

    /// Runs a write on every involved shard's primary: `request` (a simple Query, or an
    /// extended-protocol batch ending in Sync when not `simple`) on every shard for a reference
    /// table, or the split INSERTs; answers the client once (ReadyForQuery only when `simple`).
    pub(super) async fn fan_out_request(
        &mut self,
        request: &[u8],
        work: FanOut,
        simple: bool,
    ) -> Result<(), SessionError> {
        let split = !matches!(work, FanOut::Everywhere);
        let jobs: Vec<(usize, BytesMut)> = match work {
            FanOut::Everywhere => (0..self.shared.shards.len())
                .map(|shard| (shard, BytesMut::from(request)))
                .collect(),
            FanOut::Split(parts) => parts
                .into_iter()
                .map(|part| {
                    let mut query = BytesMut::new();
                    build::query(&mut query, &part.sql);
                    (part.shard, query)
                })
                .collect(),
            FanOut::SplitRequests(requests) => requests,
            FanOut::SplitAtBind => return Err(Unsupported::SplitUnbound.into()),
        };
        // Nothing is sent anywhere unless every primary gave a connection.
        let mut conns = self
            .shard_connections(
                &jobs.iter().map(|(shard, _)| *shard).collect::<Vec<_>>(),
                Target::Primary,
            )
            .await?;
        let mut lost: Vec<Option<BackendError>> = Vec::with_capacity(jobs.len());
        for (conn, (_, query)) in conns.iter_mut().zip(&jobs) {
            conn.set_in_flight(true);
            lost.push(conn.write(query).await.err());
        }
        // A reference write shows the first shard's answer, read last so that a failure anywhere
        // else is known before anything of it is forwarded; split parts are read in order.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        if !split {
            order.rotate_left(1);
        }
        let mut answer = Answer::default();
        let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(jobs.len());
        for i in order {
            let outcome = match lost[i].take() {
                Some(e) => Outcome::Lost(e),
                // Split parts each forward their rows; a reference write only the first shard's.
                None => match self
                    .read_part(&mut conns[i], split || i == 0, split, &mut answer)
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(SessionError::Backend(e)) => Outcome::Lost(e),
                    Err(e) => return Err(e),
                },
            };
            answer.failed |= !matches!(outcome, Outcome::Applied(_));
            outcomes.push((i, outcome));
        }
        outcomes.sort_by_key(|(i, _)| *i);
        let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
        let shards: Vec<usize> = jobs.iter().map(|(shard, _)| *shard).collect();
        let failed = self.conclude(&shards, &outcomes, split, &answer);
        if simple {
            build::ready_for_query(&mut self.client.output, TransactionStatus::Idle);
        } else {
            // After an error the rest of the batch is skipped, as PostgreSQL does.
            self.proto.skipping_until_sync = failed;
        }
        Ok(())
    }

    /// Reads one shard's answer to its ReadyForQuery, forwarding what the client should see.
    async fn read_part(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        forward: bool,
        split: bool,
        answer: &mut Answer,
    ) -> Result<Outcome, SessionError> {
        let mut tags = Vec::new();
        let mut error = None;
        loop {
            let frame = conn.read_frame().await?;
            let show = forward && !answer.failed && error.is_none();
            match frame.tag() {
                tag::ROW_DESCRIPTION => match &answer.described {
                    _ if !show => {}
                    None => {
                        self.client.output.extend_from_slice(&frame.bytes);
                        answer.described = Some(frame.bytes.freeze());
                    }
                    Some(first) if rows::same_columns(&first[5..], frame.body()) => {}
                    Some(_) => answer.mismatch = true,
                },
                tag::DATA_ROW if show && !answer.mismatch => {
                    self.client.output.extend_from_slice(&frame.bytes)
                }
                tag::COMMAND_COMPLETE => {
                    let body = frame.body();
                    let text = body.strip_suffix(&[0]).unwrap_or(body);
                    tags.push(String::from_utf8_lossy(text).into_owned());
                    if show && !split {
                        self.client.output.extend_from_slice(&frame.bytes);
                    }
                }
                tag::EMPTY_QUERY_RESPONSE | tag::NO_DATA if show && !split => {
                    self.client.output.extend_from_slice(&frame.bytes)
                }
                tag::ERROR_RESPONSE if error.is_none() => {
                    self.watch_error(frame.body());
                    error = Some(server_error(frame.bytes.freeze()));
                }
                tag::NOTICE_RESPONSE if forward => {
                    self.client.output.extend_from_slice(&frame.bytes)
                }
                tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                // A COPY FROM STDIN cannot be fed to several shards here: end it on the server.
                tag::COPY_IN_RESPONSE => {
                    answer.copy_in = true;
                    conn.write(&copy_fail()).await?;
                }
                tag::READY_FOR_QUERY => {
                    conn.note_ready_for_query(frame.body());
                    return Ok(match error {
                        Some(e) => Outcome::Failed(e),
                        None => Outcome::Applied(tags),
                    });
                }
                _ => {}
            }
            if self.client.output.len() > FLUSH_AT {
                self.client.drain().await?;
            }
        }
    }

    /// The end of the client's answer: the total for a split INSERT, or one error naming the
    /// shards that applied their part and those that did not. `true` when it is an error.
    fn conclude(
        &mut self,
        shards: &[usize],
        outcomes: &[Outcome],
        split: bool,
        answer: &Answer,
    ) -> bool {
        let names: Vec<&str> = shards
            .iter()
            .map(|&s| self.shared.shards[s].name.as_str())
            .collect();
        let applied: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(outcomes[i], Outcome::Applied(_)))
            .collect();
        if answer.copy_in && applied.is_empty() {
            let error = ClientError::from(&MultiShardError::CopyIntoReference);
            self.shared.metrics.error(error.code.as_str());
            error.encode(&mut self.client.output);
            return true;
        }
        if applied.len() == outcomes.len() {
            if answer.mismatch {
                tracing::warn!("a write on several shards returned different columns per shard");
                let error = ClientError::from(&MultiShardError::DifferentReturning);
                self.shared.metrics.error(error.code.as_str());
                error.encode(&mut self.client.output);
                return true;
            } else if split {
                let total: u64 = outcomes.iter().map(inserted).sum();
                build::command_complete(&mut self.client.output, &format!("INSERT 0 {total}"));
            } else {
                warn_if_counts_differ(&names, outcomes);
            }
            return false;
        }
        if let [Outcome::Failed(first), ..] = outcomes {
            if outcomes.iter().all(|o| matches!(o, Outcome::Failed(_))) {
                // It failed everywhere, so nothing applied: the server's own error says it all.
                self.shared.metrics.error(first.code.as_str());
                self.client.output.extend_from_slice(&first.bytes);
                return true;
            }
        }
        let error = ClientError::from(&partial_failure(&names, outcomes, split));
        tracing::warn!("{}", error.message);
        self.shared.metrics.error(error.code.as_str());
        error.encode(&mut self.client.output);
        true
    }
}

/// The rows a shard's `INSERT 0 <n>` reports.
fn inserted(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Applied(tags) => tags
            .iter()
            .filter_map(|t| t.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
        _ => 0,
    }
}

/// All shards should report the same counts for a reference write; if not, the tables differ.
fn warn_if_counts_differ(names: &[&str], outcomes: &[Outcome]) {
    let tags: Vec<&[String]> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Applied(tags) => Some(tags.as_slice()),
            _ => None,
        })
        .collect();
    if tags.windows(2).any(|w| w[0] != w[1]) {
        let per_shard: Vec<String> = names
            .iter()
            .zip(&tags)
            .map(|(name, tags)| format!("{name}: {}", tags.join("; ")))
            .collect();
        tracing::warn!(
            "a write to every shard changed different row counts per shard ({}); the reference \
             tables differ between shards",
            per_shard.join(", ")
        );
    }
}

/// The error for a write that applied on some shards and not on others.
fn partial_failure(names: &[&str], outcomes: &[Outcome], split: bool) -> MultiShardError {
    let list = |pick: &dyn Fn(&Outcome) -> bool| -> Vec<&str> {
        names
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| pick(o))
            .map(|(n, _)| *n)
            .collect()
    };
    let applied = list(&|o| matches!(o, Outcome::Applied(_)));
    let failed = list(&|o| !matches!(o, Outcome::Applied(_)));
    let mut code = SqlState::CONNECTION_FAILURE;
    let mut reasons = Vec::new();
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Outcome::Applied(_) => {}
            Outcome::Failed(e) => {
                if reasons.is_empty() {
                    code = e.code;
                }
                let detail = e
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                reasons.push(format!("{name}: {}{detail}", e.message));
            }
            Outcome::Lost(why) => reasons.push(format!(
                "{name}: the server connection failed before it answered ({why}), so whether it \
                 applied there is unknown"
            )),
        }
    }
    let applied = if applied.is_empty() {
        "none".to_string()
    } else {
        applied.join(", ")
    };
    let failed = failed.join(", ");
    let reasons = reasons.join("; ");
    if split {
        MultiShardError::SplitInsertPartial {
            code,
            applied,
            failed,
            reasons,
        }
    } else {
        MultiShardError::EverywherePartial {
            code,
            applied,
            failed,
            reasons,
        }
    }
}

/// The SQLSTATE, message and detail of an ErrorResponse.
fn server_error(bytes: Bytes) -> ServerError {
    let mut error = ServerError {
        code: SqlState::INTERNAL_ERROR,
        message: String::new(),
        detail: None,
        bytes: Bytes::new(),
    };
    for field in bytes.get(5..).unwrap_or_default().split(|&b| b == 0) {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        match field.split_first() {
            Some((b'C', v)) => error.code = SqlState::from_server(&text(v)),
            Some((b'M', v)) => error.message = text(v),
            Some((b'D', v)) => error.detail = Some(text(v)),
            _ => {}
        }
    }
    error.bytes = bytes;
    error
}

/// A CopyFail message ending a COPY FROM STDIN that a fan-out cannot feed.
fn copy_fail() -> BytesMut {
    let message = b"pgshard: COPY into a table kept on every shard is not supported; use INSERT\0";
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(b'f');
    // The length counts itself (4 bytes) and the message; the message is a short constant.
    out.put_i32(4 + message.len() as i32);
    out.put_slice(message);
    out
}
