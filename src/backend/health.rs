//! Periodic health checks: every interval a connection of the server's first pool runs
//! `SELECT 1` (inside the pool's size: a check never adds a connection the pool would not
//! allow, and is skipped while every connection is busy serving clients). A server that fails
//! is marked down (reads skip it, writes to it fail fast) and its pools' idle connections are
//! closed; it is marked up again when a check succeeds. Knows nothing of clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{BackendError, ServerPool};
use crate::pool::PoolError;

/// Whether a server answered its last health check.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        // Optimistic until the first check: a fresh proxy should not refuse work.
        Health {
            up: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::Relaxed)
    }
}

/// How often and how patiently to check.
#[derive(Debug, Clone, Copy)]
pub struct CheckTiming {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Checks the server of `pools` (with a connection of the first) until `health` is dropped;
/// clears the pools' idle lists when it goes down.
pub fn spawn_watch(
    addr: String,
    health: &Arc<Health>,
    pools: Vec<ServerPool>,
    timing: CheckTiming,
) {
    let health: Weak<Health> = Arc::downgrade(health);
    let Some(checker) = pools.first().cloned() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(timing.interval).await;
            let Some(health) = health.upgrade() else {
                return;
            };
            let checked = match tokio::time::timeout(timing.timeout, check(&checker)).await {
                Ok(Some(checked)) => checked,
                // Every connection is serving a client: the server answers them.
                Ok(None) => continue,
                Err(_) => Err(BackendError::ConnectTimeout(addr.clone())),
            };
            let ok = checked.is_ok();
            let was_up = health.set(ok);
            if let (true, Err(e)) = (was_up, &checked) {
                tracing::warn!("server {addr} failed its health check ({e}); marked down");
                for pool in &pools {
                    pool.clear_idle();
                }
            } else if !was_up && ok {
                tracing::info!("server {addr} is back up");
            }
        }
    });
}

/// `Some(Ok(()))` when the server answered, `Some(Err(why))` when it did not, `None` when the
/// pool has no connection to spare.
async fn check(pool: &ServerPool) -> Option<Result<(), BackendError>> {
    let mut conn = match pool.try_get().await? {
        Ok(conn) => conn,
        Err(PoolError::Connect(e)) => return Some(Err(e)),
        // Not from a checkout that does not wait: no check this round.
        Err(PoolError::Timeout(_)) => return None,
    };
    // Marked in flight until answered: a check that times out leaves a connection the pool
    // cancels and closes instead of reusing.
    conn.set_in_flight(true);
    // The server answering with an ERROR (a client's tiny `statement_timeout` left on this
    // pooled connection, say) is alive all the same.
    let answered = match conn.run_internal("SELECT 1").await {
        Ok(()) | Err(BackendError::Server { .. }) => Ok(()),
        Err(e) => Err(e),
    };
    if answered.is_ok() {
        conn.set_in_flight(false);
    } else {
        conn.discard();
    }
    Some(answered)
}
