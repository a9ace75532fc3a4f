//! The mover tests' world: two primaries at `wal_level = logical` shared by the tests of the
//! binary, three moved tables (`users`, `orders` sharded by a column outside its primary key,
//! `accounts` with a text key), a writer that keeps its own record, and comparisons of records.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pgshard::localpg::{ClusterOptions, LocalCluster};
use pgshard::rebalance::{MovePlan, Mover, Shard, SlotSet, TableSpec};
use pgshard::sharding::{KeyType, KeyValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

pub static CLUSTERS: OnceLock<Vec<LocalCluster>> = OnceLock::new();

/// Two primaries at `wal_level = logical` (source, target) and one at `replica`, database
/// `app`; stopped at exit.
pub fn clusters() -> &'static [LocalCluster] {
    CLUSTERS.get_or_init(|| {
        let start = |logical: bool| {
            let opts = ClusterOptions {
                replicas: 0,
                databases: vec![("app".into(), "postgres".into())],
                logical,
                ..ClusterOptions::default()
            };
            LocalCluster::start(&opts).expect("starting a test PostgreSQL primary")
        };
        let clusters = std::thread::scope(|s| {
            let handles = [true, true, false].map(|logical| s.spawn(move || start(logical)));
            handles.map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        });
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        assert_eq!(unsafe { libc::atexit(stop_clusters) }, 0);
        clusters.into()
    })
}

extern "C" fn stop_clusters() {
    for cluster in CLUSTERS.get().into_iter().flatten() {
        cluster.stop_shared();
    }
}

pub fn conninfo(cluster: &LocalCluster) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres password=postgres dbname=app",
        cluster.primary_port()
    )
}

pub async fn shard(name: &str, cluster: &LocalCluster) -> Shard {
    Shard::connect(name, &conninfo(cluster))
        .await
        .expect("connecting to a test primary")
}

pub async fn client(cluster: &LocalCluster) -> tokio_postgres::Client {
    shard("direct", cluster).await.client
}

pub fn bigint(table: &str, key: &str) -> TableSpec {
    TableSpec {
        name: table.into(),
        key_column: key.into(),
        key_type: KeyType::Bigint,
    }
}

/// Slots 0-1023: a quarter of the key space.
pub fn moving() -> SlotSet {
    SlotSet::from_ranges([0..=1023])
}

pub fn moves(id: i64) -> bool {
    moving().contains(KeyValue::Int(id).slot())
}

/// `users` (bio stored out of line, so updates of the name leave it unchanged in the WAL),
/// `orders` (sharded by user_id, which is not its primary key) and `accounts` (a text key),
/// with `prefix` on every name; the same DDL on both primaries.
pub fn schema(prefix: &str) -> String {
    format!(
        "CREATE TABLE {prefix}_users (user_id bigint PRIMARY KEY, name text NOT NULL, bio text); \
         ALTER TABLE {prefix}_users ALTER bio SET STORAGE EXTERNAL; \
         CREATE TABLE {prefix}_orders (order_id bigint PRIMARY KEY, user_id bigint NOT NULL, \
           note text NOT NULL, memo text); \
         ALTER TABLE {prefix}_orders ALTER memo SET STORAGE EXTERNAL; \
         CREATE TABLE {prefix}_accounts (email text PRIMARY KEY, balance numeric NOT NULL);"
    )
}

pub fn specs(prefix: &str) -> Vec<TableSpec> {
    vec![
        bigint(&format!("{prefix}_users"), "user_id"),
        bigint(&format!("{prefix}_orders"), "user_id"),
        TableSpec {
            name: format!("{prefix}_accounts"),
            key_column: "email".into(),
            key_type: KeyType::Text,
        },
    ]
}

/// What the writer last wrote, per table and key (as text rows).
#[derive(Default, Clone)]
pub struct Record {
    pub users: BTreeMap<i64, (String, Option<String>)>,
    pub orders: BTreeMap<i64, (i64, String, Option<String>)>,
    pub accounts: BTreeMap<String, String>,
}

pub const USERS: i64 = 2000;

