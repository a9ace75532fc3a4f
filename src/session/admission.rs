//! What lets a client in and its statements through, beyond authentication: the user's client
//! limit, the user's statement rate limit, a shutdown in progress, and moving to the generation
//! of shared handles a reload made. Decides at login and at quiet points; never routes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::error::SessionError;
use super::Session;
use crate::limits::{Admission, ClientSlot, RateLimit};
use crate::shared::Shared;
use crate::transport::Stream;

/// A logged-in client's place among its user's clients, and the user's rate limit.
pub(super) struct UserAdmission {
    /// Held for its drop: uncounts the client.
    pub _slot: Option<ClientSlot>,
    pub rate: Option<Arc<RateLimit>>,
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
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Admission::Refused => Err(SessionError::RateLimited {
                user: self.user.clone(),
                per_second: self
                    .shared
                    .config
                    .user(&self.user)
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
            if self.shared.lifecycle.draining.load(Ordering::Relaxed) {
                return Err(SessionError::ShuttingDown);
            }
            self.presence.waiting();
            self.marked_waiting = true;
        }
        if self.server.is_some() || !self.shared.is_replaced() {
            return Ok(());
        }
        let Some(newest) = self.shared.newest() else {
            return Ok(());
        };
        let Some(limits) = newest.user_limits.get(&self.user) else {
            return Ok(());
        };
        self.admission.rate = limits.rate.clone();
        self.max_message = newest.config.server.max_message_bytes;
        self.shared = newest;
        Ok(())
    }

    /// Something woke the session up after it waited between transactions: it serves on,
    /// unless a graceful shutdown claimed it meanwhile.
    pub(super) fn woken(&mut self) -> Result<(), SessionError> {
        if std::mem::take(&mut self.marked_waiting) && !self.presence.busy() {
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
