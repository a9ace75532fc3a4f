//! Read-only views of `Shared` for the console: every server pool with its shard, role and user,
//! and the sums SHOW commands report. Reads pool status and counters; never takes a connection.

use std::time::Duration;

use crate::backend::ServerPool;
use crate::pool::PoolStatus;
use crate::shared::{Backend, Shared};
use crate::stats::{ClientState, Totals};

/// One server pool (a server of a shard, as one user).
pub struct PoolView<'a> {
    pub shard: &'a str,
    pub backend: &'a Backend,
    pub user: &'a str,
    pub pool: &'a ServerPool,
}

impl PoolView<'_> {
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }
}

/// Every server of every shard: shard name, role, backend.
pub fn backends(shared: &Shared) -> Vec<(&str, String, &Backend)> {
    let mut all = Vec::new();
    for shard in &shared.shards {
        all.push((shard.name.as_str(), "primary".to_string(), &shard.primary));
        for (i, replica) in shard.replicas.iter().enumerate() {
            all.push((shard.name.as_str(), format!("replica{i}"), replica));
        }
    }
    all
}

/// Every pool, by shard, server and user (users in config order).
pub fn pools(shared: &Shared) -> Vec<PoolView<'_>> {
    let mut all = Vec::new();
    for (shard, _, backend) in backends(shared) {
        for user in &shared.config.users {
            if let Some(pool) = backend.pools.get(&user.name) {
                all.push(PoolView {
                    shard,
                    backend,
                    user: &user.name,
                    pool,
                });
            }
        }
    }
    all
}

/// The totals of the client-facing database: every pool's plus the unpooled work.
pub fn database_totals(shared: &Shared) -> Totals {
    let mut sum = shared.stats.unpooled.totals();
    for view in pools(shared) {
        sum.add(&view.pool.manager().stats.totals());
    }
    sum
}

/// Server connections summed over pools (optionally one user's): (in use, idle, waiting
/// checkouts, longest wait of a client waiting now).
pub fn servers(shared: &Shared, user: Option<&str>) -> (usize, usize, usize, Duration) {
    let now = shared.stats.micros(std::time::Instant::now());
    let longest = shared
        .stats
        .clients
        .list()
        .iter()
        .filter(|c| user.is_none_or(|u| *u == *c.user))
        .filter_map(|c| c.waiting_since())
        .map(|since| now.saturating_sub(since))
        .max()
        .unwrap_or(0);
    let mut sums = (0, 0, 0, Duration::from_micros(longest));
    for view in pools(shared) {
        if user.is_some_and(|u| u != view.user) {
            continue;
        }
        let status = view.status();
        sums.0 += status.in_use;
        sums.1 += status.idle;
        sums.2 += status.waiting;
    }
    sums
}

/// Server connections (of one user, or all) that wait for a cancel sent for them before they
/// are idle again.
pub fn being_canceled(shared: &Shared, user: Option<&str>) -> u64 {
    pools(shared)
        .iter()
        .filter(|view| user.is_none_or(|u| u == view.user))
        .map(|view| view.pool.manager().stats.being_canceled_now())
        .sum()
}

/// Non-console clients (of one user, or all) by state: (active or idle, waiting).
pub fn clients(shared: &Shared, user: Option<&str>) -> (usize, usize) {
    let mut counts = (0, 0);
    for client in shared.stats.clients.list() {
        if client.console || user.is_some_and(|u| *u != *client.user) {
            continue;
        }
        match client.state() {
            ClientState::Waiting => counts.1 += 1,
            ClientState::Active | ClientState::Idle => counts.0 += 1,
        }
    }
    counts
}

/// `host` and `port` of a `host:port` address (port 0 when missing).
pub fn host_port(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(0),
        ),
        None => (addr.to_string(), 0),
    }
}
