//! Sharded routing through the proxy against two real shards (each a primary and a streaming
//! replica): rows land on the shard their key's slot maps to, reads go to replicas unless they
//! must not, keyless and cross-shard statements are refused clearly, BEGIN waits for the
//! statement that picks the shard, a replica or primary going down is handled, `pgshard locate`
//! agrees with the router, and text the SQL parser cannot read still runs.
//!
//! The tests share the two clusters and their tables, so each one uses its own keys (and marks
//! its rows with its own name prefix). The tests that stop servers take [`CLUSTERS`] exclusively;
//! every other test holds it shared, so no test ever sees a server another one stopped.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::time::Duration;

use bytes::BytesMut;
use pgshard::localpg::LocalCluster;
use pgshard::sharding::KeyValue;
use support::{connect_direct, shard_clusters, start_proxy, two_shard_config, Proxy};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Held shared by every test, exclusively by the tests that stop and start servers.
static CLUSTERS: RwLock<()> = RwLock::const_new(());

/// Bounds every wait on the proxy or the clusters, so that a hang fails the test instead of
/// stalling the suite. Not a performance bar.
const HANG_GUARD: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Fixture

/// Held for the whole test (never read: holding it is the point).
#[allow(dead_code)]
enum Lock {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// A proxy over the two shard clusters, and the lock that keeps other tests from stopping them.
struct Fixture {
    proxy: Proxy,
    clusters: [&'static LocalCluster; 2],
    _lock: Lock,
}

/// A fixture for a test that leaves every server running.
async fn fixture() -> Fixture {
    let lock = Lock::Shared(CLUSTERS.read().await);
    start(lock).await
}

/// A fixture for a test that stops servers (and starts them again before it ends).
async fn exclusive_fixture() -> Fixture {
    let lock = Lock::Exclusive(CLUSTERS.write().await);
    start(lock).await
}

async fn start(lock: Lock) -> Fixture {
    let clusters = tokio::task::spawn_blocking(shard_clusters)
        .await
        .expect("starting the shard clusters");
    let proxy = start_proxy(&two_shard_config(clusters)).await;
    Fixture {
        proxy,
        clusters,
        _lock: lock,
    }
}

impl Fixture {
    async fn connect(&self) -> Client {
        tokio::time::timeout(HANG_GUARD, self.proxy.connect())
            .await
            .expect("login through the proxy within the hang guard")
    }

    fn primary_port(&self, shard: usize) -> u16 {
        self.clusters[shard].primary_port()
    }

    fn replica_port(&self, shard: usize) -> u16 {
        self.clusters[shard].replica_ports()[0]
    }

    /// A client connected straight to `shard`'s primary, bypassing the proxy.
    async fn direct(&self, shard: usize) -> Client {
        connect_direct(self.primary_port(shard)).await
    }

