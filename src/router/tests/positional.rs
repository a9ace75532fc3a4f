//! INSERTs without a column list: the key is found by the table's column order, given to the
//! router as data (`Router::learn_columns`); without it, or when the rows stop before the key,
//! the INSERT is refused saying to name the columns. A plan made with another order is noticed.

use super::{describe, router};
use crate::router::{Params, RouteContext, Router};

/// The test router with `users (name, user_id, created_at)`: the key is the 2nd column.
fn with_columns() -> Router {
    let mut router = router();
    router.learn_columns("users", Some(cols(&["name", "user_id", "created_at"])));
    router.learn_columns("public.devices", Some(cols(&["device_id", "label"])));
    router
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn route(router: &Router, sql: &str, params: &Params<'_>) -> String {
    let plan = router.plan(sql);
    describe(&router.route(&plan, params, &RouteContext::default()))
}

fn message(router: &Router, sql: &str) -> String {
    let plan = router.plan(sql);
    match router.route(&plan, &Params::NONE, &RouteContext::default()) {
        Err(e) => e.to_string(),
        Ok(route) => panic!("{sql} routed to {route:?}, expected an error"),
    }
}

#[test]
#[rustfmt::skip]
fn the_key_is_read_at_its_place_in_the_tables_column_order() {
    let router = with_columns();
    let cases = [
        ("INSERT INTO users VALUES ('a', 42, now())", "shard 1 primary"),
        ("INSERT INTO users VALUES ('a', 1, now())", "shard 0 primary"),
        ("insert into public.USERS values ('a', '42') returning *", "shard 1 primary"),
        ("INSERT INTO users VALUES ('a', 1), ('b', 2), ('c', 3)", "shard 0 primary"),
        ("INSERT INTO users VALUES ('a', 1), ('b', 42)", "split 0,1"),
        ("INSERT INTO users SELECT 'x', 42", "shard 1 primary"),
        ("INSERT INTO devices VALUES ('550e8400-e29b-41d4-a716-446655440000', 'x')", "shard 1 primary"),
        // A column list still wins over the learned order.
        ("INSERT INTO users (user_id, name) VALUES (42, 'a')", "shard 1 primary"),
    ];
    for (sql, expected) in cases {
        assert_eq!(route(&router, sql, &Params::NONE), expected, "{sql}");
    }
}

#[test]
fn parameters_in_text_and_binary_place_each_row() {
    let router = with_columns();
    let text: [Option<&[u8]>; 2] = [Some(b"a"), Some(b"42")];
    assert_eq!(
        route(
            &router,
            "INSERT INTO users VALUES ($1, $2)",
            &Params::new(&text, &[])
        ),
        "shard 1 primary"
    );
    let one = 1i64.to_be_bytes();
    let binary: [Option<&[u8]>; 2] = [Some(b"a"), Some(&one)];
    assert_eq!(
        route(
            &router,
            "INSERT INTO users VALUES ($1, $2)",
            &Params::new(&binary, &[0, 1])
        ),
        "shard 0 primary"
    );
    let forty_two = 42i64.to_be_bytes();
    let rows: [Option<&[u8]>; 4] = [Some(b"a"), Some(&one), Some(b"b"), Some(&forty_two)];
    let sql = "INSERT INTO users VALUES ($1, $2), ($3, $4)";
    let params = Params::new(&rows, &[0, 1, 0, 1]);
    assert_eq!(route(&router, sql, &params), "split 0,1");
    let parts = router.split_insert(&router.plan(sql), &params).unwrap();
    let parts: Vec<(usize, &str, &[usize])> = parts
        .iter()
        .map(|p| (p.shard, p.sql.as_str(), p.params.as_slice()))
        .collect();
    assert_eq!(
        parts,
        [
            (0, "INSERT INTO users VALUES ($1, $2)", &[0, 1][..]),
            (1, "INSERT INTO users VALUES ($1, $2)", &[2, 3][..]),
        ]
    );
}

#[test]
fn a_literal_split_keeps_the_statement_without_a_column_list() {
    let router = with_columns();
    let plan = router.plan("INSERT INTO users VALUES ('a', 1, DEFAULT), ('b', 42, now())");
    let parts: Vec<String> = router
        .split_insert(&plan, &Params::NONE)
        .unwrap()
        .into_iter()
        .map(|p| format!("{}: {}", p.shard, p.sql))
        .collect();
    assert_eq!(
        parts,
        [
            "0: INSERT INTO users VALUES ('a', 1, DEFAULT)",
            "1: INSERT INTO users VALUES ('b', 42, now())",
        ]
    );
}

#[test]
fn trailing_defaults_are_fine_when_the_key_is_given_and_refused_when_it_is_not() {
    let router = with_columns();
    assert_eq!(
        route(&router, "INSERT INTO users VALUES ('a', 42)", &Params::NONE),
        "shard 1 primary"
    );
    let sql = "INSERT INTO users VALUES ('a')";
    assert_eq!(route(&router, sql, &Params::NONE), "error 0A000");
    let text = message(&router, sql);
    assert!(
        text.contains("gives 1 value(s) per row")
            && text.contains("user_id is column 2 of users")
            && text.contains("name the columns"),
        "{text}"
    );
}

#[test]
fn an_unknown_column_order_is_refused_saying_to_name_the_columns() {
    let router = router();
    let sql = "INSERT INTO users VALUES ('a', 42)";
    assert_eq!(route(&router, sql, &Params::NONE), "error 0A000");
    let text = message(&router, sql);
    assert!(
        text.contains("does not know the column order of users")
            && text.contains("INSERT INTO users (user_id, ...) VALUES"),
        "{text}"
    );
    // A table whose learned columns lack the key is no better known.
    let mut router = router;
    router.learn_columns("users", Some(cols(&["id", "name"])));
    assert_eq!(route(&router, sql, &Params::NONE), "error 0A000");
}

#[test]
fn a_computed_key_is_refused_naming_its_column() {
    let router = with_columns();
    let text = message(&router, "INSERT INTO users VALUES ('a', 40 + 2)");
    assert!(
        text.contains("user_id (column 2 of users) must be a literal or a $n parameter"),
        "{text}"
    );
}

#[test]
fn an_override_still_routes_an_insert_whose_key_cannot_be_found() {
    let router = router();
    assert_eq!(
        route(
            &router,
            "/* pgshard: shard_key=42 */ INSERT INTO users VALUES ('a', 42)",
            &Params::NONE
        ),
        "shard 1 primary"
    );
}

#[test]
fn a_plan_made_with_another_column_order_is_no_longer_current() {
    let mut router = router();
    let sql = "INSERT INTO users VALUES ('a', 42)";
    let unknown = router.plan(sql);
    assert!(unknown.lacks_column_order() && unknown.has_positional_insert());
    router.learn_columns("users", Some(cols(&["name", "user_id"])));
    assert!(!router.plan_is_current(&unknown), "the order became known");
    let known = router.plan(sql);
    assert!(router.plan_is_current(&known) && !known.lacks_column_order());
    // A column added at the end leaves the key where it was: plans stay current.
    router.learn_columns("users", Some(cols(&["name", "user_id", "added"])));
    assert!(router.plan_is_current(&known));
    // A column dropped before the key moves it.
    router.learn_columns("users", Some(cols(&["user_id", "added"])));
    assert!(!router.plan_is_current(&known));
    assert_eq!(router.key_position("users"), Some(0));
    // Other statements are always current.
    assert!(router.plan_is_current(&router.plan("SELECT * FROM users WHERE user_id = 1")));
}

#[test]
fn shards_must_agree_on_where_the_key_is() {
    let router = router();
    let both = |a: &[&str], b: &[&str]| vec![Some(cols(a)), Some(cols(b))];
    assert_eq!(
        router.agreed_columns(
            "users",
            &both(&["name", "user_id"], &["name", "user_id", "x"])
        ),
        Some(cols(&["name", "user_id"])),
        "a column added on one shard only, after the key, changes nothing"
    );
    assert_eq!(
        router.agreed_columns("users", &both(&["name", "user_id"], &["user_id", "name"])),
        None
    );
    assert_eq!(
        router.agreed_columns("users", &[Some(cols(&["user_id"])), None]),
        None,
        "missing on a shard"
    );
    assert_eq!(
        router.agreed_columns("users", &both(&["id"], &["id"])),
        None
    );
    assert_eq!(
        router.agreed_columns("settings", &both(&["id"], &["id"])),
        None
    );
}
