//! Routing in a session: asks the router where each statement goes, takes a server connection of
//! that shard (primary, or a healthy replica for plain reads), holds back BEGIN until the first
//! statement picks the shard, and keeps a transaction on one shard. Never splits a transaction and
//! never reads SQL itself beyond handing the text to the router.

use std::sync::Arc;

use bytes::Bytes;

use super::bound::Bound;
use super::copy_split::CopyJob;
use super::error::{SessionError, Unsupported};
use super::fanout::FanOut;
use super::prepared::Expect;
use super::replay::Replay;
use super::Session;
use crate::config::PoolMode;
use crate::metrics::RouteKind;
use crate::router::{
    normalize_literals, Execution, OverrideChange, Params, Plan, Route, RouteContext, SessionView,
    StatementKind, Target, TransactionControl,
};
use crate::transport::Stream;
use crate::wire::client_tag as tag;
use crate::wire::extended::Bind;
use crate::wire::{build, Frame, TransactionStatus};

/// What to do with a client frame: the router's [`Execution`] for statements, or the session's
/// own protocol steps around it.
pub(super) enum Decision {
    /// Carry out what the router decided.
    Run(Execution),
    /// Keep it until a later frame decides the route (a Parse before its Bind).
    Pending,
    /// pgshard answered it itself.
    Answered,
    /// Refuse it: an ErrorResponse, then ReadyForQuery (simple) or skip to Sync (extended).
    Failed(SessionError),
    /// Send it to this shard without starting a held-back transaction there (a statement
    /// described before its Bind picks the shard).
    Preview { shard: usize },
    /// Send this frame instead (COMMIT of an aborted transaction becomes ROLLBACK).
    ForwardAs(Frame),
    /// Learn the column order of a sharded table first (an INSERT without a column list into
    /// a table whose order pgshard lacks), then decide again.
    LearnColumns,
}

