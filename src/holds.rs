//! Cutover holds: while a mover flips some slots to another shard, statements that touch them
//! (and cross-shard statements, which could see a moving row on both shards) wait here, and the
//! router tells the mover when every transaction that began before the hold has ended.
//! Transactions are counted by era: a session holds a [`Ticket`] of the era it began its
//! transaction in, and a hold starts a new era and waits for the older ones to drain: first
//! the transactions that may write (then the mover may verify), then the read-only ones (a
//! statement alone that reads several shards' replicas; then the mover may swap). Kept by
//! `Control` across generations; it never routes, never touches a connection, and never
//! decides on its own to release a hold (the catalog watcher does, after installing the map).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::rebalance::SlotSet;

/// One era of transactions: how many are open (those that may write, and the read-only ones),
/// and a wake-up for the hold that waits for them.
#[derive(Default)]
pub struct Era {
    active: AtomicUsize,
    readers: AtomicUsize,
    retired: AtomicBool,
    drained: Notify,
}

impl Era {
    fn count(&self, reader: bool) -> &AtomicUsize {
        if reader {
            &self.readers
        } else {
            &self.active
        }
    }
}

/// A session's claim on the era its transaction began in; dropping it ends the claim. A reader
/// ticket claims a transaction that cannot write: one statement reading replicas.
pub struct Ticket {
    era: Arc<Era>,
    reader: bool,
}

impl Ticket {
    pub fn is_reader(&self) -> bool {
        self.reader
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.era.count(self.reader).fetch_sub(1, Ordering::SeqCst) == 1
            && self.era.retired.load(Ordering::SeqCst)
        {
            self.era.drained.notify_waiters();
        }
    }
}

/// One move's hold: its id and slots; `fence` when this router holds them on its own (cut off
/// from the catalog), older transactions included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub move_id: String,
    pub slots: SlotSet,
    pub fence: bool,
}

impl Hold {
    fn touches(&self, touches: Touches) -> bool {
        match touches {
            Touches::Nothing => false,
            Touches::Shards => true,
            Touches::Slot(slot) => self.slots.contains(slot),
        }
    }
}

/// The holds in force and the eras of transactions.
pub struct Holds {
    /// A catalog is configured: sessions take tickets (otherwise nothing here is used).
    enabled: AtomicBool,
    /// Some hold is in force: the one flag a statement reads.
    any: AtomicBool,
    held: Mutex<Vec<Hold>>,
    /// Bumped whenever a hold ends: waiting statements look again.
    released: watch::Sender<u64>,
    era: ArcSwap<Era>,
    /// Eras a hold retired whose transactions may still be open.
    retired: Mutex<Vec<Arc<Era>>>,
}

impl Default for Holds {
    fn default() -> Holds {
        Holds {
            enabled: AtomicBool::new(false),
            any: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            released: watch::Sender::new(0),
            era: ArcSwap::from_pointee(Era::default()),
            retired: Mutex::new(Vec::new()),
        }
    }
}

/// What a statement about to run touches, for [`Holds::must_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches {
    /// One slot, by its shard key.
    Slot(u16),
    /// Several shards (a scatter read, a fan-out write, COPY): any hold may concern it.
    Shards,
    /// Nothing a hold concerns (no shard key, one shard).
    Nothing,
}

impl Holds {
    /// Sessions take tickets from now on (a router following a catalog).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A ticket of the current era, for a transaction beginning now (`reader`: one that cannot
    /// write). Never of an era a hold already found drained: the count and the `retired` flag
    /// are read in opposite orders by the two sides (SeqCst), so one of them sees the other.
    pub fn ticket(&self, reader: bool) -> Ticket {
        loop {
            let era = self.era.load_full();
            era.count(reader).fetch_add(1, Ordering::SeqCst);
            if !era.retired.load(Ordering::SeqCst) {
                return Ticket { era, reader };
            }
            // A hold retired it meanwhile: take the next era's.
            drop(Ticket { era, reader });
        }
    }

