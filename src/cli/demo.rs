//! `pgshard demo`: starts two throw-away local shards (each a PostgreSQL primary and a streaming
//! replica, via [`crate::localpg`]), creates sharded `users` and `orders` tables on both, fills them
//! through pgshard itself, shows where a few example queries were routed, and serves until Ctrl-C or
//! SIGTERM; then stops PostgreSQL and removes the demo directory. Glue only: it must not hold
//! protocol or routing logic, and must never touch a PostgreSQL it did not start.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use crate::config::Config;
use crate::localpg::{ClusterOptions, LocalCluster};
use crate::sharding::{KeyValue, ShardMap};

/// Arguments of `pgshard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Port on 127.0.0.1 where pgshard accepts clients.
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
}

/// The demo's shards: name and the slots it owns at start (`s2` none: slots move to it with
/// the command the demo prints).
const SHARDS: [(&str, &str); 3] = [("s0", "0-2047"), ("s1", "2048-4095"), ("s2", "")];
/// The slots the printed `rebalance move` gives to the empty shard.
const SLOTS_TO_MOVE: &str = "0-511";
/// Users inserted (user ids 1..=SAMPLE_USERS); user `i` gets `1 + i % 3` orders.
const SAMPLE_USERS: i64 = 1000;
/// Rows per multi-row INSERT.
const ROWS_PER_INSERT: usize = 250;
/// How long the replicas may take to replay the sample data.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "SET ROLE app;
    CREATE TABLE users (user_id bigint PRIMARY KEY, name text, email text);
    CREATE TABLE orders (
        order_id bigint NOT NULL,
        user_id bigint NOT NULL,
        amount numeric(10, 2) NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (user_id, order_id)
    );";

/// Example statements, run through the proxy before the ready line to show where they went.
/// Statements of one example run one after the other on one connection, as psql sends them.
const EXAMPLES: &[&[&str]] = &[
    &["SELECT name, inet_server_port() FROM users WHERE user_id = 42;"],
    &["SELECT name, inet_server_port() FROM users WHERE user_id = 1;"],
    &["SELECT count(*), sum(amount), inet_server_port() FROM orders WHERE user_id = 42;"],
    &[
        "BEGIN;",
        "UPDATE users SET name = name WHERE user_id = 42 RETURNING inet_server_port();",
        "ROLLBACK;",
    ],
    &["SELECT count(*) FROM users;"],
    &["SELECT user_id, sum(amount) AS total FROM orders GROUP BY user_id ORDER BY total DESC, user_id LIMIT 3;"],
    // Last: the client's own write makes its next reads of that shard wait for the replica.
    &[
        "UPDATE users SET email = 'user42@example.org' WHERE user_id = 42;",
        "SELECT email, inet_server_port() FROM users WHERE user_id = 42;",
    ],
];

/// One started shard.
struct DemoShard {
    name: &'static str,
    slots: &'static str,
    cluster: LocalCluster,
}

/// Everything the demo started, stopped and removed by [`Demo::stop`].
struct Demo {
    /// Declared before `dir` so that, when dropped, the clusters stop before it is removed.
    shards: Vec<DemoShard>,
    /// Holds both cluster directories and the config file.
    dir: tempfile::TempDir,
    config_path: PathBuf,
    port: u16,
}

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
        "pgshard demo: starting three shards, each a PostgreSQL primary and replica (takes a few seconds; s2 starts empty)..."
    );
    let demo = Demo::start(args.port)?;
    demo.print_layout();
    let config = Config::load(&demo.config_path).context("the demo config is invalid")?;

    let served = runtime.block_on(serve(&demo, config, listener, signals));
    drop(runtime);

    let dir = demo.stop();
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

impl Demo {
    /// Creates the demo directory, starts both shards in parallel with the sample schema, and
    /// writes the config. On error everything started so far is stopped and removed.
    fn start(port: u16) -> anyhow::Result<Demo> {
        let dir = demo_dir()?;
        let parent = dir.path();
        let shards = std::thread::scope(|scope| {
            let starting: Vec<_> = SHARDS
                .iter()
                .map(|&(name, slots)| scope.spawn(move || start_shard(parent, name, slots)))
                .collect();
            // Join every thread before looking at the results, so that a failed shard never
            // leaves the other one half-made.
            let joined: Vec<_> = starting.into_iter().map(|t| t.join()).collect();
            joined
                .into_iter()
                .map(|r| r.unwrap_or_else(|_| Err(anyhow::anyhow!("starting a shard panicked"))))
                .collect::<anyhow::Result<Vec<DemoShard>>>()
        })?;
        let config_path = dir.path().join("pgshard.toml");
        let demo = Demo {
            shards,
            dir,
            config_path,
            port,
        };
        std::fs::write(&demo.config_path, demo.config_text())
            .with_context(|| format!("cannot write {}", demo.config_path.display()))?;
        Ok(demo)
    }