impl<S: Stream> Session<S> {
    /// Routes one client frame and forwards it. Gives the frame back when it must wait until the
    /// server connection held now is released (it goes elsewhere and no transaction pins it).
    pub(super) async fn dispatch(&mut self, frame: Frame) -> Result<Option<Frame>, SessionError> {
        let frame = if self.proto.bound.is_some() {
            match Box::pin(self.continue_bound(frame)).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(SessionError::ClientIo(e)) => return Err(SessionError::ClientIo(e)),
                Err(e) => {
                    self.refuse(&e, false);
                    return Ok(None);
                }
            }
        } else {
            frame
        };
        self.meter_frame(frame.tag(), frame.bytes.len());
        self.note_session_effects(&frame)?;
        let running = self.held.filter(|h| h.primary).map(|h| h.shard);
        self.own_writes.refresh(&self.shared.shards, running);
        self.follow_schema().await;
        let refused = self
            .effects
            .refused
            .filter(|_| matches!(frame.tag(), tag::QUERY | tag::BIND));
        let mut decision = match refused {
            Some(statement) => Ok(Decision::Failed(
                Unsupported::SessionState { statement }.into(),
            )),
            None => {
                self.cutover.slot = None;
                self.decide(&frame)
            }
        };
        if matches!(decision, Ok(Decision::LearnColumns)) {
            self.learn_columns_for_statement().await;
            decision = self.decide(&frame);
        }
        self.statement_routed();
        let mut decision = decision?;
        if self.shared.control.holds.enabled() && self.held_at_cutover(&decision) {
            // Boxed: only a statement that waits at a hold pays for this future.
            decision = Box::pin(self.wait_at_cutover(&frame)).await?;
        }
        let simple = matches!(frame.tag(), tag::QUERY | tag::FUNCTION_CALL);
        if is_statement(&frame) {
            match &decision {
                Decision::Answered => self.count_statement(RouteKind::Local, false),
                Decision::Failed(_) => self.count_statement(RouteKind::Refused, false),
                Decision::ForwardAs(_) => self.count_statement(RouteKind::SingleShard, true),
                _ => {}
            }
        }
        match decision {
            Decision::Run(execution) => return self.execute(frame, execution, simple).await,
            Decision::Pending => self.proto.pending.push(frame),
            Decision::Answered => {}
            Decision::Failed(e) => self.refuse(&e, simple),
            Decision::ForwardAs(replacement) => self.forward(replacement)?,
            // Only before learning: the frame is then decided again, and never waits twice.
            Decision::LearnColumns => {}
            Decision::Preview { shard } => {
                return self
                    .forward_to(shard, Target::Primary, false, frame, simple)
                    .await;
            }
        }
        Ok(None)
    }

    /// What to do with a client frame.
    pub(super) fn decide(&mut self, frame: &Frame) -> Result<Decision, SessionError> {
        Ok(match frame.tag() {
            tag::QUERY => self.route_query(frame),
            tag::PARSE => self.note_parse(frame)?,
            tag::BIND => self.route_bind(frame)?,
            other => self.route_other(other),
        })
    }

    /// Carries out the router's decision for `frame`. Gives the frame back when it must wait
    /// until the server connection held now is released.
    async fn execute(
        &mut self,
        frame: Frame,
        execution: Execution,
        simple: bool,
    ) -> Result<Option<Frame>, SessionError> {
        // Whether it runs on the held connection, whose ReadyForQuery counts its transaction.
        let on_held = matches!(execution, Execution::Held | Execution::Shard { .. });
        let kind = is_statement(&frame).then(|| route_kind(&execution));
        let outcome = match execution {
            Execution::Held => self.forward(frame).map(|()| None),
            Execution::Shard { shard, target } => {
                let given_back = self.forward_to(shard, target, true, frame, simple).await;
                if let (Some(kind), Ok(None)) = (kind, &given_back) {
                    self.count_statement(kind, true);
                }
                return given_back;
            }
            Execution::Refuse(e) => {
                self.refuse(&SessionError::Route(e), simple);
                Ok(None)
            }
            Execution::Local(change) => {
                self.answer_override(&change);
                Ok(None)
            }
            Execution::ReleaseFirst => {
                self.end_held_batch();
                Ok(Some(frame))
            }
            // Waits until the connection held now (answering an earlier query) is released.
            Execution::FanOut(_) if self.server.is_some() => {
                if !simple {
                    self.end_held_batch();
                }
                Ok(Some(frame))
            }
            Execution::FanOut(plan) if !simple => self
                .begin_bound_fan_out(&frame, FanOut::from(plan))
                .map(|()| None),
            // Cross-shard work and COPY: large futures, boxed so that the single-shard path
            // (and an idle client's session) does not carry their size.
            Execution::FanOut(plan) => Box::pin(self.fan_out(&frame, FanOut::from(plan)))
                .await
                .map(|()| None),
            Execution::CopyIn(copy) => Box::pin(self.copy(frame, CopyJob::In(copy), simple)).await,
            Execution::CopyOut {
                shards,
                target,
                header,
            } => {
                let job = CopyJob::Out {
                    shards,
                    target,
                    header,
                };
                Box::pin(self.copy(frame, job, simple)).await
            }
            Execution::Scatter {
                shards,
                target,
                how,
            } if !simple => self
                .begin_extended_scatter(&frame, shards, target, how)
                .map(|portal| {
                    self.proto.bound = Some(Box::new(Bound::Scatter(portal)));
                    None
                }),
            Execution::Scatter {
                shards,
                target,
                how,
            } => Box::pin(self.scatter(&frame, &shards, target, &how))
                .await
                .map(|()| None),
        };
        // Counted once carried out (or failed): a frame given back is decided again.
        if let (Some(kind), false) = (kind, matches!(outcome, Ok(Some(_)))) {
            self.count_statement(kind, on_held);
        }
        match outcome {
            Err(SessionError::ClientIo(e)) => Err(SessionError::ClientIo(e)),
            Err(e) => {
                self.refuse(&e, simple);
                Ok(None)
            }
            Ok(frame) => Ok(frame),
        }
    }

    /// A statement was carried out as `kind`; outside a transaction it was one too (counted
    /// at its ReadyForQuery instead when it ran `on_held`, the held server connection).
    fn count_statement(&mut self, kind: RouteKind, on_held: bool) {
        let metrics = &self.shared.metrics;
        metrics.statement(kind);
        self.statement_on_server |= on_held;
        if !on_held && self.tx.is_outside() {
            metrics.transaction(kind);
        }
    }

    async fn copy(
        &mut self,
        frame: Frame,
        job: CopyJob,
        simple: bool,
    ) -> Result<Option<Frame>, SessionError> {
        Ok(match self.run_copy(&frame, job, simple).await? {
            true => None,
            false => Some(frame),
        })
    }

    /// Applies a `SET pgshard.*` / `RESET` the router answered locally, and answers it.
    fn answer_override(&mut self, change: &OverrideChange) {
        self.ctx.apply(change);
        if *change == OverrideChange::ResetAll {
            self.tx.reset_isolation_default();
        }
        let tag = match change {
            OverrideChange::ShardKey(_) | OverrideChange::Shard(_) => "SET",
            _ => "RESET",
        };
        let status = self.tx.status();
        self.answer(|out| {
            build::command_complete(out, tag);
            build::ready_for_query(out, status);
        });
    }

    async fn forward_to(
        &mut self,
        shard: usize,
        target: Target,
        start_transaction: bool,
        frame: Frame,
        simple: bool,
    ) -> Result<Option<Frame>, SessionError> {
        match self.take_server(shard, target, start_transaction).await {
            Ok(true) => {
                self.flush_pending()?;
                self.forward(frame)?;
            }
            Ok(false) => return Ok(Some(frame)),
            Err(e) => self.refuse(&e, simple),
        }
        Ok(None)
    }

    /// Reports an error for a statement that will not run, keeping the protocol in step.
    pub(super) fn refuse(&mut self, e: &SessionError, simple: bool) {
        self.fail_statement(simple);
        self.report_error(e);
        if simple {
            let status = self.tx.status();
            self.answer(|out| build::ready_for_query(out, status));
        }
    }

    fn default_route(&self) -> Decision {
        let shard = self.shared.router.load().default_shard();
        Decision::Run(Execution::Shard {
            shard,
            target: Target::Primary,
        })
    }

    fn route_query(&mut self, frame: &Frame) -> Decision {
        if !self.shared.routing {
            return self.held_or(self.default_route());
        }
        let body = frame.body();
        let sql = crate::wire::text_of(body.strip_suffix(&[0]).unwrap_or(body));
        if !self.tx.is_aborted() {
            if let Some(decision) = self.route_normalized(&sql) {
                return decision;
            }
        }
        let plan = self.shared.plan(&sql);
        if self.tx.is_aborted() {
            return self.while_aborted(&plan, frame);
        }
        self.note_planned(&plan);
        self.tx.note_isolation(plan.isolation_change());
        if let StatementKind::Transaction(control) = plan.kind() {
            if let Some(answered) = self.transaction_control(*control, frame) {
                return answered;
            }
            // Transaction control runs where the transaction is.
            if self.server.is_some() {
                return Decision::Run(Execution::Held);
            }
        }
        let router = self.shared.router.load();
        let route = router.route(&plan, &Params::NONE, self.route_context());
        if self.should_learn_columns(&plan, &route) {
            return Decision::LearnColumns;
        }
        if let Some(slot) = router.key_slot(&plan, &Params::NONE) {
            self.meter_slot(slot);
        }
        let primary = on_primary(&route);
        let execution = router.execution(&plan, route, &self.view(true));
        self.run(primary, execution)
    }

    /// Routes a statement by the plan of its text with literals as parameters, so statements that
    /// differ only in their literals share one cached plan. Used only when that plan is a parsed
    /// read or write landing on exactly one shard; anything else is planned from the original text.
    fn route_normalized(&mut self, sql: &str) -> Option<Decision> {
        let (normalized, literals) = normalize_literals(sql)?;
        let plan = self.shared.plan(&normalized);
        if !plan.is_parsed() || !matches!(plan.kind(), StatementKind::Read | StatementKind::Write) {
            return None;
        }
        let values: Vec<Option<&[u8]>> = literals.iter().map(|l| Some(l.as_bytes())).collect();
        let params = Params::new(&values, &[]);
        let router = self.shared.router.load();
        match router.route(&plan, &params, self.route_context()) {
            Ok(route @ Route::Shard { .. }) => {
                self.note_planned(&plan);
                if let Some(slot) = router.key_slot(&plan, &params) {
                    self.meter_slot(slot);
                }
                let primary = on_primary(&Ok(route.clone()));
                let execution = router.execution(&plan, Ok(route), &self.view(true));
                Some(self.run(primary, execution))
            }
            _ => None,
        }
    }

    /// BEGIN with no server held is answered here and sent later, with the first statement that
    /// picks a shard; COMMIT/ROLLBACK of such an empty transaction are answered here too (after
    /// anything a connection held for another reason, e.g. a Close, still owes the client).
    fn transaction_control(
        &mut self,
        control: TransactionControl,
        frame: &Frame,
    ) -> Option<Decision> {
        let free = self.server.is_none() || self.held_only_for_earlier_answers();
        match control {
            TransactionControl::Begin { read_only } => {
                if !free || !self.tx.is_outside() || self.mode == PoolMode::Session {
                    self.tx.note_begin(read_only);
                    return None;
                }
                self.tx
                    .hold_begin(Bytes::copy_from_slice(&frame.bytes), read_only);
                // What the held connection still answers was asked before this BEGIN.
                for expect in self.proto.expect.iter_mut() {
                    if *expect == Expect::Ready {
                        *expect = Expect::ReadyBeforeBegin;
                    }
                }
                self.answer(|out| build::command_complete(out, "BEGIN"));
            }
            TransactionControl::Commit | TransactionControl::Rollback if self.tx.is_held_back() => {
                let tag = self.tx.end_held_back(control);
                self.answer(|out| build::command_complete(out, tag));
            }
            _ => return None,
        }
        let status = self.tx.status();
        self.answer(|out| build::ready_for_query(out, status));
        Some(Decision::Answered)
    }

    /// The server connection held now serves no transaction and no session state of the
    /// client's: it only owes answers to earlier requests (a Close and its Sync, as tokio-postgres
    /// pipelines them). A BEGIN may then be held back for the shard its first statement picks.
    fn held_only_for_earlier_answers(&self) -> bool {
        let idle = self
            .server
            .as_deref()
            .is_some_and(|conn| conn.status() == TransactionStatus::Idle);
        idle && self.mode == PoolMode::Transaction
            && self.tx.is_outside()
            && !self.proto.awaiting_sync
            && self.state.pinned().is_none()
    }

    /// Answers the batch's pending Parses and a Bind that pgshard handles itself.
    pub(super) fn answer_parses_and_bind(&mut self) {
        let parses = std::mem::take(&mut self.proto.pending).len();
        self.answer(|out| {
            for _ in 0..parses {
                build::parse_complete(out);
            }
            build::bind_complete(out);
        });
    }

    /// In a transaction pgshard aborted: only its end (or a rollback to a savepoint) runs, and
    /// COMMIT rolls back, as PostgreSQL does after an error.
    fn while_aborted(&mut self, plan: &Plan, frame: &Frame) -> Decision {
        let StatementKind::Transaction(control) = plan.kind() else {
            return Decision::Failed(SessionError::TransactionAborted);
        };
        let ends = matches!(
            control,
            TransactionControl::Commit | TransactionControl::Rollback
        );
        if ends && self.tx.is_held_back() {
            if let Some(answered) = self.transaction_control(*control, frame) {
                return answered;
            }
        }
        match control {
            TransactionControl::Rollback | TransactionControl::RollbackTo => {
                self.tx.clear_abort();
                self.held_or(self.default_route())
            }
            TransactionControl::Commit if self.server.is_some() => {
                self.tx.clear_abort();
                let mut rollback = bytes::BytesMut::new();
                build::query(&mut rollback, "ROLLBACK");
                Decision::ForwardAs(Frame { bytes: rollback })
            }
            _ => Decision::Failed(SessionError::TransactionAborted),
        }
    }

    /// Registers a Parse's statement (with its plan); it goes to a server with the next frame
    /// that needs one.
    fn note_parse(&mut self, frame: &Frame) -> Result<Decision, SessionError> {
        self.register_parse(frame)?;
        Ok(if self.server.is_some() {
            Decision::Run(Execution::Held)
        } else {
            Decision::Pending
        })
    }

    /// Plans a statement's text when routing is on.
    pub(super) fn plan_text(&self, query: &[u8]) -> Option<Arc<Plan>> {
        self.shared
            .routing
            .then(|| self.shared.plan(&crate::wire::text_of(query)))
    }

    fn route_bind(&mut self, frame: &Frame) -> Result<Decision, SessionError> {
        if !self.shared.routing {
            return Ok(self.held_or(self.default_route()));
        }
        let bind = Bind::decode(frame.body())?;
        let statement = (!bind.statement.is_empty())
            .then(|| self.statements.get(bind.statement))
            .flatten();
        let plan = match &statement {
            Some(s) => s.plan.clone(),
            None if bind.statement.is_empty() => self.unnamed.plan.clone(),
            None => None,
        };
        let plan = plan.map(|plan| self.current_plan(&bind, plan));
        if let Some(plan) = plan.as_deref() {
            self.note_planned(plan);
            self.tx.note_isolation(plan.isolation_change());
        }
        if let Some(StatementKind::Transaction(control)) = plan.as_deref().map(Plan::kind) {
            let control = *control;
            if self.bound_transaction_control(control, &bind)? {
                return Ok(Decision::Answered);
            }
            if matches!(
                control,
                TransactionControl::Rollback | TransactionControl::RollbackTo
            ) {
                // As in PostgreSQL, a rollback ends what an error aborted.
                self.tx.clear_abort();
            }
        }
        if self.tx.is_aborted() {
            return Ok(Decision::Failed(SessionError::TransactionAborted));
        }
        let Some(plan) = plan else {
            // Unknown statement: the server answers with its own error.
            return Ok(self.held_or(self.default_route()));
        };
        self.ctx.transaction = self.tx.mode();
        let types = match &statement {
            Some(s) => &s.param_types[..],
            None => &self.unnamed.types[..],
        };
        let params = bind.params()?;
        let params = Params::new(&params.values, &params.formats).with_types(types);
        let router = self.shared.router.load();
        let route = router.route(&plan, &params, &self.ctx);
        let slot = router.key_slot(&plan, &params);
        if self.should_learn_columns(&plan, &route) {
            return Ok(Decision::LearnColumns);
        }
        if let Some(slot) = slot {
            self.meter_slot(slot);
        }
        let primary = on_primary(&route);
        let execution = router.execution(&plan, route, &self.view(false));
        Ok(self.run(primary, execution))
    }

    /// Carries out the router's `execution` of a statement, noting (for reading one's own
    /// writes) a statement that stays on the primary connection held now and may write there
    /// (`primary`: its route does not allow a replica). `take_server` notes the others.
    fn run(&mut self, primary: bool, execution: Execution) -> Decision {
        if let (true, Execution::Held, Some(held)) = (primary, &execution, self.held) {
            if held.primary {
                self.own_writes.writing(&self.shared.shards, held.shard);
            }
        }
        Decision::Run(execution)
    }

    /// Describe, Execute, Close, Sync, Flush, FunctionCall, COPY data.
    fn route_other(&mut self, t: u8) -> Decision {
        if self.server.is_some() {
            return Decision::Run(Execution::Held);
        }
        if self.proto.pending.is_empty() {
            match t {
                // Leftovers of a COPY that already failed: PostgreSQL ignores them too.
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL | tag::FLUSH => {
                    return Decision::Answered
                }
                // Nothing is pending, so the answer is known without a server.
                tag::SYNC => {
                    let status = self.tx.status();
                    self.answer(|out| build::ready_for_query(out, status));
                    return Decision::Answered;
                }
                _ => {}
            }
        }
        // A statement described before it is bound: every shard has the same schema, and a
        // held-back BEGIN waits for the Bind that picks the shard.
        Decision::Preview {
            shard: self.shared.router.load().default_shard(),
        }
    }

    /// Keeps a statement that needs no particular shard on the connection already held.
    fn held_or(&self, decision: Decision) -> Decision {
        if self.server.is_some() {
            Decision::Run(Execution::Held)
        } else {
            decision
        }
    }

    /// The overrides and the transaction's access mode, as the router reads them.
    fn route_context(&mut self) -> &RouteContext {
        self.ctx.transaction = self.tx.mode();
        &self.ctx
    }

    /// What the router needs to know about this session to decide.
    fn view(&self, simple: bool) -> SessionView {
        SessionView {
            pool_mode: self.mode,
            simple,
            held: self.held,
            transaction: self.tx.view(),
            frames_waiting: self.proto.pending.iter().any(|f| f.tag() != tag::PARSE),
            pinned: self.state.pinned().is_some(),
        }
    }

    /// Makes sure a server connection of `shard` (suitable for `target`) is held: `Ok(false)`
    /// when the one held now must first be released. A statement (not a Describe before its
    /// Bind: `start_transaction`) that goes to the primary may write there.
    async fn take_server(
        &mut self,
        shard: usize,
        target: Target,
        start_transaction: bool,
    ) -> Result<bool, SessionError> {
        let taken = self.take_server_for(shard, target, start_transaction).await;
        if matches!(taken, Ok(true)) && start_transaction && target == Target::Primary {
            self.own_writes.writing(&self.shared.shards, shard);
        }
        taken
    }

    async fn take_server_for(
        &mut self,
        shard: usize,
        target: Target,
        start_transaction: bool,
    ) -> Result<bool, SessionError> {
        if let Some(held) = self.held {
            // The held connection carries the client's transaction once its BEGIN was sent.
            let in_transaction = self.tx.is_on_server();
            if held.shard == shard && (held.primary || target == Target::Replica || in_transaction)
            {
                // A BEGIN held back while this connection still answered earlier requests.
                if start_transaction {
                    if let Some(begin) = self.tx.take_begin() {
                        self.send(&begin, Some(Expect::Hidden));
                    }
                }
                return Ok(true);
            }
            if held.shard != shard && in_transaction {
                let router = self.shared.router.load();
                return Err(SessionError::Route(
                    router.cross_transaction_error(held.shard, shard),
                ));
            }
            if held.shard != shard && self.mode == PoolMode::Session {
                return Err(SessionError::SessionPinned {
                    held: self.shared.shards[held.shard].name.clone(),
                    wanted: self.shared.shards[shard].name.clone(),
                });
            }
            if let Some(reason) = self.state.pinned() {
                // The held connection cannot be released: it keeps the client's state.
                let name = &self.shared.shards[shard].name;
                return Err(SessionError::StatePinned {
                    reason: reason.to_string(),
                    held: self.shared.shards[held.shard].name.clone(),
                    wanted: if held.shard == shard {
                        format!("the primary of shard {name}")
                    } else {
                        format!("shard {name}")
                    },
                });
            }
            self.end_held_batch();
            return Ok(false);
        }
        self.checkout_route(shard, target).await?;
        let plain_read = target == Target::Replica && self.tx.is_outside();
        self.replay = (plain_read && self.held.is_some_and(|h| !h.primary)).then(Replay::new);
        if start_transaction {
            if let Some(begin) = self.tx.take_begin() {
                self.send(&begin, Some(Expect::Hidden));
            }
        }
        Ok(true)
    }

    /// Ends the client's extended-protocol batch so far on the held connection (its
    /// ReadyForQuery is not the client's), so that connection can be released and the rest of
    /// the batch go elsewhere.
    fn end_held_batch(&mut self) {
        if self.proto.awaiting_sync {
            let mut sync = bytes::BytesMut::new();
            build::sync(&mut sync);
            self.send(&sync, Some(Expect::InternalReady));
            self.proto.awaiting_sync = false;
        }
    }

    /// Sends the frames that waited for a route.
    fn flush_pending(&mut self) -> Result<(), SessionError> {
        for frame in std::mem::take(&mut self.proto.pending) {
            self.forward(frame)?;
        }
        Ok(())
    }
}

