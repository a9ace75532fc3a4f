//! What can go wrong turning a key into a shard, and the SQLSTATE each failure shows a client.

use std::fmt;
use std::ops::RangeInclusive;

use super::KeyType;
use crate::error::{ClientError, SqlState};

/// Longest key value (in characters) quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 64;
/// Most slot ranges (or overlaps) listed in one message; the rest are counted.
const MAX_LISTED: usize = 8;

/// A key that cannot be placed, or a shard map that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardingError {
    /// A literal that does not parse as the declared key type.
    #[error(
        "invalid input syntax for type {key_type}: {value}; the shard key column is declared \
         {key_type}, so give {expected}",
        value = quoted(.value),
        expected = expected_literal(*.key_type)
    )]
    InvalidKey { key_type: KeyType, value: String },

    /// An integer literal outside the range of the declared integer type.
    #[error(
        "value {value} is out of range for type {key_type}; the shard key column is declared \
         {key_type}, which holds {range}",
        value = quoted(.value),
        range = integer_range(*.key_type)
    )]
    KeyOutOfRange { key_type: KeyType, value: String },

    /// A binary-format parameter whose length does not fit the declared key type.
    #[error(
        "incorrect binary data format for a {key_type} shard key: got {len} bytes, expected \
         {expected}; send the parameter in the type's binary format, or in text format"
    )]
    BadBinaryKey {
        key_type: KeyType,
        len: usize,
        expected: &'static str,
    },

    /// A binary-format text key that is not UTF-8.
    #[error(
        "invalid byte sequence for encoding \"UTF8\" in a {key_type} shard key; send UTF-8 text"
    )]
    KeyNotUtf8 { key_type: KeyType },

    /// A key type name that is not one of ours.
    #[error(
        "unknown shard key type {0:?}; use one of bigint, integer, smallint, text, varchar, uuid"
    )]
    UnknownKeyType(String),

    /// A shard map with no shards.
    #[error("no shards are configured; add at least one [[shards]] entry")]
    NoShards,

    /// More shards than slots in an even split: some shard would own nothing.
    #[error("{count} shards cannot split {slots} slots so that each owns one; use at most {slots} shards")]
    TooManyShards { count: usize, slots: u16 },

    /// Two shards with the same name.
    #[error(
        "shard name {name:?} is used by shards {first} and {second}; give each shard its own name"
    )]
    DuplicateShardName {
        name: String,
        first: usize,
        second: usize,
    },

    /// Some shards list slots and others do not.
    #[error(
        "shard {without} lists no slots while shard {with} does; either give every shard its \
         slots or leave them out everywhere for an even split"
    )]
    MixedSlotSpecs {
        with: String,
        without: String,
        /// Index of the shard without slots.
        shard_idx: usize,
    },

    /// A slot spec that does not parse (`"0-2047"`, `"0-99,300-511"` and `"7"` do).
    #[error(
        "shard {shard}: cannot read slots {spec:?}: {problem}; write ranges like \"0-2047\" or \
         \"0-99,300-511\", slots 0 to 4095"
    )]
    BadSlotSpec {
        shard: String,
        shard_idx: usize,
        spec: String,
        problem: String,
    },

    /// Slots claimed by two shards (or twice by one).
    #[error("{}; give each slot to exactly one shard", overlaps_text(.0))]
    SlotsOwnedTwice(Vec<SlotOverlap>),

    /// Slots no shard claims.
    #[error("{} owned by no shard; give each slot to exactly one shard", slots_text(.0))]
    SlotsUnowned(Vec<RangeInclusive<u16>>),
}

/// Slots claimed by two shards; `first` and `second` may be the same shard listing them twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOverlap {
    pub slots: RangeInclusive<u16>,
    pub first: String,
    pub second: String,
    /// Index of the shard whose claim came second.
    pub second_idx: usize,
}

