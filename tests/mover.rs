//! The slot mover's engine (`pgshard::rebalance`) against two real PostgreSQL primaries at
//! `wal_level = logical`: a move under concurrent inserts, updates and deletes lands every row
//! of the moved slots exactly once on the target, equal to what the writer last wrote; what a
//! move cannot carry is refused up front; an interrupted copy re-runs without duplicates.

#[path = "mover/kit.rs"]
mod kit;

use kit::*;
use pgshard::rebalance::{MoveError, MovePlan, Mover, TargetSide};
use pgshard::sharding::KeyValue;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_under_concurrent_writes_lands_every_row_exactly_once() {
    let (src, dst, loaded) = loaded("mv").await;
    let mut mover = mover_of("mv").await;
    mover.prepare().await.unwrap();
    mover
        .prepare()
        .await
        .expect("prepare again: everything exists already");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ops_tx, mut ops_rx) = watch::channel(0);
    let writer = tokio::spawn(write(
        client(&clusters()[0]).await,
        "mv".into(),
        loaded,
        stop_rx,
        ops_tx,
    ));
    // Changes after the slot began, before and during the copy's snapshot.
    ops_rx.wait_for(|ops| *ops >= 100).await.unwrap();
    let copied = mover.copy(|_| {}).await.expect("copy");
    assert!(copied.rows_copied > 0 && copied.rows_copied < copied.rows_scanned);
    let during = mover
        .catch_up(1_000)
        .await
        .expect("a catch-up round while writes go on");
    let mut fetched = drain(&mut mover).await;
    stop_tx.send(true).unwrap();
    let (mut record, ops) = writer.await.unwrap();
    assert!(ops >= 300);
    // An order with its memo out of line moves into the slots by a change of user_id alone:
    // the change lacks the memo, and staging lacks the row.
    let (order, old_user) = record
        .orders
        .iter()
        .find(|(_, (user, _, memo))| !moves(*user) && memo.is_some())
        .map(|(id, (user, _, _))| (*id, *user))
        .unwrap();
    let new_user = (1..).find(|u| moves(*u)).unwrap();
    assert_ne!(old_user, new_user);
    src.execute(
        "UPDATE mv_orders SET user_id = $2 WHERE order_id = $1",
        &[&order, &new_user],
    )
    .await
    .unwrap();
    record.orders.get_mut(&order).unwrap().0 = new_user;
    fetched += drain(&mut mover).await;
    // Orders moved into the slots by a change of user_id, their memo unchanged out of line.
    assert!(fetched > 0, "no change lacked an unchanged TOASTed value");
    assert!(
        during.changes > 0,
        "the round during writes decoded changes: {during:?}"
    );

    let checks = mover.verify(TargetSide::Staging).await.unwrap();
    for check in &checks {
        assert!(check.equal(), "staging differs from the source: {check:?}");
        assert!(check.source.rows > 0, "{check:?}");
    }
    assert_same(
        &read_all(&dst, "mv").await,
        &Record::default(),
        "target before the swap",
    );
    let swapped = mover.swap_in().await.unwrap();
    assert_eq!(swapped, checks.iter().map(|c| c.source.rows).sum::<u64>());
    // Staging keeps the rows: a second swap meets their primary keys and fails whole.
    let again = mover.swap_in().await.expect_err("a second swap");
    assert!(again.to_string().contains("duplicate key"), "{again}");
    for check in mover.verify(TargetSide::Real).await.unwrap() {
        assert!(check.equal(), "target differs from the source: {check:?}");
    }
    let cleaned = mover.clean_source().await.unwrap();
    assert_eq!(cleaned, swapped);
    assert_eq!(mover.clean_source().await.unwrap(), 0);
    mover.cleanup().await.unwrap();
    mover.cleanup().await.expect("cleanup again");

    assert_same(
        &read_all(&dst, "mv").await,
        &part(&record, true),
        "target after the move",
    );
    assert_same(
        &read_all(&src, "mv").await,
        &part(&record, false),
        "source after the move",
    );
    let left = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgshard_move_mv'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        left.get::<_, i64>(0),
        0,
        "cleanup dropped the replication slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_interrupted_and_run_again_copies_each_row_once() {
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    let (src, dst) = (client(a).await, client(b).await);
    src.batch_execute(&schema("rr")).await.unwrap();
    dst.batch_execute(&schema("rr")).await.unwrap();
    load(&src, "rr").await;
    let plan = MovePlan::new("rr", moving(), specs("rr")).unwrap();
    let mut first = Mover::open(plan.clone(), shard("a", a).await, shard("b", b).await)
        .await
        .unwrap();
    first.prepare().await.unwrap();
    // Interrupted once its first table is in: the copy's future is dropped mid-way.
    let (done_tx, mut done_rx) = watch::channel(0u64);
    tokio::select! {
        _ = first.copy(|stats| { let _ = done_tx.send(stats.rows_copied); }) => panic!("the copy ran to its end"),
        _ = done_rx.changed() => {}
    }
    drop(first);
    let mut mover = Mover::open(plan, shard("a", a).await, shard("b", b).await)
        .await
        .unwrap();
    mover.prepare().await.unwrap();
    mover
        .copy(|_| {})
        .await
        .expect("copy after the interruption");
    mover.copy(|_| {}).await.expect("and once more");
    for check in mover.verify(TargetSide::Staging).await.unwrap() {
        assert!(check.equal(), "{check:?}");
    }
    mover.abort().await.unwrap();
    assert_same(
        &read_all(&dst, "rr").await,
        &Record::default(),
        "target after the abort",
    );
    let schema_left = dst
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshard_staging_rr'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(schema_left.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn an_abort_after_the_swap_leaves_the_source_the_only_owner() {
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    let (src, dst) = (client(a).await, client(b).await);
    src.batch_execute(&schema("ab")).await.unwrap();
    dst.batch_execute(&schema("ab")).await.unwrap();
    let loaded = load(&src, "ab").await;
    // A row of the target's own (outside the moving slots) stays.
    let own = (1..).find(|id| !moves(*id)).unwrap();
    dst.execute("INSERT INTO ab_users VALUES ($1, 'own', NULL)", &[&own])
        .await
        .unwrap();
    let plan = MovePlan::new("ab", moving(), specs("ab")).unwrap();
    let mut mover = Mover::open(plan, shard("a", a).await, shard("b", b).await)
        .await
        .unwrap();
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    mover.swap_in().await.unwrap();
    mover.abort().await.unwrap();
    assert_same(
        &read_all(&src, "ab").await,
        &loaded,
        "source after the abort",
    );
    let target = read_all(&dst, "ab").await;
    assert_eq!(target.users.len(), 1);
    assert!(target.orders.is_empty() && target.accounts.is_empty());
}

