//! The execution decision: the same statement and route carried out differently by what the
//! session is doing (pool mode, protocol, held connection, transaction and its isolation).

use super::router;
use crate::config::PoolMode;
use crate::router::{
    Execution, FanOutPlan, HeldServer, Isolation, Params, RouteContext, SessionView, Target,
    TransactionView,
};

fn outside() -> SessionView {
    SessionView {
        pool_mode: PoolMode::Transaction,
        simple: true,
        held: None,
        transaction: TransactionView::Outside,
        frames_waiting: false,
        pinned: false,
    }
}

fn decide(sql: &str, view: SessionView) -> Execution {
    let router = router();
    let plan = router.plan(sql);
    let route = router.route(&plan, &Params::NONE, &RouteContext::default());
    router.execution(&plan, route, &view)
}

fn refusal(execution: Execution) -> String {
    match execution {
        Execution::Refuse(e) => {
            assert_eq!(e.sqlstate(), crate::error::SqlState::FEATURE_NOT_SUPPORTED);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_keyless_read_scatters_outside_a_transaction_and_in_a_held_back_one_at_read_committed() {
    let read = "SELECT count(*) FROM users";
    assert!(matches!(decide(read, outside()), Execution::Scatter { .. }));
    let held_back = |isolation| SessionView {
        transaction: TransactionView::HeldBack { isolation },
        ..outside()
    };
    assert!(matches!(
        decide(read, held_back(Isolation::ReadCommitted)),
        Execution::Scatter { .. }
    ));
    assert!(refusal(decide(read, held_back(Isolation::Snapshot))).contains("snapshot"));
    let on_server = SessionView {
        transaction: TransactionView::OnServer,
        held: Some(HeldServer {
            shard: 0,
            primary: true,
        }),
        ..outside()
    };
    assert!(refusal(decide(read, on_server)).contains("already used a shard"));
}

#[test]
fn a_keyless_read_waits_for_a_held_connection_and_is_refused_in_session_mode() {
    let read = "SELECT count(*) FROM users";
    let holding = SessionView {
        held: Some(HeldServer {
            shard: 1,
            primary: false,
        }),
        ..outside()
    };
    assert_eq!(decide(read, holding), Execution::ReleaseFirst);
    let session = SessionView {
        pool_mode: PoolMode::Session,
        ..outside()
    };
    assert!(refusal(decide(read, session)).contains("session mode"));
    let extended = SessionView {
        simple: false,
        frames_waiting: true,
        ..outside()
    };
    assert!(refusal(decide(read, extended)).contains("frames other than Parse"));
}

#[test]
fn a_pinned_client_gets_no_work_that_needs_other_connections() {
    let pinned = SessionView {
        held: Some(HeldServer {
            shard: 0,
            primary: true,
        }),
        pinned: true,
        ..outside()
    };
    for sql in [
        "SELECT count(*) FROM users",
        "INSERT INTO countries VALUES ('fr')",
        "INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
        "COPY users FROM STDIN",
    ] {
        assert!(
            refusal(decide(sql, pinned)).contains("keeps session state"),
            "{sql}"
        );
    }
    assert_eq!(decide("SELECT 1", pinned), Execution::Held);
}

#[test]
fn statements_for_no_particular_shard_stay_on_the_held_connection() {
    let holding = |primary| SessionView {
        held: Some(HeldServer { shard: 1, primary }),
        ..outside()
    };
    assert_eq!(decide("SELECT 1", holding(true)), Execution::Held);
    assert_eq!(decide("SELECT 1", holding(false)), Execution::Held);
    // A write needs a primary: not the held replica.
    assert_eq!(
        decide("INSERT INTO settings VALUES (1)", holding(false)),
        Execution::Shard {
            shard: 0,
            target: Target::Primary
        }
    );
}

#[test]
fn writes_on_several_shards_fan_out_only_outside_transactions_and_session_mode() {
    let reference = "UPDATE countries SET name = 'x'";
    assert_eq!(
        decide(reference, outside()),
        Execution::FanOut(FanOutPlan::Everywhere)
    );
    let in_transaction = SessionView {
        transaction: TransactionView::HeldBack {
            isolation: Isolation::ReadCommitted,
        },
        ..outside()
    };
    assert!(refusal(decide(reference, in_transaction)).contains("transaction runs on one shard"));
    let session = SessionView {
        pool_mode: PoolMode::Session,
        ..outside()
    };
    assert!(refusal(decide(reference, session)).contains("session"));
    let split = "INSERT INTO users (user_id, name) VALUES (1, 'a'), (42, 'b')";
    assert!(matches!(
        decide(split, outside()),
        Execution::FanOut(FanOutPlan::Split(parts)) if parts.len() == 2
    ));
    let extended = SessionView {
        simple: false,
        ..outside()
    };
    assert_eq!(
        decide(split, extended),
        Execution::FanOut(FanOutPlan::SplitAtBind)
    );
}

#[test]
fn a_split_copy_runs_only_outside_a_transaction() {
    let copy = "COPY users (user_id, name) FROM STDIN";
    assert!(matches!(decide(copy, outside()), Execution::CopyIn(_)));
    let in_transaction = SessionView {
        transaction: TransactionView::OnServer,
        held: Some(HeldServer {
            shard: 0,
            primary: true,
        }),
        ..outside()
    };
    assert!(refusal(decide(copy, in_transaction)).contains("outside an explicit transaction"));
}

#[test]
fn isolation_changes_are_read_from_the_statement() {
    use crate::router::IsolationChange as C;
    let router = router();
    for (sql, want) in [
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Some(C::Transaction(Isolation::Snapshot)),
        ),
        (
            "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
            Some(C::Transaction(Isolation::ReadCommitted)),
        ),
        ("BEGIN", None),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            Some(C::Transaction(Isolation::Snapshot)),
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            Some(C::SessionDefault(Isolation::Snapshot)),
        ),
        (
            "SET default_transaction_isolation = 'repeatable read'",
            Some(C::SessionDefault(Isolation::Snapshot)),
        ),
        (
            "SET default_transaction_isolation TO DEFAULT",
            Some(C::ResetSessionDefault),
        ),
        (
            "set transaction_isolation = 'serializable'",
            Some(C::Transaction(Isolation::Snapshot)),
        ),
        ("SET search_path = a", None),
    ] {
        assert_eq!(router.plan(sql).isolation_change(), want, "{sql}");
    }
}