    /// Waits until both shards' replicas have replayed everything committed so far.
    async fn wait_for_replay(&self) {
        for cluster in self.clusters {
            tokio::task::spawn_blocking(move || cluster.wait_for_replay(HANG_GUARD))
                .await
                .expect("replay wait task")
                .expect("the replica catches up");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where keys live, computed from the sharding contract (not by asking the proxy)

fn shard_of(key: &KeyValue) -> usize {
    support::shard_of_key(key)
}

fn shard_of_id(id: i64) -> usize {
    support::shard_of_id(id)
}

/// The first `n` bigint keys from `from` upwards that live on `shard`.
fn ids_on(shard: usize, from: i64, n: usize) -> Vec<i64> {
    (from..)
        .filter(|&id| shard_of_id(id) == shard)
        .take(n)
        .collect()
}

fn id_on(shard: usize, from: i64) -> i64 {
    ids_on(shard, from, 1)[0]
}

/// A UUID made from a test's tag and a counter (distinct per pair, spread over the slots).
fn uuid(tag: &str, i: usize) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(format!("{tag}/{i}").as_bytes()).to_be_bytes()
}

/// Canonical text of a UUID: `550e8400-e29b-41d4-a716-446655440000`.
fn uuid_text(bytes: [u8; 16]) -> String {
    KeyValue::Uuid(bytes)
        .to_string()
        .trim_matches('\'')
        .to_string()
}

/// A UUID parameter sent in PostgreSQL's binary format (its 16 bytes), as drivers with a UUID
/// type do.
#[derive(Debug)]
struct BinaryUuid([u8; 16]);

impl ToSql for BinaryUuid {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }

    to_sql_checked!();
}

// ---------------------------------------------------------------------------------------------
// Client helpers

/// The rows of a simple query, each as its column texts (`None` for NULL).
async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let messages = tokio::time::timeout(HANG_GUARD, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: no answer within the hang guard"))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Runs a simple query that must succeed.
async fn run(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    simple_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
}

/// The first column of the only row of a simple query that must succeed, parsed as a port.
async fn port_of(client: &Client, sql: &str) -> u16 {
    let rows = run(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql} returns one row: {rows:?}");
    rows[0][0]
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: first column is not a port: {rows:?}"))
}

/// SQLSTATE and message of a server (or proxy) error.
fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => panic!("expected an ErrorResponse, got {e:?}"),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("{e:?}"),
    }
}

/// The SQLSTATE and message of a simple query that must fail.
async fn refused(client: &Client, sql: &str) -> (String, String) {
    match simple_rows(client, sql).await {
        Ok(rows) => panic!("{sql} must be refused, but returned {rows:?}"),
        Err(e) => db_error(&e),
    }
}

/// Asserts the client still works: a statement without a table and a read by key.
async fn assert_usable(client: &Client) {
    assert_eq!(
        run(client, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    assert!(
        run(client, "SELECT name FROM users WHERE user_id = 1")
            .await
            .len()
            <= 1
    );
}

/// `select` (one text column per row) on `shard`'s primary, directly.
async fn texts_on(fixture: &Fixture, shard: usize, select: &str) -> BTreeSet<String> {
    let client = fixture.direct(shard).await;
    run(&client, select)
        .await
        .into_iter()
        .map(|row| row[0].clone().expect("a non-NULL key"))
        .collect()
}

/// Asserts that each key of `expected` (text → shard) sits on exactly that shard and that no
/// shard holds other keys: `select` lists the keys of the test's rows on a shard.
async fn assert_placed(
    fixture: &Fixture,
    what: &str,
    select: &str,
    expected: &BTreeMap<String, usize>,
) {
    let found = [
        texts_on(fixture, 0, select).await,
        texts_on(fixture, 1, select).await,
    ];
    for (key, &shard) in expected {
        assert!(
            found[shard].contains(key),
            "{what}: key {key} is missing on s{shard}"
        );
        assert!(
            !found[1 - shard].contains(key),
            "{what}: key {key} (slot of s{shard}) is also on s{}",
            1 - shard
        );
    }
    for (shard, keys) in found.iter().enumerate() {
        let want = expected.values().filter(|&&s| s == shard).count();
        assert_eq!(keys.len(), want, "{what}: rows on s{shard}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rows land on the right shard

/// Tag of the rows written by `every_row_lands_on_the_shard_its_slot_maps_to`.
const PLACED: &str = "placed";
const PLACED_IDS: i64 = 1_000_000;

async fn insert_users_with_literals(client: Client, ids: Vec<i64>) {
    for (i, id) in ids.into_iter().enumerate() {
        // Several literal spellings of the same key: the router hashes them all as a bigint.
        let sql = match i % 4 {
            0 => format!("INSERT INTO users (user_id, name) VALUES ({id}, '{PLACED}-lit')"),
            1 => format!("INSERT INTO users (name, user_id) VALUES ('{PLACED}-lit', '{id}')"),
            2 => format!(
                "INSERT INTO users AS u (user_id, name) VALUES ({id}, '{PLACED}-lit') \
                 ON CONFLICT (user_id) DO NOTHING RETURNING u.user_id"
            ),
            _ => format!("insert into public.users (user_id, name) values ({id}, '{PLACED}-lit')"),
        };
        run(&client, &sql).await;
    }
}

async fn insert_users_with_parameters(client: Client, ids: Vec<i64>) {
    let insert = client
        .prepare("INSERT INTO users (user_id, name) VALUES ($1, $2)")
        .await
        .expect("prepare through the proxy");
    for (i, id) in ids.into_iter().enumerate() {
        let name = format!("{PLACED}-param");
        // i64 parameters go in binary: the router decodes 8 big-endian bytes.
        let result = if i % 2 == 0 {
            client.execute(&insert, &[&id, &name]).await
        } else {
            client
                .execute(
                    "INSERT INTO users (name, user_id) VALUES ($1, $2)",
                    &[&name, &id],
                )
                .await
        };
        result.unwrap_or_else(|e| panic!("inserting user {id}: {}", describe(&e)));
    }
}

/// Multi-row INSERTs into `orders` whose rows share a shard: literals (simple protocol) for
/// the first half of the batches, `$n` parameters for the rest.
async fn insert_orders_multi_row(client: Client, batches: Vec<Vec<i64>>) {
    let half = batches.len() / 2;
    for (b, batch) in batches.into_iter().enumerate() {
        if b < half {
            let rows: Vec<String> = batch
                .iter()
                .map(|id| format!("({id}, '{PLACED}-multi')"))
                .collect();
            run(
                &client,
                &format!(
                    "INSERT INTO orders (user_id, note) VALUES {}",
                    rows.join(", ")
                ),
            )
            .await;
        } else {
            let rows: Vec<String> = (0..batch.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO orders (user_id, note) VALUES {}",
                rows.join(", ")
            );
            let note = format!("{PLACED}-multi");
            let params: Vec<&(dyn ToSql + Sync)> = batch
                .iter()
                .flat_map(|id| [id as &(dyn ToSql + Sync), &note])
                .collect();
            client
                .execute(&sql, &params)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
        }
    }
}

async fn insert_text_keys(client: Client, emails: Vec<String>) {
    let insert = client
        .prepare("INSERT INTO accounts_text (email, name) VALUES ($1, $2)")
        .await
        .expect("prepare through the proxy");
    for (i, email) in emails.into_iter().enumerate() {
        if i % 2 == 0 {
            let name = format!("{PLACED}-param");
            client
                .execute(&insert, &[&email, &name])
                .await
                .unwrap_or_else(|e| panic!("inserting {email}: {}", describe(&e)));
        } else {
            let literal = KeyValue::Text(email.clone()).to_string();
            let sql = format!(
                "INSERT INTO accounts_text (email, name) VALUES ({literal}, '{PLACED}-lit')"
            );
            run(&client, &sql).await;
        }
    }
}

async fn insert_uuid_keys(client: Client, owners: Vec<[u8; 16]>) {
    for (i, owner) in owners.into_iter().enumerate() {
        let item = format!("{PLACED}-{i}");
        match i % 3 {
            0 => {
                client
                    .execute(
                        "INSERT INTO items_uuid (owner, item) VALUES ($1, $2)",
                        &[&BinaryUuid(owner), &item],
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("inserting owner {}: {}", uuid_text(owner), describe(&e))
                    });
            }
            1 => {
                let sql = format!(
                    "INSERT INTO items_uuid (owner, item) VALUES ('{}', '{item}')",
                    uuid_text(owner)
                );
                run(&client, &sql).await;
            }
            _ => {
                // Upper case and typed: still the same 16 bytes.
                let sql = format!(
                    "INSERT INTO items_uuid (item, owner) VALUES ('{item}', uuid '{}')",
                    uuid_text(owner).to_uppercase()
                );
                run(&client, &sql).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_lands_on_the_shard_its_slot_maps_to() {
    let fx = fixture().await;

    // users: 1,000 literal INSERTs (including negative keys) and 1,000 with parameters.
    let literal_ids: Vec<i64> = (PLACED_IDS..PLACED_IDS + 900).chain(-100..0).collect();
    let param_ids: Vec<i64> = (PLACED_IDS + 1_000..PLACED_IDS + 2_000).collect();
    // orders: 60 multi-row INSERTs of 10 rows, each batch on one shard.
    let mut batches = Vec::new();
    for shard in 0..2 {
        let ids = ids_on(shard, PLACED_IDS + 10_000, 300);
        batches.extend(ids.chunks(10).map(<[i64]>::to_vec));
    }
    // accounts_text: 400 text keys, some with quotes and non-ASCII letters.
    let emails: Vec<String> = (0..400)
        .map(|i| match i % 3 {
            0 => format!("{PLACED}-user{i}@example.com"),
            1 => format!("{PLACED}-o'neil{i}@example.com"),
            _ => format!("{PLACED}-ünïcødé{i}"),
        })
        .collect();
    // items_uuid: 400 UUID keys.
    let owners: Vec<[u8; 16]> = (0..400).map(|i| uuid(PLACED, i)).collect();

    let (a, b, c, d, e) = tokio::join!(
        fx.connect(),
        fx.connect(),
        fx.connect(),
        fx.connect(),
        fx.connect()
    );
    tokio::join!(
        insert_users_with_literals(a, literal_ids.clone()),
        insert_users_with_parameters(b, param_ids.clone()),
        insert_orders_multi_row(c, batches.clone()),
        insert_text_keys(d, emails.clone()),
        insert_uuid_keys(e, owners.clone()),
    );

    let users: BTreeMap<String, usize> = literal_ids
        .iter()
        .chain(&param_ids)
        .map(|&id| (id.to_string(), shard_of_id(id)))
        .collect();
    assert_eq!(users.len(), 2_000);
    let select = format!("SELECT user_id::text FROM users WHERE name LIKE '{PLACED}-%'");
    assert_placed(&fx, "users", &select, &users).await;

    let orders: BTreeMap<String, usize> = batches
        .iter()
        .flatten()
        .map(|&id| (id.to_string(), shard_of_id(id)))
        .collect();
    assert_eq!(orders.len(), 600);
    let select = format!("SELECT user_id::text FROM orders WHERE note = '{PLACED}-multi'");
    assert_placed(&fx, "orders", &select, &orders).await;

    let accounts: BTreeMap<String, usize> = emails
        .iter()
        .map(|e| (e.clone(), shard_of(&KeyValue::Text(e.clone()))))
        .collect();
    let select = format!("SELECT email FROM accounts_text WHERE name LIKE '{PLACED}-%'");
    assert_placed(&fx, "accounts_text", &select, &accounts).await;

    let items: BTreeMap<String, usize> = owners
        .iter()
        .map(|&o| (uuid_text(o), shard_of(&KeyValue::Uuid(o))))
        .collect();
    let select = format!("SELECT owner::text FROM items_uuid WHERE item LIKE '{PLACED}-%'");
    assert_placed(&fx, "items_uuid", &select, &items).await;

    // Both shards got a fair share, so the check above compared real placements.
    let on_s1 = users.values().filter(|&&s| s == 1).count();
    assert!((500..1_500).contains(&on_s1), "{on_s1} of 2000 users on s1");
}

/// A driver may declare a key parameter's type itself (Parse carries its type): a float8 bound
/// to a bigint key is the same key to PostgreSQL, so the row must land on that key's shard (or
/// the statement be refused), never on the shard of the float's bits read as an integer.
#[tokio::test]
async fn a_key_parameter_declared_as_float_lands_on_its_keys_shard() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let insert = client
        .prepare_typed(
            "INSERT INTO users (user_id, name) VALUES ($1, 'float-key')",
            &[Type::FLOAT8],
        )
        .await
        .unwrap();
    for id in 7_100_000..7_100_016_i64 {
        match client.execute(&insert, &[&(id as f64)]).await {
            Ok(_) => {
                let shard = shard_of_id(id);
                assert!(
                    user_exists_on(&fx, shard, id).await,
                    "user {id} is missing on s{shard}"
                );
                assert!(
                    !user_exists_on(&fx, 1 - shard, id).await,
                    "user {id} landed on s{}",
                    1 - shard
                );
            }
            // A clear refusal is acceptable too.
            Err(e) => {
                let (code, message) = db_error(&e);
                assert!(
                    code.starts_with("22") || code == "0A000",
                    "{code}: {message}"
                );
            }
        }
    }
}

/// `$1::text::uuid` with a text parameter: the key is the UUID the text spells.
#[tokio::test]
async fn a_uuid_key_bound_as_text_lands_on_its_keys_shard() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let owners: Vec<[u8; 16]> = (0..16).map(|i| uuid("uuid-as-text", i)).collect();
    for &owner in &owners {
        client
            .execute(
                "INSERT INTO items_uuid (owner, item) VALUES ($1::text::uuid, 'uuid-as-text')",
                &[&uuid_text(owner)],
            )
            .await
            .unwrap_or_else(|e| panic!("inserting owner {}: {}", uuid_text(owner), describe(&e)));
    }
    let expected: BTreeMap<String, usize> = owners
        .iter()
        .map(|&o| (uuid_text(o), shard_of(&KeyValue::Uuid(o))))
        .collect();
    let select = "SELECT owner::text FROM items_uuid WHERE item = 'uuid-as-text'";
    assert_placed(&fx, "items_uuid", select, &expected).await;
}

// ---------------------------------------------------------------------------------------------
// Reads: replicas unless they must not

#[tokio::test]
async fn reads_by_key_are_served_by_the_owning_shards_replica() {
    let fx = fixture().await;
    let client = fx.connect().await;
    // Rows are written by another client: the reader's own writes would be read from the
    // primary until the watch of replay positions saw the replica replay them.
    let writer = fx.connect().await;
    let ids: Vec<i64> = ids_on(0, 2_000_000, 5)
        .into_iter()
        .chain(ids_on(1, 2_000_000, 5))
        .collect();
    for &id in &ids {
        run(
            &writer,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'reader-{id}')"),
        )
        .await;
    }
    fx.wait_for_replay().await;

    let by_param = client
        .prepare("SELECT inet_server_port(), name FROM users WHERE user_id = $1")
        .await
        .unwrap();
    for &id in &ids {
        let shard = shard_of_id(id);
        let row = client.query_one(&by_param, &[&id]).await.unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            i32::from(fx.replica_port(shard)),
            "user {id} read with $1"
        );
        assert_eq!(row.get::<_, String>(1), format!("reader-{id}"));

        let sql = format!("SELECT inet_server_port(), lower(name) FROM users u WHERE u.user_id = {id} AND now() > '2000-01-01'");
        let rows = run(&client, &sql).await;
        assert_eq!(rows.len(), 1, "{sql}");
        assert_eq!(
            rows[0][0],
            Some(fx.replica_port(shard).to_string()),
            "{sql}"
        );
        assert_eq!(rows[0][1], Some(format!("reader-{id}")));
    }

    // Text and UUID keys, bound as parameters.
    let emails: Vec<String> = (0..6).map(|i| format!("reader-{i}@example.com")).collect();
    let owners: Vec<[u8; 16]> = (0..6).map(|i| uuid("reader", i)).collect();
    for (email, &owner) in emails.iter().zip(&owners) {
        let sql = format!("INSERT INTO accounts_text (email, name) VALUES ('{email}', 'reader')");
        run(&writer, &sql).await;
        let sql = format!(
            "INSERT INTO items_uuid (owner, item) VALUES ('{}', 'reader')",
            uuid_text(owner)
        );
        run(&writer, &sql).await;
    }
    fx.wait_for_replay().await;
    for email in &emails {
        let shard = shard_of(&KeyValue::Text(email.clone()));
        let row = client
            .query_one(
                "SELECT inet_server_port(), email FROM accounts_text WHERE email = $1",
                &[email],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            i32::from(fx.replica_port(shard)),
            "{email}"
        );
        assert_eq!(&row.get::<_, String>(1), email);
    }
    for &owner in &owners {
        let shard = shard_of(&KeyValue::Uuid(owner));
        let row = client
            .query_one(
                "SELECT inet_server_port(), owner::text FROM items_uuid WHERE owner = $1",
                &[&BinaryUuid(owner)],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            i32::from(fx.replica_port(shard)),
            "{}",
            uuid_text(owner)
        );
        assert_eq!(row.get::<_, String>(1), uuid_text(owner));
    }
}

#[tokio::test]
async fn reads_after_a_write_in_the_same_transaction_are_served_by_the_primary() {
    let fx = fixture().await;
    let client = fx.connect().await;
    for shard in 0..2 {
        let id = id_on(shard, 2_100_000);
        run(&client, "BEGIN").await;
        run(
            &client,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'rw-{id}')"),
        )
        .await;
        let rows = run(
            &client,
            &format!("SELECT inet_server_port(), name FROM users WHERE user_id = {id}"),
        )
        .await;
        assert_eq!(
            rows,
            vec![vec![
                Some(fx.primary_port(shard).to_string()),
                Some(format!("rw-{id}"))
            ]],
            "the transaction's own write is read back from s{shard}'s primary"
        );
        run(&client, "COMMIT").await;
    }
}

#[tokio::test]
async fn reads_calling_volatile_functions_are_served_by_the_primary() {
    let fx = fixture().await;
    let client = fx.connect().await;
    // A client that wrote nothing and calls no volatile function (one may write: the client
    // calling one reads that shard from the primary until a replica replayed it).
    let plain = fx.connect().await;
    let ids = [id_on(0, 2_200_000), id_on(1, 2_200_000)];
    for id in ids {
        run(
            &client,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'volatile-{id}')"),
        )
        .await;
    }
    fx.wait_for_replay().await;
    for id in ids {
        let shard = shard_of_id(id);
        let sql = format!(
            "SELECT inet_server_port(), nextval('routing_seq') FROM users WHERE user_id = {id}"
        );
        assert_eq!(
            port_of(&client, &sql).await,
            fx.primary_port(shard),
            "{sql}"
        );
        let sql = format!("SELECT inet_server_port(), random() FROM users WHERE user_id = {id}");
        assert_eq!(
            port_of(&client, &sql).await,
            fx.primary_port(shard),
            "{sql}"
        );
        // The same read without the volatile call goes to the replica.
        let sql = format!("SELECT inet_server_port() FROM users WHERE user_id = {id}");
        assert_eq!(port_of(&plain, &sql).await, fx.replica_port(shard), "{sql}");
    }
}

#[tokio::test]
async fn a_read_only_transaction_reads_from_the_replica() {
    let fx = fixture().await;
    let client = fx.connect().await;
    // Rows are written by another client (the reader's own writes would be read from the
    // primary until the replica was seen to replay them).
    let writer = fx.connect().await;
    let ids = [id_on(0, 2_300_000), id_on(1, 2_300_000)];
    for id in ids {
        run(
            &writer,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'ro-{id}')"),
        )
        .await;
    }
    fx.wait_for_replay().await;
    for id in ids {
        let shard = shard_of_id(id);
        run(&client, "BEGIN READ ONLY").await;
        let rows = run(
            &client,
            &format!("SELECT inet_server_port(), name FROM users WHERE user_id = {id}"),
        )
        .await;
        assert_eq!(
            rows,
            vec![vec![
                Some(fx.replica_port(shard).to_string()),
                Some(format!("ro-{id}"))
            ]]
        );
        // Still the same server connection: the replica's.
        assert_eq!(
            port_of(&client, "SELECT inet_server_port()").await,
            fx.replica_port(shard)
        );
        run(&client, "COMMIT").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Keyless statements

#[tokio::test]
async fn a_keyless_write_is_refused_naming_the_key_and_the_client_stays_usable() {
    let fx = fixture().await;
    let client = fx.connect().await;
    // Harmless if it ran anyway (no row has this name): it must not run at all.
    let (code, message) = refused(
        &client,
        "UPDATE users SET name = 'x' WHERE name = 'no such name'",
    )
    .await;
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("user_id"),
        "the message names the key column: {message}"
    );
    assert_usable(&client).await;

    let (code, message) = refused(
        &client,
        "DELETE FROM accounts_text WHERE name = 'no such name'",
    )
    .await;
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("email"),
        "the message names the key column: {message}"
    );
    assert_usable(&client).await;

    // The same through the extended protocol.
    let err = client
        .execute(
            "UPDATE orders SET note = $1 WHERE note = 'no such note'",
            &[&"x"],
        )
        .await
        .expect_err("a keyless UPDATE with parameters is refused");
    let (code, message) = db_error(&err);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("user_id"), "{message}");
    assert_usable(&client).await;
}

#[tokio::test]
async fn a_keyless_aggregate_that_cannot_be_merged_is_refused() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let (code, message) = refused(&client, "SELECT count(DISTINCT user_id) FROM users").await;
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("shard key"), "{message}");
    assert_usable(&client).await;

