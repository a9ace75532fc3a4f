//! Per-slot load over the last minute, for SHOW HOT_SLOTS: statements and bytes per slot in six
//! buckets of ten seconds each, a fixed array of atomics per bucket. Recording is a Relaxed add
//! (plus, once per bucket and ten seconds, zeroing the bucket being reused); reading sums the
//! buckets of the last minute. Counts are approximate around a bucket's reuse.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sharding::SLOT_COUNT;

const BUCKETS: u64 = 6;
const BUCKET: Duration = Duration::from_secs(10);
const BUCKET_MICROS: u64 = BUCKET.as_micros() as u64;

/// The span SHOW HOT_SLOTS covers.
pub const SLOT_WINDOW: Duration = Duration::from_secs(60);

struct Bucket {
    /// Which ten seconds (since counting started) the counts belong to.
    epoch: AtomicU64,
    statements: Box<[AtomicU32]>,
    bytes: Box<[AtomicU64]>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            epoch: AtomicU64::new(0),
            statements: (0..SLOT_COUNT).map(|_| AtomicU32::new(0)).collect(),
            bytes: (0..SLOT_COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// One slot's load over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLoad {
    pub slot: u16,
    pub statements: u64,
    pub bytes: u64,
}

/// Statements and bytes per slot over the last minute.
pub struct SlotCounters {
    started: Instant,
    buckets: Vec<Bucket>,
}

impl SlotCounters {
    pub fn new(started: Instant) -> SlotCounters {
        SlotCounters {
            started,
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
        }
    }

    /// The bucket number of `at_us`, microseconds since counting started.
    fn epoch(at_us: u64) -> u64 {
        at_us / BUCKET_MICROS
    }

    /// Microseconds from the start of counting to `at` (0 for earlier instants).
    fn micros(&self, at: Instant) -> u64 {
        super::micros(at.saturating_duration_since(self.started))
    }

    /// The bucket of `at_us`, zeroed first when it still holds an older epoch.
    fn bucket(&self, at_us: u64) -> &Bucket {
        let epoch = Self::epoch(at_us);
        let bucket = &self.buckets[(epoch % BUCKETS) as usize];
        let seen = bucket.epoch.load(Ordering::Relaxed);
        if seen < epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for counter in bucket.statements.iter() {
                counter.store(0, Ordering::Relaxed);
            }
            for counter in bucket.bytes.iter() {
                counter.store(0, Ordering::Relaxed);
            }
        }
        bucket
    }

    /// Bytes the counters take.
    pub fn memory(&self) -> usize {
        self.buckets.len() * usize::from(SLOT_COUNT) * (4 + 8)
    }

    /// One statement on `slot` at `at_us`, microseconds since counting started (as
    /// [`super::Stats::micros`] gives them: a session reads the clock once per wake-up).
    pub fn statement(&self, slot: u16, at_us: u64) {
        if let Some(c) = self.bucket(at_us).statements.get(usize::from(slot)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `bytes` to and from clients for statements on `slot`, at `at_us` (as for `statement`).
    pub fn bytes(&self, slot: u16, at_us: u64, bytes: u64) {
        if let Some(c) = self.bucket(at_us).bytes.get(usize::from(slot)) {
            c.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The `n` busiest slots of the last minute before `now`, by statements then bytes.
    pub fn busiest(&self, now: Instant, n: usize) -> Vec<SlotLoad> {
        let current = Self::epoch(self.micros(now));
        let mut load: Vec<SlotLoad> = (0..SLOT_COUNT)
            .map(|slot| SlotLoad {
                slot,
                statements: 0,
                bytes: 0,
            })
            .collect();
        for bucket in &self.buckets {
            let epoch = bucket.epoch.load(Ordering::Relaxed);
            if epoch + BUCKETS <= current || epoch > current {
                continue;
            }
            for (i, l) in load.iter_mut().enumerate() {
                l.statements += u64::from(bucket.statements[i].load(Ordering::Relaxed));
                l.bytes += bucket.bytes[i].load(Ordering::Relaxed);
            }
        }
        load.retain(|l| l.statements > 0 || l.bytes > 0);
        load.sort_by(|a, b| (b.statements, b.bytes, a.slot).cmp(&(a.statements, a.bytes, b.slot)));
        load.truncate(n);
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_slots_come_first_and_old_buckets_are_forgotten() {
        let start = Instant::now();
        let slots = SlotCounters::new(start);
        for _ in 0..3 {
            slots.statement(7, 0);
        }
        slots.statement(9, 0);
        slots.bytes(9, 0, 100);
        let top = slots.busiest(start, 10);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].slot, top[0].statements), (7, 3));
        assert_eq!((top[1].slot, top[1].bytes), (9, 100));
        // A minute later, a bucket reused for a new epoch starts from zero.
        let later = start + Duration::from_secs(61);
        slots.statement(7, 61_000_000);
        let top = slots.busiest(later, 10);
        assert_eq!(
            top,
            [SlotLoad {
                slot: 7,
                statements: 1,
                bytes: 0
            }]
        );
        assert!(slots.busiest(later + SLOT_WINDOW, 10).is_empty());
    }
}
