//! `pgshard rebalance move | status | resume | abort` through the real binary, against two
//! shards (each a primary at `wal_level = logical` + a streaming replica) with routers in front
//! that share a catalog: writers (on two routers) and keyless readers run during moves; the mover
//! is killed with SIGKILL during its copy, its catch-up and its cutover, then resumed or
//! aborted. Afterwards every row is on the shard its slot says, exactly once, equal to what the
//! writers last wrote. Each test has its own tables, catalog database and slots.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pgshard::localpg::{ClusterOptions, LocalCluster};
use pgshard::sharding::KeyValue;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A deadline for things that normally take milliseconds (never a measurement).
const DEADLINE: Duration = Duration::from_secs(120);

static CLUSTERS: OnceLock<[LocalCluster; 2]> = OnceLock::new();

/// Two shards, each a primary at `wal_level = logical` and one streaming replica; role app/app
/// with REPLICATION (the mover makes logical replication slots as the config's first user);
/// database `app`. Stopped at exit.
fn clusters() -> [&'static LocalCluster; 2] {
    let [s0, s1] = CLUSTERS.get_or_init(|| {
        let opts = ClusterOptions {
            replicas: 1,
            users: vec![("app".into(), "app".into())],
            databases: vec![("app".into(), "app".into())],
            logical: true,
            ..ClusterOptions::default()
        };
        let start = || {
            let cluster = LocalCluster::start(&opts).expect("starting a shard's cluster");
            cluster
                .psql(
                    cluster.primary_port(),
                    "postgres",
                    "ALTER ROLE app REPLICATION",
                )
                .expect("letting app make replication slots");
            cluster
        };
        let clusters = std::thread::scope(|s| {
            let a = s.spawn(start);
            let b = s.spawn(start);
            [a.join(), b.join()]
        });
        let clusters = clusters.map(|c| c.unwrap_or_else(|e| std::panic::resume_unwind(e)));
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        assert_eq!(unsafe { libc::atexit(stop_clusters) }, 0);
        clusters
    });
    [s0, s1]
}

extern "C" fn stop_clusters() {
    for cluster in CLUSTERS.get().into_iter().flatten() {
        cluster.stop_shared();
    }
}

/// One test's world: its tables (`<p>_users`, `<p>_orders`), catalog database and config file.
struct World {
    prefix: String,
    config: PathBuf,
    config_text: String,
    catalog_url: String,
}