#[tokio::test]
async fn a_table_without_a_primary_key_is_refused_by_name() {
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    for c in [client(a).await, client(b).await] {
        c.batch_execute("CREATE TABLE nopk_events (user_id bigint NOT NULL, what text)")
            .await
            .unwrap();
    }
    let plan = MovePlan::new("nopk", moving(), vec![bigint("nopk_events", "user_id")]).unwrap();
    let error = Mover::open(plan, shard("a", a).await, shard("b", b).await)
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, MoveError::NoPrimaryKey { .. }), "{error}");
    assert!(error.to_string().contains("nopk_events"), "{error}");
}

#[tokio::test]
async fn a_source_without_logical_wal_is_refused_naming_the_setting() {
    let [_, b, replica_level] = clusters() else {
        unreachable!()
    };
    let plan = MovePlan::new("wal", moving(), vec![bigint("t", "user_id")]).unwrap();
    let error = Mover::open(plan, shard("s9", replica_level).await, shard("b", b).await)
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(matches!(error, MoveError::WalLevel { .. }), "{text}");
    for needed in [
        "wal_level is 'replica'",
        "s9",
        "wal_level = logical",
        "restart",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }
}

#[tokio::test]
async fn a_truncate_on_the_source_during_a_move_stops_the_catch_up() {
    let (src, _, _) = loaded("tr").await;
    let mut mover = mover_of("tr").await;
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    src.batch_execute("TRUNCATE tr_orders").await.unwrap();
    let error = drain_error(&mut mover).await;
    assert!(
        matches!(error, MoveError::Truncated { .. }) && error.to_string().contains("tr_orders"),
        "{error}"
    );
    mover.abort().await.unwrap();
}

