//! The test vectors of SHARDING.md, row by row. If one fails, keys have moved: do not "fix" the
//! vector.

use super::*;

/// (declared type, key as text, xxh3_64 of its key bytes, slot), copied from SHARDING.md.
const VECTORS: &[(KeyType, &str, u64, u16)] = &[
    (KeyType::Bigint, "0", 0xc77b3abb6f87acd9, 3191),
    (KeyType::Bigint, "1", 0x2fbc593564db792e, 763),
    (KeyType::Bigint, "42", 0xd5a6f8c838df27c8, 3418),
    (KeyType::Bigint, "-1", 0x5111c7e47d784413, 1297),
    (KeyType::Bigint, "123456789012", 0x1dda852da7ed0152, 477),
    (
        KeyType::Bigint,
        "9223372036854775807",
        0xa233cf376558df46,
        2595,
    ),
    (KeyType::Text, "", 0x2d06800538d394c2, 720),
    (KeyType::Text, "alice", 0x4da10dd61a0116b0, 1242),
    (KeyType::Text, "bob@example.com", 0x7126bde450b4476a, 1810),
    (KeyType::Text, "ünïcødé", 0x76ff80bbd5b8aa91, 1903),
    (
        KeyType::Uuid,
        "550e8400-e29b-41d4-a716-446655440000",
        0xf25f3467eb84d6e6,
        3877,
    ),
];

#[test]
fn every_sharding_md_vector_hashes_and_slots_as_documented() {
    let mut failures = Vec::new();
    for &(key_type, text, hash, slot) in VECTORS {
        let key = key_from_text(key_type, text).expect("vector parses");
        let got_hash = xxhash_rust::xxh3::xxh3_64(&key.key_bytes());
        let got_slot = key.slot();
        if got_hash != hash || got_slot != slot {
            failures.push(format!(
                "{key_type} {text:?}: xxh3 {got_hash:#018x} slot {got_slot}, \
                 expected {hash:#018x} slot {slot}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "vectors failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn varchar_keys_hash_like_text_keys() {
    for &(key_type, text, _, slot) in VECTORS {
        if key_type == KeyType::Text {
            let key = key_from_text(KeyType::Varchar, text).unwrap();
            assert_eq!(key.slot(), slot, "{text:?}");
        }
    }
}

#[test]
fn integer_vectors_hash_the_same_declared_integer_or_smallint() {
    for (key_type, text) in [(KeyType::Integer, "42"), (KeyType::Smallint, "42")] {
        assert_eq!(key_from_text(key_type, text).unwrap().slot(), 3418);
    }
}

#[test]
fn with_two_even_shards_key_42_is_on_shard_1_and_key_1_on_shard_0() {
    let map = ShardMap::new(&[("s0".into(), None), ("s1".into(), None)]).unwrap();
    let at = |k: i64| map.shard_of_key(&KeyValue::Int(k));
    assert_eq!(at(42), 1);
    assert_eq!(at(1), 0);
    assert_eq!(map.shard_name(at(42)), "s1");
}