    let err = client
        .query(
            "SELECT count(DISTINCT owner) FROM items_uuid WHERE item = $1",
            &[&"x"],
        )
        .await
        .expect_err("a keyless count(DISTINCT) with parameters is refused");
    assert_eq!(db_error(&err).0, "0A000");
    assert_usable(&client).await;
}

#[tokio::test]
async fn set_pgshard_shard_routes_keyless_statements_until_reset() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let keyless = "SELECT inet_server_port(), count(DISTINCT name) FROM users";
    run(&client, "SET pgshard.shard = 's1'").await;
    assert_eq!(port_of(&client, keyless).await, fx.replica_port(1));
    // Writes follow the override too, to the primary.
    run(
        &client,
        "UPDATE users SET name = 'x' WHERE name = 'no such name'",
    )
    .await;
    run(&client, "RESET pgshard.shard").await;
    assert_eq!(refused(&client, keyless).await.0, "0A000");

    run(&client, "SET pgshard.shard = 's0'").await;
    assert_eq!(port_of(&client, keyless).await, fx.replica_port(0));
    run(&client, "RESET pgshard.shard").await;
    assert_eq!(refused(&client, keyless).await.0, "0A000");
}

#[tokio::test]
async fn set_pgshard_shard_key_routes_keyless_statements_to_the_keys_shard() {
    assert_eq!(
        shard_of_id(42),
        1,
        "SHARDING.md: key 42 lives on the second shard"
    );
    let fx = fixture().await;
    let client = fx.connect().await;
    let keyless = "SELECT inet_server_port(), count(DISTINCT name) FROM users";
    run(&client, "SET pgshard.shard_key = 42").await;
    assert_eq!(port_of(&client, keyless).await, fx.replica_port(1));
    run(&client, "SET pgshard.shard_key = 1").await;
    assert_eq!(port_of(&client, keyless).await, fx.replica_port(0));
    run(&client, "RESET pgshard.shard_key").await;
    assert_eq!(refused(&client, keyless).await.0, "0A000");
}

