//! Shared harness of the integration tests (`mod support;` in each `tests/*.rs`): one local
//! PostgreSQL cluster per test binary, a base config pointing at it, and an in-process proxy;
//! for the routing tests, a second pair of clusters (one per shard) and a two-shard config.
//!
//! Clusters are started on first use and stopped by an `atexit` hook when the test process exits.
//! Tests share them, so each test must use its own tables (or, on the shard clusters, its own
//! keys); nothing here ever drops or truncates them.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use pgshard::config::Config;
use pgshard::localpg::{ClusterOptions, LocalCluster};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();

/// The cluster of this test binary (primary + 1 replica), started on first use: role `app`
/// (password `app`), databases `app` and `pgbench`, both owned by `app`.
pub fn cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| {
        let opts = ClusterOptions {
            replicas: 1,
            users: vec![("app".into(), "app".into())],
            databases: vec![
                ("app".into(), "app".into()),
                ("pgbench".into(), "app".into()),
            ],
            ..ClusterOptions::default()
        };
        let cluster = LocalCluster::start(&opts).expect("starting the test PostgreSQL cluster");
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        let registered = unsafe { libc::atexit(stop_cluster_at_exit) };
        assert_eq!(registered, 0, "atexit registration failed");
        cluster
    })
}

extern "C" fn stop_cluster_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop_shared();
    }
}

static SHARD_CLUSTERS: OnceLock<[LocalCluster; 2]> = OnceLock::new();

/// The schema created on both shards' primaries by [`shard_clusters`]: the sharded tables of
/// [`two_shard_config`], the reference table `countries`, `notes` (an unsharded table, so it
/// lives on the default shard) and a sequence `routing_seq` (for VOLATILE reads).
pub const SHARD_SCHEMA: &str = "\
    CREATE TABLE users (user_id bigint PRIMARY KEY, name text NOT NULL); \
    CREATE TABLE orders (user_id bigint NOT NULL, note text NOT NULL); \
    CREATE TABLE accounts_text (email text PRIMARY KEY, name text NOT NULL); \
    CREATE TABLE items_uuid (owner uuid NOT NULL, item text NOT NULL); \
    CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL); \
    CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL); \
    CREATE SEQUENCE routing_seq;";

/// Two independent clusters, one per shard (each a primary + 1 streaming replica, role app/app,
/// database `app` owned by it), started together on first use and stopped at process exit.
/// [`SHARD_SCHEMA`] is created (as `app`) on both primaries and replayed on their replicas
/// before this returns. Tests share these tables: each test uses its own keys.
pub fn shard_clusters() -> [&'static LocalCluster; 2] {
    let [s0, s1] = SHARD_CLUSTERS.get_or_init(|| {
        let opts = ClusterOptions {
            replicas: 1,
            users: vec![("app".into(), "app".into())],
            databases: vec![("app".into(), "app".into())],
            ..ClusterOptions::default()
        };
        let start = || {
            let cluster =
                LocalCluster::start(&opts).expect("starting a shard's PostgreSQL cluster");
            let schema = format!("SET ROLE app; {SHARD_SCHEMA}");
            cluster
                .psql(cluster.primary_port(), "app", &schema)
                .expect("creating the shard schema");
            cluster
                .wait_for_replay(Duration::from_secs(60))
                .expect("the shard's replica replays the schema");
            cluster
        };
        let clusters = start_two(start);
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        let registered = unsafe { libc::atexit(stop_shard_clusters_at_exit) };
        assert_eq!(registered, 0, "atexit registration failed");
        clusters
    });
    [s0, s1]
}

/// Runs `start` twice at once (one thread each), passing on a panic of either.
pub fn start_two(start: impl Fn() -> LocalCluster + Sync) -> [LocalCluster; 2] {
    let clusters = std::thread::scope(|scope| {
        let s0 = scope.spawn(&start);
        let s1 = scope.spawn(&start);
        [s0.join(), s1.join()]
    });
    clusters.map(|c| c.unwrap_or_else(|e| std::panic::resume_unwind(e)))
}

extern "C" fn stop_shard_clusters_at_exit() {
    if let Some(clusters) = SHARD_CLUSTERS.get() {
        for cluster in clusters {
            cluster.stop_shared();
        }
    }
}

/// [`two_shard_config`] with these tables sharded too (by its `user_id bigint` key).
pub fn two_shard_config_with(shards: [&LocalCluster; 2], tables: &[&str]) -> String {
    let mut config = two_shard_config(shards);
    for table in tables {
        config.push_str(&format!("\n[[sharding.tables]]\nname = \"{table}\"\n"));
    }
    config
}

/// The shard (0 or 1) a key lives on under [`two_shard_config`] (`s0` owns slots 0-2047, `s1`
/// 2048-4095), computed from the sharding contract, not by asking the proxy.
pub fn shard_of_key(key: &pgshard::sharding::KeyValue) -> usize {
    static MAP: OnceLock<pgshard::sharding::ShardMap> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        pgshard::sharding::ShardMap::new(&[
            ("s0".to_string(), Some("0-2047".to_string())),
            ("s1".to_string(), Some("2048-4095".to_string())),
        ])
        .expect("the test shard map is valid")
    });
    map.shard_of_key(key)
}

