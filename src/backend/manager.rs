//! The pool manager for server connections: opens them, judges them when a client lets go, and
//! resets them (ROLLBACK, DISCARD ALL) so that no client ever receives one dirty.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::connection::{LoginParams, ServerConnection};
use super::BackendError;
use crate::pool::{Manager, Pool, Returned};
use crate::stats::PoolCounters;
use crate::wire::{build, TransactionStatus};

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
        if conn.broken || !conn.io.input.is_empty() || conn.io.has_pending_output() {
            Returned::Broken
        } else if conn.in_flight || conn.status != TransactionStatus::Idle || conn.needs_discard {
            Returned::NeedsReset
        } else {
            Returned::Clean
        }
    }

    /// An idle server connection has nothing to say: readable bytes (a FATAL from a shutting-down
    /// server) or end of file mean it is gone. One non-blocking read, no round trip.
    fn is_alive(&self, conn: &mut ServerConnection) -> bool {
        matches!(conn.io.try_fill(), Ok(None))
    }

    async fn reset(&self, conn: &mut ServerConnection) -> Result<(), BackendError> {
        if conn.in_flight {
            // A client left mid-request: stop the server's work, then give the connection up,
            // since what is still on the wire for it cannot be known for sure.
            cancel(&conn.addr, conn.process_id, conn.secret_key).await;
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

/// Sends a CancelRequest for a server process; best effort, bounded to one second.
pub async fn cancel(addr: &str, process_id: i32, secret_key: i32) {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut out = BytesMut::new();
        build::cancel_request(&mut out, process_id, secret_key);
        stream.write_all(&out).await?;
        // The server closes the socket once it has read the request.
        let mut byte = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), attempt).await;
}
