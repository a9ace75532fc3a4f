//! Periodic health checks: one check connection per server runs `SELECT 1` every interval. A
//! server that fails is marked down (reads skip it, writes to it fail fast) and its pools' idle
//! connections are closed; it is marked up again when a check succeeds. Knows nothing of clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::connection::{LoginParams, ServerConnection};
use super::ServerPool;

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

/// Checks `login`'s server until `health` is dropped; clears `pools`' idle lists when it goes down.
pub fn spawn_watch(
    login: LoginParams,
    health: &Arc<Health>,
    pools: Vec<ServerPool>,
    timing: CheckTiming,
) {
    let health: Weak<Health> = Arc::downgrade(health);
    tokio::spawn(async move {
        let mut conn: Option<ServerConnection> = None;
        loop {
            tokio::time::sleep(timing.interval).await;
            let Some(health) = health.upgrade() else {
                return;
            };
            let checked = tokio::time::timeout(timing.timeout, check(&login, &mut conn))
                .await
                .unwrap_or_else(|_| Err(super::BackendError::ConnectTimeout(login.addr.clone())));
            let ok = checked.is_ok();
            if !ok {
                conn = None;
            }
            let was_up = health.set(ok);
            if let (true, Err(e)) = (was_up, &checked) {
                tracing::warn!(
                    "server {} failed its health check ({e}); marked down",
                    login.addr
                );
                for pool in &pools {
                    pool.clear_idle();
                }
            } else if !was_up && ok {
                tracing::info!("server {} is back up", login.addr);
            }
        }
    });
}

async fn check(
    login: &LoginParams,
    conn: &mut Option<ServerConnection>,
) -> Result<(), super::BackendError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(ServerConnection::connect(login).await?),
    };
    c.run_internal("SELECT 1").await
}
