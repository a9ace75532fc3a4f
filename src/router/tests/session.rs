//! Transaction control, `SET pgshard.*` overrides, leading hint comments, and statements
//! sqlparser cannot parse.

use super::{check, check_in, router};
use crate::router::{
    OverrideChange, RouteContext, SettingPlan, StatementKind, TransactionControl, TransactionMode,
};

#[test]
#[rustfmt::skip]
fn transaction_control_statements_are_classified() {
    use TransactionControl as T;
    let router = router();
    let cases = [
        ("BEGIN", T::Begin { read_only: false }),
        ("BEGIN READ ONLY", T::Begin { read_only: true }),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", T::Begin { read_only: true }),
        ("BEGIN READ WRITE", T::Begin { read_only: false }),
        ("COMMIT", T::Commit),
        ("END", T::Commit),
        ("ROLLBACK", T::Rollback),
        ("ABORT", T::Rollback),
        ("SAVEPOINT a", T::Savepoint),
        ("RELEASE SAVEPOINT a", T::Release),
        ("ROLLBACK TO SAVEPOINT a", T::RollbackTo),
        ("SET TRANSACTION READ ONLY", T::SetTransaction { read_only: Some(true) }),
    ];
    for (sql, expected) in cases {
        assert_eq!(
            router.plan(sql).kind(),
            &StatementKind::Transaction(expected),
            "{sql}"
        );
    }
}

#[test]
#[rustfmt::skip]
fn transaction_control_routes_to_the_default_or_overridden_primary() {
    check(&[("BEGIN", "shard 0 primary"), ("COMMIT", "shard 0 primary")]);
    let ctx = RouteContext {
        shard: Some(1),
        ..RouteContext::default()
    };
    check_in(&ctx, &[("BEGIN READ ONLY", "shard 1 primary")]);
}

#[test]
#[rustfmt::skip]
fn reads_in_read_write_transactions_go_to_the_primary() {
    let rw = RouteContext {
        transaction: TransactionMode::ReadWrite,
        ..RouteContext::default()
    };
    check_in(&rw, &[("SELECT * FROM users WHERE user_id = 42", "shard 1 primary")]);
    let ro = RouteContext {
        transaction: TransactionMode::ReadOnly,
        ..RouteContext::default()
    };
    check_in(&ro, &[("SELECT * FROM users WHERE user_id = 42", "shard 1 replica")]);
}

#[test]
#[rustfmt::skip]
fn pgshard_settings_are_answered_locally() {
    check(&[
        ("SET pgshard.shard_key = 42", "local ShardKey(\"42\")"),
        ("SET pgshard.shard_key = 'carol'", "local ShardKey(\"carol\")"),
        ("SET pgshard.shard = 's1'", "local Shard(1)"),
        ("SET pgshard.shard TO s0", "local Shard(0)"),
        ("SET pgshard.shard = 1", "local Shard(1)"),
        ("SET pgshard.shard = 'nope'", "error 42704"),
        ("RESET pgshard.shard", "local ResetShard"),
        ("RESET pgshard.shard_key", "local ResetShardKey"),
        ("SET pgshard.shard_key TO DEFAULT", "local ResetShardKey"),
        ("RESET ALL", "local ResetAll"),
        ("SET pgshard.colour = 1", "error 42704"),
        ("SET search_path = public", "shard 0 primary"),
    ]);
    assert_eq!(
        router().plan("RESET pgshard.shard").kind(),
        &StatementKind::Setting(SettingPlan::ResetShard)
    );
}

#[test]
fn applying_one_override_clears_the_other() {
    let mut ctx = RouteContext::default();
    ctx.apply(&OverrideChange::ShardKey("42".into()));
    assert_eq!(ctx.shard_key.as_deref(), Some("42"));
    ctx.apply(&OverrideChange::Shard(0));
    assert_eq!((ctx.shard, ctx.shard_key.as_deref()), (Some(0), None));
    ctx.apply(&OverrideChange::ResetAll);
    assert_eq!(ctx, RouteContext::default());
}

