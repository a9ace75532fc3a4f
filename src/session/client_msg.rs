//! Client frames in a session: decides per message what goes to the server (renaming prepared
//! statements, adding the Parses a server connection lacks) and what pgshard answers itself.
//! Reads only tags and statement names; everything else is forwarded as bytes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::SessionError;
use super::prepared::{Expect, Statement};
use super::state::Effects;
use super::{Flow, Session};
use crate::config::{PoolMode, SessionStatePolicy};
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::client_tag as tag;
use crate::wire::extended::{Bind, Parse, Target, TargetKind};
use crate::wire::Frame;

impl<S: Stream> Session<S> {
    /// Handles every complete frame the client has sent (and the one that waited for a route).
    pub(super) async fn on_client_data(&mut self) -> Result<Flow, SessionError> {
        loop {
            // A frame that waited for a route already passed the rate limit.
            let fresh = self.proto.stalled.is_none();
            let Some(frame) = self.next_client_frame()? else {
                break;
            };
            let t = frame.tag();
            if t == tag::TERMINATE {
                return Ok(Flow::Exit);
            }
            if fresh && (t == tag::QUERY || t == tag::EXECUTE) && !self.proto.skipping_until_sync {
                if let Err(e) = self.take_statement_token().await {
                    self.refuse(&e, t == tag::QUERY);
                    continue;
                }
            }
            if self.proto.skipping_until_sync {
                if t == tag::SYNC {
                    self.proto.skipping_until_sync = false;
                    if self.server.is_some() && self.proto.awaiting_sync {
                        // Part of this batch went to the server: its Sync ends it there, and the
                        // server's ReadyForQuery follows the refusal.
                        self.forward(frame)?;
                    } else {
                        let status = self.tx.status();
                        self.answer(|out| build::ready_for_query(out, status));
                    }
                }
                continue;
            }
            if let Some(frame) = self.dispatch(frame).await? {
                self.proto.stalled = Some(frame);
                break;
            }
        }
        self.drain_made_up();
        if self.server.is_none() && self.proto.expect.is_empty() {
            // Answered by pgshard itself, or run across shards and merged: the request is over.
            self.meter_request_done();
        }
        Ok(Flow::Continue)
    }

    fn next_client_frame(&mut self) -> Result<Option<Frame>, SessionError> {
        if let Some(frame) = self.proto.stalled.take() {
            return Ok(Some(frame));
        }
        Ok(self.client.next_frame(self.max_message)?)
    }

    /// Queues one client frame for the server connection this session holds.
    pub(super) fn forward(&mut self, frame: Frame) -> Result<(), SessionError> {
        if self.request_started.is_none() {
            let now = self.meter.now();
            self.request_started = self.shared.metrics.enabled().then_some(now);
        }
        if let Some(replay) = self.replay.as_mut() {
            replay.frames.push(frame.bytes.clone());
        }
        match frame.tag() {
            tag::QUERY => {
                self.send(&frame.bytes, Some(Expect::Ready));
                self.proto.awaiting_sync = false;
            }
            // The server ignores a Sync in copy-in mode, so no ReadyForQuery is owed for it.
            tag::SYNC if self.proto.copy_in => self.send(&frame.bytes, None),
            tag::SYNC | tag::FUNCTION_CALL => {
                self.send(&frame.bytes, Some(Expect::Ready));
                self.proto.awaiting_sync = false;
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.send(&frame.bytes, None);
                self.proto.copy_in = false;
            }
            tag::PARSE => self.forward_parse(&frame)?,
            tag::BIND => self.forward_bind(&frame)?,
            tag::DESCRIBE => self.forward_describe(&frame)?,
            tag::CLOSE => self.forward_close(&frame)?,
            tag::EXECUTE => {
                self.send(&frame.bytes, Some(Expect::Execute));
                self.proto.awaiting_sync = true;
            }
            tag::FLUSH => {
                self.send(&frame.bytes, None);
                self.proto.awaiting_sync = true;
            }
            // CopyData, CopyDone, CopyFail, and anything else: the server judges it.
            _ => self.send(&frame.bytes, None),
        }
        Ok(())
    }

    pub(super) fn send(&mut self, bytes: &[u8], expect: Option<Expect>) {
        self.send_with(expect, |out| out.extend_from_slice(bytes));
    }

    /// Like [`Self::send`], the message written straight into the server's output by `write`.
    fn send_with(&mut self, expect: Option<Expect>, write: impl FnOnce(&mut BytesMut)) {
        if let Some(expect) = expect {
            self.proto.expect.push_back(expect);
        }
        if let Some(conn) = self.server.as_deref_mut() {
            write(&mut conn.io().output);
            conn.set_in_flight(true);
            if self.effects.changes {
                conn.mark_settings_unknown();
                self.state
                    .note_change(self.effects.settings, self.effects.settings);
            }
        }
    }

    /// What a statement text may do to the server session (see `state::Effects`).
    pub(super) fn effects_of(&mut self, query: &[u8]) -> Effects {
        let sql = crate::wire::text_of(query.strip_suffix(&[0]).unwrap_or(query));
        let refuse = self.mode == PoolMode::Transaction
            && self.shared.config.server.session_state == SessionStatePolicy::Refuse;
        Effects::of(&sql, &self.shared.router.load(), refuse, &mut self.state)
    }

