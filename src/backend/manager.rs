//! The pool manager for server connections: opens them, judges them when a client lets go, and
//! resets them (ROLLBACK, DISCARD ALL) so that no client ever receives one dirty.

use super::connection::{LoginParams, ServerConnection};
use super::BackendError;
use crate::pool::{Manager, Pool, Returned};
use crate::stats::PoolCounters;
use crate::wire::TransactionStatus;

/// A pool of connections to one server as one user.
pub type ServerPool = Pool<BackendManager>;

/// Opens and resets connections to one server as one user.
#[derive(Debug)]
pub struct BackendManager {
    pub login: LoginParams,
    /// What the sessions using this pool did (SHOW STATS, metrics).
    pub stats: std::sync::Arc<PoolCounters>,
}

impl Manager for BackendManager {
    type Connection = ServerConnection;
    type Error = BackendError;

    async fn connect(&self) -> Result<ServerConnection, BackendError> {
        ServerConnection::connect(&self.login).await
    }

    fn returned(&self, conn: &ServerConnection) -> Returned {
        if conn.broken
            || !conn.io.input.is_empty()
            || conn.io.has_pending_output()
            || conn.cancel_key.unconfirmed()
        {
            Returned::Broken
        } else if conn.in_flight
            || conn.status != TransactionStatus::Idle
            || conn.needs_discard
            || conn.cancel_key.in_flight()
        {
            Returned::NeedsReset
        } else {
            Returned::Clean
        }
    }

    /// An idle server connection has nothing to say: readable bytes (a FATAL from a shutting-down
    /// server) or end of file mean it is gone. No round trip: on a plain socket, the runtime's
    /// readiness is read (a read only when it says readable); on TLS, one non-blocking read.
    fn is_alive(&self, conn: &mut ServerConnection) -> bool {
        match conn.io.stream().is_quiet_now() {
            Some(quiet) => quiet,
            None => matches!(conn.io.try_fill(), Ok(None)),
        }
    }

    async fn reset(&self, conn: &mut ServerConnection) -> Result<(), BackendError> {
        if conn.in_flight {
            // A client left mid-request: stop the server's work, then give the connection up,
            // since what is still on the wire for it cannot be known for sure.
            conn.cancel_key.start().send().await;
            conn.broken = true;
            return Err(BackendError::Protocol(conn.addr.clone()));
        }
        // A cancel on its way would cancel the next client's statement: wait for the server to
        // confirm it; unconfirmed, its signal may come any time, so the connection goes.
        if conn.cancel_key.in_flight() {
            let _counted = self.stats.being_canceled();
            conn.cancel_key.settled().await;
        }
        if conn.cancel_key.unconfirmed() {
            conn.broken = true;
            return Err(BackendError::Protocol(conn.addr.clone()));
        }
        if conn.status != TransactionStatus::Idle {
            conn.run_internal("ROLLBACK").await?;
        }
        if conn.needs_discard {
            conn.run_internal("DISCARD ALL").await?;
            conn.prepared.clear();
            conn.applied = Default::default();
            conn.settings_unknown = false;
            conn.needs_discard = false;
        }
        if conn.status != TransactionStatus::Idle {
            conn.broken = true;
            return Err(BackendError::Protocol(conn.addr.clone()));
        }
        Ok(())
    }
}
