//! WAL positions of each shard's servers, for reading a client's own writes: while some client
//! waits for a replica to replay its write, one task per shard asks the primary where it inserts
//! WAL and each replica how far it has replayed, every interval, on one connection per server,
//! and publishes the answers in atomics. With nobody waiting it sends nothing. Knows no clients
//! and never decides where a read goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::catalog;
use super::health::Health;
use super::ServerPool;

/// Rounds the task keeps running after the last client asked for them.
const LINGER_ROUNDS: u64 = 100;

/// WAL positions of one shard's servers, as last sampled.
#[derive(Debug)]
pub struct ShardWal {
    /// Number of the last round started: its queries were sent after this was stored.
    started: AtomicU64,
    /// Number of the last round whose primary position is in `primary` (stored before it).
    published: AtomicU64,
    /// An upper bound of the end of every commit that returned before round `published` began.
    primary: AtomicU64,
    /// How far each replica (in config order) had replayed when last asked; 0 when unknown.
    replicas: Vec<AtomicU64>,
    /// Rounds run while `started` is below this.
    wanted_until: AtomicU64,
    /// A client waits for a round numbered at least this (its write committed while the round
    /// before ran): the next round starts after the short gap, not the interval.
    waiting_for_round: AtomicU64,
    /// The highest position a waiting client needs a replica to replay: while a replica is
    /// below it, the next round starts after the short gap too.
    waiting_for_replay: AtomicU64,
    wake: Notify,
}

/// The primary's position from the latest round that got one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimarySample {
    pub round: u64,
    pub lsn: u64,
}

