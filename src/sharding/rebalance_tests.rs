//! Tests of the rebalance planner: evenness, the least slots moved, contiguity, draining, rows.

use super::*;

const N: usize = SLOT_COUNT as usize;

/// Owner table from `(shard, first, last)` runs.
fn owners(runs: &[(usize, u16, u16)]) -> Vec<usize> {
    let mut owner = vec![usize::MAX; N];
    for &(shard, a, b) in runs {
        for s in a..=b {
            owner[usize::from(s)] = shard;
        }
    }
    assert!(owner.iter().all(|&o| o != usize::MAX), "every slot owned");
    owner
}

/// The owner table after `moves`, checking each move takes slots from their owner and no slot
/// moves twice.
fn apply(owner: &[usize], moves: &[Move]) -> Vec<usize> {
    let mut after = owner.to_vec();
    let mut moved = vec![false; N];
    for m in moves {
        assert_ne!(m.from, m.to, "{m:?}");
        for s in m.slots.clone() {
            let s = usize::from(s);
            assert_eq!(after[s], m.from, "slot {s} is not {}'s: {m:?}", m.from);
            assert!(!moved[s], "slot {s} moves twice");
            moved[s] = true;
            after[s] = m.to;
        }
    }
    after
}

fn loads(owner: &[usize], weights: &[u64], shards: usize) -> Vec<u64> {
    let mut load = vec![0; shards];
    for (&o, &w) in owner.iter().zip(weights) {
        load[o] += w;
    }
    load
}

fn slots_moved(moves: &[Move]) -> usize {
    moves.iter().map(|m| m.slots.clone().count()).sum()
}

/// Checks a by-count plan: targets within one slot of each other, non-targets empty, and no
/// more slots moved than the shards' excess over an even split (the least possible).
fn check_by_count(owner: &[usize], targets: &[usize], shards: usize) -> Vec<Move> {
    let ones = vec![1u64; N];
    let moves = plan(owner, &ones, targets);
    let after = loads(&apply(owner, &moves), &ones, shards);
    let before = loads(owner, &ones, shards);
    let t: Vec<u64> = targets.iter().map(|&i| after[i]).collect();
    let (lo, hi) = (*t.iter().min().unwrap(), *t.iter().max().unwrap());
    assert!(hi - lo <= 1, "uneven after the plan: {after:?}");
    for s in (0..shards).filter(|s| !targets.contains(s)) {
        assert_eq!(after[s], 0, "shard {s} is not drained: {after:?}");
    }
    let base = N as u64 / targets.len() as u64;
    let least: u64 = (0..shards)
        .map(|s| match targets.contains(&s) {
            true => before[s].saturating_sub(base + 1),
            false => before[s],
        })
        .sum();
    let excess_over_base: u64 = (0..shards)
        .map(|s| match targets.contains(&s) {
            true => before[s].saturating_sub(base),
            false => before[s],
        })
        .sum();
    let moved = slots_moved(&moves) as u64;
    assert!(
        moved >= least && moved <= excess_over_base,
        "moved {moved}, least {least}, excess {excess_over_base}"
    );
    moves
}

#[test]
fn an_even_map_needs_no_moves() {
    let owner = owners(&[(0, 0, 2047), (1, 2048, 4095)]);
    assert!(check_by_count(&owner, &[0, 1], 2).is_empty());
}

#[test]
fn a_new_empty_shard_gets_a_third_in_two_contiguous_moves() {
    let owner = owners(&[(0, 0, 2047), (1, 2048, 4095)]);
    let moves = check_by_count(&owner, &[0, 1, 2], 3);
    assert_eq!(
        moves,
        vec![
            Move {
                slots: 1366..=2047,
                from: 0,
                to: 2
            },
            Move {
                slots: 3413..=4095,
                from: 1,
                to: 2
            },
        ]
    );
    assert_eq!(slots_moved(&moves), 1365);
}

#[test]
fn a_shard_left_out_is_drained_into_the_others() {
    let owner = owners(&[(0, 0, 1364), (1, 1365, 2729), (2, 2730, 4095)]);
    let moves = check_by_count(&owner, &[0, 1], 3);
    assert!(moves.iter().all(|m| m.from == 2));
    assert_eq!(slots_moved(&moves), 1366);
    assert_eq!(moves.len(), 2, "one range to each: {moves:?}");
}

#[test]
fn one_target_takes_everything() {
    let owner = owners(&[(0, 0, 99), (1, 100, 4095)]);
    let moves = check_by_count(&owner, &[0], 2);
    assert_eq!(
        moves,
        vec![Move {
            slots: 100..=4095,
            from: 1,
            to: 0
        }]
    );
}

#[test]
fn fragmented_maps_even_out_with_the_least_slots_moved() {
    // A deterministic pseudo-random owner table over 4 shards, runs of random length.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..50 {
        let shards = 2 + (round % 4);
        let mut owner = Vec::with_capacity(N);
        while owner.len() < N {
            let shard = (next() % shards as u64) as usize;
            let len = 1 + (next() % 300) as usize;
            owner.extend(std::iter::repeat_n(shard, len.min(N - owner.len())));
        }
        let all: Vec<usize> = (0..shards).collect();
        check_by_count(&owner, &all, shards);
        check_by_count(&owner, &all[1..], shards);
        // A new empty shard at the end.
        check_by_count(&owner, &(0..=shards).collect::<Vec<_>>(), shards + 1);
    }
}

#[test]
fn by_rows_a_hot_shard_gives_slots_until_even_within_one_slot_weight() {
    let owner = owners(&[(0, 0, 2047), (1, 2048, 4095)]);
    // s0's slots hold 10 rows each, s1's 1 row each.
    let weights: Vec<u64> = (0..N).map(|s| if s < 2048 { 10 } else { 1 }).collect();
    let moves = plan(&owner, &weights, &[0, 1]);
    assert!(moves.iter().all(|m| m.from == 0 && m.to == 1), "{moves:?}");
    assert_eq!(moves.len(), 1, "one contiguous range: {moves:?}");
    let after = loads(&apply(&owner, &moves), &weights, 2);
    assert!(after[0].abs_diff(after[1]) <= 10, "{after:?}");
}

#[test]
fn by_rows_empty_slots_stay_and_a_hot_slot_is_not_split() {
    let owner = owners(&[(0, 0, 2047), (1, 2048, 4095)]);
    let mut weights = vec![0u64; N];
    weights[5] = 1000;
    weights[3000] = 10;
    weights[3001] = 10;
    // Even is impossible: moving the hot slot only moves the imbalance, so nothing moves.
    assert!(plan(&owner, &weights, &[0, 1]).is_empty());
    // With a third shard the hot slot goes to it (it brings s0 closest to its share).
    let moves = plan(&owner, &weights, &[0, 1, 2]);
    assert_eq!(
        moves,
        vec![Move {
            slots: 5..=5,
            from: 0,
            to: 2
        }]
    );
}

#[test]
fn by_rows_an_empty_drained_shard_still_gives_its_slots() {
    let owner = owners(&[(0, 0, 2047), (1, 2048, 4095)]);
    let moves = plan(&owner, &vec![0; N], &[0]);
    assert_eq!(
        moves,
        vec![Move {
            slots: 2048..=4095,
            from: 1,
            to: 0
        }]
    );
}