async fn drain_error(mover: &mut Mover) -> MoveError {
    loop {
        match mover.catch_up(5_000).await {
            Ok(round) if round.reached => panic!("the catch-up carried a TRUNCATE"),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// The cutover's verification by keys (after a copy in the same process) agrees with the full
/// one, finds a staging row that differs from the source, and finds a change on the source the
/// catch-up has not applied; cleaning the source then deletes exactly the moved rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cutover_verification_by_keys_finds_differences_and_cleans_exactly() {
    let (src, dst, loaded) = loaded("vk").await;
    let mut mover = mover_of("vk").await;
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    // A change after the copy, caught up: its key is looked up too.
    let key = (1..USERS).find(|id| moves(*id)).unwrap();
    src.execute(
        "UPDATE vk_users SET name = 'changed' WHERE user_id = $1",
        &[&key],
    )
    .await
    .unwrap();
    drain(&mut mover).await;
    let full = mover.verify(TargetSide::Staging).await.unwrap();
    assert!(full.iter().all(|c| c.equal()), "{full:?}");
    let keyed = mover.verify_cutover(&moving()).await.unwrap();
    assert!(
        keyed.iter().all(|c| c.equal()),
        "by keys as by a full scan: {keyed:?}"
    );
    // A staging row that differs.
    let staging = "pgshard_staging_vk.vk_users";
    dst.execute(
        &format!("UPDATE {staging} SET name = 'tampered' WHERE user_id = $1"),
        &[&key],
    )
    .await
    .unwrap();
    // Staging changes only by the catch-up, so the comparison before a hold is what finds a
    // damaged staging row, and the one under the hold looks at it again.
    assert_eq!(mover.pre_verify(&moving()).await.unwrap(), 1);
    let checks = mover.verify_cutover(&moving()).await.unwrap();
    assert!(
        checks.iter().any(|c| c.table == "vk_users" && !c.equal()),
        "{checks:?}"
    );
    dst.execute(
        &format!("UPDATE {staging} SET name = 'changed' WHERE user_id = $1"),
        &[&key],
    )
    .await
    .unwrap();
    // A change on the source not caught up yet (a new row in the slots) is not among the
    // keys looked up: the cutover's catch-up round after the verification finds it instead.
    let new = (USERS * 10..).find(|id| moves(*id)).unwrap();
    src.execute("INSERT INTO vk_users VALUES ($1, 'late', NULL)", &[&new])
        .await
        .unwrap();
    let round = mover.catch_up(u32::MAX).await.unwrap();
    assert!(round.reached && round.applied > 0, "{round:?}");
    let checks = mover.verify_cutover(&moving()).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    mover.swap_in().await.unwrap();
    let deleted = mover.clean_source().await.unwrap();
    let moved = part(&loaded, true);
    let expected = moved.users.len() + moved.orders.len() + moved.accounts.len() + 1;
    assert_eq!(deleted as usize, expected, "exactly the moved rows");
    let left = read_all(&src, "vk").await;
    assert!(left.users.keys().all(|id| !moves(*id)));
    mover.cleanup().await.unwrap();
}

/// A move cut over in two slices: the first slice's rows land on the target and leave the
/// source (and staging), while the catch-up goes on for the second only; then the second.
/// Every row ends on the target once, as the source last had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_cut_over_slice_by_slice_moves_each_slice_exactly() {
    let (src, dst, _) = loaded("sl").await;
    let mut mover = mover_of("sl").await;
    let slices = moving().slices(512);
    let (first, second) = (&slices[0], &slices[1]);
    let in_first = |id: i64| first.contains(KeyValue::Int(id).slot());
    let in_second = |id: i64| second.contains(KeyValue::Int(id).slot());
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    let (k1, k2) = (
        (1..USERS).find(|id| in_first(*id)).unwrap(),
        (1..USERS).find(|id| in_second(*id)).unwrap(),
    );
    for key in [k1, k2] {
        src.execute(
            "UPDATE sl_users SET name = 'changed' WHERE user_id = $1",
            &[&key],
        )
        .await
        .unwrap();
    }
    drain(&mut mover).await;
    let before = read_all(&src, "sl").await;
    let checks = mover.verify_cutover(first).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    let swapped = mover.swap_slice(first).await.unwrap();
    let first_rows = part_where(&before, |s| first.contains(s));
    assert_eq!(
        swapped as usize,
        first_rows.rows(),
        "the first slice's rows only"
    );
    let deleted = mover.clean_slice(first).await.unwrap();
    assert_eq!(deleted as usize, first_rows.rows());
    mover.follow_only(second.clone());
    // The clean's deletions are not followed; later changes of the second slice are.
    let (gone, new) = (
        (k2 + 1..USERS).find(|id| in_second(*id)).unwrap(),
        (USERS * 10..).find(|id| in_second(*id)).unwrap(),
    );
    src.execute("DELETE FROM sl_users WHERE user_id = $1", &[&gone])
        .await
        .unwrap();
    src.execute("INSERT INTO sl_users VALUES ($1, 'late', NULL)", &[&new])
        .await
        .unwrap();
    drain(&mut mover).await;
    let left: i64 = dst
        .query_one(
            "SELECT count(*) FROM pgshard_staging_sl.sl_users WHERE pgshard_slot = ANY($1)",
            &[&first.iter().map(|s| s as i16).collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left as usize,
        first_rows.users.len(),
        "the source's deletions of the slice cut over were not followed into staging"
    );
    let checks = mover.verify_cutover(second).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    mover.swap_slice(second).await.unwrap();
    mover.clean_slice(second).await.unwrap();
    mover.cleanup().await.unwrap();
    let mut want = part(&before, true);
    want.users.remove(&gone);
    want.users.insert(new, ("late".into(), None));
    assert_same(&part(&read_all(&dst, "sl").await, true), &want, "target");
    let source = read_all(&src, "sl").await;
    assert_eq!(
        part(&source, true).rows(),
        0,
        "the source kept none of the moved rows"
    );
}

/// The cutover's pair of verifications: row by row before the hold (it reports a staging row
/// that differs), then under the hold only the rows that differed or changed since: a row
/// tampered before the first is caught by the second, and changes after the first (an update,
/// an insert, orders moved out of and into the slots by their shard key) verify equal. The
/// clean then deletes exactly the source's rows of the slots, the order moved out stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_before_the_hold_leaves_only_changed_rows_for_the_hold() {
    let (src, dst, _) = loaded("pv").await;
    let mut mover = mover_of("pv").await;
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    drain(&mut mover).await;
    let inside: Vec<i64> = (1..USERS).filter(|id| moves(*id)).take(3).collect();
    let outside = (1..USERS).find(|id| !moves(*id)).unwrap();
    let staging = "pgshard_staging_pv.pv_users";
    dst.execute(
        &format!("UPDATE {staging} SET name = 'tampered' WHERE user_id = $1"),
        &[&inside[0]],
    )
    .await
    .unwrap();
    assert_eq!(
        mover.pre_verify(&moving()).await.unwrap(),
        1,
        "the tampered row"
    );
    // Changes after the first comparison.
    src.execute(
        "UPDATE pv_users SET name = 'changed' WHERE user_id = $1",
        &[&inside[1]],
    )
    .await
    .unwrap();
    let new = (USERS * 10..).find(|id| moves(*id)).unwrap();
    src.execute("INSERT INTO pv_users VALUES ($1, 'late', NULL)", &[&new])
        .await
        .unwrap();
    let out_order: i64 = src
        .query_one(
            "SELECT min(order_id) FROM pv_orders WHERE user_id = $1",
            &[&inside[2]],
        )
        .await
        .unwrap()
        .get(0);
    let in_order: i64 = src
        .query_one(
            "SELECT min(order_id) FROM pv_orders WHERE user_id = $1",
            &[&outside],
        )
        .await
        .unwrap()
        .get(0);
    src.execute(
        "UPDATE pv_orders SET user_id = $2 WHERE order_id = $1",
        &[&out_order, &outside],
    )
    .await
    .unwrap();
    src.execute(
        "UPDATE pv_orders SET user_id = $2 WHERE order_id = $1",
        &[&in_order, &inside[2]],
    )
    .await
    .unwrap();
    drain(&mut mover).await;
    let checks = mover.verify_cutover(&moving()).await.unwrap();
    assert!(
        checks.iter().any(|c| c.table == "pv_users" && !c.equal()),
        "the tampered row is looked at again under the hold: {checks:?}"
    );
    dst.execute(
        &format!("UPDATE {staging} SET name = 'user ' || user_id WHERE user_id = $1"),
        &[&inside[0]],
    )
    .await
    .unwrap();
    let checks = mover.verify_cutover(&moving()).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    let before = read_all(&src, "pv").await;
    mover.swap_in().await.unwrap();
    let deleted = mover.clean_source().await.unwrap();
    assert_eq!(
        deleted as usize,
        part(&before, true).rows(),
        "exactly the slots' rows"
    );
    assert_same(&read_all(&src, "pv").await, &part(&before, false), "source");
    assert_same(
        &part(&read_all(&dst, "pv").await, true),
        &part(&before, true),
        "target",
    );
    assert_eq!(read_all(&src, "pv").await.orders[&out_order].0, outside);
    mover.cleanup().await.unwrap();
}

/// The replication slot is built only once the source's open writing transactions ended: the
/// mover says which it waits for (every few seconds) and goes on when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparing_names_the_open_transactions_the_slot_waits_for() {
    let _alone = alone().await;
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    let (src, dst) = (client(a).await, client(b).await);
    src.batch_execute(&schema("wt")).await.unwrap();
    dst.batch_execute(&schema("wt")).await.unwrap();
    load(&src, "wt").await;
    let open = client(a).await;
    open.batch_execute("BEGIN; UPDATE wt_users SET name = 'open' WHERE user_id = 1")
        .await
        .unwrap();
    let pid: i32 = open
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let plan = MovePlan::new("wt", moving(), specs("wt")).unwrap();
    let mut mover = Mover::open(plan, shard("a", a).await, shard("b", b).await)
        .await
        .unwrap();
    let (told_tx, mut told) = tokio::sync::mpsc::unbounded_channel();
    let prepared = tokio::spawn(async move {
        let mut waits = |open: Vec<String>| told_tx.send(open).unwrap();
        mover.prepare_telling(&mut waits).await.map(|()| mover)
    });
    let first = tokio::time::timeout(std::time::Duration::from_secs(60), told.recv())
        .await
        .expect("told within a minute")
        .unwrap();
    assert!(
        first.iter().any(|t| t.starts_with(&format!("pid {pid} ("))),
        "{first:?}"
    );
    assert!(
        !prepared.is_finished(),
        "the slot waits for the open transaction"
    );
    open.batch_execute("COMMIT").await.unwrap();
    let mut mover = prepared.await.unwrap().expect("prepared once it ended");
    let slot: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&mover.plan().replication_slot()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slot, 1);
    mover.cleanup().await.unwrap();
}

