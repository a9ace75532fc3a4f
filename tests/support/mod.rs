//! Shared harness of the integration tests (`mod support;` in each `tests/*.rs`): one local
//! PostgreSQL cluster per test binary, a base config pointing at it, and an in-process proxy.
//!
//! The cluster is started on first use and stopped by an `atexit` hook when the test process exits.
//! Tests share it, so each test must use its own tables; nothing here ever drops or truncates them.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::sync::OnceLock;

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
pub fn base_config(cluster: &LocalCluster) -> String {
    let replicas = cluster
        .replica_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "127.0.0.1:0"
database = "app"
pool_mode = "transaction"

[pool]
size = 4
checkout_timeout_ms = 5000

[[users]]
name = "app"
password = "app"

[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "users"

[[shards]]
name = "s0"
primary = "{primary}"
replicas = [{replicas}]
"#,
        primary = cluster.primary_addr(),
    )
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