    /// Whether a statement touching `touches`, run by a transaction holding `ticket`, waits.
    /// A transaction older than the holds runs on: the hold waits for it instead.
    pub fn must_wait(&self, touches: Touches, ticket: &Ticket) -> bool {
        if !self.any.load(Ordering::Acquire) || touches == Touches::Nothing {
            return false;
        }
        let older = !Arc::ptr_eq(&ticket.era, &self.era.load());
        let held = lock(&self.held);
        match touches {
            Touches::Nothing => false,
            // A fence holds older transactions too: no cutover waits for them.
            _ if older => held.iter().any(|h| h.fence && h.touches(touches)),
            _ => held.iter().any(|h| h.touches(touches)),
        }
    }

    /// Starts holding `hold` (again, if it is held already) and returns once every transaction
    /// that began before it and may write has ended; [`Holds::drain_readers`] of what it
    /// returns waits for the read-only ones. Bound both with a timeout.
    pub async fn hold_and_drain(&self, hold: Hold) -> Vec<Arc<Era>> {
        {
            let mut held = lock(&self.held);
            match held.iter_mut().find(|h| h.move_id == hold.move_id) {
                Some(known) => known.slots = hold.slots,
                None => held.push(hold),
            }
            self.any.store(true, Ordering::Release);
        }
        let old = self.era.swap(Arc::new(Era::default()));
        old.retired.store(true, Ordering::SeqCst);
        let waiting: Vec<Arc<Era>> = {
            let mut retired = lock(&self.retired);
            retired.push(old);
            retired.retain(|e| {
                e.active.load(Ordering::SeqCst) > 0 || e.readers.load(Ordering::SeqCst) > 0
            });
            retired.clone()
        };
        drain(&waiting, false).await;
        waiting
    }

    /// Returns once the read-only transactions of `eras` (those a hold retired) have ended.
    pub async fn drain_readers(eras: &[Arc<Era>]) {
        drain(eras, true).await
    }

    /// Starts holding `hold` at once, transactions already open included (a router fencing
    /// slots it can no longer coordinate; nothing waits for a drain).
    pub fn hold(&self, hold: Hold) {
        let mut held = lock(&self.held);
        match held.iter_mut().find(|h| h.move_id == hold.move_id) {
            Some(known) => known.slots = hold.slots,
            None => held.push(hold),
        }
        self.any.store(true, Ordering::Release);
    }

    /// Narrows the hold of `move_id` to statements that reach several shards (its map flipped:
    /// statements on its slots go to their new owner); statements waiting look again.
    pub fn narrow(&self, move_id: &str) {
        {
            let mut held = lock(&self.held);
            for hold in held.iter_mut().filter(|h| h.move_id == move_id) {
                hold.slots = SlotSet::default();
            }
        }
        self.released.send_modify(|n| *n += 1);
    }

    /// Ends the hold of `move_id`; statements waiting for it look again.
    pub fn release(&self, move_id: &str) {
        {
            let mut held = lock(&self.held);
            held.retain(|h| h.move_id != move_id);
            self.any.store(!held.is_empty(), Ordering::Release);
        }
        self.released.send_modify(|n| *n += 1);
    }

    /// The holds in force.
    pub fn held(&self) -> Vec<Hold> {
        lock(&self.held).clone()
    }

    /// Hold ends and narrowings from now on. Subscribe *before* looking whether a statement
    /// waits: a release between the look and the wait is then seen, not lost (the statement
    /// would otherwise wait for the next release, or its whole limit).
    pub fn releases(&self) -> Releases {
        Releases(self.released.subscribe())
    }
}

/// A subscription to hold ends ([`Holds::releases`]).
pub struct Releases(watch::Receiver<u64>);

