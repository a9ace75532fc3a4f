//! What lets a client in and its statements through, beyond authentication: the user's client
//! limit, the user's statement rate limit, a shutdown in progress, a slot move's cutover hold,
//! and moving to the generation of shared handles a reload or a new map made. Decides at login,
//! at quiet points and after routing; never routes itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::error::SessionError;
use super::route::Decision;
use super::Session;
use crate::holds::{Ticket, Touches};
use crate::limits::{Admission, ClientSlot, RateLimit};
use crate::router::{Execution, Target};
use crate::shared::Shared;
use crate::transport::Stream;

/// A logged-in client's place among its user's clients, and the user's rate limit.
pub(super) struct UserAdmission {
    /// Held for its drop: uncounts the client.
    pub _slot: Option<ClientSlot>,
    pub rate: Option<Arc<RateLimit>>,
}

/// What a cutover hold needs to know of the client (used only with a catalog): the era ticket
/// of its transaction, and the slot of the statement being routed.
#[derive(Default)]
pub(super) struct Cutover {
    ticket: Option<Ticket>,
    pub slot: Option<u16>,
}

/// Counts the client among `user`'s clients, or refuses it at the user's limit (or while the
/// proxy shuts down).
pub(super) fn admit(shared: &Shared, user: &str) -> Result<UserAdmission, SessionError> {
    if shared.lifecycle.draining.load(Ordering::Relaxed) {
        return Err(SessionError::ShuttingDown);
    }
    let Some(limits) = shared.user_limits.get(user) else {
        return Ok(UserAdmission {
            _slot: None,
            rate: None,
        });
    };
    let slot = limits
        .admit()
        .map_err(|limit| SessionError::TooManyClientsForUser {
            user: user.to_string(),
            limit,
        })?;
    Ok(UserAdmission {
        _slot: Some(slot),
        rate: limits.rate.clone(),
    })
}

impl<S: Stream> Session<S> {
    /// Waits for the user's rate limit to let a statement through, or refuses it.
    pub(super) async fn take_statement_token(&mut self) -> Result<(), SessionError> {
        let Some(rate) = self.admission.rate.as_ref() else {
            return Ok(());
        };
        match rate.admit(Instant::now()) {
            Admission::After(wait) if wait.is_zero() => Ok(()),
            Admission::After(wait) => {
                // Boxed: only a statement over its user's rate pays for the timer's room.
                Box::pin(tokio::time::sleep(wait)).await;
                Ok(())
            }
            Admission::Refused => Err(SessionError::RateLimited {
                user: self.user().to_string(),
                per_second: self
                    .shared
                    .config
                    .user(self.user())
                    .and_then(|u| u.statements_per_second)
                    .unwrap_or_default(),
                waited_ms: rate.max_wait().as_millis() as u64,
            }),
        }
    }

    /// Between transactions, holding no server connection: leaves if the proxy is shutting
    /// down, and moves to the newest generation if a reload made one (unless it dropped this
    /// client's user: the client then stays on the pools it logged in with).
    pub(super) fn between_transactions(&mut self) -> Result<(), SessionError> {
        let proto = &self.proto;
        let quiet = self.tx.is_outside()
            && proto.expect.is_empty()
            && !proto.awaiting_sync
            && proto.pending.is_empty()
            && proto.bound.is_none()
            && proto.stalled.is_none();
        if !quiet {
            return Ok(());
        }
        if self.server_idle() {
            // The transaction ended: a cutover no longer waits for it.
            self.cutover.ticket = None;
            if self.shared.lifecycle.draining.load(Ordering::Relaxed) {
                return Err(SessionError::ShuttingDown);
            }
            self.meter.client.entry.presence.waiting();
            self.marked_waiting = true;
        }
        if self.server.is_none() || self.only_the_map_changed() {
            self.move_to_newest();
        }
        Ok(())
    }

    /// Whether the generations after this one changed the live shard map only (a slot move),
    /// not the config: a client holding its server connection (session mode) then routes by
    /// the new map from its next transaction on (its connection's pool is the same), so a
    /// statement on a moved slot reaches the new owner or is refused, never the old one.
    fn only_the_map_changed(&self) -> bool {
        self.shared.is_replaced()
            && self
                .shared
                .newest()
                .is_some_and(|n| n.config_generation == self.shared.config_generation)
    }