pub async fn load(c: &tokio_postgres::Client, prefix: &str) -> Record {
    c.batch_execute(&format!(
        "INSERT INTO {prefix}_users SELECT i, 'user ' || i, \
           CASE WHEN i % 10 = 0 THEN repeat(md5(i::text), 200) END \
         FROM generate_series(1, {USERS}) i; \
         INSERT INTO {prefix}_orders SELECT i, i % {USERS} + 1, 'order ' || i, \
           CASE WHEN i % 3 = 0 THEN repeat(md5(i::text), 100) END \
         FROM generate_series(1, {o}) i; \
         INSERT INTO {prefix}_accounts SELECT 'user' || i || '@example.com', i * 1.5 \
         FROM generate_series(1, {USERS}) i;",
        o = 2 * USERS
    ))
    .await
    .expect("loading rows");
    read_all(c, prefix).await
}

/// Every row of the three tables as `c` sees them.
pub async fn read_all(c: &tokio_postgres::Client, prefix: &str) -> Record {
    let mut record = Record::default();
    for r in c
        .query(
            &format!("SELECT user_id, name, bio FROM {prefix}_users"),
            &[],
        )
        .await
        .unwrap()
    {
        assert!(record
            .users
            .insert(r.get(0), (r.get(1), r.get(2)))
            .is_none());
    }
    for r in c
        .query(
            &format!("SELECT order_id, user_id, note, memo FROM {prefix}_orders"),
            &[],
        )
        .await
        .unwrap()
    {
        assert!(record
            .orders
            .insert(r.get(0), (r.get(1), r.get(2), r.get(3)))
            .is_none());
    }
    for r in c
        .query(
            &format!("SELECT email, balance::text FROM {prefix}_accounts"),
            &[],
        )
        .await
        .unwrap()
    {
        assert!(record.accounts.insert(r.get(0), r.get(1)).is_none());
    }
    record
}

/// Random inserts, updates (of the name only, of the bio, of an order's shard key and of its
/// primary key) and deletes on the source until `stop` says so; returns its record.
pub async fn write(
    c: tokio_postgres::Client,
    prefix: String,
    mut record: Record,
    mut stop: watch::Receiver<bool>,
    done: watch::Sender<u64>,
) -> (Record, u64) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut ops = 0u64;
    let mut next_user = USERS + 1;
    let mut next_order = 10 * USERS;
    while !*stop.borrow_and_update() || ops < 300 {
        let user = rng.gen_range(1..next_user);
        let order = rng.gen_range(1..next_order);
        let p = &prefix;
        match rng.gen_range(0..9) {
            0 => {
                let name = format!("renamed {ops}");
                let n = c
                    .execute(
                        &format!("UPDATE {p}_users SET name = $2 WHERE user_id = $1"),
                        &[&user, &name],
                    )
                    .await
                    .unwrap();
                if n == 1 {
                    record.users.get_mut(&user).unwrap().0 = name;
                }
            }
            1 => {
                let bio = format!("{ops}").repeat(3000);
                let n = c
                    .execute(
                        &format!("UPDATE {p}_users SET bio = $2 WHERE user_id = $1"),
                        &[&user, &bio],
                    )
                    .await
                    .unwrap();
                if n == 1 {
                    record.users.get_mut(&user).unwrap().1 = Some(bio);
                }
            }
            2 => {
                c.execute(
                    &format!("DELETE FROM {p}_users WHERE user_id = $1"),
                    &[&user],
                )
                .await
                .unwrap();
                record.users.remove(&user);
            }
            3 => {
                let (id, name) = (next_user, format!("new {ops}"));
                next_user += 1;
                c.execute(
                    &format!("INSERT INTO {p}_users VALUES ($1, $2, NULL)"),
                    &[&id, &name],
                )
                .await
                .unwrap();
                record.users.insert(id, (name, None));
            }
            4 => {
                let n = c
                    .execute(
                        &format!("UPDATE {p}_orders SET user_id = $2 WHERE order_id = $1"),
                        &[&order, &user],
                    )
                    .await
                    .unwrap();
                if n == 1 {
                    record.orders.get_mut(&order).unwrap().0 = user;
                }
            }
            5 => {
                let new_id = next_order;
                next_order += 1;
                let n = c
                    .execute(
                        &format!("UPDATE {p}_orders SET order_id = $2 WHERE order_id = $1"),
                        &[&order, &new_id],
                    )
                    .await
                    .unwrap();
                if n == 1 {
                    let row = record.orders.remove(&order).unwrap();
                    record.orders.insert(new_id, row);
                }
            }
            6 => {
                c.execute(
                    &format!("DELETE FROM {p}_orders WHERE order_id = $1"),
                    &[&order],
                )
                .await
                .unwrap();
                record.orders.remove(&order);
            }
            7 => {
                let id = next_order;
                next_order += 1;
                let note = format!("inserted {ops}");
                c.execute(
                    &format!("INSERT INTO {p}_orders VALUES ($1, $2, $3)"),
                    &[&id, &user, &note],
                )
                .await
                .unwrap();
                record.orders.insert(id, (user, note, None));
            }
            _ => {
                let email = format!("user{user}@example.com");
                let balance = format!("{ops}.25");
                c.execute(
                    &format!(
                        "INSERT INTO {p}_accounts VALUES ($1, $2::text::numeric) \
                              ON CONFLICT (email) DO UPDATE SET balance = EXCLUDED.balance"
                    ),
                    &[&email, &balance],
                )
                .await
                .unwrap();
                record.accounts.insert(email, balance);
            }
        }
        ops += 1;
        done.send_replace(ops);
        tokio::task::yield_now().await;
    }
    (record, ops)
}