/// Creates the test's tables on both primaries (replayed on the replicas), its catalog
/// database on the first shard, and a config sharding its tables with `s0` owning 0-2047.
fn world(prefix: &str) -> World {
    let [s0, s1] = clusters();
    let schema = format!(
        "SET ROLE app; \
         CREATE TABLE {prefix}_users (user_id bigint PRIMARY KEY, name text NOT NULL); \
         CREATE TABLE {prefix}_orders (order_id bigint PRIMARY KEY, user_id bigint NOT NULL, \
           note text NOT NULL);"
    );
    for cluster in [s0, s1] {
        cluster
            .psql(cluster.primary_port(), "app", &schema)
            .expect("creating the test's tables");
    }
    let db = format!("meta_{prefix}");
    s0.psql(
        s0.primary_port(),
        "postgres",
        &format!("CREATE DATABASE {db} OWNER app"),
    )
    .expect("creating the catalog database");
    let catalog_url = format!(
        "host=127.0.0.1 port={} dbname={db} user=app password=app",
        s0.primary_port()
    );
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
database = "app"
pool_mode = "transaction"

[pool]
size = 6
checkout_timeout_ms = 20000

[[users]]
name = "app"
password = "app"

[catalog]
url = "{catalog_url}"
poll_interval_ms = 200

[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "{prefix}_users"

[[sharding.tables]]
name = "{prefix}_orders"
"#
    );
    for (i, (cluster, slots)) in [s0, s1].iter().zip(["0-2047", "2048-4095"]).enumerate() {
        let replicas = cluster
            .replica_addrs()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nprimary = \"{}\"\nreplicas = [{replicas}]\nslots = \"{slots}\"\n",
            cluster.primary_addr()
        ));
    }
    let config = std::env::temp_dir().join(format!(
        "pgshard-rebalance-{prefix}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&config, &text).expect("writing the test config");
    for cluster in [s0, s1] {
        cluster
            .wait_for_replay(Duration::from_secs(60))
            .expect("replicas replay the schema");
    }
    World {
        prefix: prefix.into(),
        config,
        config_text: text,
        catalog_url,
    }
}

fn pgshard(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgshard"));
    command.args(args);
    command
}

/// Runs a `pgshard` command to its end; its output, or a failure naming it.
fn run_ok(args: &[&str]) -> String {
    let out = pgshard(args).output().expect("running pgshard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgshard {args:?} failed:\n{text}");
    text
}

fn slot_of(key: i64) -> u16 {
    KeyValue::Int(key).slot()
}

/// Owner index (0 or 1) of a slot: the config's split, then `moved` given to s1.
fn owner(slot: u16, moved: &[std::ops::RangeInclusive<u16>]) -> usize {
    if moved.iter().any(|r| r.contains(&slot)) || slot >= 2048 {
        1
    } else {
        0
    }
}

/// What the writers last wrote: user names, and orders by id (`None`: deleted).
#[derive(Default)]
struct Record {
    users: BTreeMap<i64, String>,
    orders: BTreeMap<i64, Option<(i64, String)>>,
}

/// Loads users `1..=n` (named `u<k>`) through a router, in one COPY.
async fn load_users(client: &tokio_postgres::Client, prefix: &str, n: i64, record: &mut Record) {
    let values: Vec<String> = (1..=n).map(|k| format!("({k}, 'u{k}')")).collect();
    client
        .batch_execute(&format!(
            "INSERT INTO {prefix}_users (user_id, name) VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("loading users through pgshard");
    for k in 1..=n {
        record.users.insert(k, format!("u{k}"));
    }
}

/// Checks every recorded row directly on the primaries: on its owner only, as last written;
/// and nothing else there.
async fn check_rows(world: &World, record: &Record, moved: &[std::ops::RangeInclusive<u16>]) {
    let p = &world.prefix;
    let [s0, s1] = clusters();
    let mut users: [BTreeMap<i64, String>; 2] = Default::default();
    let mut orders: [BTreeMap<i64, (i64, String)>; 2] = Default::default();
    for (i, cluster) in [s0, s1].iter().enumerate() {
        let client = support::connect_direct(cluster.primary_port()).await;
        for row in client
            .query(&format!("SELECT user_id, name FROM {p}_users"), &[])
            .await
            .unwrap()
        {
            users[i].insert(row.get(0), row.get(1));
        }
        for row in client
            .query(
                &format!("SELECT order_id, user_id, note FROM {p}_orders"),
                &[],
            )
            .await
            .unwrap()
        {
            orders[i].insert(row.get(0), (row.get(1), row.get(2)));
        }
    }
    for (k, name) in &record.users {
        let o = owner(slot_of(*k), moved);
        assert_eq!(users[o].get(k), Some(name), "user {k} on its owner s{o}");
        assert!(!users[1 - o].contains_key(k), "user {k} also on s{}", 1 - o);
    }
    let total: usize = users.iter().map(|u| u.len()).sum();
    assert_eq!(
        total,
        record.users.len(),
        "no user rows beyond those written"
    );
    let mut live = 0;
    for (id, row) in &record.orders {
        match row {
            Some((user, note)) => {
                live += 1;
                let o = owner(slot_of(*user), moved);
                assert_eq!(
                    orders[o].get(id),
                    Some(&(*user, note.clone())),
                    "order {id}"
                );
                assert!(!orders[1 - o].contains_key(id), "order {id} on both shards");
            }
            None => assert!(
                orders.iter().all(|o| !o.contains_key(id)),
                "deleted order {id} is back"
            ),
        }
    }
    let total: usize = orders.iter().map(|o| o.len()).sum();
    assert_eq!(total, live, "no order rows beyond those written");
}

/// No replication slot, publication or staging schema of these moves is left.
async fn check_clean(ids: &[&str]) {
    let names: Vec<String> = ids.iter().map(|id| format!("pgshard_move_{id}")).collect();
    let staging: Vec<String> = ids
        .iter()
        .map(|id| format!("pgshard_staging_{id}"))
        .collect();
    let [s0, s1] = clusters();
    for cluster in [s0, s1] {
        let client = support::connect_direct(cluster.primary_port()).await;
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY($1)) \
                      + (SELECT count(*) FROM pg_publication WHERE pubname = ANY($1)) \
                      + (SELECT count(*) FROM pg_namespace WHERE nspname = ANY($2))",
                &[&names, &staging],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            left,
            0,
            "objects of a move left on {}",
            cluster.primary_addr()
        );
    }
}

/// The live map's owner of `slot` (from the catalog).
async fn catalog_owner(world: &World, slot: u16) -> String {
    let client = pgshard::catalog::connect(&world.catalog_url, None)
        .await
        .expect("catalog");
    client
        .query_one(
            "SELECT shard FROM pgshard.slots WHERE slot = $1",
            &[&i32::from(slot)],
        )
        .await
        .unwrap()
        .get(0)
}

/// Writers' shared state: what they wrote, their errors, a stop flag.
struct Writers {
    record: Arc<Mutex<Record>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
}

/// Starts `n` writers, writer `w` on router `urls[w % len]`, each on its own users (`k % n ==
/// w`), half of its statements on users in `hot` slots: updates of names, inserts and deletes
/// of orders, some in explicit transactions.
fn start_writers(
    prefix: &str,
    urls: &[String],
    n: i64,
    users: i64,
    hot: std::ops::RangeInclusive<u16>,
    record: Arc<Mutex<Record>>,
) -> (Writers, Vec<tokio::task::JoinHandle<()>>) {
    let writers = Writers {
        record,
        errors: Arc::default(),
        stop: Arc::default(),
        done: Arc::default(),
    };
    let mut handles = Vec::new();
    for w in 0..n {
        let url = urls[w as usize % urls.len()].clone();
        let prefix = prefix.to_string();
        let (record, errors, stop, done) = (
            writers.record.clone(),
            writers.errors.clone(),
            writers.stop.clone(),
            writers.done.clone(),
        );
        let hot = hot.clone();
        handles.push(tokio::spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("writer connects");
            tokio::spawn(connection);
            let mine: Vec<i64> = (1..=users).filter(|k| k % n == w).collect();
            let hot_keys: Vec<i64> = mine
                .iter()
                .copied()
                .filter(|&k| hot.contains(&slot_of(k)))
                .collect();
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut next_order = 1_000_000 * (w + 1);
            let mut my_orders: Vec<(i64, i64)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = if rng.gen_bool(0.5) && !hot_keys.is_empty() {
                    hot_keys[rng.gen_range(0..hot_keys.len())]
                } else {
                    mine[rng.gen_range(0..mine.len())]
                };
                let name = format!("w{w}-{i}");
                let outcome = match rng.gen_range(0..4) {
                    0 => client
                        .execute(
                            &format!("UPDATE {prefix}_users SET name = $1 WHERE user_id = $2"),
                            &[&name, &key],
                        )
                        .await
                        .map(|_| record.lock().unwrap().users.insert(key, name.clone()))
                        .map(drop),
                    1 => {
                        next_order += 1;
                        let id = next_order;
                        let r = client
                            .execute(
                                &format!(
                                    "INSERT INTO {prefix}_orders (order_id, user_id, note) \
                                     VALUES ($1, $2, $3)"
                                ),
                                &[&id, &key, &name],
                            )
                            .await;
                        if r.is_ok() {
                            record.lock().unwrap().orders.insert(id, Some((key, name)));
                            my_orders.push((id, key));
                        }
                        r.map(drop)
                    }
                    2 if !my_orders.is_empty() => {
                        let (id, user) = my_orders.swap_remove(rng.gen_range(0..my_orders.len()));
                        let r = client
                            .execute(
                                &format!(
                                    "DELETE FROM {prefix}_orders WHERE user_id = $1 AND order_id = $2"
                                ),
                                &[&user, &id],
                            )
                            .await;
                        if r.is_ok() {
                            record.lock().unwrap().orders.insert(id, None);
                        }
                        r.map(drop)
                    }
                    _ => {
                        // A transaction: the user's name and a new order, together.
                        next_order += 1;
                        let id = next_order;
                        let tx = client.transaction().await;
                        let r = match tx {
                            Ok(tx) => {
                                let a = tx
                                    .execute(
                                        &format!(
                                            "UPDATE {prefix}_users SET name = $1 WHERE user_id = $2"
                                        ),
                                        &[&name, &key],
                                    )
                                    .await;
                                let b = tx
                                    .execute(
                                        &format!(
                                            "INSERT INTO {prefix}_orders (order_id, user_id, note) \
                                             VALUES ($1, $2, $3)"
                                        ),
                                        &[&id, &key, &name],
                                    )
                                    .await;
                                match (a, b) {
                                    (Ok(_), Ok(_)) => tx.commit().await,
                                    (Err(e), _) | (_, Err(e)) => Err(e),
                                }
                            }
                            Err(e) => Err(e),
                        };
                        if r.is_ok() {
                            let mut rec = record.lock().unwrap();
                            rec.users.insert(key, name.clone());
                            rec.orders.insert(id, Some((key, name)));
                            my_orders.push((id, key));
                        }
                        r
                    }
                };
                match outcome {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let text = match e.as_db_error() {
                            Some(db) => format!("{}: {}", db.code().code(), db.message()),
                            None => e.to_string(),
                        };
                        errors.lock().unwrap().push(format!("writer {w}: {text}"));
                    }
                }
            }
        }));
    }
    (writers, handles)
}