    fn config_text(&self) -> String {
        let mut text = format!(
            r#"# Written by `pgshard demo`; removed when the demo stops.
[server]
listen = "127.0.0.1:{port}"
database = "app"
pool_mode = "transaction"

[pool]
size = 10

[[users]]
name = "app"
password = "app"

[admin]
users = ["app"]

# The live shard map (schema pgshard in the first shard's database): `rebalance move` changes it.
[catalog]
poll_interval_ms = 500

[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "users"

[[sharding.tables]]
name = "orders"
"#,
            port = self.port
        );
        for shard in &self.shards {
            let replicas: Vec<String> = shard
                .cluster
                .replica_addrs()
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect();
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "\n[[shards]]\nname = \"{}\"\nslots = \"{}\"\nprimary = \"{}\"\nreplicas = [{}]\n",
                shard.name,
                shard.slots,
                shard.cluster.primary_addr(),
                replicas.join(", ")
            );
        }
        text
    }

    fn print_layout(&self) {
        println!("Demo directory: {}", self.dir.path().display());
        for shard in &self.shards {
            let replicas: Vec<String> = shard
                .cluster
                .replica_addrs()
                .iter()
                .map(|a| format!("replica {a}"))
                .collect();
            println!(
                "  shard {} (slots {}): primary {}, {}",
                shard.name,
                if shard.slots.is_empty() {
                    "none yet"
                } else {
                    shard.slots
                },
                shard.cluster.primary_addr(),
                replicas.join(", ")
            );
        }
        println!("Config: {}", self.config_path.display());
    }

    /// "s1 replica (127.0.0.1:NNNN)" for a server port of one of the demo's clusters.
    fn describe_server(&self, port: u16) -> String {
        for shard in &self.shards {
            if shard.cluster.primary_port() == port {
                return format!("{} primary (127.0.0.1:{port})", shard.name);
            }
            if shard.cluster.replica_ports().contains(&port) {
                return format!("{} replica (127.0.0.1:{port})", shard.name);
            }
        }
        format!("an unknown server (port {port})")
    }

    /// Waits until every replica has replayed what its primary has committed.
    fn wait_for_replay(&self) -> anyhow::Result<()> {
        for shard in &self.shards {
            shard
                .cluster
                .wait_for_replay(REPLAY_TIMEOUT)
                .with_context(|| format!("the replica of shard {} did not catch up", shard.name))?;
        }
        Ok(())
    }

    /// Rows of `table` on each shard's primary, counted there directly.
    fn count_on_primaries(&self, table: &str) -> anyhow::Result<Vec<(&'static str, i64)>> {
        let sql = format!("SELECT count(*) FROM {table}");
        self.shards
            .iter()
            .map(|shard| {
                let cluster = &shard.cluster;
                let out = cluster.psql(cluster.primary_port(), "app", &sql)?;
                let n = out
                    .trim()
                    .parse()
                    .with_context(|| format!("unexpected count {out:?}"))?;
                Ok((shard.name, n))
            })
            .collect()
    }

    /// Stops both clusters, then removes the demo directory; returns its path.
    fn stop(self) -> PathBuf {
        let path = self.dir.path().to_path_buf();
        for mut shard in self.shards {
            shard.cluster.stop();
        }
        if let Err(e) = self.dir.close() {
            eprintln!("pgshard demo: cannot remove {}: {e}", path.display());
        }
        path
    }
}

/// A new directory under `/tmp` (short, for the unix socket paths inside), traversable by the OS
/// user PostgreSQL runs as.
fn demo_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pgshard-demo-")
        .tempdir_in("/tmp")
        .context("cannot create the demo directory under /tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .context("cannot set the permissions of the demo directory")?;
    Ok(dir)
}