/// The part of `record` whose shard keys are (or are not) in the moving slots.
pub fn part(record: &Record, moved: bool) -> Record {
    part_where(record, |slot| moving().contains(slot) == moved)
}

/// The part of `record` whose shard keys' slots pass `keep`.
pub fn part_where(record: &Record, keep: impl Fn(u16) -> bool) -> Record {
    Record {
        users: record
            .users
            .iter()
            .filter(|(k, _)| keep(KeyValue::Int(**k).slot()))
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
        orders: record
            .orders
            .iter()
            .filter(|(_, v)| keep(KeyValue::Int(v.0).slot()))
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
        accounts: record
            .accounts
            .iter()
            .filter(|(k, _)| keep(KeyValue::Text(k.to_string()).slot()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

impl Record {
    pub fn rows(&self) -> usize {
        self.users.len() + self.orders.len() + self.accounts.len()
    }
}

pub fn assert_same(got: &Record, want: &Record, what: &str) {
    assert_eq!(got.users.len(), want.users.len(), "{what}: users");
    assert!(got.users == want.users, "{what}: users differ");
    assert!(
        got.orders == want.orders,
        "{what}: orders differ ({} vs {})",
        got.orders.len(),
        want.orders.len()
    );
    assert!(got.accounts == want.accounts, "{what}: accounts differ");
}

/// Catch-up rounds until everything committed before the last round's start is applied;
/// returns the rows read back from the source on the way.
pub async fn drain(mover: &mut Mover) -> u64 {
    let mut fetched = 0;
    loop {
        let round = mover.catch_up(5_000).await.expect("catching up");
        fetched += round.fetched;
        if round.reached {
            return fetched;
        }
    }
}

/// The tables of `prefix` on both primaries, loaded on the source: the clients of both and the
/// rows loaded.
pub async fn loaded(prefix: &str) -> (tokio_postgres::Client, tokio_postgres::Client, Record) {
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    let (src, dst) = (client(a).await, client(b).await);
    src.batch_execute(&schema(prefix)).await.unwrap();
    dst.batch_execute(&schema(prefix)).await.unwrap();
    let record = load(&src, prefix).await;
    (src, dst, record)
}

/// A mover of `prefix`'s tables' moving slots, from the first primary to the second.
pub async fn mover_of(prefix: &str) -> Mover {
    let [a, b, _] = clusters() else {
        unreachable!()
    };
    let plan = MovePlan::new(prefix, moving(), specs(prefix)).unwrap();
    Mover::open(plan, shard("a", a).await, shard("b", b).await)
        .await
        .unwrap()
}

/// Tests share the clusters (under `cargo test`, one process runs them at once). One that keeps
/// a writing transaction open for seconds runs [`alone`]; one that needs none open on the
/// source for a moment (making a replication slot waits for them) runs [`beside_others`].
static TURNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    TURNS.write().await
}

pub async fn beside_others() -> tokio::sync::RwLockReadGuard<'static, ()> {
    TURNS.read().await
}
