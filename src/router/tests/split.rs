//! Multi-row INSERTs split per shard (`Router::split_insert`): each row goes to its key's shard,
//! text and parameters survive the cut, and what cannot be split is refused.

use super::router;
use crate::router::{Params, Route, SplitPart, Target};

/// The per-shard texts of `sql`, as `"shard: text"` lines.
fn split(sql: &str) -> Vec<String> {
    let router = router();
    let plan = router.plan(sql);
    router
        .split_insert(&plan, &Params::NONE)
        .unwrap_or_else(|e| panic!("{sql} not split: {e}"))
        .into_iter()
        .map(|part| format!("{}: {}", part.shard, part.sql))
        .collect()
}

fn refused(sql: &str) -> String {
    let router = router();
    let plan = router.plan(sql);
    match router.split_insert(&plan, &Params::NONE) {
        Err(e) => e.sqlstate().to_string(),
        Ok(parts) => panic!("{sql} split into {parts:?}, expected a refusal"),
    }
}

#[test]
fn rows_go_to_the_insert_of_their_keys_shard_in_the_clients_order() {
    assert_eq!(
        split("INSERT INTO users (user_id, name) VALUES (1, 'a'), (42, 'b'), (2, 'c'), (4, 'd')"),
        [
            "0: INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'c')",
            "1: INSERT INTO users (user_id, name) VALUES (42, 'b'), (4, 'd')",
        ]
    );
}

#[test]
fn strings_with_commas_quotes_and_parentheses_survive_the_split() {
    assert_eq!(
        split(
            r#"insert into users (name, user_id) values ('a, b', 1), ('it''s (x)', 42), (E'tab\there', 3)"#
        ),
        [
            r#"0: INSERT INTO users (name, user_id) VALUES ('a, b', 1), (E'tab\there', 3)"#,
            "1: INSERT INTO users (name, user_id) VALUES ('it''s (x)', 42)",
        ]
    );
}

#[test]
fn expressions_defaults_and_casts_are_kept_as_written() {
    assert_eq!(
        split("INSERT INTO users (user_id, name, created_at, n) VALUES (1, lower('A') || 'x', DEFAULT, 1 + 2 * 3), ('42', NULL, now(), '5'::int)"),
        [
            "0: INSERT INTO users (user_id, name, created_at, n) VALUES (1, lower('A') || 'x', DEFAULT, 1 + 2 * 3)",
            "1: INSERT INTO users (user_id, name, created_at, n) VALUES ('42', NULL, now(), '5'::INT)",
        ]
    );
}

#[test]
fn on_conflict_and_returning_go_to_every_part() {
    assert_eq!(
        split("INSERT INTO users AS u (user_id, name) VALUES (1, 'a'), (42, 'b') ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *"),
        [
            "0: INSERT INTO users AS u (user_id, name) VALUES (1, 'a') ON CONFLICT(user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *",
            "1: INSERT INTO users AS u (user_id, name) VALUES (42, 'b') ON CONFLICT(user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *",
        ]
    );
    assert_eq!(
        split("INSERT INTO public.orders (user_id, total) VALUES (1, 10.50), (42, 1e3) ON CONFLICT DO NOTHING RETURNING user_id, total AS t"),
        [
            "0: INSERT INTO public.orders (user_id, total) VALUES (1, 10.50) ON CONFLICT DO NOTHING RETURNING user_id, total AS t",
            "1: INSERT INTO public.orders (user_id, total) VALUES (42, 1e3) ON CONFLICT DO NOTHING RETURNING user_id, total AS t",
        ]
    );
}

#[test]
fn quoted_identifiers_and_text_keys_split_too() {
    assert_eq!(
        split(
            r#"INSERT INTO "accounts" ("email", "Name") VALUES ('alice', 'A'), ('carol', 'C'), ('bob', $$B's$$)"#
        ),
        [
            r#"0: INSERT INTO "accounts" ("email", "Name") VALUES ('alice', 'A'), ('bob', $$B's$$)"#,
            r#"1: INSERT INTO "accounts" ("email", "Name") VALUES ('carol', 'C')"#,
        ]
    );
}

#[test]
fn each_part_routes_to_its_own_shard() {
    let router = router();
    let sql = "INSERT INTO users (user_id) VALUES (1), (42), (2), (0), (3), (5)";
    let plan = router.plan(sql);
    for SplitPart {
        shard, sql: text, ..
    } in router.split_insert(&plan, &Params::NONE).unwrap()
    {
        let part = router.plan(&text);
        let route = router.route(&part, &Params::NONE, &Default::default());
        assert_eq!(
            route,
            Ok(Route::Shard {
                shard,
                target: Target::Primary
            }),
            "{text}"
        );
    }
}

#[test]
fn reference_writes_that_also_use_sharded_tables_are_not_the_same_everywhere() {
    let router = router();
    let alike = |sql: &str| router.plan(sql).same_on_every_shard();
    assert!(alike(
        "INSERT INTO countries (code) VALUES ('fr'), ('de') RETURNING *"
    ));
    assert!(alike(
        "UPDATE countries SET name = upper(name) WHERE code IN (SELECT code FROM countries)"
    ));
    assert!(alike("TRUNCATE users, countries"));
    assert!(!alike(
        "INSERT INTO countries (code) SELECT name FROM users"
    ));
    assert!(!alike(
        "UPDATE countries c SET name = u.name FROM users u WHERE u.user_id = 1"
    ));
    assert!(!alike(
        "INSERT INTO countries (code) VALUES ('fr'); INSERT INTO users (user_id) VALUES (1)"
    ));
}

#[test]
fn inserts_that_cannot_be_split_are_refused_with_0a000() {
    // Several statements in one string.
    assert_eq!(
        refused("INSERT INTO users (user_id) VALUES (1), (42); SELECT 1"),
        "0A000"
    );
    // A key given as an expression.
    assert_eq!(
        refused("INSERT INTO users (user_id) VALUES (abs(-1)), (42)"),
        "0A000"
    );
    // INSERT ... SELECT, and rows behind a WITH.
    assert_eq!(
        refused("INSERT INTO users (user_id) SELECT 1 UNION SELECT 42"),
        "0A000"
    );
    // One shard only: nothing to split.
    assert_eq!(
        refused("INSERT INTO users (user_id) VALUES (1), (1)"),
        "0A000"
    );
}

#[test]
fn parameters_are_renumbered_per_part_with_the_clients_values_named() {
    let router = router();
    // Keys 1 and 2 are on shard 0, 42 on shard 1 (see each_part_routes_to_its_own_shard).
    let sql = "INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, $4), ($5, upper($2)) \
               ON CONFLICT (user_id) DO UPDATE SET name = $6 RETURNING user_id";
    let plan = router.plan(sql);
    let values: Vec<Option<&[u8]>> = vec![
        Some(b"1"),
        Some(b"a"),
        Some(b"42"),
        Some(b"b"),
        Some(b"2"),
        Some(b"z"),
    ];
    let params = Params::new(&values, &[]);
    let parts = router.split_insert(&plan, &params).unwrap();
    let shown: Vec<(usize, &str, &[usize])> = parts
        .iter()
        .map(|p| (p.shard, p.sql.as_str(), p.params.as_slice()))
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                0,
                "INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, upper($2)) ON CONFLICT(user_id) DO UPDATE SET name = $4 RETURNING user_id",
                &[0, 1, 4, 5][..]
            ),
            (
                1,
                "INSERT INTO users (user_id, name) VALUES ($1, $2) ON CONFLICT(user_id) DO UPDATE SET name = $3 RETURNING user_id",
                &[2, 3, 5][..]
            ),
        ]
    );
}
