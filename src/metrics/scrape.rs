//! The state gauges (clients, pools, servers, replica lag, the stats core's counts), set from
//! [`Shared`] at each scrape so they cost the sessions nothing, and the rendered text. Reads
//! `Shared`; never records on the hot path.

use std::time::Instant;

use ::metrics::{Key, Label};

use super::*;
use crate::shared::{Backend, Shared};

/// The Prometheus text of every metric, the state gauges set from `shared` first.
pub fn render(metrics: &Metrics, shared: &Shared) -> String {
    scrape(shared, metrics);
    metrics.render_text()
}

/// Sets the gauges that describe the proxy's state now, from `shared`: run at each scrape, so
/// they cost the sessions nothing (the stats core's counts included: bytes in and out, clients
/// by state, the busiest slots).
fn scrape(shared: &Shared, metrics: &Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    scrape_stats(shared, metrics);
    metrics.gauge(CLIENTS, Vec::new(), shared.clients.load(Relaxed) as f64);
    metrics.gauge(
        CLIENTS_PINNED,
        Vec::new(),
        shared.pinned_clients.load(Relaxed) as f64,
    );
    for shard in &shared.shards {
        let servers = std::iter::once(("primary", &shard.primary))
            .chain(shard.replicas.iter().map(|r| ("replica", r)));
        for (role, backend) in servers {
            scrape_backend(metrics, &shard.name, role, backend);
        }
        let Some(wal) = shard.wal.as_ref() else {
            continue;
        };
        // The WAL watch samples only on demand: ask for a few rounds, so the next scrape reads
        // positions at most one scrape interval old even when no client waits for a replica.
        wal.want();
        let primary = wal.primary().lsn;
        for (i, replica) in shard.replicas.iter().enumerate() {
            let replayed = wal.replayed(i);
            if primary == 0 || replayed == 0 {
                continue;
            }
            let labels = vec![
                Label::new("shard", shard.name.clone()),
                Label::new("server", replica.addr.clone()),
            ];
            metrics.gauge(REPLICA_LAG, labels, primary.saturating_sub(replayed) as f64);
        }
    }
}

/// What the stats core counts: clients by state, bytes, the busiest slots.
fn scrape_stats(shared: &Shared, metrics: &Metrics) {
    use crate::stats::ClientState;
    let mut states = [0u64; 3];
    for client in shared.stats.clients.list() {
        let i = match client.state() {
            ClientState::Idle => 0,
            ClientState::Waiting => 1,
            ClientState::Active => 2,
        };
        states[i] += 1;
    }
    for (state, n) in ["idle", "waiting", "active"].iter().zip(states) {
        metrics.gauge(
            CLIENTS_BY_STATE,
            vec![Label::new("state", *state)],
            n as f64,
        );
    }
    let mut totals = shared.stats.unpooled.totals();
    for shard in &shared.shards {
        for backend in std::iter::once(&shard.primary).chain(&shard.replicas) {
            for pool in backend.pools.values() {
                totals.add(&pool.manager().stats.totals());
            }
        }
    }
    for (direction, bytes) in [("received", totals.received), ("sent", totals.sent)] {
        let labels = vec![Label::new("direction", direction)];
        metrics
            .recorder
            .register_counter(&Key::from_parts(CLIENT_BYTES, labels), &METADATA)
            .absolute(bytes);
    }
    let router = shared.router.load();
    let map = router.shard_map();
    for load in shared.stats.slots.busiest(Instant::now(), HOT_SLOTS) {
        let labels = || {
            vec![
                Label::new("slot", load.slot.to_string()),
                Label::new(
                    "shard",
                    map.shard_name(map.shard_of_slot(load.slot)).to_string(),
                ),
            ]
        };
        metrics.gauge(HOT_SLOT_STATEMENTS, labels(), load.statements as f64);
        metrics.gauge(HOT_SLOT_BYTES, labels(), load.bytes as f64);
    }
}

fn scrape_backend(metrics: &Metrics, shard: &str, role: &'static str, backend: &Backend) {
    let base = || {
        vec![
            Label::new("shard", shard.to_string()),
            Label::new("server", backend.addr.clone()),
            Label::new("role", role),
        ]
    };
    let up = if backend.health.is_up() { 1.0 } else { 0.0 };
    metrics.gauge(SERVER_UP, base(), up);
    for (user, pool) in &backend.pools {
        let status = pool.status();
        let with = |extra: &[(&'static str, &str)]| {
            let mut labels = base();
            labels.push(Label::new("user", user.clone()));
            labels.extend(extra.iter().map(|(k, v)| Label::new(*k, v.to_string())));
            labels
        };
        metrics.gauge(POOL_SIZE, with(&[]), status.size as f64);
        let active = status.in_use as f64;
        metrics.gauge(SERVER_CONNECTIONS, with(&[("state", "active")]), active);
        metrics.gauge(
            SERVER_CONNECTIONS,
            with(&[("state", "idle")]),
            status.idle as f64,
        );
    }
}