/// [`shard_of_key`] of a bigint key.
pub fn shard_of_id(id: i64) -> usize {
    shard_of_key(&pgshard::sharding::KeyValue::Int(id))
}

/// The `[server]`, `[pool]` and `[[users]]` sections every test config starts with: listen on any
/// free port, database `app`, transaction mode, pools of 4, user app/app.
const COMMON_HEADER: &str = r#"[server]
listen = "127.0.0.1:0"
database = "app"
pool_mode = "transaction"

[pool]
size = 4
checkout_timeout_ms = 5000

[[users]]
name = "app"
password = "app"

"#;

/// A config routing database `app` across two shards: `s0` (slots 0-2047) and `s1`
/// (2048-4095), each with its replica and `read_from` left at its default (replicas); pools of 4
/// for user app/app. Sharded tables: `users` and `orders` (key `user_id bigint`),
/// `accounts_text` (key `email text`), `items_uuid` (key `owner uuid`); reference table
/// `countries`. Ends with the last `[[shards]]` entry.
pub fn two_shard_config(shards: [&LocalCluster; 2]) -> String {
    let mut text = String::from(COMMON_HEADER);
    text.push_str(
        r#"[sharding]
key_column = "user_id"
key_type = "bigint"
reference_tables = ["countries"]

[[sharding.tables]]
name = "users"

[[sharding.tables]]
name = "orders"

[[sharding.tables]]
name = "accounts_text"
key_column = "email"
key_type = "text"

[[sharding.tables]]
name = "items_uuid"
key_column = "owner"
key_type = "uuid"
"#,
    );
    text.push_str(&shards_toml(&shards));
    text
}

/// `[[shards]]` entries `s0` (slots 0-2047) and `s1` (2048-4095) for two clusters, with their
/// replicas.
pub fn shards_toml(shards: &[&LocalCluster]) -> String {
    let mut text = String::new();
    for (i, (cluster, slots)) in shards.iter().zip(["0-2047", "2048-4095"]).enumerate() {
        let replicas = cluster
            .replica_addrs()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(
            r#"
[[shards]]
name = "s{i}"
primary = "{primary}"
replicas = [{replicas}]
slots = "{slots}"
"#,
            primary = cluster.primary_addr(),
        ));
    }
    text
}

/// A client connected straight to a server of the cluster (no proxy) as app/app, database `app`;
/// its connection task is spawned.
pub async fn connect_direct(port: u16) -> tokio_postgres::Client {
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port} as app/app: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("direct connection ended with an error: {e}");
        }
    });
    client
}

/// A config serving database `app` on `127.0.0.1:0` from one shard `s0` (the cluster's primary
/// and replica) to user app/app, with pools of 4. Ends with the `[[shards]]` entry, so a test
/// may append further `[[...]]` sections.
///
/// Reads go to the primary (`read_from = "primary"`), so a test that writes and then reads never
/// races replication; the routing tests configure replicas for reads themselves.
pub fn base_config(cluster: &LocalCluster) -> String {
    let replicas = cluster
        .replica_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{COMMON_HEADER}[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "users"

[[shards]]
name = "s0"
primary = "{primary}"
replicas = [{replicas}]
read_from = "primary"
"#,
        primary = cluster.primary_addr(),
    )
}

/// The base config of this binary's cluster with `edits` applied, each `(old, new)` replacing
/// text that must be there.
pub fn base_config_with(edits: &[(&str, &str)]) -> String {
    let mut text = base_config(cluster());
    for (old, new) in edits {
        assert!(text.contains(old), "base config lacks {old:?}");
        text = text.replacen(old, new, 1);
    }
    text
}

/// A proxy serving in the current tokio runtime; dropping it asks it to shut down.
pub struct Proxy {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Parses `config_toml`, binds 127.0.0.1:0 and runs `pgshard::server::run` on the current runtime.
pub async fn start_proxy(config_toml: &str) -> Proxy {
    let config = Config::from_toml_str(config_toml).expect("test config must be valid");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the proxy listener");
    let addr = listener.local_addr().expect("listener address");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = pgshard::server::run(config, listener, shutdown).await {
            eprintln!("proxy on {addr} stopped with an error: {e}");
        }
    });
    Proxy {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Proxy {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `postgres://user:password@127.0.0.1:PORT/app`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/app", self.port())
    }

    /// A client connected through the proxy as app/app; its connection task is spawned.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url("app", "app"), tokio_postgres::NoTls)
                .await
                .expect("connecting through the proxy as app/app");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("client connection ended with an error: {e}");
            }
        });
        client
    }

    /// Shuts the proxy down and waits until `server::run` has returned.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