impl Releases {
    /// Waits for a hold to end or narrow after the subscription or the last call (then the
    /// caller decides again).
    pub async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            // The holds are gone (never while a session holds them): wait for its limit.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until the writers (or the readers) of every era in `eras` are gone.
async fn drain(eras: &[Arc<Era>], readers: bool) {
    for era in eras {
        loop {
            let drained = era.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if era.count(readers).load(Ordering::SeqCst) == 0 {
                break;
            }
            drained.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks stays valid whatever panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn hold(id: &str, slots: std::ops::RangeInclusive<u16>) -> Hold {
        Hold {
            move_id: id.into(),
            slots: SlotSet::from_ranges([slots]),
            fence: false,
        }
    }

    #[tokio::test]
    async fn a_hold_waits_for_older_transactions_and_holds_only_newer_ones() {
        let holds = Arc::new(Holds::default());
        let older = holds.ticket(false);
        let drain = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.hold_and_drain(hold("m1", 10..=19)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished(), "an older transaction is still open");
        // The older transaction runs on, even on a held slot.
        assert!(!holds.must_wait(Touches::Slot(12), &older));
        let newer = holds.ticket(false);
        assert!(holds.must_wait(Touches::Slot(12), &newer));
        assert!(holds.must_wait(Touches::Shards, &newer));
        assert!(!holds.must_wait(Touches::Slot(20), &newer));
        assert!(!holds.must_wait(Touches::Nothing, &newer));
        drop(older);
        tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .expect("drained once the older transaction ended")
            .unwrap();
        let waiter = {
            let mut releases = holds.releases();
            tokio::spawn(async move { releases.next().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        holds.release("m1");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert!(!holds.must_wait(Touches::Slot(12), &newer));
    }

    /// The lost wake-up a statement at a hold once had: it looked (held), the hold ended, then
    /// it subscribed and waited for the next release, which never came.
    #[tokio::test]
    async fn a_release_between_the_look_and_the_wait_is_seen() {
        let holds = Holds::default();
        holds.hold_and_drain(hold("m", 5..=9)).await;
        let newer = holds.ticket(false);
        let mut releases = holds.releases();
        assert!(holds.must_wait(Touches::Slot(7), &newer), "the look: held");
        holds.narrow("m");
        tokio::time::timeout(Duration::from_secs(5), releases.next())
            .await
            .expect("the narrowing before the wait is seen");
        holds.release("m");
        tokio::time::timeout(Duration::from_secs(5), releases.next())
            .await
            .expect("and the release after it");
    }

    #[tokio::test]
    async fn a_second_hold_also_waits_for_transactions_older_than_the_first() {
        let holds = Arc::new(Holds::default());
        let oldest = holds.ticket(false);
        let first = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.hold_and_drain(hold("a", 0..=0)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.hold_and_drain(hold("b", 1..=1)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!first.is_finished() && !second.is_finished());
        drop(oldest);
        tokio::time::timeout(Duration::from_secs(5), async {
            first.await.unwrap();
            second.await.unwrap();
        })
        .await
        .expect("both drained");
        assert_eq!(holds.held().len(), 2);
    }

    #[tokio::test]
    async fn a_narrowed_hold_lets_slot_statements_go_and_keeps_holding_keyless_ones() {
        let holds = Arc::new(Holds::default());
        holds.hold_and_drain(hold("m", 5..=9)).await;
        let newer = holds.ticket(false);
        assert!(holds.must_wait(Touches::Slot(7), &newer));
        let waiter = {
            let mut releases = holds.releases();
            tokio::spawn(async move { releases.next().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        holds.narrow("m");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiters look again")
            .unwrap();
        assert!(!holds.must_wait(Touches::Slot(7), &newer));
        assert!(holds.must_wait(Touches::Shards, &newer));
        holds.release("m");
        assert!(!holds.must_wait(Touches::Shards, &newer));
    }

    #[tokio::test]
    async fn a_hold_answers_for_writers_first_and_waits_for_older_readers_before_the_swap() {
        let holds = Arc::new(Holds::default());
        let reader = holds.ticket(true);
        assert!(reader.is_reader());
        let writer = holds.ticket(false);
        let drain = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.hold_and_drain(hold("m", 0..=9)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished(), "an older writer is still open");
        drop(writer);
        let eras = tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .expect("writers drained with a reader still open")
            .unwrap();
        let readers = tokio::spawn(async move { Holds::drain_readers(&eras).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!readers.is_finished(), "the older reader is still open");
        // A newer reader waits at the hold like any statement reaching several shards.
        let newer = holds.ticket(true);
        assert!(holds.must_wait(Touches::Shards, &newer));
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), readers)
            .await
            .expect("readers drained")
            .unwrap();
    }

    #[test]
    fn a_fence_holds_older_transactions_too() {
        let holds = Holds::default();
        let older = holds.ticket(false);
        holds.hold(Hold {
            fence: true,
            ..hold("fence:m", 3..=3)
        });
        assert!(holds.must_wait(Touches::Slot(3), &older));
        assert!(holds.must_wait(Touches::Shards, &older));
        assert!(!holds.must_wait(Touches::Slot(4), &older));
        holds.release("fence:m");
        assert!(!holds.must_wait(Touches::Slot(3), &older));
    }
}