impl ShardWal {
    pub fn new(replicas: usize) -> ShardWal {
        ShardWal {
            started: AtomicU64::new(0),
            published: AtomicU64::new(0),
            primary: AtomicU64::new(0),
            replicas: (0..replicas).map(|_| AtomicU64::new(0)).collect(),
            wanted_until: AtomicU64::new(0),
            waiting_for_round: AtomicU64::new(0),
            waiting_for_replay: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    /// The number of the last round started. A write that committed before this call is
    /// bounded by the primary position of any later round.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The latest primary position (its round, or a later one's position: positions only grow).
    pub fn primary(&self) -> PrimarySample {
        let round = self.published.load(Ordering::Acquire);
        PrimarySample {
            round,
            lsn: self.primary.load(Ordering::Acquire),
        }
    }

    /// How far replica `i` had replayed when last asked (0: unknown).
    pub fn replayed(&self, i: usize) -> u64 {
        self.replicas
            .get(i)
            .map_or(0, |r| r.load(Ordering::Acquire))
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Whether the rounds would stop soon without another [`ShardWal::want`].
    pub fn ending_soon(&self) -> bool {
        self.wanted_until.load(Ordering::Relaxed)
            < self.started.load(Ordering::Relaxed) + LINGER_ROUNDS / 2
    }

    /// Keeps the rounds going for a while (a client waits for a replica), waking the task if it
    /// sleeps. No wake-up is lost: the task checks `wanted_until` before it waits, and a permit
    /// stored by `notify_one` while it is not waiting yet ends its wait at once.
    pub fn want(&self) {
        let until = self.started.load(Ordering::SeqCst) + LINGER_ROUNDS;
        let before = self.wanted_until.fetch_max(until, Ordering::SeqCst);
        if before <= self.started.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// A client's write committed while round `after` was the last one started: it needs the
    /// next round's primary position, soon.
    pub fn committed(&self, after: u64) {
        self.waiting_for_round
            .fetch_max(after + 1, Ordering::SeqCst);
        self.want();
        self.wake.notify_one();
    }

    /// A client waits for a replica to replay up to `target`.
    pub fn awaiting_replay(&self, target: u64) {
        self.waiting_for_replay.fetch_max(target, Ordering::Relaxed);
    }

    /// Whether a client waits for something the next round may bring (`replayed`: what each
    /// replica that answered last round had replayed).
    fn urgent(&self, replayed: &[Option<u64>]) -> bool {
        let target = self.waiting_for_replay.load(Ordering::Relaxed);
        self.waiting_for_round.load(Ordering::SeqCst) > self.started.load(Ordering::SeqCst)
            || replayed.iter().flatten().any(|&r| r < target)
    }

    fn active(&self) -> bool {
        self.started.load(Ordering::SeqCst) < self.wanted_until.load(Ordering::SeqCst)
    }

    fn publish_primary(&self, round: u64, lsn: u64) {
        self.primary.fetch_max(lsn, Ordering::AcqRel);
        self.published.fetch_max(round, Ordering::AcqRel);
    }
}

/// The position every commit that returned before `insert` was sampled ends at or before, for a
/// comparison with replicas' replay positions. `pg_current_wal_insert_lsn()` points past the
/// page header when it sits exactly at a page boundary (no record has begun on the new page),
/// while a replica's replay position is the end of the record it replayed, the boundary itself:
/// such a position is moved back to the boundary. No record ends within a page header's 40
/// bytes after a boundary (a record continued from the page before ends 8 or more bytes after
/// the 24-byte short header, or 8 more after the 40-byte long one), so no replay position lies
/// between the two and the answer for any replica is the same.
pub fn commit_bound(insert: u64, page_size: u64) -> u64 {
    const LONG_PAGE_HEADER: u64 = 40;
    if page_size == 0 {
        return insert;
    }
    match insert % page_size {
        offset @ 1..=LONG_PAGE_HEADER => insert - offset,
        _ => insert,
    }
}

/// A server the task asks (with a connection of its first user's pool, within the pool's
/// size), and whether its health check passes.
pub struct WalServer {
    pub pool: ServerPool,
    pub health: Arc<Health>,
}

/// How often the task asks while wanted (every `interval`; every `gap` while a client waits for
/// the next round), and how long an answer may take.
#[derive(Debug, Clone, Copy)]
pub struct WalTiming {
    pub interval: Duration,
    pub gap: Duration,
    pub timeout: Duration,
}

/// Samples `primary` and `replicas` (in the order of `wal`'s replicas) while wanted, until `wal`
/// is dropped.
pub fn spawn_watch(
    wal: &Arc<ShardWal>,
    primary: WalServer,
    replicas: Vec<WalServer>,
    timing: WalTiming,
) {
    let wal: Weak<ShardWal> = Arc::downgrade(wal);
    tokio::spawn(async move {
        let mut primary = Watched::new(primary);
        let mut replicas: Vec<Watched> = replicas.into_iter().map(Watched::new).collect();
        loop {
            let Some(shared) = wal.upgrade() else {
                return;
            };
            if !shared.active() {
                // Wakes up now and then to notice that the proxy is gone.
                let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
                continue;
            }
            let round = shared.started.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(Some(bound)) = primary.ask(timing, true).await {
                shared.publish_primary(round, bound);
            }
            let mut replayed = Vec::with_capacity(replicas.len());
            for (i, replica) in replicas.iter_mut().enumerate() {
                let answer = replica.ask(timing, false).await;
                if let Some(position) = answer {
                    shared.replicas[i].store(position.unwrap_or(0), Ordering::Release);
                }
                replayed.push(answer.flatten());
            }
            // A client waiting for this shard gets the next round after the short gap; else
            // the next one comes after the interval, or sooner when a write commits.
            tokio::time::sleep(timing.gap.min(timing.interval)).await;
            if !shared.urgent(&replayed) {
                let rest = timing.interval.saturating_sub(timing.gap);
                let _ = tokio::time::timeout(rest, shared.wake.notified()).await;
            }
        }
    });
}

/// One server the task asks.
struct Watched {
    server: WalServer,
}

impl Watched {
    fn new(server: WalServer) -> Watched {
        Watched { server }
    }

    /// The server's position (the primary's commit bound, a replica's replay position; `Some(None)`
    /// when the server reports none); `None` when the server is down, every connection of its
    /// pool is busy, or it does not answer in time.
    async fn ask(&mut self, timing: WalTiming, primary: bool) -> Option<Option<u64>> {
        if !self.server.health.is_up() {
            return None;
        }
        tokio::time::timeout(timing.timeout, async {
            let mut conn = self.server.pool.try_get().await?.ok()?;
            // In flight until answered: a timed-out ask leaves a connection the pool closes.
            conn.set_in_flight(true);
            let answer = if primary {
                let insert = catalog::wal_insert_position(&mut conn).await.ok()?;
                Some(insert.map(|(lsn, page)| commit_bound(lsn, page)))
            } else {
                catalog::wal_replay_position(&mut conn).await.ok()
            };
            conn.set_in_flight(false);
            answer
        })
        .await
        .ok()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_just_past_a_page_boundary_moves_back_to_it() {
        let page = 8192;
        assert_eq!(commit_bound(3 * page + 24, page), 3 * page);
        assert_eq!(commit_bound(16 * 1024 * 1024 + 40, page), 16 * 1024 * 1024);
        assert_eq!(commit_bound(3 * page, page), 3 * page);
        assert_eq!(commit_bound(3 * page + 48, page), 3 * page + 48);
        assert_eq!(commit_bound(3 * page + 41, page), 3 * page + 41);
        assert_eq!(commit_bound(1234, 0), 1234);
    }

    #[test]
    fn the_primary_sample_never_goes_back() {
        let wal = ShardWal::new(1);
        wal.publish_primary(2, 500);
        wal.publish_primary(1, 400);
        assert_eq!(wal.primary(), PrimarySample { round: 2, lsn: 500 });
    }

    #[test]
    fn the_next_round_is_urgent_while_a_client_waits_for_it() {
        let wal = ShardWal::new(2);
        assert!(!wal.urgent(&[Some(0), Some(0)]));
        wal.started.store(5, Ordering::SeqCst);
        // Committed while round 5 ran: round 6 is awaited.
        wal.committed(5);
        assert!(wal.urgent(&[Some(0), Some(0)]));
        wal.started.store(6, Ordering::SeqCst);
        assert!(!wal.urgent(&[Some(100), Some(100)]));
        wal.awaiting_replay(150);
        assert!(wal.urgent(&[Some(100), Some(200)]));
        // A replica that did not answer is not waited for.
        assert!(!wal.urgent(&[None, Some(200)]));
        assert!(!wal.urgent(&[Some(150), Some(200)]));
    }

    #[tokio::test]
    async fn wanting_wakes_a_sleeping_task_and_rounds_stop_later() {
        let wal = Arc::new(ShardWal::new(0));
        assert!(!wal.active());
        wal.want();
        assert!(wal.active());
        // The permit was stored: a wait that starts now ends at once.
        tokio::time::timeout(Duration::from_secs(5), wal.wake.notified())
            .await
            .expect("the wake-up was kept");
        wal.started.store(LINGER_ROUNDS, Ordering::SeqCst);
        assert!(!wal.active());
        assert!(wal.ending_soon());
    }
}