/// Starts one shard's primary and replica in `parent/name` and creates the sample tables.
fn start_shard(
    parent: &Path,
    name: &'static str,
    slots: &'static str,
) -> anyhow::Result<DemoShard> {
    let opts = ClusterOptions {
        replicas: 1,
        users: vec![("app".into(), "app".into())],
        databases: vec![("app".into(), "app".into())],
        base_dir: Some(parent.join(name)),
        // Slots move by logical decoding, as the config's first user (app).
        logical: true,
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(&opts)
        .with_context(|| format!("cannot start PostgreSQL for shard {name}"))?;
    cluster
        .psql(
            cluster.primary_port(),
            "postgres",
            "ALTER ROLE app REPLICATION",
        )
        .with_context(|| format!("cannot let app move slots on shard {name}"))?;
    cluster
        .psql(cluster.primary_port(), "app", SCHEMA)
        .with_context(|| format!("cannot create the sample tables on shard {name}"))?;
    Ok(DemoShard {
        name,
        slots,
        cluster,
    })
}

/// Serves until Ctrl-C or SIGTERM; before announcing itself, fills the sample tables through the
/// proxy and runs the examples.
async fn serve(
    demo: &Demo,
    config: Config,
    listener: StdTcpListener,
    mut signals: StopSignals,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot register the listener")?;
    let map = config.shard_map();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        signals.recv().await;
        println!("pgshard demo: shutting down...");
        on_signal.send_replace(true);
    });
    let server = tokio::spawn(crate::server::run(
        config,
        listener,
        stopped(stop_rx.clone()),
    ));

    let prepared = tokio::select! {
        biased;
        _ = stopped(stop_rx.clone()) => Ok(None),
        prepared = prepare(demo, &map) => prepared.map(Some),
    };
    match prepared {
        Ok(Some(text)) => {
            print!("{text}");
            println!("pgshard demo ready");
            std::io::stdout()
                .flush()
                .context("cannot write to stdout")?;
        }
        Ok(None) => println!("pgshard demo: interrupted during setup"),
        Err(e) => {
            stop_tx.send_replace(true);
            let _ = server.await;
            return Err(e);
        }
    }
    server
        .await
        .context("the proxy task failed")?
        .context("the proxy stopped with an error")
}

/// Resolves once the demo is told to stop.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens when stopping anyway.
    let _ = stop.wait_for(|&stop| stop).await;
}