/// Whether a frame is a statement to count: a Query, or a Bind (one run of a prepared one).
fn is_statement(frame: &Frame) -> bool {
    matches!(frame.tag(), tag::QUERY | tag::BIND)
}

/// How an execution runs, for the metrics.
fn route_kind(execution: &Execution) -> RouteKind {
    match execution {
        Execution::Held | Execution::Shard { .. } | Execution::ReleaseFirst => {
            RouteKind::SingleShard
        }
        Execution::Scatter { shards, .. } | Execution::CopyOut { shards, .. }
            if shards.len() > 1 =>
        {
            RouteKind::ScatterGather
        }
        Execution::Scatter { .. } | Execution::CopyOut { .. } => RouteKind::SingleShard,
        Execution::FanOut(_) | Execution::CopyIn(_) => RouteKind::FanOut,
        Execution::Local(_) => RouteKind::Local,
        Execution::Refuse(_) => RouteKind::Refused,
    }
}

/// Whether a statement routed so runs on a primary for its own sake (not a plain read that
/// fell back to it), so it may write there.
fn on_primary(route: &Result<Route, crate::router::RouteError>) -> bool {
    !matches!(
        route,
        Ok(Route::Shard {
            target: Target::Replica,
            ..
        } | Route::Shards {
            target: Target::Replica,
            ..
        } | Route::Local(_))
    )
}

impl<S: Stream> Session<S> {
    /// The server connection broke: a plain read the client has seen nothing of yet runs again
    /// on another replica or the primary; anything else ends the session with the error.
    pub(super) async fn recover_server(&mut self, e: SessionError) -> Result<(), SessionError> {
        let (Some(replay), Some(held)) = (self.replay.take(), self.held) else {
            return Err(e);
        };
        // What is queued for the client of the answer is taken back before the read runs
        // again; once part of it was written, the read cannot run again.
        let Some(frames) = replay.take_back(&mut self.client.output) else {
            return Err(e);
        };
        if let Some(conn) = self.let_go_of_server() {
            conn.discard();
        }
        self.proto.expect.clear();
        self.proto.awaiting_sync = false;
        self.proto.copy_in = false;
        tracing::info!("server connection lost during a read ({e}); running it elsewhere");
        self.checkout_route(held.shard, Target::Replica).await?;
        self.replay = Some(Replay::new());
        for bytes in frames {
            self.forward(Frame { bytes })?;
        }
        Ok(())
    }
}