/// Every catch-up round decodes the source's WAL from the slot's restart point, which
/// PostgreSQL moves only past a record of its running transactions (logged by itself every
/// 15 s at most): the mover has one logged, and the round after moves the point up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_after_move_restart_point_decodes_from_close_to_now() {
    let _turn = beside_others().await;
    let (src, _, _) = loaded("rp").await;
    let mut mover = mover_of("rp").await;
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    for i in 0..20 {
        src.batch_execute(&format!(
            "UPDATE rp_users SET name = name || '.' WHERE user_id % 20 = {i}"
        ))
        .await
        .unwrap();
    }
    let before = mover.catch_up(u32::MAX).await.unwrap();
    assert!(before.applied >= USERS as u64, "{before:?}");
    mover.move_restart_point().await;
    let after = mover.catch_up(u32::MAX).await.unwrap();
    eprintln!(
        "WAL after the restart point: {} bytes, then {} bytes",
        before.restart_lag_bytes, after.restart_lag_bytes
    );
    assert!(
        after.restart_lag_bytes < before.restart_lag_bytes / 4,
        "the restart point stayed behind: {} then {} bytes",
        before.restart_lag_bytes,
        after.restart_lag_bytes
    );
    mover.cleanup().await.unwrap();
}

/// The mover's lookups by index turn the other plans off, which prices them past
/// `jit_above_cost`: compiling them took 35-80 ms a statement (under the hold). Its
/// connections run without JIT, and with durable commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_movers_connections_run_without_jit_and_commit_durably() {
    let shard = shard("a", &clusters()[0]).await;
    for (setting, want) in [("jit", "off"), ("synchronous_commit", "on")] {
        let got: String = shard
            .client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{setting}");
    }
}

