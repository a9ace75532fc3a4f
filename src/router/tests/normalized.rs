//! Statements routed through their literal-normalized plan land exactly where their own plan
//! sends them.

use super::router;
use crate::router::{normalize_literals, Params, Route, RouteContext, StatementKind};

#[test]
fn normalized_plans_route_like_the_original_text() {
    let router = router();
    let ctx = RouteContext::default();
    let corpus = [
        "SELECT * FROM users WHERE user_id = 42",
        "SELECT * FROM users WHERE user_id = 1",
        "SELECT name FROM users u WHERE u.user_id = '7' AND name = 'x'",
        "INSERT INTO users (user_id, name) VALUES (42, 'a')",
        "INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b')",
        "UPDATE users SET name = 'z' WHERE user_id = 123456789012",
        "DELETE FROM users WHERE user_id = 9223372036854775807",
        "SELECT * FROM users WHERE user_id IN (1, 42)",
        "SELECT * FROM users WHERE user_id = 5 LIMIT 10",
    ];
    for sql in corpus {
        let original = router.route(&router.plan(sql), &Params::NONE, &ctx);
        let (normalized, literals) = normalize_literals(sql).expect("has literals");
        let values: Vec<Option<&[u8]>> = literals.iter().map(|l| Some(l.as_bytes())).collect();
        let via_params = router.route(&router.plan(&normalized), &Params::new(&values, &[]), &ctx);
        assert_eq!(via_params, original, "{sql}");
    }
}

/// Where the session would send `sql` through its normalized plan (only a parsed read or write
/// on one shard is routed that way) must be where its own plan sends it. Inputs found by the
/// `sql` fuzz target.
#[test]
fn fuzz_found_texts_route_like_their_own_plan() {
    let router = router();
    let ctx = RouteContext::default();
    let corpus = [
        // A string literal touching a word: `'a'me` became `$1me`, one placeholder token.
        "SELECT 'a'me = 'y'",
        // `5.` is one number; `$2.` is a parameter and a period.
        "SELECT * FROM urers WHERE (4,5. 42)",
    ];
    for sql in corpus {
        let Some((normalized, literals)) = normalize_literals(sql) else {
            continue;
        };
        let values: Vec<Option<&[u8]>> = literals.iter().map(|l| Some(l.as_bytes())).collect();
        let plan = router.plan(&normalized);
        let via_params = router.route(&plan, &Params::new(&values, &[]), &ctx);
        let read_or_write = matches!(plan.kind(), StatementKind::Read | StatementKind::Write);
        if plan.is_parsed() && read_or_write && matches!(via_params, Ok(Route::Shard { .. })) {
            let original = router.route(&router.plan(sql), &Params::NONE, &ctx);
            assert_eq!(via_params, original, "{sql} normalized to {normalized}");
        }
    }
}
