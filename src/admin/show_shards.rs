//! pgshard's own SHOW SHARDS (each shard's servers: role, up/down from the health checks,
//! connections, replica lag asked of the servers themselves), SHOW SLOTS (the live slot map) and
//! SHOW HOT_SLOTS (the busiest slots of the last minute). Lag queries run on connections of
//! their own (never a pooled one), through `backend::catalog`, bounded by the health timeout.

use std::time::{Duration, Instant};

use super::result::{ResultSet, Type, Value};
use super::views;
use crate::backend::catalog::{self, WalState};
use crate::backend::connection::LoginParams;
use crate::backend::ServerConnection;
use crate::shared::Shared;

use Type::{Int4, Int8, Numeric, Text};

/// How many slots SHOW HOT_SLOTS lists.
const HOT_SLOTS: usize = 20;

pub async fn shards(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("shard", Text),
        ("role", Text),
        ("server", Text),
        ("status", Text),
        ("slots", Int4),
        ("sv_active", Int4),
        ("sv_idle", Int4),
        ("cl_waiting", Int4),
        ("paused", Int4),
        ("lag_bytes", Int8),
        ("lag_seconds", Numeric),
    ]);
    let router = shared.router.load();
    let map = router.shard_map();
    let backends = views::backends(shared);
    let timeout = Duration::from_millis(shared.config.pool.health_check_timeout_ms);
    let mut asks = tokio::task::JoinSet::new();
    for (i, (_, _, backend)) in backends.iter().enumerate() {
        // Any pool's login reaches the server; the first user's, as the health checks use.
        let login = shared
            .config
            .users
            .first()
            .and_then(|u| backend.pools.get(&u.name))
            .map(|pool| pool.manager().login.clone());
        if let (Some(login), true) = (login, backend.health.is_up()) {
            asks.spawn(async move { (i, ask_wal(login, timeout).await) });
        }
    }
    let mut wal: Vec<Option<WalState>> = vec![None; backends.len()];
    while let Some(done) = asks.join_next().await {
        if let Ok((i, state)) = done {
            wal[i] = state;
        }
    }
    let pools = views::pools(shared);
    for (i, (shard, role, backend)) in backends.iter().enumerate() {
        let index = map.shard_index(shard);
        let slots: usize = index.map_or(0, |s| map.ranges_of(s).iter().map(|r| r.len()).sum());
        let (mut active, mut idle, mut waiting) = (0, 0, 0);
        for view in pools.iter().filter(|v| std::ptr::eq(v.backend, *backend)) {
            let status = view.status();
            active += status.in_use;
            idle += status.idle;
            waiting += status.waiting;
        }
        let (lag_bytes, lag_seconds) = lag(&wal, &backends, i);
        set.row(vec![
            (*shard).into(),
            role.as_str().into(),
            backend.addr.as_str().into(),
            if backend.health.is_up() { "up" } else { "down" }.into(),
            slots.into(),
            active.into(),
            idle.into(),
            waiting.into(),
            shared.control.is_paused(shard).into(),
            lag_bytes,
            lag_seconds,
        ]);
    }
    set
}

/// A replica's lag behind its shard's primary: bytes (primary's position minus its replay
/// position) and seconds since the last transaction it replayed (0 when it has replayed all it
/// received). NULL for primaries and for servers that could not be asked.
fn lag(
    wal: &[Option<WalState>],
    backends: &[(&str, String, &crate::shared::Backend)],
    i: usize,
) -> (Value, Value) {
    let (shard, role, _) = &backends[i];
    if role == "primary" {
        return (Value::Null, Value::Null);
    }
    let primary = backends
        .iter()
        .position(|(s, r, _)| s == shard && r == "primary")
        .and_then(|p| wal[p]);
    let Some(replica) = wal[i] else {
        return (Value::Null, Value::Null);
    };
    let bytes = match (primary.and_then(|p| p.lsn), replica.lsn) {
        (Some(p), Some(r)) => Value::Count(p.saturating_sub(r)),
        _ => Value::Null,
    };
    let seconds = replica
        .replay_delay_secs
        .map_or(Value::Null, |s| Value::Float(s.max(0.0)));
    (bytes, seconds)
}

/// A server's WAL state on a connection of its own; `None` when it cannot be asked in time.
async fn ask_wal(login: LoginParams, timeout: Duration) -> Option<WalState> {
    let ask = async {
        let mut conn = ServerConnection::connect(&login).await.ok()?;
        catalog::wal_state(&mut conn).await.ok()
    };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

pub fn slots(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[("slots", Text), ("shard", Text), ("count", Int4)]);
    let router = shared.router.load();
    let map = router.shard_map();
    for shard in 0..map.len() {
        for range in map.ranges_of(shard) {
            let text = if range.start() == range.end() {
                range.start().to_string()
            } else {
                format!("{}-{}", range.start(), range.end())
            };
            set.row(vec![
                text.into(),
                map.shard_name(shard).into(),
                range.len().into(),
            ]);
        }
    }
    set.rows.sort_by_key(|row| match &row[0] {
        Value::Text(t) => t
            .split('-')
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0),
        _ => 0,
    });
    set
}

pub fn hot_slots(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("slot", Int4),
        ("shard", Text),
        ("statements", Int8),
        ("bytes", Int8),
    ]);
    let router = shared.router.load();
    let map = router.shard_map();
    for load in shared.stats.slots.busiest(Instant::now(), HOT_SLOTS) {
        set.row(vec![
            i64::from(load.slot).into(),
            map.shard_name(map.shard_of_slot(load.slot)).into(),
            load.statements.into(),
            load.bytes.into(),
        ]);
    }
    set
}
