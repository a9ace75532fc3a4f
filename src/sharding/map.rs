//! The shard map: which shard owns each slot.

use std::ops::RangeInclusive;

use super::{KeyValue, ShardingError, SlotOverlap, SLOT_COUNT};

/// Sentinel in the owner table while building: slot not yet claimed.
const UNOWNED: u16 = u16::MAX;

/// Which shard owns each of the [`SLOT_COUNT`] slots. Every slot has exactly one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    version: u64,
    /// Shard index per slot; `owner.len() == SLOT_COUNT`.
    owner: Vec<u16>,
    names: Vec<String>,
}

impl ShardMap {
    /// Builds a map (version 1) from `(shard name, slot spec)` pairs, in shard order.
    ///
    /// A spec lists ranges and single slots, e.g. `"0-99,300-511"` or `"7"`. If no shard gives
    /// a spec, shard `i` of `n` owns `[floor(i*4096/n), floor((i+1)*4096/n))`. Mixing shards
    /// with and without specs, gaps and overlaps are errors that name the slots.
    pub fn new(shards: &[(String, Option<String>)]) -> Result<ShardMap, ShardingError> {
        if shards.is_empty() {
            return Err(ShardingError::NoShards);
        }
        if shards.len() > usize::from(SLOT_COUNT) {
            return Err(ShardingError::TooManyShards {
                count: shards.len(),
                slots: SLOT_COUNT,
            });
        }
        check_unique_names(shards)?;
        let names: Vec<String> = shards.iter().map(|(name, _)| name.clone()).collect();
        let owner = match shards.iter().position(|(_, spec)| spec.is_some()) {
            None => even_split(shards.len()),
            Some(with) => {
                if let Some(without) = shards.iter().position(|(_, spec)| spec.is_none()) {
                    return Err(ShardingError::MixedSlotSpecs {
                        with: names[with].clone(),
                        without: names[without].clone(),
                        shard_idx: without,
                    });
                }
                claim_listed(shards)?
            }
        };
        Ok(ShardMap {
            version: 1,
            owner,
            names,
        })
    }

    /// A map where slot `s` belongs to shard `owner[s]` of `names`, under `version` (a live
    /// map read from the catalog). `None` unless `owner` has [`SLOT_COUNT`] entries, each a
    /// valid index into `names`.
    pub fn from_owners(names: Vec<String>, owner: Vec<u16>, version: u64) -> Option<ShardMap> {
        let valid = owner.len() == usize::from(SLOT_COUNT)
            && !names.is_empty()
            && owner.iter().all(|&o| usize::from(o) < names.len());
        valid.then_some(ShardMap {
            version,
            owner,
            names,
        })
    }

    /// This map's slot owners over another list of shard names (a reload keeps the shards'
    /// names and adds new ones at the end): `None` when a shard owning slots is not in `names`.
    pub fn reindexed(&self, names: &[String]) -> Option<ShardMap> {
        let index: Vec<Option<u16>> = self
            .names
            .iter()
            .map(|n| names.iter().position(|m| m == n).map(|i| i as u16))
            .collect();
        let owner = self
            .owner
            .iter()
            .map(|&o| index[usize::from(o)])
            .collect::<Option<Vec<u16>>>()?;
        ShardMap::from_owners(names.to_vec(), owner, self.version)
    }

    /// Name of the shard owning `slot`.
    pub fn owner_name(&self, slot: u16) -> &str {
        self.shard_name(self.shard_of_slot(slot))
    }

    /// The names of the shards, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The same map under another version number (a changed map gets a higher one).
    pub fn with_version(mut self, version: u64) -> ShardMap {
        self.version = version;
        self
    }

    /// Version of the map; it increases with every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a map has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of the shard owning `slot`. Panics if `slot >= SLOT_COUNT` (slots come from
    /// [`super::slot_of_bytes`], which never returns one).
    pub fn shard_of_slot(&self, slot: u16) -> usize {
        usize::from(self.owner[usize::from(slot)])
    }

    /// Index of the shard owning `key`.
    pub fn shard_of_key(&self, key: &KeyValue) -> usize {
        self.shard_of_slot(key.slot())
    }

    /// Name of shard `idx`. Panics if `idx >= self.len()`.
    pub fn shard_name(&self, idx: usize) -> &str {
        &self.names[idx]
    }

    /// Index of the shard called `name`.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The slot ranges shard `shard_idx` owns, ascending and merged (for display).
    pub fn ranges_of(&self, shard_idx: usize) -> Vec<RangeInclusive<u16>> {
        runs(&self.owner, |owner| usize::from(owner) == shard_idx)
    }
}