/// Fills the sample tables through the proxy, waits for the replicas, runs the examples, and
/// returns what to print before the ready line.
async fn prepare(demo: &Demo, map: &ShardMap) -> anyhow::Result<String> {
    let client = connect(demo.port).await?;
    let users = insert_users(&client, map).await?;
    let orders = insert_orders(&client, map).await?;
    // Blocking psql calls: allowed here, the proxy runs on the runtime's worker threads.
    let per_shard = tokio::task::block_in_place(|| {
        demo.wait_for_replay()?;
        demo.count_on_primaries("users")
    })?;
    // Writing to a String cannot fail, hence the ignored results below.
    let mut text = String::new();
    let counts: Vec<String> = per_shard
        .iter()
        .map(|(name, n)| format!("{n} on {name}"))
        .collect();
    let _ = writeln!(
        text,
        "\nInserted {users} users and {orders} orders through pgshard, grouped per shard \
         (users counted on each primary: {}).",
        counts.join(", ")
    );
    let port = demo.port;
    let _ = writeln!(
        text,
        "\nConnect with:\n  psql \"postgres://app:app@127.0.0.1:{port}/app\""
    );
    let _ = writeln!(
        text,
        "\nTry these (just run through pgshard; -> where it sent them):"
    );
    // The examples run on a client that loaded nothing: its reads go to the replicas (a
    // client's reads of a shard it wrote go to the primary until the replica replayed them).
    let client = connect(demo.port).await?;
    for statements in EXAMPLES {
        let wrote = statements.iter().any(|s| s.starts_with("UPDATE"));
        let outcome = match run_example(&client, statements).await {
            Ok((Some(port), Some(first))) if wrote && statements.len() == 2 => format!(
                "{}; row: {first} (your own write: a read after it goes to the primary until \
                 the shard's replica has replayed it)",
                demo.describe_server(port)
            ),
            Ok((Some(port), _)) => demo.describe_server(port),
            Ok((None, Some(first))) => format!("merged from every shard; first row: {first}"),
            Ok((None, None)) => "answered (no rows)".to_string(),
            Err(message) => format!("refused: {message}"),
        };
        let _ = writeln!(text, "  {}\n      -> {outcome}", statements.join(" "));
    }
    // Commands name this very binary, so they run as printed without pgshard on PATH.
    let bin = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pgshard".into());
    let _ = writeln!(
        text,
        "\nWhere does a key live?\n  {bin} locate --config {} 42\n  {bin} check --config {}",
        demo.config_path.display(),
        demo.config_path.display()
    );
    let _ = writeln!(
        text,
        "\nThe admin console (PgBouncer's SHOW commands, and SHOW SHARDS, SLOTS, HOT_SLOTS):\n  \
         psql \"postgres://app:app@127.0.0.1:{port}/pgshard\" -c \"SHOW SHARDS\""
    );
    let config = demo.config_path.display();
    let _ = writeln!(
        text,
        "\nGrow the cluster: shard s2 owns no slots yet. Move slots {SLOTS_TO_MOVE} to it while \
         you keep querying\n(statements on those slots wait a moment at the cutover; nothing \
         fails):\n  {bin} rebalance move --config {config} --slots {SLOTS_TO_MOVE} --to s2\n  \
         {bin} rebalance status --config {config}\n  {bin} map show --config {config}"
    );
    let _ = writeln!(text, "\nPress Ctrl-C to stop.");
    Ok(text)
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to pgshard")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Inserts the sample users with one multi-row INSERT per shard and chunk (each statement stays on
/// one shard, so the load never depends on splitting). Returns how many were inserted.
async fn insert_users(client: &tokio_postgres::Client, map: &ShardMap) -> anyhow::Result<usize> {
    let rows =
        (1..=SAMPLE_USERS).map(|id| (id, format!("({id}, 'user {id}', 'user{id}@example.com')")));
    insert_grouped(client, map, "users (user_id, name, email)", rows).await
}

/// Inserts `1 + i % 3` orders for user `i`. Returns how many were inserted.
async fn insert_orders(client: &tokio_postgres::Client, map: &ShardMap) -> anyhow::Result<usize> {
    let rows = (1..=SAMPLE_USERS).flat_map(|user_id| {
        (0..=user_id % 3).map(move |k| {
            let order_id = user_id * 10 + k;
            let cents = (user_id * 37 + k * 1301) % 50_000 + 99;
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            (user_id, format!("({order_id}, {user_id}, {amount})"))
        })
    });
    insert_grouped(client, map, "orders (order_id, user_id, amount)", rows).await
}

/// Sends `rows` (shard key, SQL row literal) as multi-row INSERTs into `target`, one shard's
/// rows per statement, at most [`ROWS_PER_INSERT`] rows each.
async fn insert_grouped(
    client: &tokio_postgres::Client,
    map: &ShardMap,
    target: &str,
    rows: impl Iterator<Item = (i64, String)>,
) -> anyhow::Result<usize> {
    let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); map.len()];
    for (key, row) in rows {
        per_shard[map.shard_of_key(&KeyValue::Int(key))].push(row);
    }
    let mut inserted = 0;
    for chunk in per_shard
        .iter()
        .flat_map(|rows| rows.chunks(ROWS_PER_INSERT))
    {
        let sql = format!("INSERT INTO {target} VALUES {}", chunk.join(", "));
        client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("cannot insert the sample rows into {target}"))?;
        inserted += chunk.len();
    }
    Ok(inserted)
}

/// Runs one example's statements in order; returns the `inet_server_port()` the result shows, or
/// the error message the proxy (or PostgreSQL) answered with.
/// Runs one example: the port of the server that answered (when the result says), and the
/// first row's values.
async fn run_example(
    client: &tokio_postgres::Client,
    statements: &[&str],
) -> Result<(Option<u16>, Option<String>), String> {
    let mut port = None;
    let mut first = None;
    for (i, sql) in statements.iter().enumerate() {
        let messages = match client.simple_query(sql).await {
            Ok(messages) => messages,
            Err(e) => {
                // Leave no transaction open behind a failed example.
                if statements[..i].iter().any(|s| s.starts_with("BEGIN")) {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                return Err(error_text(&e));
            }
        };
        for message in messages {
            if let SimpleQueryMessage::Row(row) = message {
                let served_by = row.try_get("inet_server_port").ok().flatten();
                if let Some(p) = served_by.and_then(|p: &str| p.parse().ok()) {
                    port = Some(p);
                }
                if first.is_none() {
                    let values: Vec<&str> = (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL"))
                        .collect();
                    first = Some(values.join(", "));
                }
            }
        }
    }
    Ok((port, first))
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
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
