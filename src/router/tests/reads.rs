//! Reads: keys in WHERE, IN lists, joins, CTEs and subqueries; keyless reads; the
//! read/write split.

use super::{check, error_message, router};
use crate::router::{Params, RouteContext};

#[test]
#[rustfmt::skip]
fn point_reads_go_to_the_key_owners_replica() {
    check(&[
        ("SELECT * FROM users WHERE user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = 1", "shard 0 replica"),
        ("select name from USERS where USER_ID = 42", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = '42'", "shard 1 replica"),
        ("SELECT * FROM users WHERE 42 = user_id", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = 42 AND name = 'x' AND age > 3", "shard 1 replica"),
        ("SELECT * FROM users WHERE name = 'x' AND (age > 3 AND user_id = 1)", "shard 0 replica"),
        ("SELECT * FROM users WHERE (user_id = 42)", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = -1", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id = 9223372036854775807", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = 42 ORDER BY created_at DESC LIMIT 10", "shard 1 replica"),
        ("SELECT status, count(*) FROM orders WHERE user_id = 1 GROUP BY status", "shard 0 replica"),
        ("SELECT * FROM events WHERE user_id = 42", "shard 1 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn aliases_qualified_columns_and_casts_are_understood() {
    check(&[
        ("SELECT * FROM users u WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users AS u WHERE u.user_id = 1 AND u.active", "shard 0 replica"),
        ("SELECT * FROM public.users WHERE users.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM public.users WHERE public.users.user_id = 1", "shard 0 replica"),
        ("SELECT * FROM \"users\" WHERE \"user_id\" = 42", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = 42::bigint", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id = '1'::int8", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id = CAST('42' AS bigint)", "shard 1 replica"),
        ("SELECT * FROM users u WHERE u.user_id::bigint = 42", "shard 1 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn text_and_uuid_keys_hash_by_their_declared_type() {
    check(&[
        ("SELECT * FROM accounts WHERE email = 'carol'", "shard 1 replica"),
        ("SELECT * FROM accounts WHERE email = 'alice'", "shard 0 replica"),
        ("SELECT * FROM accounts WHERE email = E'erin'", "shard 1 replica"),
        ("SELECT * FROM devices WHERE device_id = '550e8400-e29b-41d4-a716-446655440000'", "shard 1 replica"),
        ("SELECT * FROM public.devices d WHERE d.device_id = uuid '550E8400-E29B-41D4-A716-446655440000'", "shard 1 replica"),
        ("SELECT * FROM devices WHERE device_id = 'not-a-uuid'", "error 22P02"),
        ("SELECT * FROM users WHERE user_id = 'abc'", "error 22P02"),
        ("SELECT * FROM events WHERE user_id = 3000000000", "error 22003"),
    ]);
}

#[test]
#[rustfmt::skip]
fn in_lists_route_to_the_set_of_shards_involved() {
    check(&[
        ("SELECT * FROM users WHERE user_id IN (1, 2, 3)", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id IN (4, 5, 42)", "shard 1 replica"),
        ("SELECT * FROM users WHERE user_id IN (1, 42)", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id = ANY(ARRAY[1, 2])", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id IN (1, NULL)", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id NOT IN (1)", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id IN (1, 42) AND user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u WHERE u.user_id = 1 OR u.user_id = 2", "shard 0 replica"),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id WHERE u.user_id = 1 OR o.user_id = 1", "shards 0,1 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn keyless_reads_on_sharded_tables_span_every_shard() {
    check(&[
        ("SELECT * FROM users", "shards 0,1 replica"),
        ("SELECT count(*) FROM orders WHERE status = 'open'", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id > 42", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id = 1 OR name = 'x'", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id = 40 + 2", "shards 0,1 replica"),
        ("TABLE users", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id IN (SELECT user_id FROM orders WHERE user_id = 1)", "shards 0,1 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn joins_and_ctes_pinned_to_one_key_go_to_its_shard() {
    check(&[
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u, orders o WHERE o.user_id = u.user_id AND u.user_id = 1", "shard 0 replica"),
        ("SELECT * FROM users u JOIN orders o USING (user_id) WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = 42 WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u JOIN countries c ON c.code = u.country WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u JOIN settings s ON s.k = u.name WHERE u.user_id = 42", "shard 1 replica"),
        ("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.user_id WHERE u.user_id = 42", "shard 1 replica"),
        ("WITH o AS (SELECT * FROM orders WHERE user_id = 42) SELECT * FROM o", "shard 1 replica"),
        ("WITH o AS (SELECT * FROM orders WHERE user_id = 1) SELECT * FROM users u JOIN o ON o.user_id = u.user_id WHERE u.user_id = 1", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id = 42 AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.user_id)", "shard 1 replica"),
        ("SELECT * FROM (SELECT * FROM users WHERE user_id = 1) sub", "shard 0 replica"),
        ("SELECT (SELECT count(*) FROM orders o WHERE o.user_id = u.user_id) FROM users u WHERE u.user_id = 1", "shard 0 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn joins_not_pinned_to_one_key_span_shards() {
    check(&[
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id", "shards 0,1 replica"),
        ("SELECT * FROM users u JOIN orders o ON o.total > 0 WHERE u.user_id = 42", "shards 0,1 replica"),
        ("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.user_id AND u.user_id = 42", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.user_id AND o.user_id = 1)", "shards 0,1 replica"),
        ("SELECT * FROM users WHERE user_id = 1 UNION SELECT * FROM users WHERE user_id = 42", "shards 0,1 replica"),
        ("WITH a AS (SELECT * FROM orders WHERE user_id = 1) SELECT * FROM a JOIN users u ON u.user_id = 42", "shards 0,1 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn statements_without_sharded_tables_go_to_the_default_shard() {
    check(&[
        ("SELECT 1", "shard 0 replica"),
        ("SELECT * FROM settings WHERE user_id = 42", "shard 0 replica"),
        ("SELECT * FROM countries", "shard 0 replica"),
        ("SELECT * FROM pg_catalog.pg_class", "shard 0 replica"),
        ("VALUES (1), (2)", "shard 0 replica"),
        ("WITH users AS (SELECT 1 AS user_id) SELECT * FROM users", "shard 0 replica"),
        ("SELECT * FROM generate_series(1, 3)", "shard 0 replica"),
        ("", "shard 0 primary"),
        ("SHOW search_path", "shard 0 primary"),
    ]);
}

#[test]
#[rustfmt::skip]
fn locking_and_volatile_reads_go_to_the_primary() {
    check(&[
        ("SELECT * FROM users WHERE user_id = 42 FOR UPDATE", "shard 1 primary"),
        ("SELECT * FROM users WHERE user_id = 42 FOR SHARE SKIP LOCKED", "shard 1 primary"),
        ("SELECT * FROM users WHERE user_id = 42 FOR NO KEY UPDATE", "shard 1 primary"),
        ("SELECT * FROM users u WHERE u.user_id = 1 FOR KEY SHARE OF u", "shard 0 primary"),
        ("SELECT nextval('orders_id_seq')", "shard 0 primary"),
        ("SELECT pg_sleep(1)", "shard 0 primary"),
        ("SELECT random() FROM users WHERE user_id = 1", "shard 0 primary"),
        ("SELECT my_function(user_id) FROM users WHERE user_id = 1", "shard 0 primary"),
        ("SELECT * FROM users WHERE user_id = 42 AND EXISTS (SELECT pg_advisory_lock(1))", "shard 1 primary"),
        ("WITH x AS (SELECT nextval('s')) SELECT * FROM x", "shard 0 primary"),
        ("SELECT * FROM orders WHERE user_id = 42 ORDER BY random()", "shard 1 primary"),
    ]);
}

/// sqlparser lacks the lock strengths `FOR KEY SHARE` and `FOR NO KEY UPDATE`: the router
/// rewrites them for parsing, wherever they stand, and never the words inside a literal.
#[test]
#[rustfmt::skip]
fn lock_strengths_sqlparser_lacks_keep_the_key_and_its_literal() {
    check(&[
        ("SELECT * FROM users WHERE user_id = 42 FOR KEY SHARE", "shard 1 primary"),
        ("SELECT * FROM accounts WHERE email = 'a for no key update b' FOR NO KEY UPDATE", "shard 1 primary"),
        ("SELECT * FROM accounts WHERE email = 'x for key share y' /* for no key update x */ FOR KEY SHARE NOWAIT", "shard 0 primary"),
    ]);
}

#[test]
#[rustfmt::skip]
fn stable_and_immutable_functions_keep_reads_on_replicas() {
    check(&[
        ("SELECT now(), inet_server_port()", "shard 0 replica"),
        ("SELECT CURRENT_TIMESTAMP, current_user", "shard 0 replica"),
        ("SELECT * FROM users WHERE user_id = 42 AND created_at < now()", "shard 1 replica"),
        ("SELECT lower(name), coalesce(email, ''), count(*) FROM users WHERE user_id = 1 GROUP BY 1, 2", "shard 0 replica"),
        ("SELECT inet_server_port() FROM users WHERE user_id = 42", "shard 1 replica"),
        ("EXPLAIN SELECT * FROM users WHERE user_id = 42", "shard 1 replica"),
    ]);
}

#[test]
fn keyless_write_error_says_how_to_add_the_key() {
    let msg = error_message("UPDATE users SET name = 'x'");
    assert!(msg.contains("WHERE user_id = ..."), "{msg}");
    assert!(msg.contains("users"), "{msg}");
    let msg = error_message("INSERT INTO accounts (name) VALUES ('x')");
    assert!(msg.contains("list email among the columns"), "{msg}");
}

#[test]
fn multi_shard_routes_explain_themselves() {
    let router = router();
    let ctx = RouteContext::default();
    let keyless = router.plan("SELECT * FROM orders");
    let route = router.route(&keyless, &Params::NONE, &ctx).unwrap();
    let err = router.multi_shard_error(&keyless, &route);
    assert_eq!(err.sqlstate(), "0A000");
    assert!(err.to_string().contains("WHERE user_id = ..."), "{err}");
    let spanning = router.plan("SELECT * FROM users WHERE user_id IN (1, 42)");
    let route = router.route(&spanning, &Params::NONE, &ctx).unwrap();
    let err = router.multi_shard_error(&spanning, &route);
    assert!(err.to_string().contains("on shards s0, s1"), "{err}");
    let err = router.cross_transaction_error(0, 1);
    assert_eq!(err.sqlstate(), "0A000");
    assert!(err.to_string().contains("shard s0") && err.to_string().contains("shard s1"));
}
