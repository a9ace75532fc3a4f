//! Server frames in a session: forwards them to the client as bytes, matching each response to
//! what was sent ([`Expect`]) so that responses to pgshard's own Parses are dropped, made-up ones
//! are slotted in, and ReadyForQuery's status tells when the server connection may be released.

use bytes::Buf;

use super::error::SessionError;
use super::prepared::Expect;
use super::settings::FOLLOWED_REPORTS;
use super::Session;
use crate::backend::connection::parse_parameter_status;
use crate::backend::{BackendError, MAX_SERVER_MESSAGE};
use crate::transport::Stream;
use crate::wire;
use crate::wire::build;
use crate::wire::server_tag as tag;
use crate::wire::{Frame, TransactionStatus};

impl<S: Stream> Session<S> {
    /// Reads what the server sent and handles every complete frame.
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionError> {
        if let Some(conn) = self.server.as_deref_mut() {
            // Most of what the server sent goes on to the client: room for all of it at once
            // (an idle client's output buffer was given back) instead of growing frame by frame.
            self.client.output.reserve(conn.io().input.len());
        }
        loop {
            self.drain_made_up();
            let Some(conn) = self.server.as_deref_mut() else {
                return Ok(());
            };
            if self.proto.expect.front() != Some(&Expect::Hidden) {
                // A run of DataRows goes on to the client in one copy: nothing is tracked of
                // them but that the answer is under way (what `on_server_frame` does for each).
                let input = &mut conn.io().input;
                let run = wire::run_of(input, tag::DATA_ROW, MAX_SERVER_MESSAGE);
                if run > 0 {
                    self.client.output.extend_from_slice(&input[..run]);
                    input.advance(run);
                    self.answer_queued(tag::DATA_ROW, run);
                    continue;
                }
            }
            let frame = match conn.io().next_frame(MAX_SERVER_MESSAGE) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(_) => {
                    conn.mark_broken();
                    return Err(BackendError::Protocol(conn.addr().to_string()).into());
                }
            };
            let fatal = frame.tag() == tag::ERROR_RESPONSE && is_fatal(frame.body());
            let idle = self.proto.expect.is_empty()
                && !self.proto.awaiting_sync
                && conn.status() == TransactionStatus::Idle;
            if fatal && idle {
                // Nothing is owed to the client and no transaction is open: the server is going
                // away between requests (shutdown). That is no news for the client: close this
                // server connection and keep serving the client elsewhere.
                conn.mark_broken();
                self.let_go_of_server();
                return Ok(());
            }
            let unanswered = fatal
                && self
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.unsent(&self.client.output));
            if unanswered {
                // The server is going away (shutdown, crash) before answering a plain read (at
                // most its headers were queued, none written): treat it as lost, so the read
                // runs elsewhere (`recover_server` takes the headers back).
                conn.mark_broken();
                let source = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
                return Err(BackendError::Io {
                    addr: conn.addr().to_string(),
                    source,
                }
                .into());
            }
            if fatal {
                // The server ends this session (PostgreSQL closes after a FATAL): the client
                // gets the error as PostgreSQL sent it, and its session with pgshard ends with
                // it, as the server's would have. A FATAL answering what pgshard sent on its
                // own (a held-back BEGIN) is not forwarded: the client is told of a lost
                // server connection instead.
                conn.mark_broken();
                let addr = conn.addr().to_string();
                if self.on_server_frame(frame) {
                    return Err(SessionError::ServerEnded);
                }
                let source = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
                return Err(BackendError::Io { addr, source }.into());
            }
            self.on_server_frame(frame);
        }
    }

    /// Sends the made-up responses that are due now (nothing owed by the server before them).
    pub(super) fn drain_made_up(&mut self) {
        while let Some(front) = self.proto.expect.front() {
            let before = self.client.output.len();
            let made = match front {
                Expect::MadeUpParseComplete => {
                    build::parse_complete(&mut self.client.output);
                    tag::PARSE_COMPLETE
                }
                Expect::MadeUpCloseComplete => {
                    build::close_complete(&mut self.client.output);
                    tag::CLOSE_COMPLETE
                }
                Expect::Answer(bytes) => {
                    self.client.output.extend_from_slice(bytes);
                    // pgshard's own answer: never taken back.
                    0
                }
                _ => return,
            };
            self.proto.expect.pop_front();
            let len = self.client.output.len() - before;
            self.answer_queued(made, len);
        }
    }

    /// Handles one server frame; `true` when it went on to the client.
    fn on_server_frame(&mut self, frame: Frame) -> bool {
        self.watch_schema(&frame);
        if self.proto.expect.front() == Some(&Expect::Hidden) {
            if frame.tag() == tag::READY_FOR_QUERY {
                self.proto.expect.pop_front();
                let status = frame
                    .body()
                    .first()
                    .and_then(|&b| TransactionStatus::from_byte(b));
                if let (Some(conn), Some(status)) = (self.server.as_deref_mut(), status) {
                    conn.set_status(status);
                }
            }
            return false;
        }
        let forward = match frame.tag() {
            tag::PARSE_COMPLETE => match self.proto.expect.pop_front() {
                Some(Expect::Parse { forward, .. }) => forward,
                _ => true,
            },
            tag::BIND_COMPLETE | tag::CLOSE_COMPLETE => {
                self.proto.expect.pop_front();
                true
            }
            tag::ROW_DESCRIPTION | tag::NO_DATA => {
                self.pop_if(|e| *e == Expect::Describe);
                true
            }
            tag::COMMAND_COMPLETE => {
                self.note_command(frame.body());
                self.pop_if(|e| *e == Expect::Execute);
                true
            }
            tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED => {
                self.pop_if(|e| *e == Expect::Execute);
                true
            }
            tag::ERROR_RESPONSE => {
                self.shared.metrics.error_frame(&frame.bytes);
                self.proto.copy_in = false;
                self.skip_to_sync();
                true
            }
            tag::COPY_IN_RESPONSE => {
                self.enter_copy_in();
                true
            }
            tag::READY_FOR_QUERY => self.on_ready_for_query(frame.body()),
            tag::PARAMETER_STATUS => {
                self.follow_parameter_status(frame.body());
                true
            }
            _ => true,
        };
        if forward {
            self.client.output.extend_from_slice(&frame.bytes);
            self.answer_queued(frame.tag(), frame.bytes.len());
        }
        forward
    }

    /// `len` bytes of a frame tagged `tag` were queued for the client: past its headers, the
    /// request in progress can no longer run again elsewhere.
    fn answer_queued(&mut self, tag: u8, len: usize) {
        if !self
            .replay
            .as_mut()
            .is_some_and(|r| r.answer_queued(tag, len))
        {
            self.replay = None;
        }
    }

    /// Commands that change the server connection's session state, known by their
    /// CommandComplete tag once they have run (a failed DISCARD ALL changed nothing): DISCARD ALL
    /// and DEALLOCATE ALL drop every prepared statement; SET, RESET and DISCARD leave its
    /// settings unlike what pgshard applied (and may have reset a startup value); CREATE, DROP,
    /// DECLARE, CLOSE, PREPARE, DEALLOCATE, LISTEN and UNLISTEN may make or end state that pins
    /// the client. The session reads the state back at its next quiet point. (SETs inside
    /// functions, `DO`, `set_config` calls and advisory locks are noticed from the statement
    /// text instead: [`crate::router::Router::may_change_session`].)
    fn note_command(&mut self, body: &[u8]) {
        let Some(conn) = self.server.as_deref_mut() else {
            return;
        };
        let tag = body.strip_suffix(b"\0").unwrap_or(body);
        match tag {
            b"DISCARD ALL" => {
                conn.forget_all_prepared();
                conn.mark_settings_unknown();
            }
            b"DEALLOCATE ALL" => conn.forget_all_prepared(),
            // SET LOCAL, SET TRANSACTION: nothing outlives the transaction.
            b"SET" if self.effects.local => return,
            b"SET" | b"RESET" => conn.mark_settings_unknown(),
            _ => {}
        }
        let resets = matches!(tag, b"SET" | b"RESET") || tag.starts_with(b"DISCARD");
        let word = tag.split(|&b| b == b' ').next().unwrap_or_default();
        let stateful = matches!(
            word,
            b"CREATE"
                | b"DROP"
                | b"DECLARE"
                | b"CLOSE"
                | b"PREPARE"
                | b"DEALLOCATE"
                | b"LISTEN"
                | b"UNLISTEN"
        );
        if resets || stateful {
            self.state.note_change(resets, resets);
        }
    }

    fn pop_if(&mut self, is: impl Fn(&Expect) -> bool) {
        if self.proto.expect.front().is_some_and(is) {
            self.proto.expect.pop_front();
        }
    }

    /// After an error in an extended-protocol batch the server skips everything up to Sync:
    /// so does the queue, and Parses that never ran are forgotten.
    fn skip_to_sync(&mut self) {
        while let Some(front) = self.proto.expect.front() {
            if matches!(
                front,
                Expect::Ready | Expect::ReadyBeforeBegin | Expect::InternalReady
            ) {
                return;
            }
            if let Some(Expect::Parse {
                server_name: Some(name),
                ..
            }) = self.proto.expect.pop_front()
            {
                if let Some(conn) = self.server.as_deref_mut() {
                    conn.forget_prepared(&name);
                }
            }
        }
    }

    /// In copy-in mode the server reads the client's frames up to CopyDone or CopyFail and ignores
    /// any Sync among them, such as the one drivers send right after the COPY's Execute: the
    /// ReadyForQuery queued for those will never come. (Clients wait for CopyInResponse before
    /// sending CopyDone, so every Sync queued behind the COPY so far is one of these.)
    fn enter_copy_in(&mut self) {
        self.proto.copy_in = true;
        let mut i = 1; // the COPY's own Execute, or its Query's ReadyForQuery, stays first
        while i < self.proto.expect.len() {
            if self.proto.expect[i] == Expect::Ready {
                self.proto.expect.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Ends a request; returns whether the ReadyForQuery is the client's to see as is.
    fn on_ready_for_query(&mut self, body: &[u8]) -> bool {
        let internal = self.proto.expect.front() == Some(&Expect::InternalReady);
        let before_begin = self.proto.expect.front() == Some(&Expect::ReadyBeforeBegin);
        self.pop_if(|e| {
            matches!(
                e,
                Expect::Ready | Expect::ReadyBeforeBegin | Expect::InternalReady
            )
        });
        let status = body.first().and_then(|&b| TransactionStatus::from_byte(b));
        let done = self.proto.expect.is_empty() && !self.proto.awaiting_sync;
        if let Some(conn) = self.server.as_deref_mut() {
            if let Some(status) = status {
                conn.set_status(status);
            }
            if done {
                conn.set_in_flight(false);
            }
        }
        if done && !internal {
            self.meter_request_done();
        }
        if internal {
            return false;
        }
        if let Some(held) = self.held {
            let started = if done {
                self.request_started.take()
            } else {
                None
            };
            // A transaction ended, and it ran a statement (not only a Describe).
            let ended = status == Some(TransactionStatus::Idle)
                && std::mem::take(&mut self.statement_on_server);
            let now = self.meter.now();
            self.shared
                .metrics
                .request_done(held.shard, started, now, ended);
        }
        if before_begin {
            return true;
        }
        if let Some(status) = status {
            if !self.tx.on_server_ready(status) {
                // The client's transaction is held back (this server ran a Describe outside
                // it): the client stays "in transaction" whatever this server says.
                build::ready_for_query(&mut self.client.output, self.tx.status());
                return false;
            }
        }
        true
    }

    /// A setting the client changed itself (SET TimeZone ...) follows it to the next server.
    fn follow_parameter_status(&mut self, body: &[u8]) {
        let Some((name, value)) = parse_parameter_status(body) else {
            return;
        };
        if let Some(conn) = self.server.as_deref_mut() {
            if FOLLOWED_REPORTS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&name))
            {
                self.state.follow_report(&name, value.clone());
                conn.note_applied(name, value);
            } else {
                conn.note_parameter_status(body);
            }
        }
    }
}

/// Whether an ErrorResponse body has severity FATAL or PANIC (the server ends the connection).
fn is_fatal(body: &[u8]) -> bool {
    body.split(|&b| b == 0)
        .any(|field| matches!(field, b"VFATAL" | b"VPANIC" | b"SFATAL" | b"SPANIC"))
}