#[test]
#[rustfmt::skip]
fn session_shard_routes_statements_that_give_no_key() {
    let ctx = RouteContext {
        shard: Some(1),
        ..RouteContext::default()
    };
    check_in(&ctx, &[
        ("SELECT * FROM users", "shard 1 replica"),
        ("SELECT 1", "shard 1 replica"),
        ("SELECT * FROM settings", "shard 1 replica"),
        ("UPDATE users SET name = 'x'", "shard 1 primary"),
        ("THIS IS NOT SQL", "shard 1 primary"),
        ("SELECT * FROM users WHERE user_id = 1", "shard 0 replica"),
    ]);
}

#[test]
#[rustfmt::skip]
fn session_shard_key_is_parsed_by_each_tables_key_type() {
    let ctx = RouteContext {
        shard_key: Some("42".into()),
        ..RouteContext::default()
    };
    check_in(&ctx, &[
        ("SELECT * FROM users", "shard 1 replica"),
        ("DELETE FROM orders", "shard 1 primary"),
        ("SELECT * FROM accounts", "shard 0 replica"),
        ("SELECT * FROM devices", "error 22P02"),
        ("INSERT INTO countries (code) VALUES ('fr')", "all"),
    ]);
}

#[test]
#[rustfmt::skip]
fn leading_comment_hints_route_statements_that_give_no_key() {
    check(&[
        ("/* pgshard: shard_key=42 */ SELECT * FROM users", "shard 1 replica"),
        ("/* pgshard: shard_key=42 */ UPDATE users SET a = 1", "shard 1 primary"),
        ("/* pgshard: shard=s1 */ SELECT 1", "shard 1 replica"),
        ("-- pgshard: shard_key='carol'\nSELECT * FROM accounts", "shard 1 replica"),
        ("/* pgshard: shard_key=42 */ LOCK TABLE users", "shard 1 primary"),
        ("/* pgshard: shard_key=1 */ SELECT * FROM users WHERE user_id = 42", "shard 1 replica"),
        ("/* pgshard: shard=nope */ SELECT 1", "error 42704"),
        ("/* pgshard: shard_key=abc */ SELECT * FROM users", "error 22P02"),
        ("/* just a comment */ SELECT * FROM users WHERE user_id = 42", "shard 1 replica"),
    ]);
    let ctx = RouteContext {
        shard: Some(0),
        ..RouteContext::default()
    };
    check_in(&ctx, &[("/* pgshard: shard_key=42 */ SELECT 1", "shard 1 replica")]);
}

#[test]
#[rustfmt::skip]
fn unparsable_statements_still_route_to_the_default_primary() {
    check(&[
        ("THIS IS NOT SQL", "shard 0 primary"),
        ("SELEC * FROM users WHERE user_id = 42", "shard 0 primary"),
        ("LOCK TABLE users IN ACCESS EXCLUSIVE MODE", "shard 0 primary"),
    ]);
    let plan = router().plan("THIS IS NOT SQL");
    assert!(!plan.is_parsed());
    assert_eq!(plan.kind(), &StatementKind::Other);
}

#[test]
#[rustfmt::skip]
fn several_statements_in_one_string_route_together() {
    check(&[
        ("SELECT 1; SELECT * FROM users WHERE user_id = 42", "shard 1 replica"),
        ("UPDATE users SET a = 1 WHERE user_id = 1; SELECT * FROM users WHERE user_id = 2", "shard 0 primary"),
        ("BEGIN; UPDATE users SET a = 1 WHERE user_id = 42; COMMIT", "shard 1 primary"),
        ("SELECT * FROM users WHERE user_id = 1; SELECT * FROM users WHERE user_id = 42", "shards 0,1 replica"),
    ]);
}

#[test]
fn routes_describe_themselves_with_shard_names() {
    let router = router();
    let ctx = RouteContext::default();
    let plan = router.plan("SELECT * FROM users WHERE user_id = 42");
    let route = router
        .route(&plan, &crate::router::Params::NONE, &ctx)
        .unwrap();
    assert_eq!(router.describe(&route), "s1 (replica)");
    let plan = router.plan("DELETE FROM countries");
    let route = router
        .route(&plan, &crate::router::Params::NONE, &ctx)
        .unwrap();
    assert_eq!(router.describe(&route), "every shard (primary)");
}
