//! Counters for the admin console and metrics: per server pool (shard server and user) the totals
//! PgBouncer's SHOW STATS reports, the registry of connected clients, and per-slot load over the
//! last minute. Sessions write them with Relaxed atomics (no locks, no allocation per statement);
//! readers sum them when asked. Held by `Shared` (never global); decides nothing and does no I/O.

mod clients;
mod slots;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use clients::{
    ClientEntry, ClientHandle, ClientRegistry, ClientState, NewClient, Presence, SlotInUse, Stopped,
};
pub use slots::{SlotCounters, SlotLoad, SLOT_WINDOW};

/// Everything counted, shared by all sessions.
pub struct Stats {
    started: Instant,
    started_wall: SystemTime,
    pub clients: Arc<ClientRegistry>,
    pub slots: SlotCounters,
    /// Work no single pool ran: cross-shard statements (scatter-gather, fan-out, split COPY),
    /// statements pgshard answered itself, and the admin console's.
    pub unpooled: Arc<PoolCounters>,
    next_pool_id: AtomicU32,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let started = Instant::now();
        Stats {
            started,
            started_wall: SystemTime::now(),
            clients: Arc::new(ClientRegistry::default()),
            slots: SlotCounters::new(started),
            unpooled: Arc::new(PoolCounters::new(0)),
            next_pool_id: AtomicU32::new(1),
        }
    }

    /// Counters for a new pool, with an id of its own (0 is [`Stats::unpooled`]).
    pub fn new_pool(&self) -> Arc<PoolCounters> {
        Arc::new(PoolCounters::new(
            self.next_pool_id.fetch_add(1, Ordering::Relaxed),
        ))
    }

    /// When counting started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since counting started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Microseconds from the start of counting to `at` (0 for earlier instants).
    pub fn micros(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.started))
    }

    /// The wall-clock time `micros` after the start of counting.
    pub fn wall(&self, micros: u64) -> SystemTime {
        self.started_wall + Duration::from_micros(micros)
    }
}

/// A duration in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// PgBouncer's per-pool totals, as plain numbers (a snapshot, or a session's pending counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Times a client was given a server connection.
    pub server_assignment_count: u64,
    /// Transactions (in transaction mode: each hold of a server connection).
    pub xact_count: u64,
    /// Statements (simple queries, Executes, function calls).
    pub query_count: u64,
    /// Bytes received from clients.
    pub received: u64,
    /// Bytes sent to clients.
    pub sent: u64,
    /// Microseconds server connections were held.
    pub xact_time: u64,
    /// Microseconds from a request's first message to its ReadyForQuery.
    pub query_time: u64,
    /// Microseconds clients waited for a server connection.
    pub wait_time: u64,
}

impl Totals {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Totals) {
        self.server_assignment_count += other.server_assignment_count;
        self.xact_count += other.xact_count;
        self.query_count += other.query_count;
        self.received += other.received;
        self.sent += other.sent;
        self.xact_time += other.xact_time;
        self.query_time += other.query_time;
        self.wait_time += other.wait_time;
    }

    pub fn is_zero(&self) -> bool {
        *self == Totals::default()
    }
}

/// One pool's totals, written by the sessions using it.
#[derive(Debug)]
pub struct PoolCounters {
    /// Stable while the pool lives; clients name the pool of the server they hold by it.
    pub id: u32,
    server_assignment_count: AtomicU64,
    xact_count: AtomicU64,
    query_count: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    xact_time: AtomicU64,
    query_time: AtomicU64,
    wait_time: AtomicU64,
    /// Connections given back now whose reset waits for a cancel sent for them (SHOW POOLS
    /// `sv_being_canceled`).
    being_canceled: AtomicU64,
}

/// A connection counted in `sv_being_canceled` while this lives.
pub struct BeingCanceled<'a>(&'a PoolCounters);

impl Drop for BeingCanceled<'_> {
    fn drop(&mut self) {
        self.0.being_canceled.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolCounters {
    pub fn new(id: u32) -> PoolCounters {
        PoolCounters {
            id,
            server_assignment_count: AtomicU64::new(0),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            xact_time: AtomicU64::new(0),
            query_time: AtomicU64::new(0),
            wait_time: AtomicU64::new(0),
            being_canceled: AtomicU64::new(0),
        }
    }

    /// Counts a connection as waiting for its cancel until the guard drops.
    pub fn being_canceled(&self) -> BeingCanceled<'_> {
        self.being_canceled.fetch_add(1, Ordering::Relaxed);
        BeingCanceled(self)
    }

    /// Connections given back whose reset waits for a cancel now.
    pub fn being_canceled_now(&self) -> u64 {
        self.being_canceled.load(Ordering::Relaxed)
    }

    /// Adds a session's pending counts (fields that are zero cost nothing).
    pub fn add(&self, t: &Totals) {
        let pairs = [
            (&self.server_assignment_count, t.server_assignment_count),
            (&self.xact_count, t.xact_count),
            (&self.query_count, t.query_count),
            (&self.received, t.received),
            (&self.sent, t.sent),
            (&self.xact_time, t.xact_time),
            (&self.query_time, t.query_time),
            (&self.wait_time, t.wait_time),
        ];
        for (counter, n) in pairs {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            server_assignment_count: get(&self.server_assignment_count),
            xact_count: get(&self.xact_count),
            query_count: get(&self.query_count),
            received: get(&self.received),
            sent: get(&self.sent),
            xact_time: get(&self.xact_time),
            query_time: get(&self.query_time),
            wait_time: get(&self.wait_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_counters_add_up() {
        let stats = Stats::new();
        let pool = stats.new_pool();
        assert_ne!(pool.id, stats.unpooled.id);
        let pending = Totals {
            query_count: 2,
            received: 10,
            ..Totals::default()
        };
        pool.add(&pending);
        pool.add(&pending);
        let totals = pool.totals();
        assert_eq!(totals.query_count, 4);
        assert_eq!(totals.received, 20);
        assert_eq!(totals.sent, 0);
        let mut sum = Totals::default();
        sum.add(&totals);
        sum.add(&totals);
        assert_eq!(sum.query_count, 8);
    }
}