/// A slice swapped in ahead of its hold (a transaction left open on a second target
/// connection) shows nothing until the swap, which redoes the rows changed since (an update,
/// a delete, an insert, an order moved out of the slice) and commits: the target's real tables
/// then hold exactly the source's rows of the slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_swapped_in_ahead_redoes_the_rows_changed_since() {
    let (src, dst, _) = loaded("ps").await;
    let swap = shard("b", &clusters()[1]).await;
    let mut mover = mover_of("ps").await.with_swap_connection(swap);
    let slice = moving().slices(512)[0].clone();
    let in_slice = |id: i64| slice.contains(KeyValue::Int(id).slot());
    mover.prepare().await.unwrap();
    mover.copy(|_| {}).await.unwrap();
    // Each staging table got its primary key and its slot index (built at once, on the
    // target connection and the second one).
    let built = dst
        .query_one(
            "SELECT count(DISTINCT i.tablename), count(*), \
             (SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
              WHERE n.nspname = 'pgshard_staging_ps' AND c.contype = 'p') \
             FROM pg_indexes i WHERE i.schemaname = 'pgshard_staging_ps'",
            &[],
        )
        .await
        .unwrap();
    let (tables, indexes, keys): (i64, i64, i64) = (built.get(0), built.get(1), built.get(2));
    assert!(tables >= 2, "{tables} staging tables");
    assert_eq!(
        (indexes, keys),
        (2 * tables, tables),
        "a key and a slot index each"
    );
    drain(&mut mover).await;
    mover.pre_verify(&slice).await.unwrap();
    mover.pre_swap(&slice).await.unwrap();
    let count = dst
        .query_one("SELECT count(*) FROM ps_users", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(count, 0, "nothing shows before the swap");
    let mut keys = (1..USERS).filter(|id| in_slice(*id));
    let (updated, deleted) = (keys.next().unwrap(), keys.next().unwrap());
    let inserted = (USERS * 10..).find(|id| in_slice(*id)).unwrap();
    let outside = (1..USERS).find(|id| !in_slice(*id)).unwrap();
    src.batch_execute(&format!(
        "UPDATE ps_users SET name = 'after' WHERE user_id = {updated}; \
         DELETE FROM ps_users WHERE user_id = {deleted}; \
         INSERT INTO ps_users VALUES ({inserted}, 'new', NULL); \
         UPDATE ps_orders SET user_id = {outside} WHERE order_id = \
           (SELECT min(order_id) FROM ps_orders WHERE user_id = {updated});"
    ))
    .await
    .unwrap();
    drain(&mut mover).await;
    let checks = mover.verify_cutover(&slice).await.unwrap();
    assert!(checks.iter().all(|c| c.equal()), "{checks:?}");
    mover.swap_slice(&slice).await.unwrap();
    let want = part_where(&read_all(&src, "ps").await, |s| slice.contains(s));
    assert_same(
        &read_all(&dst, "ps").await,
        &want,
        "the real tables after the swap",
    );
    mover.cleanup().await.unwrap();
}