#[tokio::test]
async fn a_leading_shard_key_comment_routes_a_keyless_statement() {
    assert_eq!(
        shard_of_id(1),
        0,
        "SHARDING.md: key 1 lives on the first shard"
    );
    let fx = fixture().await;
    let client = fx.connect().await;
    let sql =
        "/* pgshard: shard_key=1 */ SELECT inet_server_port(), count(DISTINCT name) FROM users";
    assert_eq!(port_of(&client, sql).await, fx.replica_port(0));
    let sql =
        "/* pgshard: shard_key=42 */ SELECT inet_server_port(), count(DISTINCT name) FROM users";
    assert_eq!(port_of(&client, sql).await, fx.replica_port(1));
    // The hint holds for that statement only.
    assert_eq!(
        refused(&client, "SELECT count(DISTINCT user_id) FROM users")
            .await
            .0,
        "0A000"
    );
}

/// tokio-postgres closes a dropped statement with Close + Sync and sends the next query right
/// behind them: what pgshard answers itself (a refusal, `SET pgshard.*`) must reach the client
/// after the responses owed for those earlier messages, or the client cannot match them up.
#[tokio::test]
async fn pgshard_answers_come_after_the_responses_owed_for_earlier_messages() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let read = "SELECT name FROM users WHERE user_id = $1";

    client.query(read, &[&1_i64]).await.unwrap();
    let (code, message) = refused(
        &client,
        "UPDATE users SET name = 'x' WHERE name = 'no such name'",
    )
    .await;
    assert_eq!(code, "0A000", "{message}");

    client.query(read, &[&1_i64]).await.unwrap();
    run(&client, "SET pgshard.shard = 's1'").await;
    assert_eq!(
        port_of(
            &client,
            "SELECT inet_server_port(), count(DISTINCT name) FROM users"
        )
        .await,
        fx.replica_port(1)
    );

    client.query(read, &[&1_i64]).await.unwrap();
    run(&client, "RESET pgshard.shard").await;
    assert_usable(&client).await;
}

