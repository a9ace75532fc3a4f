//! `pgshard rebalance move | status | resume | abort` through the real binary, against two
//! shards (each a primary at `wal_level = logical` + a streaming replica) with routers in front
//! that share a catalog: writers (on two routers) and keyless readers run during moves; the mover
//! is killed with SIGKILL during its copy, its catch-up and its cutover, then resumed or
//! aborted. Afterwards every row is on the shard its slot says, exactly once, equal to what the
//! writers last wrote. Each test has its own tables, catalog database and slots.

mod support;
#[path = "rebalance/world.rs"]
mod world;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_under_writers_on_two_routers_and_keyless_readers_lose_nothing() {
    let world = world("mv");
    let p = world.prefix.clone();
    let router_a = support::start_proxy(&world.config_text).await;
    let router_b = support::start_proxy(&world.config_text).await;
    let urls = [router_a.url("app", "app"), router_b.url("app", "app")];
    let users = 3000;
    let mut loaded = Record::default();
    {
        let (client, connection) = tokio_postgres::connect(&urls[0], tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        load_users(&client, &p, users, &mut loaded).await;
    }
    let record = Arc::new(Mutex::new(loaded));
    for cluster in clusters() {
        cluster
            .wait_for_replay(DEADLINE)
            .expect("replicas replay the loaded users");
    }
    let expected = (users, users * (users + 1) / 2);
    let moving = 0..=255u16;
    let (writers, handles) = start_writers(&p, &urls, 4, users, moving.clone(), record.clone());
    let counter = start_counter(&p, &urls, expected, writers.stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = world.config.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_ok(&[
            "rebalance",
            "move",
            "--config",
            &config,
            "--slots",
            "0-255",
            "--to",
            "s1",
            "--batch",
            "64",
        ])
    })
    .await
    .unwrap();
    eprintln!("{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    writers.stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    let (reads, wrong) = counter.await.unwrap();
    let errors = writers.errors.lock().unwrap().clone();
    eprintln!(
        "{} writes, {reads} keyless reads during the move",
        writers.done.load(Ordering::Relaxed)
    );
    assert!(errors.is_empty(), "writers saw errors: {errors:#?}");
    assert!(wrong.is_empty(), "keyless reads were wrong: {wrong:#?}");
    assert!(reads > 0 && writers.done.load(Ordering::Relaxed) > 0);
    let mut record = std::mem::take(&mut *record.lock().unwrap());
    // One move, copied once and cut over in four slices of 64 slots.
    assert_eq!(out.matches("moved slots").count(), 1, "{out}");
    assert!(out.contains("4 slice(s) held"), "{out}");
    assert_eq!(slices_done(&world, "m1_0_255").await, 4);
    check_rows(&world, &record, std::slice::from_ref(&moving)).await;
    check_clean(&["m1_0_255"]).await;
    for slot in [0, 100, 255] {
        assert_eq!(catalog_owner(&world, slot).await, "s1");
    }
    assert_eq!(catalog_owner(&world, 256).await, "s0");
    let status = rebalance(&world, "status");
    assert_eq!(status.matches(" done ").count(), 1, "{status}");
    assert!(status.contains(" 4/4 "), "{status}");
    // The routers route the moved keys to s1 now: a write there lands on s1's primary.
    let key = (1..=users).find(|&k| moving.contains(&slot_of(k))).unwrap();
    let (client, connection) = tokio_postgres::connect(&urls[1], tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            &format!("UPDATE {p}_users SET name = 'after' WHERE user_id = $1"),
            &[&key],
        )
        .await
        .unwrap();
    record.users.insert(key, "after".into());
    check_rows(&world, &record, &[moving]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mover_killed_in_copy_catch_up_or_cutover_resumes_or_aborts_losing_nothing() {
    let world = world("kill");
    let p = world.prefix.clone();
    let [s0, s1] = clusters();
    let router = support::start_proxy(&world.config_text).await;
    let client = router.connect().await;
    let mut record = Record::default();
    let users = 3000;
    load_users(&client, &p, users, &mut record).await;
    let mut moved: Vec<std::ops::RangeInclusive<u16>> = Vec::new();
    // Writes through the router between steps, kept in the record.
    let touch = |record: &mut Record, round: &str| {
        let updates: Vec<(i64, String)> = (1..=users)
            .filter(|k| k % 7 == 0)
            .map(|k| (k, format!("{round}-{k}")))
            .collect();
        for (k, name) in &updates {
            record.users.insert(*k, name.clone());
        }
        updates
    };
    let write = |updates: Vec<(i64, String)>| {
        let client = &client;
        let p = p.clone();
        async move {
            for (k, name) in updates {
                client
                    .execute(
                        &format!("UPDATE {p}_users SET name = $1 WHERE user_id = $2"),
                        &[&name, &k],
                    )
                    .await
                    .expect("a write through the router");
            }
        }
    };

    // 1. Killed during the copy (seen copying from the source), then resumed. Many orders
    // rows on the source make the copy last.
    let bulk: Vec<i64> = (1..=users)
        .filter(|&k| owner(slot_of(k), &[]) == 0)
        .collect();
    {
        let direct = support::connect_direct(s0.primary_port()).await;
        direct
            .execute(
                &format!(
                    "INSERT INTO {p}_orders (order_id, user_id, note) \
                     SELECT g, ($1::bigint[])[1 + g % cardinality($1::bigint[])], 'bulk' \
                     FROM generate_series(1, 300000) g"
                ),
                &[&bulk],
            )
            .await
            .expect("bulk orders on s0");
        for g in 1..=300_000i64 {
            let user = bulk[(g % bulk.len() as i64) as usize];
            record.orders.insert(g, Some((user, "bulk".into())));
        }
    }
    let mut mover = spawn_move(&world, "256-319", &[]);
    wait_mover_copying(s0, &p).await;
    let step = step_of(&world, "m1_256_319").await;
    mover.kill().unwrap();
    mover.wait().unwrap();
    assert_eq!(step.as_deref(), Some("prepared"), "killed during the copy");
    write(touch(&mut record, "a")).await;
    let out = rebalance(&world, "resume");
    assert!(out.contains("moved slots 256-319"), "{out}");
    moved.push(256..=319);
    check_rows(&world, &record, &moved).await;
    check_clean(&["m1_256_319"]).await;

    // 2. Killed during the catch-up: a registered router that never answers keeps the mover
    // catching up between cutover attempts; the test blocks the apply on the target's staging
    // table, with changes made on the source to apply.
    let catalog = pgshard::catalog::connect(&world.catalog_url, None)
        .await
        .unwrap();
    catalog
        .execute(
            "INSERT INTO pgshard.routers (router_id, host, pid, poll_ms) \
             VALUES ('silent', 'test', 0, 1000000)",
            &[],
        )
        .await
        .unwrap();
    let id = "m2_320_383";
    let mut mover = spawn_move(
        &world,
        "320-383",
        &["--ack-timeout-ms", "200", "--attempts", "100000"],
    );
    wait_step(&world, id, "caught_up").await;
    let lock = lock_in_transaction(
        s1.primary_port(),
        "app",
        &format!("LOCK TABLE pgshard_staging_{id}.{p}_users IN SHARE MODE"),
    )
    .await;
    {
        let direct = support::connect_direct(s0.primary_port()).await;
        for k in (1..=users).filter(|&k| (320..=383).contains(&slot_of(k))) {
            let name = format!("direct-{k}");
            direct
                .execute(
                    &format!("UPDATE {p}_users SET name = $1 WHERE user_id = $2"),
                    &[&name, &k],
                )
                .await
                .unwrap();
            record.users.insert(k, name);
        }
    }
    wait_mover_blocked(s1, "app", &p).await;
    let step = step_of(&world, id).await;
    mover.kill().unwrap();
    mover.wait().unwrap();
    assert_eq!(
        step.as_deref(),
        Some("caught_up"),
        "killed while catching up"
    );
    drop(lock);
    catalog
        .execute(
            "DELETE FROM pgshard.routers WHERE router_id = 'silent'",
            &[],
        )
        .await
        .unwrap();
    write(touch(&mut record, "d")).await;
    let out = rebalance(&world, "resume");
    assert!(out.contains("moved slots 320-383"), "{out}");
    moved.push(320..=383);
    check_rows(&world, &record, &moved).await;
    check_clean(&[id]).await;

    // 3. Killed during the cutover (blocked flipping the map: the test locks the epoch's table
    // against FOR UPDATE; a table lock takes no transaction id, which would hold back the
    // replication slot's creation), after the swap; then aborted: the source keeps the slots
    // and every row.
    let catalog_db = format!("meta_{p}");
    let lock = lock_in_transaction(
        s0.primary_port(),
        &catalog_db,
        "LOCK TABLE pgshard.map_epoch IN EXCLUSIVE MODE",
    )
    .await;
    let mut mover = spawn_move(&world, "384-447", &[]);
    let id = "m3_384_447";
    wait_step(&world, id, "swapped").await;
    mover.kill().unwrap();
    mover.wait().unwrap();
    drop(lock);
    let out = rebalance(&world, "status");
    assert!(out.contains(id) && out.contains("swapped"), "{out}");
    // The mover died holding the slots: status shows the hold and the router.
    assert!(
        out.contains(&format!("hold of move {id}")) && out.contains("router "),
        "{out}"
    );
    // The hold expires (made to, here) with the swap in place: statements on the slots go on
    // at the source, but a keyless read, which would see the swapped rows twice, waits until
    // the abort undid the swap, then counts every user once.
    catalog
        .execute(
            "UPDATE pgshard.holds SET expires_at = now() WHERE move_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    catalog
        .execute("SELECT pg_notify('pgshard_map', 'expired')", &[])
        .await
        .unwrap();
    let key = (1..=users)
        .find(|&k| (384..=447).contains(&slot_of(k)))
        .unwrap();
    write(vec![(key, "expired".to_string())]).await;
    record.users.insert(key, "expired".into());
    let reader = router.connect().await;
    let sql = format!("SELECT count(*) FROM {p}_users");
    let count = tokio::spawn(async move { reader.query_one(&sql, &[]).await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !count.is_finished(),
        "a keyless read ran with the swap in place"
    );
    let out = rebalance(&world, "abort");
    assert!(out.contains(&format!("aborted move {id}")), "{out}");
    let counted: i64 = count.await.unwrap().expect("the held count").get(0);
    assert_eq!(counted, users, "the held keyless count, after the abort");
    assert_eq!(catalog_owner(&world, 400).await, "s0");
    write(touch(&mut record, "e")).await;
    check_rows(&world, &record, &moved).await;
    check_clean(&[id]).await;
    let row = client
        .query_one(&format!("SELECT count(*) FROM {p}_users"), &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        users,
        "a keyless count through the router"
    );
    // 4. A move in two slices, killed after its second slice's swap (the test locks the catalog
    // rows of that slice's slots, once the move copies, so that only its flip blocks); then
    // aborted: the first slice stays with s1, the second with s0, every row once.
    let id = "m3_448_511";
    let mut mover = spawn_move(&world, "448-511", &["--batch", "32"]);
    wait_mover_copying(s0, &p).await;
    let lock = lock_in_transaction(
        s0.primary_port(),
        &catalog_db,
        "SELECT slot FROM pgshard.slots WHERE slot BETWEEN 480 AND 511 FOR UPDATE",
    )
    .await;
    wait_slice_step(&world, id, 1, "swapped").await;
    mover.kill().unwrap();
    mover.wait().unwrap();
    drop(lock);
    let status = rebalance(&world, "status");
    assert!(status.contains(" 1/2 "), "{status}");
    let out = rebalance(&world, "abort");
    assert!(
        out.contains(&format!("aborted move {id}: slots 480-511 stay on s0"))
            && out.contains("slots 448-479 were cut over"),
        "{out}"
    );
    assert_eq!(catalog_owner(&world, 460).await, "s1");
    assert_eq!(catalog_owner(&world, 500).await, "s0");
    moved.push(448..=479);
    write(touch(&mut record, "f")).await;
    check_rows(&world, &record, &moved).await;
    check_clean(&[id]).await;

    // A move that has flipped cannot be aborted.
    let done = pgshard(&[
        "rebalance",
        "abort",
        "--config",
        world.config.to_str().unwrap(),
        "--move",
        "m1_256_319",
    ])
    .output()
    .unwrap();
    assert!(done.status.success(), "nothing unfinished to abort there");
}

/// A client that keeps its server connection between transactions (session pool mode) routes
/// by the new map once a move flipped: a statement on a moved slot is refused, naming the new
/// owner, instead of running on the old one (where the row is gone); other slots go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_pinned_to_its_server_routes_by_the_new_map_after_a_move() {
    let world = world("pin");
    let p = world.prefix.clone();
    let loader = support::start_proxy(&world.config_text).await;
    let client = loader.connect().await;
    let mut record = Record::default();
    load_users(&client, &p, 300, &mut record).await;
    let session_mode = world
        .config_text
        .replace("pool_mode = \"transaction\"", "pool_mode = \"session\"");
    let router = support::start_proxy(&session_mode).await;
    let pinned = router.connect().await;
    let on_s0: Vec<i64> = (1..=300).filter(|&k| slot_of(k) < 2048).collect();
    let (moving, staying) = (
        on_s0[0],
        on_s0[1..]
            .iter()
            .copied()
            .find(|&k| slot_of(k) != slot_of(on_s0[0]))
            .unwrap(),
    );
    let update = format!("UPDATE {p}_users SET name = $2 WHERE user_id = $1");
    let n = pinned
        .execute(&update, &[&moving, &"before"])
        .await
        .unwrap();
    assert_eq!(n, 1, "the client is on s0 now");
    let slot = slot_of(moving).to_string();
    run_ok(&[
        "rebalance",
        "move",
        "--config",
        world.config.to_str().unwrap(),
        "--slots",
        &slot,
        "--to",
        "s1",
    ]);
    // Wait until the session-mode router installed the new map (it acknowledged the hold,
    // then follows the flip at its next look at the catalog).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = pinned
        .execute(&update, &[&staying, &"after"])
        .await
        .unwrap();
    assert_eq!(n, 1, "a slot still on s0");
    let error = pinned
        .execute(&update, &[&moving, &"after"])
        .await
        .expect_err("a moved slot from a client held on s0");
    let text = error
        .as_db_error()
        .map_or_else(|| error.to_string(), |e| e.message().to_string());
    assert!(text.contains("routes to shard s1"), "{text}");
    let row = client
        .query_one(
            &format!("SELECT name FROM {p}_users WHERE user_id = $1"),
            &[&moving],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "before",
        "nothing ran on the old owner"
    );
}

/// A router answers a hold in two steps: once the transactions older than it that may write
/// have ended (the mover then verifies), and once the read-only statements older than it have
/// ended too (the mover swaps only then). A long keyless read on the replicas delays only the
/// second answer, and counts every user once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_keyless_read_older_than_a_hold_delays_only_its_second_answer() {
    let world = world("lr");
    let p = world.prefix.clone();
    let router = support::start_proxy(&world.config_text).await;
    let client = router.connect().await;
    let users = 3000;
    load_users(&client, &p, users, &mut Record::default()).await;
    for cluster in clusters() {
        cluster
            .wait_for_replay(DEADLINE)
            .expect("replicas replay the users");
    }
    let reader = router.connect().await;
    let rounds = 20_000i64;
    let sql = format!("SELECT count(*) FROM {p}_users, generate_series(1, {rounds}) g");
    let read = tokio::spawn(async move { reader.query_one(&sql, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut catalog = pgshard::catalog::connect(&world.catalog_url, None)
        .await
        .unwrap();
    let expected = pgshard::catalog::cutover::request_hold(
        &mut catalog,
        "manual",
        "0-15",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(expected.len(), 1, "{expected:?}");
    answered(&catalog, false, &expected).await;
    assert!(!read.is_finished(), "the keyless read is still running");
    let readers = pgshard::catalog::cutover::acknowledged(&catalog, "manual", true)
        .await
        .unwrap();
    assert!(
        readers.is_empty(),
        "answered for readers while one runs: {readers:?}"
    );
    let counted: i64 = read.await.unwrap().expect("the long read").get(0);
    assert_eq!(counted, users * rounds, "every user once");
    answered(&catalog, true, &expected).await;
    pgshard::catalog::cutover::drop_hold(&catalog, "manual")
        .await
        .unwrap();
}

/// Waits until `routers` answered the hold of move `manual` (`readers`: the second answer).
async fn answered(catalog: &tokio_postgres::Client, readers: bool, routers: &[String]) {
    let started = std::time::Instant::now();
    loop {
        let acked = pgshard::catalog::cutover::acknowledged(catalog, "manual", readers)
            .await
            .unwrap();
        if acked == routers {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no answer (readers: {readers})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A router cut off from the catalog before a move began knows nothing of the move, and must
/// still never send a moved slot's statements to the old owner: the mover waits for it until
/// its lease ran out (then it holds every slot itself) and ends the transaction it left open
/// on the source (its commit would land there after the move); back in contact, the router
/// sends the statement it held to the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_cut_off_before_a_move_never_routes_by_the_old_map() {
    let world = world_alone("lease");
    let p = world.prefix.clone();
    let lease = Duration::from_millis(5000);
    let config = world.config_text.replacen(
        "poll_interval_ms = 200",
        &format!("poll_interval_ms = 200\nlease_ms = {}", lease.as_millis()),
        1,
    );
    let router_a = support::start_proxy(&config).await;
    let catalog_port = clusters()[0].primary_port();
    let link = Link::start(catalog_port).await;
    let router_b = support::start_proxy(&config.replacen(
        &format!("port={catalog_port} dbname=meta_{p}"),
        &format!("port={} dbname=meta_{p}", link.port),
        1,
    ))
    .await;
    let (a, b) = (router_a.connect().await, router_b.connect().await);
    let mut record = Record::default();
    load_users(&a, &p, 500, &mut record).await;
    let moved = 1984..=2047u16;
    let mut moving = (1..=500).filter(|&k| moved.contains(&slot_of(k)));
    let (key, pending, slow) = (
        moving.next().unwrap(),
        moving.next().unwrap(),
        moving.next().unwrap(),
    );
    let update = format!("UPDATE {p}_users SET name = $1 WHERE user_id = $2");
    assert_eq!(b.execute(&update, &[&"b0", &key]).await.unwrap(), 1);
    record.users.insert(key, "b0".into());
    // A statement through router B that will write only once the move is over.
    let slow_update = {
        let client = router_b.connect().await;
        let sql = format!(
            "UPDATE {p}_users SET name = 'slow' WHERE user_id = $1 AND pg_sleep(60) IS NOT NULL"
        );
        tokio::spawn(async move { client.execute(&sql, &[&slow]).await })
    };

    link.cut();
    let cut = std::time::Instant::now();
    let file = world.config.to_str().unwrap().to_string();
    let mover = tokio::task::spawn_blocking(move || {
        run_ok(&[
            "rebalance",
            "move",
            "--config",
            &file,
            "--slots",
            "1984-2047",
            "--to",
            "s1",
            "--ack-timeout-ms",
            "1000",
        ])
    });
    // Once the move's replication slot exists (its creation waits for open writes), router B,
    // still within its lease, writes a moving row in a transaction left open.
    let source = support::connect_direct(catalog_port).await;
    let started = std::time::Instant::now();
    while source
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgshard_move_m1_1984_2047'",
            &[],
        )
        .await
        .unwrap()
        .is_none()
    {
        assert!(started.elapsed() < DEADLINE, "the move never made its slot");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let late = router_b.connect().await;
    late.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        late.execute(&update, &[&"late", &pending]).await.unwrap(),
        1
    );
    assert!(cut.elapsed() < lease, "router B wrote within its lease");

    let out = mover.await.unwrap();
    eprintln!("{out}");
    assert!(
        cut.elapsed() >= lease,
        "the move ended {:?} after router B was cut off, within its lease",
        cut.elapsed()
    );
    assert!(out.contains("waiting for router"), "{out}");
    assert_eq!(catalog_owner(&world, slot_of(key)).await, "s1");
    // Its commit would land on s0 after the move: the mover ended it instead.
    assert!(
        out.contains("ended the transaction of server process"),
        "{out}"
    );
    let commit = late.batch_execute("COMMIT").await;
    assert!(
        commit.is_err(),
        "a write by the old map committed after the move"
    );
    eprintln!("the late commit: {}", commit.unwrap_err());
    let slow_update = slow_update.await.unwrap();
    assert!(slow_update.is_err(), "{slow_update:?}");
    let ended = out
        .matches("ended the transaction of server process")
        .count();
    assert_eq!(ended, 2, "{out}");

    // Router B, still cut off, holds the statement rather than send it to s0.
    let held = {
        let update = update.clone();
        tokio::spawn(async move { b.execute(&update, &[&"b1", &key]).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "router B sent a moved slot's statement by its old map"
    );
    let status = rebalance(&world, "status");
    assert_eq!(status.matches(", in contact").count(), 1, "{status}");
    assert_eq!(status.matches(", given up: ").count(), 1, "{status}");
    link.restore();
    let updated = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("router B lets the statement go once the catalog answers")
        .unwrap()
        .expect("the held update");
    assert_eq!(updated, 1, "the update found its row on the new owner");
    record.users.insert(key, "b1".into());
    check_rows(&world, &record, &[moved]).await;
}
