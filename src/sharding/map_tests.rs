//! Tests of the shard map (kept apart from `map.rs` to keep both short).

use super::*;

fn specs(shards: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    shards
        .iter()
        .map(|(name, spec)| (name.to_string(), spec.map(str::to_string)))
        .collect()
}

fn build(shards: &[(&str, Option<&str>)]) -> Result<ShardMap, ShardingError> {
    ShardMap::new(&specs(shards))
}

fn error(shards: &[(&str, Option<&str>)]) -> String {
    build(shards).unwrap_err().to_string()
}

#[test]
fn one_shard_owns_every_slot() {
    let map = build(&[("s0", None)]).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map.ranges_of(0), vec![0..=4095]);
    assert_eq!(map.version(), 1);
}

#[test]
fn two_shards_without_slots_split_at_2048() {
    let map = build(&[("s0", None), ("s1", None)]).unwrap();
    assert_eq!(map.ranges_of(0), vec![0..=2047]);
    assert_eq!(map.ranges_of(1), vec![2048..=4095]);
}

#[test]
fn even_split_follows_the_floor_formula() {
    let map = build(&[("a", None), ("b", None), ("c", None)]).unwrap();
    assert_eq!(map.ranges_of(0), vec![0..=1364]);
    assert_eq!(map.ranges_of(1), vec![1365..=2729]);
    assert_eq!(map.ranges_of(2), vec![2730..=4095]);
}

#[test]
fn as_many_shards_as_slots_each_own_one() {
    let names: Vec<(String, Option<String>)> = (0..4096).map(|i| (format!("s{i}"), None)).collect();
    let map = ShardMap::new(&names).unwrap();
    assert_eq!(map.shard_of_slot(4095), 4095);
    let too_many: Vec<(String, Option<String>)> =
        (0..4097).map(|i| (format!("s{i}"), None)).collect();
    assert!(matches!(
        ShardMap::new(&too_many),
        Err(ShardingError::TooManyShards { count: 4097, .. })
    ));
}

#[test]
fn explicit_ranges_and_single_slots_are_honoured() {
    let map = build(&[
        ("s0", Some("0-99, 300-511,7000-7000")),
        ("s1", Some("100-299")),
        ("s2", Some("512-4095")),
    ]);
    // 7000 is past the last slot.
    let msg = map.unwrap_err().to_string();
    assert!(
        msg.contains("slot 7000 is past the last slot, 4095"),
        "{msg}"
    );

    let map = build(&[
        ("s0", Some("0-99,300-511,4095")),
        ("s1", Some("100-299")),
        ("s2", Some("512-4094")),
    ])
    .unwrap();
    assert_eq!(map.ranges_of(0), vec![0..=99, 300..=511, 4095..=4095]);
    assert_eq!(map.shard_of_slot(150), 1);
    assert_eq!(map.shard_of_slot(4095), 0);
    assert_eq!(map.shard_name(2), "s2");
    assert_eq!(map.shard_index("s1"), Some(1));
}

#[test]
fn gaps_are_named_as_ranges() {
    let msg = error(&[("s0", Some("0-99,300-4095")), ("s1", Some("500-499"))]);
    assert!(msg.contains("runs backwards"), "{msg}");
    let msg = error(&[("s0", Some("0-99")), ("s1", Some("300-4095"))]);
    assert!(msg.contains("slots 100-299 are owned by no shard"), "{msg}");
    let msg = error(&[("s0", Some("0-4094"))]);
    assert!(msg.contains("slot 4095 is owned by no shard"), "{msg}");
}

#[test]
fn overlaps_name_the_slots_and_both_shards() {
    let err = build(&[("s0", Some("0-5")), ("s1", Some("5-4095"))]).unwrap_err();
    assert!(
        err.to_string()
            .contains("slot 5 is owned by both s0 and s1"),
        "{err}"
    );
    assert_eq!(err.shard_idx(), Some(1));
    let msg = error(&[("s0", Some("0-2100")), ("s1", Some("2048-4095"))]);
    assert!(
        msg.contains("slots 2048-2100 are owned by both s0 and s1"),
        "{msg}"
    );
}

#[test]
fn a_shard_listing_a_slot_twice_is_an_overlap() {
    let msg = error(&[("s0", Some("0-4095,10-12"))]);
    assert!(msg.contains("slots 10-12 are listed twice by s0"), "{msg}");
}

#[test]
fn mixing_shards_with_and_without_slots_is_an_error() {
    let err = build(&[("s0", Some("0-4095")), ("s1", None)]).unwrap_err();
    assert_eq!(err.shard_idx(), Some(1));
    assert!(err.to_string().contains("shard s1 lists no slots"), "{err}");
}

#[test]
fn an_empty_spec_owns_no_slots() {
    let map = build(&[("s0", Some("0-4095")), ("s1", Some(""))]).unwrap();
    assert_eq!(map.len(), 2);
    assert!((0..SLOT_COUNT).all(|slot| map.shard_of_slot(slot) == 0));
    let msg = error(&[("s0", Some(""))]);
    assert!(msg.contains("owned by no shard"), "{msg}");
}

#[test]
fn malformed_specs_are_rejected_with_the_part_at_fault() {
    for (spec, expected) in [
        ("0-99,", "\"\" is not a slot number"),
        ("0..99", "\"0..99\" is not a slot number"),
        ("-5", "\"-5\" is not a slot number"),
        ("a-b", "\"a-b\" is not a slot number"),
        ("0-99999", "slot 99999 is past the last slot"),
    ] {
        let err = build(&[("s0", Some(spec))]).unwrap_err();
        assert!(
            matches!(err, ShardingError::BadSlotSpec { shard_idx: 0, .. }),
            "{spec:?}: {err:?}"
        );
        assert!(err.to_string().contains(expected), "{spec:?}: {err}");
    }
}

#[test]
fn no_shards_and_duplicate_names_are_errors() {
    assert_eq!(build(&[]), Err(ShardingError::NoShards));
    let err = build(&[("s0", None), ("s0", None)]).unwrap_err();
    assert!(err.to_string().contains("\"s0\""), "{err}");
}

#[test]
fn with_version_replaces_the_version() {
    let map = build(&[("s0", None)]).unwrap().with_version(7);
    assert_eq!(map.version(), 7);
}