/// Reads `count(*)` and `sum(user_id)` of the users table in a loop (through the routers in
/// turn) until stopped; returns how many reads and the wrong ones.
fn start_counter(
    prefix: &str,
    urls: &[String],
    expected: (i64, i64),
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    let prefix = prefix.to_string();
    let urls = urls.to_vec();
    tokio::spawn(async move {
        let mut clients = Vec::new();
        for url in &urls {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("reader connects");
            tokio::spawn(connection);
            clients.push(client);
        }
        let (mut reads, mut wrong) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let client = &clients[reads as usize % clients.len()];
            reads += 1;
            let sql = format!("SELECT count(*), sum(user_id) FROM {prefix}_users");
            match client.simple_query(&sql).await {
                Ok(messages) => {
                    let got = messages.iter().find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some((
                            row.get(0).and_then(|v| v.parse::<i64>().ok()),
                            row.get(1).and_then(|v| v.parse::<i64>().ok()),
                        )),
                        _ => None,
                    });
                    if got != Some((Some(expected.0), Some(expected.1))) {
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        let mut direct = Vec::new();
                        for c in clusters() {
                            let mut ports = vec![c.primary_port()];
                            ports.extend(
                                c.replica_addrs()
                                    .iter()
                                    .map(|a| a.rsplit_once(':').unwrap().1.parse::<u16>().unwrap()),
                            );
                            for port in ports {
                                let d = support::connect_direct(port).await;
                                let n: i64 = d
                                    .query_one(&format!("SELECT count(*) FROM {prefix}_users"), &[])
                                    .await
                                    .unwrap()
                                    .get(0);
                                direct.push((port, n));
                            }
                        }
                        wrong.push(format!(
                            "DIRECT {direct:?} read {reads} at {}.{:03}: {got:?}, expected {expected:?}",
                            at.as_secs() % 86_400,
                            at.subsec_millis()
                        ));
                    }
                }
                Err(e) => wrong.push(format!(
                    "read {reads} failed: {}",
                    e.as_db_error().map_or(e.to_string(), |d| format!(
                        "{}: {}",
                        d.code().code(),
                        d.message()
                    ))
                )),
            }
        }
        (reads, wrong)
    })
}

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
    assert_eq!(out.matches("moved slots").count(), 4, "{out}");
    check_rows(&world, &record, std::slice::from_ref(&moving)).await;
    check_clean(&["m1_0_63", "m1_64_127", "m1_128_191", "m1_192_255"]).await;
    for slot in [0, 100, 255] {
        assert_eq!(catalog_owner(&world, slot).await, "s1");
    }
    assert_eq!(catalog_owner(&world, 256).await, "s0");
    let status = run_ok(&[
        "rebalance",
        "status",
        "--config",
        world.config.to_str().unwrap(),
    ]);
    assert_eq!(status.matches(" done ").count(), 4, "{status}");
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

