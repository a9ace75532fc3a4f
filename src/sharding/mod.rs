//! Shard keys, slots and the shard map: the contract in SHARDING.md, byte for byte.
//!
//! A key literal becomes a [`KeyValue`] ([`key_from_text`], [`key_from_binary`]), its
//! [`KeyValue::key_bytes`] hash to one of [`SLOT_COUNT`] slots ([`slot_of_bytes`]), and a
//! [`ShardMap`] says which shard owns each slot.
//!
//! Pure and synchronous: this module never does I/O, never awaits, holds no globals and knows
//! nothing of SQL, sockets or the config file format. Changing what any key hashes to moves user
//! data, so the test vectors in SHARDING.md are pinned by the tests here.
//!
//! Where does `user_id = 42` live with two shards and an even split?
//!
//! ```
//! use pgshard::sharding::{key_from_text, KeyType, ShardMap};
//!
//! let key = key_from_text(KeyType::Bigint, "42").unwrap();
//! assert_eq!(key.slot(), 3418); // SHARDING.md's test vector
//! let map = ShardMap::new(&[("s0".to_string(), None), ("s1".to_string(), None)]).unwrap();
//! assert_eq!(map.shard_name(map.shard_of_key(&key)), "s1");
//! ```

mod error;
mod key;
mod map;
pub mod rebalance;
mod slot;

#[cfg(test)]
mod vectors;

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

pub use error::{ShardingError, SlotOverlap};
pub use key::{key_from_binary, key_from_text, KeyBytes, KeyValue};
pub use map::{parse_slot_spec, ShardMap};
pub use slot::{slot_of_bytes, SLOT_COUNT};

/// Declared type of a shard key column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    #[default]
    Bigint,
    Integer,
    Smallint,
    Text,
    Varchar,
    Uuid,
}

impl KeyType {
    /// Every key type, in the order they are listed to users.
    pub const ALL: [KeyType; 6] = [
        KeyType::Bigint,
        KeyType::Integer,
        KeyType::Smallint,
        KeyType::Text,
        KeyType::Varchar,
        KeyType::Uuid,
    ];

    /// The name used in the config file and in PostgreSQL (`bigint`, `uuid`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Bigint => "bigint",
            KeyType::Integer => "integer",
            KeyType::Smallint => "smallint",
            KeyType::Text => "text",
            KeyType::Varchar => "varchar",
            KeyType::Uuid => "uuid",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = ShardingError;

    /// Parses a config-file type name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ShardingError::UnknownKeyType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip_through_from_str() {
        for t in KeyType::ALL {
            assert_eq!(t.name().parse::<KeyType>().unwrap(), t);
            assert_eq!(t.name().to_uppercase().parse::<KeyType>().unwrap(), t);
        }
    }

    #[test]
    fn key_type_serde_names_match_display_names() {
        #[derive(Deserialize)]
        struct Holder {
            t: KeyType,
        }
        for t in KeyType::ALL {
            let h: Holder = toml::from_str(&format!("t = \"{}\"", t.name())).unwrap();
            assert_eq!(h.t, t);
        }
    }

    #[test]
    fn unknown_key_type_lists_the_accepted_names() {
        let err = "int8".parse::<KeyType>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("int8"), "{msg}");
        assert!(
            msg.contains("bigint, integer, smallint, text, varchar, uuid"),
            "{msg}"
        );
    }
}