// ---------------------------------------------------------------------------------------------
// Transactions

async fn user_exists_on(fx: &Fixture, shard: usize, id: i64) -> bool {
    let select = format!("SELECT user_id::text FROM users WHERE user_id = {id}");
    !texts_on(fx, shard, &select).await.is_empty()
}

#[tokio::test]
async fn a_transaction_reaching_a_second_shard_is_refused_naming_both() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let (on_s0, on_s1) = (id_on(0, 3_000_000), id_on(1, 3_000_000));
    run(&client, "BEGIN").await;
    run(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({on_s0}, 'cross')"),
    )
    .await;
    let (code, message) = refused(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({on_s1}, 'cross')"),
    )
    .await;
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("s0") && message.contains("s1"),
        "names both shards: {message}"
    );
    run(&client, "ROLLBACK").await;
    assert_usable(&client).await;
    for shard in 0..2 {
        for id in [on_s0, on_s1] {
            assert!(
                !user_exists_on(&fx, shard, id).await,
                "user {id} committed on s{shard}"
            );
        }
    }
}

#[tokio::test]
async fn a_transaction_reaching_a_second_shard_with_parameters_is_refused() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let (on_s0, on_s1) = (id_on(0, 3_100_000), id_on(1, 3_100_000));
    let insert = client
        .prepare("INSERT INTO users (user_id, name) VALUES ($1, 'cross-param')")
        .await
        .unwrap();
    run(&client, "BEGIN").await;
    client.execute(&insert, &[&on_s0]).await.unwrap();
    let err = client
        .execute(&insert, &[&on_s1])
        .await
        .expect_err("the second shard is refused");
    let (code, message) = db_error(&err);
    assert_eq!(code, "0A000", "{message}");
    assert!(
        message.contains("s0") && message.contains("s1"),
        "names both shards: {message}"
    );
    run(&client, "ROLLBACK").await;
    assert_usable(&client).await;
    for shard in 0..2 {
        for id in [on_s0, on_s1] {
            assert!(
                !user_exists_on(&fx, shard, id).await,
                "user {id} committed on s{shard}"
            );
        }
    }
}

/// In PostgreSQL any error inside a transaction block aborts it, and a COMMIT then rolls back.
/// A refused statement must not leave the transaction committable with half of its work.
#[tokio::test]
async fn commit_after_a_refused_cross_shard_statement_commits_nothing() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let (on_s0, on_s1) = (id_on(0, 3_200_000), id_on(1, 3_200_000));
    run(&client, "BEGIN").await;
    run(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({on_s0}, 'cross-commit')"),
    )
    .await;
    let (code, _) = refused(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({on_s1}, 'cross-commit')"),
    )
    .await;
    assert_eq!(code, "0A000");
    // PostgreSQL answers COMMIT of a failed transaction with ROLLBACK; either way nothing stays.
    let _ = simple_rows(&client, "COMMIT").await;
    assert_usable(&client).await;
    for shard in 0..2 {
        for id in [on_s0, on_s1] {
            assert!(
                !user_exists_on(&fx, shard, id).await,
                "user {id} was committed on s{shard} although its transaction got an error"
            );
        }
    }
}