    /// Moves to the newest generation if a reload or a new map made one (unless it dropped this
    /// client's user: the client then stays on the pools it logged in with).
    fn move_to_newest(&mut self) {
        if !self.shared.is_replaced() {
            return;
        }
        let Some(newest) = self.shared.newest() else {
            return;
        };
        let Some(limits) = newest.user_limits.get(self.user()) else {
            return;
        };
        self.admission.rate = limits.rate.clone();
        self.max_message = newest.config.server.max_message_bytes;
        self.shared = newest;
    }

    /// Whether a routed statement waits at a slot move's cutover hold (with a catalog only):
    /// one that touches a held slot (or several shards) and belongs to a transaction newer than
    /// the hold. Takes the transaction's era ticket; synchronous, no allocation: the path of
    /// every statement.
    pub(super) fn held_at_cutover(&mut self, decision: &Decision) -> bool {
        let touches = match (decision, self.cutover.slot) {
            (Decision::Run(Execution::Shard { .. } | Execution::Held), Some(slot)) => {
                Touches::Slot(slot)
            }
            (
                Decision::Run(
                    Execution::Scatter { .. }
                    | Execution::FanOut(_)
                    | Execution::CopyIn(_)
                    | Execution::CopyOut { .. },
                ),
                _,
            ) => Touches::Shards,
            _ => return false,
        };
        let holds = &self.shared.control.holds;
        // A statement alone reading several shards' replicas cannot write: the cutover waits
        // for it only before the swap, not before its verification. Anything after it in the
        // same transaction (a pipeline) takes a ticket of the current era instead: the read is
        // over, and a newer ticket waits at the hold rather than being waited for.
        let reader = self.tx.is_outside()
            && matches!(
                decision,
                Decision::Run(Execution::Scatter {
                    target: Target::Replica,
                    ..
                })
            );
        if self
            .cutover
            .ticket
            .as_ref()
            .is_some_and(|t| t.is_reader() && !reader)
        {
            self.cutover.ticket = None;
        }
        let fresh = self.cutover.ticket.is_none();
        let ticket = self
            .cutover
            .ticket
            .get_or_insert_with(|| holds.ticket(reader));
        let wait = holds.must_wait(touches, ticket);
        if wait && fresh {
            // No transaction of its own yet: waiting, it holds back no cutover.
            self.cutover.ticket = None;
        }
        wait
    }

    /// Waits at the hold, then decides `frame` again by the newest map, until it may run; a
    /// transaction older than the hold never gets here (the cutover waits for it instead).
    /// Bounded by `catalog.hold_wait_ms`.
    pub(super) async fn wait_at_cutover(
        &mut self,
        frame: &crate::wire::Frame,
    ) -> Result<Decision, SessionError> {
        // Subscribed before deciding again: a hold that ended since the caller looked (or
        // ends between a look and the wait) wakes this statement instead of being missed.
        let mut releases = self.shared.control.holds.releases();
        let limit = self
            .shared
            .config
            .catalog
            .as_ref()
            .map_or(30_000, |c| c.hold_wait_ms);
        let deadline = Instant::now() + std::time::Duration::from_millis(limit);
        loop {
            if self.server.is_none() {
                self.move_to_newest();
            } else if self.shared.is_replaced() {
                // Its transaction runs on a server the slot may have left.
                return Ok(Decision::Failed(SessionError::SlotMoved));
            }
            self.cutover.slot = None;
            let decision = self.decide(frame)?;
            if !self.held_at_cutover(&decision) {
                return Ok(decision);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, releases.next()).await.is_err() {
                let holds = self.shared.control.holds.held();
                let moves: Vec<String> = holds.into_iter().map(|h| h.move_id).collect();
                return Ok(Decision::Failed(SessionError::HeldTooLong {
                    moves: moves.join(", "),
                    waited_ms: limit,
                }));
            }
        }
    }

    /// Something woke the session up after it waited between transactions: it serves on,
    /// unless a graceful shutdown claimed it meanwhile. The clock is read here, once per
    /// wake-up, for the stats of what the session does next.
    pub(super) fn woken(&mut self) -> Result<(), SessionError> {
        self.meter.wake(&self.shared.stats);
        if std::mem::take(&mut self.marked_waiting) && !self.meter.client.entry.presence.busy() {
            return Err(SessionError::ShuttingDown);
        }
        Ok(())
    }

    /// No server connection held, or one that is idle and owes nothing (session mode, or
    /// pinned by session state).
    fn server_idle(&self) -> bool {
        self.server.as_deref().is_none_or(|conn| {
            conn.is_quiet() && conn.status() == crate::wire::TransactionStatus::Idle
        })
    }
}
