//! `pgshard demo`: starts a throw-away local PostgreSQL (primary + replica, via [`crate::localpg`])
//! with a sample `users` table, and serves it through pgshard until Ctrl-C or SIGTERM; then stops
//! PostgreSQL and removes its directory. Glue only: it must not hold protocol or routing logic,
//! and must never touch a PostgreSQL it did not start.

use std::io::Write;
use std::net::TcpListener as StdTcpListener;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::localpg::{ClusterOptions, LocalCluster};

/// Arguments of `pgshard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Port on 127.0.0.1 where pgshard accepts clients.
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
}

/// Rows in the sample `users` table.
const SAMPLE_ROWS: usize = 100;

/// Runs `pgshard demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    // Take the client port first, so a busy port fails before PostgreSQL is set up.
    let listener = bind_client_port(args.port)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    // Watch the signals before anything is started: a Ctrl-C during setup then means
    // "stop once set up" (and clean up) instead of killing us and leaving PostgreSQL behind.
    let signals = {
        let _entered = runtime.enter();
        StopSignals::watch()?
    };

    println!(
        "pgshard demo: starting a local PostgreSQL primary and replica (takes a few seconds)..."
    );
    let mut cluster = start_cluster()?;
    println!("PostgreSQL cluster directory: {}", cluster.dir().display());
    println!(
        "  primary 127.0.0.1:{}, replica 127.0.0.1:{}",
        cluster.primary_port(),
        cluster.replica_ports().first().copied().unwrap_or_default()
    );
    let config = Config::from_toml_str(&demo_config(&cluster, args.port))
        .context("the demo config is invalid")?;

    let served = runtime.block_on(serve(config, listener, args.port, signals));
    drop(runtime);

    let dir = cluster.dir().to_path_buf();
    cluster.stop();
    println!(
        "pgshard demo: stopped PostgreSQL and removed {}",
        dir.display()
    );
    served
}

fn bind_client_port(port: u16) -> anyhow::Result<StdTcpListener> {
    let listener = StdTcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {port} on 127.0.0.1 is already in use; choose another one with --port, \
                 e.g. `pgshard demo --port {}`",
                port.checked_add(1).unwrap_or(6433)
            )
        } else {
            anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}")
        }
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot make the listener non-blocking")?;
    Ok(listener)
}

/// Starts the cluster and fills the sample table, waiting until the replica has it too.
fn start_cluster() -> anyhow::Result<LocalCluster> {
    let opts = ClusterOptions {
        replicas: 1,
        users: vec![("app".into(), "app".into())],
        databases: vec![("app".into(), "app".into())],
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(&opts).context("cannot start the local PostgreSQL")?;
    let sql = format!(
        "SET ROLE app;
         CREATE TABLE users (user_id bigint PRIMARY KEY, name text, email text);
         INSERT INTO users
           SELECT i, 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, {SAMPLE_ROWS}) AS i;"
    );
    cluster
        .psql(cluster.primary_port(), "app", &sql)
        .context("cannot create the sample table")?;
    cluster
        .wait_for_replay(std::time::Duration::from_secs(60))
        .context("the replica did not catch up")?;
    Ok(cluster)
}

fn demo_config(cluster: &LocalCluster, port: u16) -> String {
    let replicas = cluster
        .replica_addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
database = "app"
pool_mode = "transaction"

[pool]
size = 10

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

/// Serves until Ctrl-C or SIGTERM.
async fn serve(
    config: Config,
    listener: StdTcpListener,
    port: u16,
    mut signals: StopSignals,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot register the listener")?;
    println!();
    println!("Connect with:");
    println!("  psql \"postgres://app:app@127.0.0.1:{port}/app\"");
    println!("and try:");
    println!("  SELECT * FROM users WHERE user_id = 42;");
    println!("  SELECT count(*) FROM users;");
    println!("Press Ctrl-C to stop.");
    println!("pgshard demo ready");
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    crate::server::run(config, listener, async move {
        signals.recv().await;
        println!("pgshard demo: shutting down...");
    })
    .await
    .context("the proxy stopped with an error")
}

/// SIGINT (Ctrl-C) and SIGTERM, watched from creation on.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Installs the handlers; must be called inside a tokio runtime.
    fn watch() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    /// Resolves when either signal arrives (or has arrived since [`StopSignals::watch`]).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