fn check_unique_names(shards: &[(String, Option<String>)]) -> Result<(), ShardingError> {
    for (second, (name, _)) in shards.iter().enumerate() {
        if let Some(first) = shards[..second].iter().position(|(n, _)| n == name) {
            return Err(ShardingError::DuplicateShardName {
                name: name.clone(),
                first,
                second,
            });
        }
    }
    Ok(())
}

/// Shard `i` of `n` owns `[floor(i*4096/n), floor((i+1)*4096/n))`. Needs `1 <= n <= 4096`.
fn even_split(n: usize) -> Vec<u16> {
    let slots = usize::from(SLOT_COUNT);
    let mut owner = vec![0u16; slots];
    for i in 0..n {
        // i < n <= 4096, so the index fits in a u16.
        owner[i * slots / n..(i + 1) * slots / n].fill(i as u16);
    }
    owner
}

/// Claims each shard's listed slots, then checks every slot was claimed exactly once.
fn claim_listed(shards: &[(String, Option<String>)]) -> Result<Vec<u16>, ShardingError> {
    let mut owner = vec![UNOWNED; usize::from(SLOT_COUNT)];
    // Overlaps as (slot, first owner, second owner), in the order found.
    let mut clashes: Vec<(u16, usize, usize)> = Vec::new();
    for (idx, (name, spec)) in shards.iter().enumerate() {
        let spec = spec.as_deref().unwrap_or_default();
        for range in parse_slot_spec(spec).map_err(|problem| ShardingError::BadSlotSpec {
            shard: name.clone(),
            shard_idx: idx,
            spec: spec.to_string(),
            problem,
        })? {
            for slot in range {
                let cell = &mut owner[usize::from(slot)];
                if *cell == UNOWNED {
                    // `new` allows at most 4096 shards, so the index fits in a u16.
                    *cell = idx as u16;
                } else {
                    clashes.push((slot, usize::from(*cell), idx));
                }
            }
        }
    }
    if !clashes.is_empty() {
        return Err(ShardingError::SlotsOwnedTwice(group_clashes(
            shards, clashes,
        )));
    }
    let unowned = runs(&owner, |o| o == UNOWNED);
    if !unowned.is_empty() {
        return Err(ShardingError::SlotsUnowned(unowned));
    }
    Ok(owner)
}

/// Merges clashes on consecutive slots between the same two shards into ranges.
fn group_clashes(
    shards: &[(String, Option<String>)],
    mut clashes: Vec<(u16, usize, usize)>,
) -> Vec<SlotOverlap> {
    clashes.sort_by_key(|&(slot, first, second)| (first, second, slot));
    let mut out: Vec<SlotOverlap> = Vec::new();
    let mut last_pair = None;
    for (slot, first, second) in clashes {
        if let Some(last) = out.last_mut() {
            let next = u32::from(*last.slots.end()) + 1;
            if last_pair == Some((first, second)) && next == u32::from(slot) {
                last.slots = *last.slots.start()..=slot;
                continue;
            }
        }
        out.push(SlotOverlap {
            slots: slot..=slot,
            first: shards[first].0.clone(),
            second: shards[second].0.clone(),
            second_idx: second,
        });
        last_pair = Some((first, second));
    }
    out
}

/// Parses `"0-99, 300-511,7"` into ranges; the error says what is wrong with which part. An
/// empty spec owns no slots (a new shard, before slots are moved to it).
pub fn parse_slot_spec(spec: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            let (start, end) = match part.split_once('-') {
                Some((a, b)) => (parse_slot(a.trim(), part)?, parse_slot(b.trim(), part)?),
                None => {
                    let slot = parse_slot(part, part)?;
                    (slot, slot)
                }
            };
            if start > end {
                return Err(format!(
                    "range {part:?} runs backwards; write it as {end}-{start}"
                ));
            }
            Ok(start..=end)
        })
        .collect()
}

fn parse_slot(text: &str, part: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{part:?} is not a slot number or a range of them"));
    }
    match text.parse::<u16>() {
        Ok(slot) if slot < SLOT_COUNT => Ok(slot),
        _ => Err(format!(
            "slot {text} is past the last slot, {}",
            SLOT_COUNT - 1
        )),
    }
}

/// Maximal runs of slots whose owner satisfies `pick`.
fn runs(owner: &[u16], pick: impl Fn(u16) -> bool) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut start: Option<u16> = None;
    // owner.len() == SLOT_COUNT, so every index fits in a u16.
    for (slot, &o) in (0..SLOT_COUNT).zip(owner) {
        match (pick(o), start) {
            (true, None) => start = Some(slot),
            (false, Some(s)) => {
                out.push(s..=slot - 1);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..=SLOT_COUNT - 1);
    }
    out
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