    /// Notes what the client's next statement may do to a server session: everything sent and
    /// every connection taken until the next Query or Bind is marked for a reset, and the
    /// session read back, if it may change the role, settings or session state unseen.
    pub(super) fn note_session_effects(&mut self, frame: &Frame) -> Result<(), SessionError> {
        match frame.tag() {
            tag::QUERY => self.effects = self.effects_of(frame.body()),
            tag::FUNCTION_CALL => {
                self.effects = Effects {
                    changes: true,
                    ..Effects::NONE
                }
            }
            tag::BIND => {
                let bind = Bind::decode(frame.body())?;
                self.effects = if bind.statement.is_empty() {
                    self.unnamed.effects
                } else {
                    self.statements
                        .get(bind.statement)
                        .map_or(Effects::NONE, |s| s.effects)
                };
            }
            _ => {}
        }
        Ok(())
    }

    /// Records a Parse: a named statement under the client's name (with its plan), the unnamed
    /// one's plan for the Bind that follows.
    pub(super) fn register_parse(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let parse = Parse::decode(frame.body())?;
        let plan = self.plan_text(parse.query());
        let effects = self.effects_of(parse.query());
        if parse.name.is_empty() {
            self.unnamed.plan = plan;
            self.unnamed.types = parse.param_types();
            self.unnamed.effects = effects;
            self.unnamed.parse = Some(Bytes::copy_from_slice(&frame.bytes));
            self.unnamed.held = false;
        } else {
            self.statements
                .insert(parse.name, Arc::new(Statement::new(&parse, plan, effects)));
        }
        Ok(())
    }

    fn forward_parse(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.proto.awaiting_sync = true;
        let parse = Parse::decode(frame.body())?;
        let statement = match self.statements.get(parse.name) {
            Some(statement) if !parse.name.is_empty() => statement,
            _ => {
                let expect = Expect::Parse {
                    forward: true,
                    server_name: None,
                };
                self.send(&frame.bytes, Some(expect));
                self.unnamed.held |= parse.name.is_empty();
                return Ok(());
            }
        };
        if self.server_has(&statement) {
            self.proto.expect.push_back(Expect::MadeUpParseComplete);
        } else {
            self.send_parse(&statement, true);
        }
        Ok(())
    }

    fn forward_bind(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.proto.awaiting_sync = true;
        let bind = Bind::decode(frame.body())?;
        match self.named_statement(bind.statement) {
            Some(statement) => self.send_with(Some(Expect::Bind), |out| {
                bind.encode_renamed_into(&statement.server_name, out)
            }),
            None => {
                if bind.statement.is_empty() {
                    self.send_unnamed_if_missing();
                }
                self.send(&frame.bytes, Some(Expect::Bind));
            }
        }
        Ok(())
    }

    fn forward_describe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.proto.awaiting_sync = true;
        let target = Target::decode(frame.body(), "Describe")?;
        match self.statement_target(&target) {
            Some(statement) => {
                let renamed = Target::encode_statement(tag::DESCRIBE, &statement.server_name);
                self.send(&renamed, Some(Expect::Describe));
            }
            None => {
                if target.kind == TargetKind::Statement && target.name.is_empty() {
                    self.send_unnamed_if_missing();
                }
                self.send(&frame.bytes, Some(Expect::Describe));
            }
        }
        Ok(())
    }

    fn forward_close(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.proto.awaiting_sync = true;
        let target = Target::decode(frame.body(), "Close")?;
        if target.kind == TargetKind::Statement && !target.name.is_empty() {
            // Server connections keep the statement for other clients; only this client forgets it.
            self.statements.remove(target.name);
            self.proto.expect.push_back(Expect::MadeUpCloseComplete);
        } else {
            self.send(&frame.bytes, Some(Expect::Close));
        }
        Ok(())
    }

    /// The client's named statement for a Describe of a statement, made present on the server.
    fn statement_target(&mut self, target: &Target<'_>) -> Option<Arc<Statement>> {
        match target.kind {
            TargetKind::Statement => self.named_statement(target.name),
            TargetKind::Portal => None,
        }
    }

    /// A client's named statement, with its Parse queued first if the server lacks it.
    /// `None` for the unnamed statement and for names the client never prepared (the server then
    /// answers with its own error).
    fn named_statement(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        if name.is_empty() {
            return None;
        }
        let statement = self.statements.get(name)?;
        if !self.server_has(&statement) {
            self.send_parse(&statement, false);
        }
        Some(statement)
    }

    /// Sends the client's unnamed statement to the held connection if it never got it (the batch
    /// moved there after its Parse went elsewhere); that ParseComplete is not the client's.
    fn send_unnamed_if_missing(&mut self) {
        if self.unnamed.held {
            return;
        }
        if let Some(parse) = self.unnamed.parse.clone() {
            let expect = Expect::Parse {
                forward: false,
                server_name: None,
            };
            self.send(&parse, Some(expect));
            self.unnamed.held = true;
        }
    }

    fn server_has(&self, statement: &Statement) -> bool {
        self.server
            .as_deref()
            .is_some_and(|c| c.has_prepared(&statement.server_name))
    }

    fn send_parse(&mut self, statement: &Statement, forward: bool) {
        if let Some(conn) = self.server.as_deref_mut() {
            conn.note_prepared(statement.server_name.clone());
        }
        let expect = Expect::Parse {
            forward,
            server_name: Some(statement.server_name.clone()),
        };
        self.send(&statement.parse, Some(expect));
    }
}
