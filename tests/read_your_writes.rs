//! Reading one's own writes through the proxy, against two real shards whose streaming replicas
//! lag (`recovery_min_apply_delay`, or replay paused): a client's read after its own write never
//! misses it, its reads go back to the replica once that replica has replayed the write, and a
//! client that never wrote keeps reading from the replicas. With `read_your_writes = false` the
//! lagging replica answers without the write (which shows the lag is real).
//!
//! The tests share the clusters and the `users` table (each uses its own keys). The tests that
//! pause replay hold [`PAUSE`], so no test resumes a replay another one paused.

mod support;

use std::time::Duration;

use pgshard::localpg::LocalCluster;
use support::{shard_clusters, shard_of_id, start_proxy, two_shard_config, Proxy};
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Bounds every wait, so that a hang fails the test instead of stalling the suite. Not a
/// performance bar.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Held by the tests that pause a replica's replay.
static PAUSE: Mutex<()> = Mutex::const_new(());

/// The two shard clusters, with both replicas applying commits 300 ms late.
async fn lagging_clusters() -> [&'static LocalCluster; 2] {
    static LAGGING: OnceCell<[&'static LocalCluster; 2]> = OnceCell::const_new();
    *LAGGING
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let clusters = shard_clusters();
                for cluster in clusters {
                    let replica = cluster.replica_ports()[0];
                    let set = "ALTER SYSTEM SET recovery_min_apply_delay = '300ms'";
                    cluster
                        .psql(replica, "app", set)
                        .expect("setting the delay");
                    cluster
                        .psql(replica, "app", "SELECT pg_reload_conf()")
                        .expect("reloading the replica's config");
                }
                clusters
            })
            .await
            .expect("starting the shard clusters")
        })
        .await
}

async fn proxy(clusters: [&LocalCluster; 2], read_your_writes: bool) -> Proxy {
    let config = two_shard_config(clusters).replacen(
        "[sharding]\n",
        &format!("[sharding]\nread_your_writes = {read_your_writes}\n"),
        1,
    );
    start_proxy(&config).await
}

async fn connect(proxy: &Proxy) -> Client {
    tokio::time::timeout(HANG_GUARD, proxy.connect())
        .await
        .expect("login through the proxy within the hang guard")
}

/// The first `n` keys from `from` upwards that live on `shard`.
fn ids_on(shard: usize, from: i64, n: usize) -> Vec<i64> {
    (from..)
        .filter(|&id| shard_of_id(id) == shard)
        .take(n)
        .collect()
}

/// Rows of a simple query, as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = tokio::time::timeout(HANG_GUARD, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: no answer within the hang guard"))
        .unwrap_or_else(|e| panic!("{sql}: {e}: {:?}", e.as_db_error()));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The server port a one-row query's first column shows.
async fn port_of(client: &Client, sql: &str) -> u16 {
    let found = rows(client, sql).await;
    assert_eq!(found.len(), 1, "{sql} returns one row: {found:?}");
    found[0][0]
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: first column is not a port: {found:?}"))
}

/// Inserts user `id` (named `name`) and reads it back on the same connection, in one of several
/// ways (`how`, 0..5): simple or extended protocol, a write in an explicit transaction, a read by
/// key or a keyless read across both shards. True when the read saw the row.
async fn write_then_read(client: &Client, id: i64, name: &str, how: usize) -> bool {
    let insert = format!("INSERT INTO users (user_id, name) VALUES ({id}, '{name}')");
    let by_key = format!("SELECT name FROM users WHERE user_id = {id}");
    let keyless = format!("SELECT user_id FROM users WHERE name = '{name}'");
    let read = async {
        match how {
            0 => {
                rows(client, &insert).await;
                rows(client, &by_key).await.len()
            }
            1 => {
                rows(client, "BEGIN").await;
                rows(client, &insert).await;
                rows(client, "COMMIT").await;
                rows(client, &by_key).await.len()
            }
            2 => {
                client
                    .execute(
                        "INSERT INTO users (user_id, name) VALUES ($1, $2)",
                        &[&id, &name],
                    )
                    .await
                    .expect("extended INSERT");
                client
                    .query("SELECT name FROM users WHERE user_id = $1", &[&id])
                    .await
                    .expect("extended SELECT")
                    .len()
            }
            3 => {
                rows(client, &insert).await;
                rows(client, &keyless).await.len()
            }
            _ => {
                rows(client, &insert).await;
                client
                    .query("SELECT user_id FROM users WHERE name = $1", &[&name])
                    .await
                    .expect("extended keyless SELECT")
                    .len()
            }
        }
    };
    let seen = tokio::time::timeout(HANG_GUARD, read)
        .await
        .expect("write and read within the hang guard");
    seen == 1
}