#[tokio::test]
async fn a_transaction_runs_on_the_shard_of_its_first_statement() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let id = id_on(1, 3_300_000);
    run(&client, "BEGIN").await;
    run(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'held-begin')"),
    )
    .await;
    // Statements naming no table stay on the transaction's server connection.
    assert_eq!(
        port_of(&client, "SELECT inet_server_port()").await,
        fx.primary_port(1)
    );
    run(&client, "COMMIT").await;
    assert!(user_exists_on(&fx, 1, id).await, "the row is on s1");
    assert!(
        !user_exists_on(&fx, 0, id).await,
        "the row is not on the default shard"
    );
}

#[tokio::test]
async fn a_transaction_of_prepared_statements_runs_on_its_keys_shard() {
    let fx = fixture().await;
    let mut client = fx.connect().await;
    for shard in 0..2 {
        let id = id_on(shard, 3_400_000);
        // tokio-postgres sends BEGIN as a simple query, then Parse/Describe/Sync for the INSERT
        // before its Bind: the Describe must not pin the transaction to the default shard.
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO users (user_id, name) VALUES ($1, 'held-begin-ext')",
            &[&id],
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "INSERT of user {id} (s{shard}) in a transaction: {}",
                describe(&e)
            )
        });
        let port: i32 = tx
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(port, i32::from(fx.primary_port(shard)));
        tx.commit().await.unwrap();
        assert!(
            user_exists_on(&fx, shard, id).await,
            "user {id} is on s{shard}"
        );
        assert!(
            !user_exists_on(&fx, 1 - shard, id).await,
            "user {id} is not on s{}",
            1 - shard
        );
    }
}

#[tokio::test]
async fn an_empty_transaction_commits_and_rolls_back() {
    let fx = fixture().await;
    let client = fx.connect().await;
    run(&client, "BEGIN").await;
    run(&client, "COMMIT").await;
    run(&client, "BEGIN").await;
    run(&client, "ROLLBACK").await;
    run(&client, "START TRANSACTION READ ONLY").await;
    run(&client, "END").await;
    assert_usable(&client).await;
    // And a real transaction afterwards still works.
    let id = id_on(0, 3_500_000);
    run(&client, "BEGIN").await;
    run(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'after-empty')"),
    )
    .await;
    run(&client, "COMMIT").await;
    assert!(user_exists_on(&fx, 0, id).await);
}

// ---------------------------------------------------------------------------------------------
// Health

/// Where the replica-stop test is when a read is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    Stopped,
    Done,
}

