//! The session at a quiet point (the held server connection owes nothing and nothing is queued):
//! after a request that may have changed the server session, puts back the startup values a
//! RESET took away and, in transaction mode, reads back what the session holds (settings, role,
//! pinning state) in one round trip; then lets the connection go if nothing pins it. Never runs
//! while a response is owed or inside a transaction of the client's.

use std::sync::atomic::Ordering;

use super::error::SessionError;
use super::Session;
use crate::backend::{catalog, BackendError};
use crate::config::PoolMode;
use crate::transport::Stream;
use crate::wire::TransactionStatus;

impl<S: Stream> Session<S> {
    /// Settles the client's session state when due, then releases the server connection if the
    /// client's transaction mode allows it.
    pub(super) async fn at_quiet_point(&mut self) -> Result<(), SessionError> {
        if let Some(capture) = self.settle_due() {
            Box::pin(self.settle(capture)).await?;
        }
        self.release_if_done();
        self.between_transactions()
    }

    /// `Some(capture)` when a settle query should run now: outside any transaction of the
    /// client's (what pgshard runs must never fail or change one), restoring startup values,
    /// and in transaction mode capturing the session.
    fn settle_due(&self) -> Option<bool> {
        if !self.proto.expect.is_empty() || self.proto.awaiting_sync || self.proto.copy_in {
            return None;
        }
        let conn = self.server.as_deref()?;
        if !conn.is_quiet() || conn.status() != TransactionStatus::Idle {
            return None;
        }
        let capture = self.mode == PoolMode::Transaction && self.state.is_dirty();
        (capture || self.state.restore_due()).then_some(capture)
    }

    async fn settle(&mut self, capture: bool) -> Result<(), SessionError> {
        let sql = self.state.settle_query(capture);
        let Some(conn) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let was_pinned = self.state.pinned().is_some();
        // A simple query drops the server's unnamed statement: the client's goes again with its
        // next Bind or Describe.
        if let Some(unnamed) = self.unnamed.existing_mut() {
            unnamed.held = false;
        }
        match catalog::session_state(conn, &sql).await {
            Ok((rows, reports)) => {
                // A restored DateStyle or TimeZone: the client follows it, as after its own SET.
                for report in reports {
                    self.client.output.extend_from_slice(&report);
                }
                let found = capture.then(|| self.state.read_capture(&rows, conn.login_user()));
                if let Some(found) = &found {
                    // Else only part was read: the connection stays marked unknown (reset in full
                    // before the next client) and the isolation default stays as followed.
                    if found.complete {
                        conn.note_session_settings(found.settings.clone());
                        let default = found.settings.get("default_transaction_isolation");
                        self.tx.learn_isolation_default(default.map(String::as_str));
                    }
                }
                self.state.settled(found);
            }
            Err(BackendError::Server { sqlstate, message }) => {
                tracing::warn!(
                    "reading a client's session state failed ({sqlstate}: {message}); \
                     the client keeps its server connection"
                );
                conn.mark_settings_unknown();
                self.state.unknown();
            }
            Err(e) => {
                // The connection is gone, and with it whatever the session held there.
                self.let_go_of_server();
                if was_pinned {
                    return Err(e.into());
                }
                self.state.settled(None);
            }
        }
        self.count_pinned(was_pinned);
        Ok(())
    }

    /// Keeps the count of pinned clients in step with this client's state.
    fn count_pinned(&self, was_pinned: bool) {
        match (was_pinned, self.state.pinned().is_some()) {
            (false, true) => {
                tracing::debug!(key = self.meter.client.entry.id, reason = ?self.state.pinned(), "pinned");
                self.shared.pinned_clients.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                tracing::debug!(key = self.meter.client.entry.id, "unpinned");
                self.shared.pinned_clients.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}