/// Reads that missed the client's own write, out of `tries` write-then-read pairs.
async fn stale_reads(client: &Client, first_id: i64, tries: usize, tag: &str) -> usize {
    let mut stale = 0;
    for i in 0..tries {
        let id = first_id + i as i64;
        if !write_then_read(client, id, &format!("{tag}-{id}"), i % 5).await {
            stale += 1;
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_through_lagging_replicas() {
    let clusters = lagging_clusters().await;
    let proxy = proxy(clusters, true).await;
    let client = connect(&proxy).await;
    let stale = stale_reads(&client, 10_000_000, 1000, "ryw-on").await;
    assert_eq!(
        stale, 0,
        "reads on the writing connection that missed its own INSERT, of 1,000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_your_writes_a_lagging_replica_misses_the_write() {
    let clusters = lagging_clusters().await;
    let _paused = PAUSE.lock().await;
    for cluster in clusters {
        let replica = cluster.replica_ports()[0];
        cluster
            .psql(replica, "app", "SELECT pg_wal_replay_pause()")
            .expect("pausing replay");
    }
    let proxy = proxy(clusters, false).await;
    let client = connect(&proxy).await;
    let stale = stale_reads(&client, 20_000_000, 20, "ryw-off").await;
    for cluster in clusters {
        let replica = cluster.replica_ports()[0];
        cluster
            .psql(replica, "app", "SELECT pg_wal_replay_resume()")
            .expect("resuming replay");
    }
    // Every read by key and every keyless read went to a replica that replays nothing; the
    // reads after a write in an explicit transaction too (4 of every 5 tries).
    assert_eq!(
        stale, 20,
        "reads that missed the client's own INSERT, of 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_back_to_the_replica_once_it_replayed_the_write() {
    let clusters = lagging_clusters().await;
    let _paused = PAUSE.lock().await;
    let shard = 0;
    let cluster = clusters[shard];
    let (primary, replica) = (cluster.primary_port(), cluster.replica_ports()[0]);
    let proxy = proxy(clusters, true).await;
    let writer = connect(&proxy).await;
    let bystander = connect(&proxy).await;
    let id = ids_on(shard, 30_000_000, 1)[0];
    let other = ids_on(1 - shard, 30_000_000, 1)[0];
    let port =
        |key: i64| format!("SELECT inet_server_port(), count(*) FROM users WHERE user_id = {key}");
    // Before any write, both clients read from the replica.
    assert_eq!(port_of(&writer, &port(id)).await, replica);

    cluster
        .psql(replica, "app", "SELECT pg_wal_replay_pause()")
        .expect("pausing replay");
    rows(
        &writer,
        &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'ryw-back')"),
    )
    .await;
    // The replica cannot have replayed the write: the writer's reads of that shard go to the
    // primary (and see the row), its reads of the other shard and the bystander's stay on
    // replicas.
    assert_eq!(port_of(&writer, &port(id)).await, primary);
    let by_key = format!("SELECT name FROM users WHERE user_id = {id}");
    assert_eq!(rows(&writer, &by_key).await.len(), 1);
    assert_eq!(port_of(&bystander, &port(id)).await, replica);
    assert_eq!(
        port_of(&writer, &port(other)).await,
        clusters[1 - shard].replica_ports()[0]
    );
    // A keyless read: the written shard from its primary.
    let keyless = "SELECT inet_server_port(), count(*) FROM users \
                   WHERE name = 'ryw-back' GROUP BY 1 ORDER BY 1";
    // (The other shard has no such row, so only the written shard's group shows.)
    let expected = vec![vec![Some(primary.to_string()), Some("1".to_string())]];
    assert_eq!(rows(&writer, keyless).await, expected);

    cluster
        .psql(replica, "app", "SELECT pg_wal_replay_resume()")
        .expect("resuming replay");
    // Once the replica has replayed the write, the writer's reads go back to it, and see it.
    let back = async {
        loop {
            if port_of(&writer, &port(id)).await == replica {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, back)
        .await
        .expect("the writer's reads return to the replica once it has replayed the write");
    assert_eq!(rows(&writer, &by_key).await.len(), 1);
    for _ in 0..10 {
        assert_eq!(port_of(&writer, &port(id)).await, replica);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_wrote_reads_from_replicas() {
    let clusters = lagging_clusters().await;
    let proxy = proxy(clusters, true).await;
    let writer = connect(&proxy).await;
    let reader = connect(&proxy).await;
    for (i, id) in ids_on(0, 40_000_000, 20).into_iter().enumerate() {
        // Another client writes to the same shard all along (the WAL samples run).
        rows(
            &writer,
            &format!("INSERT INTO users (user_id, name) VALUES ({id}, 'ryw-reader')"),
        )
        .await;
        let sql = format!("SELECT inet_server_port(), count(*) FROM users WHERE user_id = {id}");
        assert_eq!(
            port_of(&reader, &sql).await,
            clusters[0].replica_ports()[0],
            "read {i} of a client that never wrote"
        );
    }
}