/// Clients reading concurrently while a replica stops.
const READERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_replica_loses_no_reads() {
    let fx = exclusive_fixture().await;
    let writer = fx.connect().await;
    let ids: Vec<i64> = ids_on(0, 4_000_000, 5)
        .into_iter()
        .chain(ids_on(1, 4_000_000, 5))
        .collect();
    for &id in &ids {
        run(
            &writer,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'health-{id}')"),
        )
        .await;
    }
    fx.wait_for_replay().await;

    // Readers read back to back, so reads are in flight when the replica goes down.
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Before);
    let mut readers = Vec::new();
    for r in 0..READERS {
        let reader = fx.connect().await;
        let (ids, phase) = (ids.clone(), phase_rx.clone());
        readers.push(tokio::spawn(async move {
            let select = reader
                .prepare("SELECT inet_server_port(), name FROM users WHERE user_id = $1")
                .await
                .expect("prepare");
            let mut errors = Vec::new();
            // (id, port, phase when the read was sent)
            let mut served = Vec::new();
            for i in r.. {
                let sent = *phase.borrow();
                if sent == Phase::Done {
                    break;
                }
                let id = ids[i % ids.len()];
                match reader.query_one(&select, &[&id]).await {
                    Ok(row) => {
                        let name: String = row.get(1);
                        assert_eq!(name, format!("health-{id}"), "the right row");
                        served.push((id, row.get::<_, i32>(0), sent));
                    }
                    Err(e) => errors.push(format!("reading user {id}: {}", describe(&e))),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (errors, served)
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let s0 = fx.clusters[0];
    let stopped = tokio::task::spawn_blocking(move || s0.stop_replica(0))
        .await
        .unwrap();
    phase_tx.send(Phase::Stopped).unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    phase_tx.send(Phase::Done).unwrap();
    let (mut errors, mut served) = (Vec::new(), Vec::new());
    for reader in readers {
        let (e, s) = tokio::time::timeout(HANG_GUARD, reader)
            .await
            .expect("the reads finish")
            .expect("the read task");
        errors.extend(e);
        served.extend(s);
    }

    stopped.expect("stopping s0's replica");
    let restart = tokio::task::spawn_blocking(move || s0.start_replica(0))
        .await
        .unwrap();
    restart.expect("restarting s0's replica");

    let reads = errors.len() + served.len();
    assert!(
        errors.is_empty(),
        "{} of {reads} reads failed, the first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let (primary, replica) = (i32::from(fx.primary_port(0)), i32::from(fx.replica_port(0)));
    let s0_after: Vec<i32> = served
        .iter()
        .filter(|&&(id, _, sent)| sent == Phase::Stopped && shard_of_id(id) == 0)
        .map(|(_, port, _)| *port)
        .collect();
    assert!(!s0_after.is_empty(), "some s0 reads ran after the stop");
    assert!(
        s0_after.iter().all(|&p| p == primary),
        "after its replica stopped, s0's reads went to its primary ({primary}): {s0_after:?}"
    );
    assert!(served
        .iter()
        .any(|&(id, p, sent)| sent == Phase::Before && shard_of_id(id) == 0 && p == replica));

    // Once back, the replica serves reads again.
    let client = fx.connect().await;
    let sql = format!(
        "SELECT inet_server_port() FROM users WHERE user_id = {}",
        ids[0]
    );
    let mut port = 0;
    for _ in 0..100 {
        port = port_of(&client, &sql).await;
        if port == fx.replica_port(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        port,
        fx.replica_port(0),
        "the restarted replica is back in the read rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_fails_its_shards_writes_while_other_shards_work() {
    let fx = exclusive_fixture().await;
    let client = fx.connect().await;
    let (on_s0, on_s1) = (ids_on(0, 4_100_000, 10), ids_on(1, 4_100_000, 10));
    // Warm both shards' pools, so the stop also breaks connections the pools hold (from
    // another client: `client` then has no write of its own on s1 to wait for).
    let warm = fx.connect().await;
    run(
        &warm,
        &format!(
            "INSERT INTO users (user_id, name) VALUES ({}, 'primary-down')",
            on_s0[0]
        ),
    )
    .await;
    run(
        &warm,
        &format!(
            "INSERT INTO users (user_id, name) VALUES ({}, 'primary-down')",
            on_s1[0]
        ),
    )
    .await;
    fx.wait_for_replay().await;

    let s1 = fx.clusters[1];
    tokio::task::spawn_blocking(move || s1.stop_primary())
        .await
        .unwrap()
        .expect("stopping s1's primary");

    let mut outcome = Ok(());
    for i in 1..6 {
        let write_s1 = format!(
            "INSERT INTO users (user_id, name) VALUES ({}, 'primary-down')",
            on_s1[i]
        );
        let (code, message) = refused(&client, &write_s1).await;
        if !code.starts_with("08") {
            outcome = Err(format!("write {i} to s1: SQLSTATE {code}: {message}"));
            break;
        }
        // The other shard keeps taking writes, and s1's replica keeps serving reads.
        run(
            &client,
            &format!(
                "INSERT INTO users (user_id, name) VALUES ({}, 'primary-down')",
                on_s0[i]
            ),
        )
        .await;
        let read_s1 = format!(
            "SELECT inet_server_port() FROM users WHERE user_id = {}",
            on_s1[0]
        );
        match simple_rows(&client, &read_s1).await {
            Ok(rows) if rows == vec![vec![Some(fx.replica_port(1).to_string())]] => {}
            other => {
                outcome = Err(format!(
                    "read from s1's replica while its primary is down: {other:?}"
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    tokio::task::spawn_blocking(move || s1.start_primary())
        .await
        .unwrap()
        .expect("restarting s1's primary");
    fx.wait_for_replay().await;
    outcome.unwrap();

    // Once the primary is back, its writes work again.
    let write = format!(
        "INSERT INTO users (user_id, name) VALUES ({}, 'primary-down')",
        on_s1[9]
    );
    let mut last = None;
    for _ in 0..100 {
        match simple_rows(&client, &write).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(describe(&e)),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, None, "writes to s1 resume once its primary is back");
    assert!(user_exists_on(&fx, 1, on_s1[9]).await);
}

// ---------------------------------------------------------------------------------------------
// pgshard locate

/// Runs `pgshard locate --config FILE ARGS..` and returns the shard it names.
fn locate(config: &std::path::Path, args: &[&str]) -> usize {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .arg("locate")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("pgshard locate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "locate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shard = stdout
        .trim()
        .rsplit_once("-> shard ")
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_else(|| panic!("locate {args:?} printed {stdout:?}"));
    match shard.as_str() {
        "s0" => 0,
        "s1" => 1,
        other => panic!("locate {args:?} named shard {other:?}"),
    }
}

#[tokio::test]
async fn pgshard_locate_agrees_with_where_rows_landed() {
    let fx = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgshard.toml");
    std::fs::write(&config, two_shard_config(fx.clusters)).unwrap();
    let client = fx.connect().await;

    let ids: Vec<i64> = (5_000_000..5_000_012)
        .chain([-5_000_001, -5_000_002])
        .collect();
    for &id in &ids {
        client
            .execute(
                "INSERT INTO users (user_id, name) VALUES ($1, 'located')",
                &[&id],
            )
            .await
            .unwrap();
    }
    for &id in &ids {
        let shard = locate(&config, &[&id.to_string()]);
        assert!(
            user_exists_on(&fx, shard, id).await,
            "user {id}: locate says s{shard}"
        );
        assert!(
            !user_exists_on(&fx, 1 - shard, id).await,
            "user {id} is only on s{shard}"
        );
    }

    let emails: Vec<String> = (0..8).map(|i| format!("located-{i}@example.com")).collect();
    for email in &emails {
        client
            .execute(
                "INSERT INTO accounts_text (email, name) VALUES ($1, 'located')",
                &[email],
            )
            .await
            .unwrap();
    }
    let select = "SELECT email FROM accounts_text WHERE name = 'located'";
    let found = [
        texts_on(&fx, 0, select).await,
        texts_on(&fx, 1, select).await,
    ];
    for email in &emails {
        let shard = locate(&config, &["--type", "text", email]);
        assert!(
            found[shard].contains(email) && !found[1 - shard].contains(email),
            "{email}: s{shard}"
        );
        assert_eq!(locate(&config, &["--table", "accounts_text", email]), shard);
    }

    let owners: Vec<String> = (0..8).map(|i| uuid_text(uuid("located", i))).collect();
    for owner in &owners {
        run(
            &client,
            &format!("INSERT INTO items_uuid (owner, item) VALUES ('{owner}', 'located')"),
        )
        .await;
    }
    let select = "SELECT owner::text FROM items_uuid WHERE item = 'located'";
    let found = [
        texts_on(&fx, 0, select).await,
        texts_on(&fx, 1, select).await,
    ];
    for owner in &owners {
        let shard = locate(&config, &["--type", "uuid", owner]);
        assert!(
            found[shard].contains(owner) && !found[1 - shard].contains(owner),
            "{owner}: s{shard}"
        );
    }
    // Both shards were exercised.
    let shards: BTreeSet<usize> = ids.iter().map(|&id| shard_of_id(id)).collect();
    assert_eq!(shards.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Text the parser cannot read

fn assert_unparseable(sql: &str) {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    assert!(
        Parser::parse_sql(&PostgreSqlDialect {}, sql).is_err(),
        "the test needs text sqlparser rejects: {sql}"
    );
}

#[tokio::test]
async fn statements_the_parser_cannot_read_run_on_the_default_shard() {
    let fx = fixture().await;
    let client = fx.connect().await;

    // Valid PostgreSQL (GROUP BY DISTINCT, PostgreSQL 14) that sqlparser does not know.
    let select = "SELECT inet_server_port() GROUP BY DISTINCT 1";
    assert_unparseable(select);
    assert_eq!(port_of(&client, select).await, fx.primary_port(0));
    let rows = client
        .query(select, &[])
        .await
        .expect("the same through the extended protocol");
    assert_eq!(rows[0].get::<_, i32>(0), i32::from(fx.primary_port(0)));

    // A row lock sqlparser does not know: the key is not seen, so the default shard runs it.
    let id = id_on(0, 6_000_000);
    run(
        &client,
        &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'unparsed')"),
    )
    .await;
    let lock = format!("SELECT name FROM users WHERE user_id = {id} FOR KEY SHARE");
    assert_unparseable(&lock);
    assert_eq!(
        run(&client, &lock).await,
        vec![vec![Some("unparsed".to_string())]]
    );

    // A DO block writing an unsharded table: it lands on the default shard.
    let block = "DO $$ BEGIN INSERT INTO notes VALUES (6000001, 'from a DO block'); END $$";
    assert_unparseable(block);
    run(&client, block).await;
    let select = "SELECT body FROM notes WHERE id = 6000001";
    assert_eq!(
        texts_on(&fx, 0, select).await.len(),
        1,
        "the DO block ran on s0"
    );
    assert!(texts_on(&fx, 1, select).await.is_empty(), "and not on s1");
}

#[tokio::test]
async fn statements_the_parser_cannot_read_follow_the_shard_overrides() {
    let fx = fixture().await;
    let client = fx.connect().await;
    let select = "SELECT inet_server_port() GROUP BY DISTINCT 1";
    assert_unparseable(select);
    let hinted = format!("/* pgshard: shard_key=42 */ {select}");
    assert_eq!(port_of(&client, &hinted).await, fx.primary_port(1));
    run(&client, "SET pgshard.shard = 's1'").await;
    assert_eq!(port_of(&client, select).await, fx.primary_port(1));
    run(&client, "RESET pgshard.shard").await;
    assert_eq!(port_of(&client, select).await, fx.primary_port(0));
}

#[tokio::test]
async fn prepared_keyed_reads_in_a_transaction_run_on_their_keys_shard() {
    let fx = fixture().await;
    let mut client = fx.connect().await;
    let read = "SELECT inet_server_port() FROM users WHERE user_id = $1";
    let prepared_outside = client.prepare(read).await.unwrap();
    for shard in 0..2 {
        let id = id_on(shard, 7_700_000);
        client
            .simple_query(&format!(
                "INSERT INTO users (user_id, name) VALUES ({id}, 'tx-read')"
            ))
            .await
            .unwrap();
        // A statement prepared inside the transaction (Parse/Describe/Sync, then Bind/Execute).
        let tx = client.transaction().await.unwrap();
        let port: i32 = tx
            .query_one(read, &[&id])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "read of user {id} (s{shard}) in a transaction: {}",
                    describe(&e)
                )
            })
            .get(0);
        assert_eq!(port, i32::from(fx.primary_port(shard)));
        tx.commit().await.unwrap();
        // A statement prepared before the transaction, bound inside it.
        let tx = client.transaction().await.unwrap();
        let port: i32 = tx
            .query_one(&prepared_outside, &[&id])
            .await
            .unwrap_or_else(|e| panic!("prepared read of user {id} (s{shard}): {}", describe(&e)))
            .get(0);
        assert_eq!(port, i32::from(fx.primary_port(shard)));
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn an_extended_protocol_begin_waits_for_the_statement_that_picks_the_shard() {
    let fx = fixture().await;
    let client = fx.connect().await;
    for shard in 0..2 {
        let id = id_on(shard, 7_800_000);
        // tokio-postgres `execute` sends BEGIN over the extended protocol.
        client.execute("BEGIN", &[]).await.unwrap();
        client
            .execute(
                "INSERT INTO users (user_id, name) VALUES ($1, 'ext-begin')",
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("INSERT of user {id} (s{shard}): {}", describe(&e)));
        client.execute("COMMIT", &[]).await.unwrap();
        assert!(
            user_exists_on(&fx, shard, id).await,
            "user {id} is on s{shard}"
        );
        // An empty transaction over the extended protocol.
        client.execute("BEGIN", &[]).await.unwrap();
        client.execute("ROLLBACK", &[]).await.unwrap();
    }
    assert_usable(&client).await;
}

#[tokio::test]
async fn jdbc_transactions_run_on_their_keys_shard() {
    let jar = std::path::Path::new("/usr/share/java/postgresql.jar");
    assert!(
        jar.exists(),
        "pgJDBC is installed by .ci/run (libpostgresql-jdbc-java)"
    );
    let fx = fixture().await;
    let source: std::path::PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "clients",
        "JdbcRouting.java",
    ]
    .iter()
    .collect();
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/app?sslmode=disable",
        fx.proxy.port()
    );
    let (first_s0, first_s1) = (7_900_000i64, 7_900_001i64);
    // Keys first + 1000 * i must stay on one shard: pick starts whose 20 keys all live there.
    let start = |shard: usize, from: i64| {
        (from..)
            .find(|s| {
                (0..20).all(|i| shard_of_id(s + i * 1000) == shard) && shard_of_id(s + 999) == shard
            })
            .unwrap()
    };
    let (first_s0, first_s1) = (start(0, first_s0), start(1, first_s1 + 100));
    let run = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(&source)
        .args([&url, &first_s0.to_string(), &first_s1.to_string(), "jd"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("java finishes")
        .expect("java runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "JdbcRouting failed:\n{report}");
    for shard in 0..2 {
        let names = texts_on(&fx, shard, "SELECT name FROM countries WHERE code = 'jd'").await;
        assert_eq!(
            names,
            BTreeSet::from(["JDBC".to_string()]),
            "the reference row on s{shard}"
        );
    }
    for (shard, first) in [(0, first_s0), (1, first_s1)] {
        assert!(
            user_exists_on(&fx, shard, first).await,
            "user {first} is on s{shard}"
        );
        assert!(
            !user_exists_on(&fx, 1 - shard, first).await,
            "user {first} is not on s{}",
            1 - shard
        );
    }
}
