//! The rebalance planner: given who owns each slot and what each slot weighs (1 per slot, or
//! its row count), proposes slot moves that even the weight out across a set of shards. Pure:
//! no I/O; `pgshard rebalance plan` feeds it and prints its moves.
//!
//! Shards outside the set give away every slot (draining them). Each shard of the set gets a
//! quota (an equal share; by slot count, the shares differ by at most one slot and the extra
//! slots go to the shards already holding the most). A shard over its quota gives slots from
//! the top of its slot order while that brings it closer to its quota; the given slots, in
//! slot order, fill the shards under their quota one after another. Slots moved are therefore
//! exactly each shard's excess when weighing by count (the least any plan can move), and
//! consecutive slots going from the same shard to the same shard form one move.

use std::ops::RangeInclusive;

use super::SLOT_COUNT;

/// One proposed move: `slots` go from shard `from` to shard `to` (indices into the map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub slots: RangeInclusive<u16>,
    pub from: usize,
    pub to: usize,
}

/// Moves evening `weights` (one per slot) out across `targets` (shard indices, at least one),
/// given `owner` (the shard index of each slot). With `weights` all 1 the result leaves the
/// targets' slot counts within one of each other.
pub fn plan(owner: &[usize], weights: &[u64], targets: &[usize]) -> Vec<Move> {
    assert_eq!(owner.len(), usize::from(SLOT_COUNT));
    assert_eq!(weights.len(), owner.len());
    assert!(!targets.is_empty(), "at least one shard to even out across");
    let shards = owner
        .iter()
        .chain(targets)
        .copied()
        .max()
        .map_or(0, |m| m + 1);
    let mut load = vec![0u128; shards];
    for (&o, &w) in owner.iter().zip(weights) {
        load[o] += u128::from(w);
    }
    let quota = quotas(&load, targets, weights.iter().all(|&w| w == 1));
    // Slots given away, with their donor.
    let mut given: Vec<(u16, usize)> = Vec::new();
    for shard in 0..shards {
        let drained = !targets.contains(&shard);
        let mut left = load[shard];
        for slot in (0..SLOT_COUNT).rev() {
            let s = usize::from(slot);
            if owner[s] != shard {
                continue;
            }
            let w = u128::from(weights[s]);
            // Give while it brings the shard closer to its quota: left - w/2 > quota.
            if drained || (w > 0 && 2 * left > 2 * quota[shard] + w) {
                given.push((slot, shard));
                left -= w;
            }
        }
        load[shard] = left;
    }
    given.sort_unstable();
    // A shard that gives never receives.
    let takers: Vec<usize> = targets
        .iter()
        .copied()
        .filter(|&t| !given.iter().any(|&(_, from)| from == t))
        .collect();
    let mut receivers = receivers_by_deficit(&load, &quota, &takers);
    if receivers.is_empty() {
        // Only weightless slots of drained shards are left to place: the lightest target.
        receivers = if takers.is_empty() {
            targets.to_vec()
        } else {
            takers
        };
        receivers.sort_by_key(|&t| (load[t], t));
        receivers.truncate(1);
    }
    assign(&given, weights, &receivers, &mut load, &quota)
}

/// Each shard's quota (×1, in weight units): zero outside `targets`; an equal share inside.
/// By count the remainder goes, one slot each, to the targets holding the most.
fn quotas(load: &[u128], targets: &[usize], by_count: bool) -> Vec<u128> {
    let total: u128 = load.iter().sum();
    let k = targets.len() as u128;
    let mut quota = vec![0u128; load.len()];
    let mut order: Vec<usize> = targets.to_vec();
    order.sort_by_key(|&t| std::cmp::Reverse((load[t], std::cmp::Reverse(t))));
    for (i, &t) in order.iter().enumerate() {
        quota[t] = total / k + u128::from(by_count && (i as u128) < total % k);
        if !by_count {
            // An even share, rounded up so the shares cover the total.
            quota[t] = total.div_ceil(k);
        }
    }
    quota
}

/// Targets under their quota, the largest deficit first (ties: lower index first).
fn receivers_by_deficit(load: &[u128], quota: &[u128], targets: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = targets
        .iter()
        .copied()
        .filter(|&t| load[t] < quota[t])
        .collect();
    out.sort_by_key(|&t| (std::cmp::Reverse(quota[t] - load[t]), t));
    out
}

/// Hands the given slots, in order, to the receivers one after another (the last one takes
/// whatever is left), merging consecutive slots with the same donor and receiver.
fn assign(
    given: &[(u16, usize)],
    weights: &[u64],
    receivers: &[usize],
    load: &mut [u128],
    quota: &[u128],
) -> Vec<Move> {
    let mut moves: Vec<Move> = Vec::new();
    let mut r = 0;
    for &(slot, from) in given {
        let w = u128::from(weights[usize::from(slot)]);
        // Move on when this receiver is full (the last one takes whatever is left).
        while r + 1 < receivers.len() && load[receivers[r]] >= quota[receivers[r]] {
            r += 1;
        }
        let mut to = receivers[r];
        if 2 * load[to] + w > 2 * quota[to] {
            // It would overshoot by more than half the slot: the receiver with the most room
            // left takes it instead.
            let room = |t: usize| (quota[t].saturating_sub(load[t]), std::cmp::Reverse(t));
            to = receivers[r..]
                .iter()
                .copied()
                .max_by_key(|&t| room(t))
                .unwrap_or(to);
        }
        if to == from {
            continue;
        }
        load[to] += w;
        match moves.last_mut() {
            Some(m) if m.from == from && m.to == to && *m.slots.end() + 1 == slot => {
                m.slots = *m.slots.start()..=slot;
            }
            _ => moves.push(Move {
                slots: slot..=slot,
                from,
                to,
            }),
        }
    }
    moves
}

#[cfg(test)]
#[path = "rebalance_tests.rs"]
mod tests;