impl ShardingError {
    /// The SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ShardingError::InvalidKey { .. } => SqlState::INVALID_TEXT_REPRESENTATION,
            ShardingError::KeyOutOfRange { .. } => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            ShardingError::BadBinaryKey { .. } => SqlState::INVALID_BINARY_REPRESENTATION,
            ShardingError::KeyNotUtf8 { .. } => SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            ShardingError::UnknownKeyType(_)
            | ShardingError::NoShards
            | ShardingError::TooManyShards { .. }
            | ShardingError::DuplicateShardName { .. }
            | ShardingError::MixedSlotSpecs { .. }
            | ShardingError::BadSlotSpec { .. }
            | ShardingError::SlotsOwnedTwice(_)
            | ShardingError::SlotsUnowned(_) => SqlState::CONFIG_FILE_ERROR,
        }
    }

    /// Index of the shard whose `slots` setting is at fault, when one shard is.
    pub fn shard_idx(&self) -> Option<usize> {
        match self {
            ShardingError::MixedSlotSpecs { shard_idx, .. }
            | ShardingError::BadSlotSpec { shard_idx, .. } => Some(*shard_idx),
            ShardingError::DuplicateShardName { second, .. } => Some(*second),
            ShardingError::SlotsOwnedTwice(overlaps) => overlaps.first().map(|o| o.second_idx),
            _ => None,
        }
    }
}

impl From<&ShardingError> for ClientError {
    fn from(e: &ShardingError) -> ClientError {
        ClientError::new(e.sqlstate(), format!("pgshard: {e}"))
    }
}

/// `"value"`, cut to [`MAX_QUOTED_CHARS`] characters.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

fn expected_literal(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Bigint | KeyType::Integer | KeyType::Smallint => {
            "a whole number such as 42 (digits with an optional sign)"
        }
        KeyType::Uuid => "a UUID such as 550e8400-e29b-41d4-a716-446655440000",
        KeyType::Text | KeyType::Varchar => "a string",
    }
}

fn integer_range(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Smallint => "-32768 to 32767",
        KeyType::Integer => "-2147483648 to 2147483647",
        _ => "-9223372036854775808 to 9223372036854775807",
    }
}

/// `"slot 5"` or `"slots 5-9, 12"`: ranges as users write them.
pub(crate) fn slots_text(ranges: &[RangeInclusive<u16>]) -> String {
    let single = matches!(ranges, [r] if r.start() == r.end());
    let mut list = ranges
        .iter()
        .take(MAX_LISTED)
        .map(|r| RangeText(r).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ranges.len() > MAX_LISTED {
        list += &format!(" and {} more ranges", ranges.len() - MAX_LISTED);
    }
    if single {
        format!("slot {list} is")
    } else {
        format!("slots {list} are")
    }
}

fn overlaps_text(overlaps: &[SlotOverlap]) -> String {
    let mut text = overlaps
        .iter()
        .take(MAX_LISTED)
        .map(|o| {
            let slots = slots_text(std::slice::from_ref(&o.slots));
            if o.first == o.second {
                format!("{slots} listed twice by {}", o.first)
            } else {
                format!("{slots} owned by both {} and {}", o.first, o.second)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if overlaps.len() > MAX_LISTED {
        text += &format!("; and {} more overlaps", overlaps.len() - MAX_LISTED);
    }
    text
}

/// A slot range as `"5"` or `"5-9"`.
pub(crate) struct RangeText<'a>(pub &'a RangeInclusive<u16>);

impl fmt::Display for RangeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.start() == self.0.end() {
            write!(f, "{}", self.0.start())
        } else {
            write!(f, "{}-{}", self.0.start(), self.0.end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_messages() {
        let err = ShardingError::InvalidKey {
            key_type: KeyType::Bigint,
            value: "9".repeat(1000),
        };
        let msg = err.to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("(1000 bytes)"), "{msg}");
    }

    #[test]
    fn slot_lists_read_singular_and_plural() {
        assert_eq!(slots_text(&[5..=5]), "slot 5 is");
        assert_eq!(slots_text(&[5..=9]), "slots 5-9 are");
        assert_eq!(slots_text(&[5..=5, 7..=7]), "slots 5, 7 are");
    }
}
