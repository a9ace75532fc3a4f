//! The world of `tests/rebalance.rs`: two logical-level shards with replicas, a per-test config
//! and catalog, writers that keep their own record, a keyless counter, checks of where every row
//! is, and ways to stop the mover at a chosen step (locks it waits on) or see where it is.

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

use super::support;

/// A deadline for things that normally take milliseconds (never a measurement).
pub const DEADLINE: Duration = Duration::from_secs(120);

static CLUSTERS: OnceLock<[LocalCluster; 2]> = OnceLock::new();

/// Two shards, each a primary at `wal_level = logical` and one streaming replica; role app/app
/// with REPLICATION (the mover makes logical replication slots as the config's first user);
/// database `app`. Stopped at exit.
pub fn clusters() -> [&'static LocalCluster; 2] {
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
        let clusters = support::start_two(start);
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

/// One test's world: its tables (`<p>_users`, `<p>_orders`), catalog database and config file
/// (removed when the world is dropped).
pub struct World {
    pub prefix: String,
    pub config: PathBuf,
    pub config_text: String,
    pub catalog_url: String,
    _turn: Turn,
}

/// Tests share the two clusters (under `cargo test`, one process runs them at once). A test
/// that keeps a writing transaction open across a move runs alone: PostgreSQL builds another
/// move's replication slot only once every such transaction on the server has ended, and the
/// mover ends those of a silent router.
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

enum Turn {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Creates the test's tables on both primaries (replayed on the replicas), its catalog
/// database on the first shard, and a config sharding its tables with `s0` owning 0-2047.
pub fn world(prefix: &str) -> World {
    let turn = Turn::Shared(TURNS.read().unwrap_or_else(|e| e.into_inner()));
    world_with(prefix, turn)
}

/// [`world`], for a test no other runs beside (see [`TURNS`]).
pub fn world_alone(prefix: &str) -> World {
    let turn = Turn::Alone(TURNS.write().unwrap_or_else(|e| e.into_inner()));
    world_with(prefix, turn)
}

fn world_with(prefix: &str, turn: Turn) -> World {
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
    text.push_str(&crate::support::shards_toml(&[s0, s1]));
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
        _turn: turn,
    }
}

pub fn pgshard(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgshard"));
    command.args(args);
    command
}

/// `pgshard rebalance <command> --config <the world's config>`, which must succeed; its output.
pub fn rebalance(world: &World, command: &str) -> String {
    run_ok(&[
        "rebalance",
        command,
        "--config",
        world.config.to_str().unwrap(),
    ])
}

/// Runs a `pgshard` command to its end; its output, or a failure naming it.
pub fn run_ok(args: &[&str]) -> String {
    let out = pgshard(args).output().expect("running pgshard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgshard {args:?} failed:\n{text}");
    text
}

pub fn slot_of(key: i64) -> u16 {
    KeyValue::Int(key).slot()
}

/// Owner index (0 or 1) of a slot: the config's split, then `moved` given to s1.
pub fn owner(slot: u16, moved: &[std::ops::RangeInclusive<u16>]) -> usize {
    if moved.iter().any(|r| r.contains(&slot)) || slot >= 2048 {
        1
    } else {
        0
    }
}

/// What the writers last wrote: user names, and orders by id (`None`: deleted).
#[derive(Default)]
pub struct Record {
    pub users: BTreeMap<i64, String>,
    pub orders: BTreeMap<i64, Option<(i64, String)>>,
}

/// Loads users `1..=n` (named `u<k>`) through a router, in one COPY.
pub async fn load_users(
    client: &tokio_postgres::Client,
    prefix: &str,
    n: i64,
    record: &mut Record,
) {
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
pub async fn check_rows(world: &World, record: &Record, moved: &[std::ops::RangeInclusive<u16>]) {
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
pub async fn check_clean(ids: &[&str]) {
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
pub async fn catalog_owner(world: &World, slot: u16) -> String {
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
pub struct Writers {
    pub record: Arc<Mutex<Record>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
}

/// Starts `n` writers, writer `w` on router `urls[w % len]`, each on its own users (`k % n ==
/// w`), half of its statements on users in `hot` slots: updates of names, inserts and deletes
/// of orders, some in explicit transactions.
pub fn start_writers(
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
        let (errors, stop, done) = (
            writers.errors.clone(),
            writers.stop.clone(),
            writers.done.clone(),
        );
        let mine: Vec<i64> = (1..=users).filter(|k| k % n == w).collect();
        let hot_keys: Vec<i64> = mine
            .iter()
            .copied()
            .filter(|&k| hot.contains(&slot_of(k)))
            .collect();
        let mut writer = Writer {
            prefix: prefix.to_string(),
            record: writers.record.clone(),
            next_order: 1_000_000 * (w + 1),
            my_orders: Vec::new(),
        };
        handles.push(tokio::spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("writer connects");
            tokio::spawn(connection);
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = if rng.gen_bool(0.5) && !hot_keys.is_empty() {
                    hot_keys[rng.gen_range(0..hot_keys.len())]
                } else {
                    mine[rng.gen_range(0..mine.len())]
                };
                let name = format!("w{w}-{i}");
                let op = rng.gen_range(0..4);
                let pick = rng.gen_range(0..usize::MAX);
                match writer.write(&mut client, op, pick, key, name).await {
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

/// One writer's own keys and what it wrote.
struct Writer {
    prefix: String,
    record: Arc<Mutex<Record>>,
    next_order: i64,
    /// Orders it inserted and has not deleted: (order id, user id).
    my_orders: Vec<(i64, i64)>,
}

impl Writer {
    /// One write of kind `op` on user `key`: a name update, an order insert, an order delete
    /// (of its order number `pick`, modulo), or both an update and an insert in a transaction.
    /// Recorded when it succeeded.
    async fn write(
        &mut self,
        client: &mut tokio_postgres::Client,
        op: u32,
        pick: usize,
        key: i64,
        name: String,
    ) -> Result<(), tokio_postgres::Error> {
        let p = &self.prefix;
        let update = format!("UPDATE {p}_users SET name = $1 WHERE user_id = $2");
        let insert =
            format!("INSERT INTO {p}_orders (order_id, user_id, note) VALUES ($1, $2, $3)");
        match op {
            0 => {
                client.execute(&update, &[&name, &key]).await?;
                self.record.lock().unwrap().users.insert(key, name);
            }
            1 => {
                self.next_order += 1;
                let id = self.next_order;
                client.execute(&insert, &[&id, &key, &name]).await?;
                self.record
                    .lock()
                    .unwrap()
                    .orders
                    .insert(id, Some((key, name)));
                self.my_orders.push((id, key));
            }
            2 if !self.my_orders.is_empty() => {
                let (id, user) = self.my_orders.swap_remove(pick % self.my_orders.len());
                let delete = format!("DELETE FROM {p}_orders WHERE user_id = $1 AND order_id = $2");
                if let Err(e) = client.execute(&delete, &[&user, &id]).await {
                    self.my_orders.push((id, user));
                    return Err(e);
                }
                self.record.lock().unwrap().orders.insert(id, None);
            }
            _ => {
                // The user's name and a new order, together.
                self.next_order += 1;
                let id = self.next_order;
                let tx = client.transaction().await?;
                tx.execute(&update, &[&name, &key]).await?;
                tx.execute(&insert, &[&id, &key, &name]).await?;
                tx.commit().await?;
                let mut record = self.record.lock().unwrap();
                record.users.insert(key, name.clone());
                record.orders.insert(id, Some((key, name)));
                self.my_orders.push((id, key));
            }
        }
        Ok(())
    }
}

/// Reads `count(*)` and `sum(user_id)` of the users table in a loop (through the routers in
/// turn) until stopped; returns how many reads and the wrong ones.
pub fn start_counter(
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

/// Waits until a backend of `cluster` (database `db`) run by the mover waits on a lock, in a
/// statement naming a table of `prefix` (the other test's movers use the same clusters).
pub async fn wait_mover_blocked(cluster: &LocalCluster, db: &str, prefix: &str) {
    let client = support::connect_direct(cluster.primary_port()).await;
    let start = Instant::now();
    loop {
        let blocked: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                   AND application_name = 'pgshard-mover' AND wait_event_type = 'Lock' \
                   AND query LIKE '%' || $2 || '\\_%'",
                &[&db, &prefix],
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
/// (Its COPY of a table of `prefix`: the other test's movers copy from the same cluster.)
pub async fn wait_mover_copying(cluster: &LocalCluster, prefix: &str) {
    let client = support::connect_direct(cluster.primary_port()).await;
    let start = Instant::now();
    loop {
        let copying: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshard-mover' \
                   AND state = 'active' AND query LIKE 'COPY%' \
                   AND query LIKE '%' || $1 || '\\_%'",
                &[&prefix],
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
pub async fn step_of(world: &World, move_id: &str) -> Option<String> {
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

pub async fn wait_step(world: &World, move_id: &str, step: &str) {
    wait_slice_step(world, move_id, 0, step).await
}

/// Slices of `move_id` done, as the journal says (0 before it is recorded).
pub async fn slices_done(world: &World, move_id: &str) -> i32 {
    let client = pgshard::catalog::connect(&world.catalog_url, None)
        .await
        .expect("catalog");
    client
        .query_opt(
            "SELECT slices_done FROM pgshard.moves WHERE move_id = $1",
            &[&move_id],
        )
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

/// Waits until the journal shows `step` with `done` slices done.
pub async fn wait_slice_step(world: &World, move_id: &str, done: i32, step: &str) {
    let start = Instant::now();
    while step_of(world, move_id).await.as_deref() != Some(step)
        || slices_done(world, move_id).await != done
    {
        assert!(
            start.elapsed() < DEADLINE,
            "move {move_id} never reached {step} with {done} slices done"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `pgshard rebalance move` of `slots` to s1 (in one slice unless `extra` names `--batch`).
pub fn spawn_move(world: &World, slots: &str, extra: &[&str]) -> Child {
    let batch: &[&str] = if extra.contains(&"--batch") {
        &[]
    } else {
        &["--batch", "64"]
    };
    pgshard(&[
        "rebalance",
        "move",
        "--config",
        world.config.to_str().unwrap(),
        "--slots",
        slots,
        "--to",
        "s1",
    ])
    .args(batch)
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
pub async fn lock_in_transaction(port: u16, db: &str, sql: &str) -> tokio_postgres::Client {
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

/// A TCP link to `127.0.0.1:<upstream>` that a test can cut (every connection through it is
/// dropped and new ones are refused) and restore: a network partition between one router and
/// its catalog, with the catalog's server still serving everyone else.
pub struct Link {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn start(upstream: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, open) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let accept = tokio::spawn({
            let (cut, open) = (cut.clone(), open.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        continue;
                    };
                    let relay = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    open.lock().unwrap().push(relay.abort_handle());
                }
            }
        });
        Link {
            port,
            cut,
            open,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for relay in self.open.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
