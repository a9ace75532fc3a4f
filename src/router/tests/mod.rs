//! Router specifications: one-line SQL fixtures and the route each must get, on the two-shard
//! layout of SHARDING.md (even split: key 42 → shard 1, key 1 → shard 0).
//!
//! Keys used below and their shards: bigint 1, 2, 3, 6, 9, 11, -1 → shard 0; 0, 4, 5, 7, 8,
//! 10, 42, 9223372036854775807 → shard 1. Text 'alice', 'bob', 'dave' → shard 0; 'carol',
//! 'erin' → shard 1. UUID 550e8400-e29b-41d4-a716-446655440000 → shard 1.

mod copy;
mod execution;
mod limits;
mod normalized;
mod params;
mod positional;
mod reads;
mod scatter;
mod session;
mod split;
mod writes;

use super::{Params, Route, RouteContext, RouteError, Router, Target, Volatility};
use crate::config::Config;

/// Two shards (s0, s1); `users`, `orders`, `events` (integer) keyed on `user_id`, `accounts`
/// on `email` (text), `devices` on `device_id` (uuid); `countries` is a reference table;
/// everything else (e.g. `settings`) lives on the default shard, s0.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"
[[users]]
name = "app"
password = "app"
[sharding]
key_column = "user_id"
key_type = "bigint"
reference_tables = ["countries"]
[[sharding.tables]]
name = "users"
[[sharding.tables]]
name = "orders"
[[sharding.tables]]
name = "events"
key_type = "integer"
[[sharding.tables]]
name = "accounts"
key_column = "email"
key_type = "text"
[[sharding.tables]]
name = "public.devices"
key_column = "device_id"
key_type = "uuid"
[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
replicas = ["127.0.0.1:5433"]
[[shards]]
name = "s1"
primary = "127.0.0.1:5434"
replicas = ["127.0.0.1:5435"]
"#;

pub(crate) fn router() -> Router {
    let config = Config::from_toml_str(CONFIG).expect("test config is valid");
    Router::new(&config, Volatility::builtin())
}

/// A route (or error) as a short string: `shard 1 replica`, `shards 0,1 primary`,
/// `split 0,1`, `all`, `local ShardKey("42")`, `error 0A000`.
pub(crate) fn describe(result: &Result<Route, RouteError>) -> String {
    let target = |t: &Target| match t {
        Target::Primary => "primary",
        Target::Replica => "replica",
    };
    let list = |v: &[usize]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match result {
        Ok(Route::Shard { shard, target: t }) => format!("shard {shard} {}", target(t)),
        Ok(Route::Shards { shards, target: t }) => format!("shards {} {}", list(shards), target(t)),
        Ok(Route::SplitInsert { shards }) => format!("split {}", list(shards)),
        Ok(Route::All) => "all".to_string(),
        Ok(Route::Local(change)) => format!("local {change:?}"),
        Err(e) => format!("error {}", e.sqlstate()),
    }
}

/// Routes `sql` with these parameters and session state.
pub(crate) fn route_with(sql: &str, params: &Params<'_>, ctx: &RouteContext) -> String {
    let router = router();
    let plan = router.plan(sql);
    describe(&router.route(&plan, params, ctx))
}

/// Checks every `(sql, expected)` fixture outside a transaction with no overrides, and lists
/// all mismatches at once.
pub(crate) fn check(cases: &[(&str, &str)]) {
    check_in(&RouteContext::default(), cases);
}

/// Like [`check`], in the given session state.
pub(crate) fn check_in(ctx: &RouteContext, cases: &[(&str, &str)]) {
    let router = router();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(sql, expected)| {
            let plan = router.plan(sql);
            let got = describe(&router.route(&plan, &Params::NONE, ctx));
            (got != *expected).then(|| format!("  {sql}\n    expected {expected}, got {got}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures misrouted:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The text of the error `sql` gets.
pub(crate) fn error_message(sql: &str) -> String {
    let router = router();
    let plan = router.plan(sql);
    match router.route(&plan, &Params::NONE, &RouteContext::default()) {
        Err(e) => e.to_string(),
        Ok(route) => panic!("{sql} routed to {route:?}, expected an error"),
    }
}
