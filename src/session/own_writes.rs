//! Reading one's own writes: on which shards this client wrote, and how far a replica of each
//! must have replayed before it may serve the client's reads there, judged from the WAL
//! positions `backend::wal` samples (no round trip of its own). Bookkeeping only: never does
//! I/O and never picks a server itself.

use crate::backend::wal::{PrimarySample, ShardWal};
use crate::shared::ShardPools;

/// What a replica must show before it serves this client's reads of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A statement that may write runs on the primary now: reads go to the primary.
    Writing,
    /// The write ended when round `after` of the WAL samples was the last one started: the
    /// primary position of any later round bounds its commit. Reads go to the primary until then.
    Committed { after: u64 },
    /// Replicas that have replayed up to here may serve the client's reads.
    Replayed(u64),
}

/// What `need` becomes given the latest samples: a write no longer `running` (its primary
/// connection is not held any more) has committed, and a later round's primary position
/// bounds its commit.
pub fn advance(need: Need, running: bool, started: u64, primary: PrimarySample) -> Need {
    match need {
        Need::Writing if !running => Need::Committed { after: started },
        Need::Committed { after } if primary.round > after => Need::Replayed(primary.lsn),
        other => other,
    }
}

/// Whether a replica that had replayed up to `replayed` when last asked may serve a client
/// with `need` on that shard (`None`: nothing to wait for).
pub fn replica_may_serve(need: Option<Need>, replayed: u64) -> bool {
    match need {
        None => true,
        Some(Need::Replayed(target)) => replayed >= target,
        Some(Need::Writing | Need::Committed { .. }) => false,
    }
}

/// Whether every replica has replayed what `need` asks for, so it can be forgotten.
pub fn met_everywhere(need: Need, replayed: impl IntoIterator<Item = u64>) -> bool {
    matches!(need, Need::Replayed(_))
        && replayed
            .into_iter()
            .all(|r| replica_may_serve(Some(need), r))
}

/// One client's needs, per shard (empty until its first write).
#[derive(Debug, Default)]
pub struct OwnWrites {
    needs: Vec<Option<Need>>,
    count: usize,
}

impl OwnWrites {
    /// A statement that may write runs (or is about to run) on `shard`'s primary.
    pub fn writing(&mut self, shards: &[ShardPools], shard: usize) {
        if shards.get(shard).and_then(|s| s.wal.as_ref()).is_none() {
            return;
        }
        if self.needs.len() < shards.len() {
            // Sized at the first write, grown when a reload added shards.
            self.needs.resize(shards.len(), None);
        }
        if self.needs[shard].is_none() {
            self.count += 1;
        }
        self.needs[shard] = Some(Need::Writing);
    }

    /// Brings the needs up to date (before a statement is routed, and when the session lets go
    /// of its server connection). `running`: the shard whose
    /// primary connection is held now (a write there may not have committed yet). Keeps the
    /// WAL samples coming while a need is not met.
    pub fn refresh(&mut self, shards: &[ShardPools], running: Option<usize>) {
        if self.count == 0 {
            return;
        }
        for (shard, slot) in self.needs.iter_mut().enumerate() {
            let (Some(need), Some(wal)) = (*slot, shards[shard].wal.as_deref()) else {
                continue;
            };
            let next = advance(need, running == Some(shard), wal.started(), wal.primary());
            if met_everywhere(next, replays(wal)) {
                *slot = None;
                self.count -= 1;
                continue;
            }
            *slot = Some(next);
            match (need, next) {
                (Need::Writing, Need::Committed { after }) => wal.committed(after),
                (Need::Committed { .. }, Need::Replayed(target)) => wal.awaiting_replay(target),
                _ => {}
            }
            if next != Need::Writing && wal.ending_soon() {
                wal.want();
            }
        }
    }

    /// Whether replica `replica` of `shard` may serve this client's reads.
    pub fn allows(&self, shards: &[ShardPools], shard: usize, replica: usize) -> bool {
        let need = self.needs.get(shard).copied().flatten();
        if need.is_none() {
            return true;
        }
        let replayed = shards[shard]
            .wal
            .as_deref()
            .map_or(0, |w| w.replayed(replica));
        replica_may_serve(need, replayed)
    }
}

fn replays(wal: &ShardWal) -> impl Iterator<Item = u64> + '_ {
    (0..wal.replica_count()).map(|i| wal.replayed(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u64, lsn: u64) -> PrimarySample {
        PrimarySample { round, lsn }
    }

    #[test]
    fn a_write_waits_for_a_primary_position_sampled_after_it_ended() {
        // Still on its primary connection: nothing is known yet.
        let need = advance(Need::Writing, true, 7, sample(7, 100));
        assert_eq!(need, Need::Writing);
        // Ended while round 7 ran: round 7's position may predate the commit.
        let need = advance(need, false, 7, sample(7, 100));
        assert_eq!(need, Need::Committed { after: 7 });
        assert_eq!(advance(need, false, 8, sample(7, 100)), need);
        // Round 8 was started after the commit: its position bounds it.
        assert_eq!(advance(need, false, 8, sample(8, 250)), Need::Replayed(250));
        assert_eq!(advance(need, false, 9, sample(9, 300)), Need::Replayed(300));
    }

    #[test]
    fn a_replica_serves_once_it_replayed_the_bound() {
        assert!(replica_may_serve(None, 0));
        assert!(!replica_may_serve(Some(Need::Writing), u64::MAX));
        assert!(!replica_may_serve(
            Some(Need::Committed { after: 1 }),
            u64::MAX
        ));
        assert!(!replica_may_serve(Some(Need::Replayed(250)), 249));
        assert!(replica_may_serve(Some(Need::Replayed(250)), 250));
        assert!(replica_may_serve(Some(Need::Replayed(250)), 251));
    }

    #[test]
    fn a_need_is_forgotten_once_every_replica_replayed_it() {
        assert!(met_everywhere(Need::Replayed(250), [250, 300]));
        assert!(!met_everywhere(Need::Replayed(250), [250, 0]));
        assert!(!met_everywhere(Need::Committed { after: 1 }, [u64::MAX]));
        assert!(!met_everywhere(Need::Writing, [u64::MAX]));
    }
}