/// Waits until a backend of `cluster` (database `db`) run by the mover waits on a lock.
async fn wait_mover_blocked(cluster: &LocalCluster, db: &str, app: &str) {
    let client = support::connect_direct(cluster.primary_port()).await;
    let start = Instant::now();
    loop {
        let blocked: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                   AND application_name = $2 AND wait_event_type = 'Lock'",
                &[&db, &app],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the mover never blocked on the test's lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the mover's connection to `cluster` is running a COPY.
async fn wait_mover_copying(cluster: &LocalCluster) {
    let client = support::connect_direct(cluster.primary_port()).await;
    let start = Instant::now();
    loop {
        let copying: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshard-mover' \
                   AND state = 'active' AND query LIKE 'COPY%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copying > 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the mover was never seen copying"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The journal's step of `move_id`.
async fn step_of(world: &World, move_id: &str) -> Option<String> {
    let client = pgshard::catalog::connect(&world.catalog_url, None)
        .await
        .unwrap();
    client
        .query_opt(
            "SELECT step FROM pgshard.moves WHERE move_id = $1",
            &[&move_id],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn wait_step(world: &World, move_id: &str, step: &str) {
    let start = Instant::now();
    while step_of(world, move_id).await.as_deref() != Some(step) {
        assert!(
            start.elapsed() < DEADLINE,
            "move {move_id} never reached {step}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_move(world: &World, slots: &str, extra: &[&str]) -> Child {
    pgshard(&[
        "rebalance",
        "move",
        "--config",
        world.config.to_str().unwrap(),
        "--slots",
        slots,
        "--to",
        "s1",
        "--batch",
        "64",
    ])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(
        std::fs::File::create(std::env::temp_dir().join(format!("pgshard-mover-{slots}.log")))
            .map_or(Stdio::null(), Stdio::from),
    )
    .spawn()
    .expect("starting the mover")
}

/// A test connection holding a lock in an open transaction until dropped.
async fn lock_in_transaction(port: u16, db: &str, sql: &str) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname={db}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("BEGIN; {sql}"))
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mover_killed_in_copy_catch_up_or_cutover_resumes_or_aborts_losing_nothing() {
    let world = world("kill");
    let p = world.prefix.clone();
    let [s0, s1] = clusters();
    let router = support::start_proxy(&world.config_text).await;
    let url = router.url("app", "app");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
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
    wait_mover_copying(s0).await;
    let step = step_of(&world, "m1_256_319").await;
    mover.kill().unwrap();
    mover.wait().unwrap();
    assert_eq!(step.as_deref(), Some("prepared"), "killed during the copy");
    write(touch(&mut record, "a")).await;
    let out = run_ok(&[
        "rebalance",
        "resume",
        "--config",
        world.config.to_str().unwrap(),
    ]);
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
    wait_mover_blocked(s1, "app", "pgshard-mover").await;
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
    let out = run_ok(&[
        "rebalance",
        "resume",
        "--config",
        world.config.to_str().unwrap(),
    ]);
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
    let out = run_ok(&[
        "rebalance",
        "status",
        "--config",
        world.config.to_str().unwrap(),
    ]);
    assert!(out.contains(id) && out.contains("swapped"), "{out}");
    let out = run_ok(&[
        "rebalance",
        "abort",
        "--config",
        world.config.to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("aborted move {id}")), "{out}");
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
