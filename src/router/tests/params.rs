//! `$n` keys resolved from Bind parameters, in text and binary formats, for every key type.

use super::{route_with, router};
use crate::router::{Params, RouteContext};

/// Routes `sql` with the given parameter values and format codes.
fn bind(sql: &str, values: &[Option<&[u8]>], formats: &[i16]) -> String {
    route_with(sql, &Params::new(values, formats), &RouteContext::default())
}

const BY_KEY: &str = "SELECT * FROM users WHERE user_id = $1";

#[test]
fn text_parameters_route_by_their_value() {
    assert_eq!(bind(BY_KEY, &[Some(b"42")], &[]), "shard 1 replica");
    assert_eq!(bind(BY_KEY, &[Some(b"1")], &[0]), "shard 0 replica");
    assert_eq!(bind(BY_KEY, &[Some(b" 42 ")], &[]), "shard 1 replica");
}

#[test]
fn binary_int8_int4_and_int2_parameters_hash_alike() {
    assert_eq!(
        bind(BY_KEY, &[Some(&42i64.to_be_bytes())], &[1]),
        "shard 1 replica"
    );
    assert_eq!(
        bind(BY_KEY, &[Some(&42i32.to_be_bytes())], &[1]),
        "shard 1 replica"
    );
    assert_eq!(
        bind(BY_KEY, &[Some(&1i16.to_be_bytes())], &[1]),
        "shard 0 replica"
    );
    let integer = "SELECT * FROM events WHERE user_id = $1";
    assert_eq!(
        bind(integer, &[Some(&42i32.to_be_bytes())], &[1]),
        "shard 1 replica"
    );
}

#[test]
fn text_key_parameters_in_both_formats() {
    let sql = "SELECT * FROM accounts WHERE email = $1";
    assert_eq!(bind(sql, &[Some(b"carol")], &[0]), "shard 1 replica");
    assert_eq!(bind(sql, &[Some(b"alice")], &[1]), "shard 0 replica");
}

#[test]
fn uuid_key_parameters_in_both_formats() {
    let sql = "SELECT * FROM devices WHERE device_id = $1";
    let text = b"550e8400-e29b-41d4-a716-446655440000";
    let binary = [
        0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00,
        0x00,
    ];
    assert_eq!(bind(sql, &[Some(text)], &[]), "shard 1 replica");
    assert_eq!(bind(sql, &[Some(&binary)], &[1]), "shard 1 replica");
}

#[test]
fn casts_and_later_parameters_and_per_parameter_formats() {
    let sql = "SELECT * FROM users u WHERE u.name = $1 AND u.user_id = $2::bigint";
    let values = [Some(&b"x"[..]), Some(&42i64.to_be_bytes()[..])];
    assert_eq!(bind(sql, &values, &[0, 1]), "shard 1 replica");
    let sql = "SELECT * FROM users WHERE user_id = CAST($1 AS bigint)";
    assert_eq!(bind(sql, &[Some(b"1")], &[]), "shard 0 replica");
}

#[test]
fn insert_parameters_place_each_row() {
    let one = "INSERT INTO users (user_id, name) VALUES ($1, $2)";
    assert_eq!(
        bind(one, &[Some(b"42"), Some(b"a")], &[]),
        "shard 1 primary"
    );
    let two = "INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, $4)";
    let rows = [Some(&b"1"[..]), Some(b"a"), Some(b"42"), Some(b"b")];
    assert_eq!(bind(two, &rows, &[]), "split 0,1");
    let rows = [Some(&b"1"[..]), Some(b"a"), Some(b"2"), Some(b"b")];
    assert_eq!(bind(two, &rows, &[]), "shard 0 primary");
}

#[test]
fn in_list_parameters_route_to_their_shards() {
    let sql = "SELECT * FROM users WHERE user_id IN ($1, $2)";
    assert_eq!(
        bind(sql, &[Some(b"1"), Some(b"42")], &[]),
        "shards 0,1 replica"
    );
    assert_eq!(bind(sql, &[Some(b"1"), Some(b"2")], &[]), "shard 0 replica");
}

#[test]
fn bad_parameters_get_clear_errors() {
    assert_eq!(bind(BY_KEY, &[], &[]), "error 08P01");
    assert_eq!(bind(BY_KEY, &[Some(b"abc")], &[]), "error 22P02");
    assert_eq!(bind(BY_KEY, &[Some(&[1, 2, 3])], &[1]), "error 22P03");
    assert_eq!(bind(BY_KEY, &[Some(&[0xff])], &[0]), "error 22021");
    let insert = "INSERT INTO users (user_id) VALUES ($1)";
    assert_eq!(bind(insert, &[None], &[]), "error 22004");
}

#[test]
fn a_null_key_in_a_read_matches_nothing_and_goes_to_the_default_shard() {
    assert_eq!(bind(BY_KEY, &[None], &[]), "shard 0 replica");
}

#[test]
fn key_updates_are_allowed_only_within_the_shard() {
    let sql = "UPDATE users SET user_id = $1 WHERE user_id = $2";
    assert_eq!(
        bind(sql, &[Some(b"4"), Some(b"42")], &[]),
        "shard 1 primary"
    );
    assert_eq!(bind(sql, &[Some(b"1"), Some(b"42")], &[]), "error 0A000");
}

#[test]
fn plans_say_whether_routing_needs_parameters() {
    let router = router();
    assert!(router.plan(BY_KEY).needs_params());
    assert!(!router
        .plan("SELECT * FROM users WHERE user_id = 42")
        .needs_params());
    assert!(!router.plan("SELECT $1").needs_params());
}
