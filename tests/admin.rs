//! The admin console against two real shards (each a primary and a streaming replica): every
//! SHOW command answers with its columns and sensible values, stats users may only SHOW,
//! non-console users are refused with 28000, DISABLE/ENABLE, KILL_CLIENT, PAUSE/RESUME, and
//! Debian's prometheus-pgbouncer-exporter scraping the console without errors.
//!
//! Each test runs its own proxy (its own counters); the shard clusters are shared, and the
//! tests use their own keys of the `users` table.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use support::{shard_clusters, start_proxy, two_shard_config, Proxy};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Bounds every wait, so that a hang fails the test instead of stalling the suite. Not a
/// performance bar.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// `[admin]`: `admin` has full access, `stats` may SHOW; both use `[admin] password`.
const ADMIN: &str =
    "\n[admin]\nusers = [\"admin\"]\nstats_users = [\"stats\"]\npassword = \"secret\"\n";

async fn proxy() -> Proxy {
    let clusters = tokio::task::spawn_blocking(shard_clusters)
        .await
        .expect("starting the shard clusters");
    start_proxy(&format!("{}{ADMIN}", two_shard_config(clusters))).await
}

/// Connects to `database` through the proxy; the connection task is spawned.
async fn connect_as(
    proxy: &Proxy,
    user: &str,
    password: &str,
    database: &str,
    application_name: &str,
) -> Result<Client, tokio_postgres::Error> {
    let url = format!(
        "postgres://{user}:{password}@127.0.0.1:{}/{database}?application_name={application_name}",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn console(proxy: &Proxy) -> Client {
    connect_as(proxy, "admin", "secret", "pgshard", "console")
        .await
        .expect("the admin logs in to the console")
}

async fn app(proxy: &Proxy, name: &str) -> Client {
    connect_as(proxy, "app", "app", "app", name)
        .await
        .expect("app logs in")
}

/// A SHOW's column names and rows (column name → text value).
struct Shown {
    columns: Vec<String>,
    rows: Vec<HashMap<String, Option<String>>>,
}

impl Shown {
    fn value(&self, row: usize, column: &str) -> Option<&str> {
        self.rows[row]
            .get(column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .as_deref()
    }

    fn number(&self, row: usize, column: &str) -> f64 {
        let text = self
            .value(row, column)
            .unwrap_or_else(|| panic!("{column} is NULL"));
        text.parse()
            .unwrap_or_else(|_| panic!("{column} = {text:?} is no number"))
    }

    /// The first row whose `column` is `value`.
    fn row_where(&self, column: &str, value: &str) -> Option<usize> {
        (0..self.rows.len()).find(|&i| self.value(i, column) == Some(value))
    }
}

async fn show(client: &Client, command: &str) -> Shown {
    let messages = tokio::time::timeout(HANG_GUARD, client.simple_query(command))
        .await
        .expect("the console answers")
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let mut shown = Shown {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                shown.columns = columns.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                let values = row
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
                    .collect();
                shown.rows.push(values);
            }
            _ => {}
        }
    }
    shown
}

/// The error of a login that must fail.
fn refused(login: Result<Client, tokio_postgres::Error>) -> tokio_postgres::Error {
    match login {
        Ok(_) => panic!("the login was accepted"),
        Err(e) => e,
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Every SHOW command, with the columns tools read (PgBouncer's names, pgshard's own).
const EXPECTED_COLUMNS: &[(&str, &[&str])] = &[
    (
        "SHOW STATS",
        &[
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_server_assignment_count",
            "avg_query_time",
            "total_requests",
        ],
    ),
    (
        "SHOW STATS_TOTALS",
        &[
            "database",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
        ],
    ),
    (
        "SHOW STATS_AVERAGES",
        &[
            "database",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
        ],
    ),
    (
        "SHOW POOLS",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
        ],
    ),
    (
        "SHOW DATABASES",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_connections",
            "current_connections",
            "paused",
            "disabled",
        ],
    ),
    (
        "SHOW CLIENTS",
        &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "connect_time",
            "request_time",
            "wait",
            "wait_us",
            "ptr",
            "link",
            "application_name",
            "id",
        ],
    ),
    (
        "SHOW SERVERS",
        &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "connect_time",
            "request_time",
            "ptr",
            "link",
            "remote_pid",
            "id",
            "shard",
        ],
    ),
    ("SHOW CONFIG", &["key", "value", "default", "changeable"]),
    ("SHOW LISTS", &["list", "items"]),
    (
        "SHOW USERS",
        &[
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "current_connections",
            "current_client_connections",
        ],
    ),
    ("SHOW VERSION", &["version"]),
    ("SHOW MEM", &["name", "size", "used", "free", "memtotal"]),
    (
        "SHOW SHARDS",
        &[
            "shard",
            "role",
            "server",
            "status",
            "slots",
            "lag_bytes",
            "lag_seconds",
        ],
    ),
    ("SHOW SLOTS", &["slots", "shard", "count"]),
    ("SHOW HOT_SLOTS", &["slot", "shard", "statements", "bytes"]),
];

#[tokio::test]
async fn every_show_command_answers_with_its_columns() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    for (command, columns) in EXPECTED_COLUMNS {
        // Lower case with a semicolon, as tools send them.
        let shown = show(&admin, &format!("{};", command.to_lowercase())).await;
        for column in *columns {
            assert!(
                shown.columns.iter().any(|c| c == column),
                "{command} lacks column {column}: {:?}",
                shown.columns
            );
        }
    }
    let version = show(&admin, "SHOW VERSION").await;
    assert!(version.value(0, "version").unwrap().starts_with("pgshard "));
    let lists = show(&admin, "SHOW LISTS").await;
    let used = lists
        .row_where("list", "used_clients")
        .expect("used_clients");
    assert!(
        lists.number(used, "items") >= 1.0,
        "the console itself is a client"
    );
    let config = show(&admin, "SHOW CONFIG").await;
    let size = config.row_where("key", "pool.size").expect("pool.size");
    assert_eq!(config.value(size, "value"), Some("4"));
    assert!(
        config.row_where("value", "secret").is_none(),
        "no password is shown"
    );
    let slots = show(&admin, "SHOW SLOTS").await;
    assert_eq!(slots.rows.len(), 2);
    assert_eq!(
        (slots.value(0, "slots"), slots.value(0, "shard")),
        (Some("0-2047"), Some("s0"))
    );
    assert_eq!(
        (slots.value(1, "slots"), slots.value(1, "count")),
        (Some("2048-4095"), Some("2048"))
    );
    let err = admin.simple_query("SHOW NOTHING").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601");
    assert!(
        format!("{:?}", err).contains("SHOW HOT_SLOTS"),
        "the error lists the commands: {err:?}"
    );
}

#[tokio::test]
async fn stats_clients_and_hot_slots_follow_the_clients_queries() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let before = show(&admin, "SHOW STATS").await;
    let db = before
        .row_where("database", "app")
        .expect("a row for database app");
    let (queries, received) = (
        before.number(db, "total_query_count"),
        before.number(db, "total_received"),
    );
    let client = app(&proxy, "admin_stats_test").await;
    const N: usize = 25;
    const KEY: i64 = 7_310_001;
    for _ in 0..N {
        client
            .simple_query(&format!("SELECT name FROM users WHERE user_id = {KEY}"))
            .await
            .expect("a keyed read");
    }
    let after = show(&admin, "SHOW STATS").await;
    let db = after
        .row_where("database", "app")
        .expect("a row for database app");
    assert!(after.number(db, "total_query_count") >= queries + N as f64);
    assert!(after.number(db, "total_xact_count") >= N as f64);
    assert!(after.number(db, "total_received") > received);
    assert!(after.number(db, "total_sent") > 0.0);
    assert!(after.number(db, "total_query_time") > 0.0);
    let totals = show(&admin, "SHOW STATS_TOTALS").await;
    assert!(totals.number(0, "query_count") >= N as f64);

    let clients = show(&admin, "SHOW CLIENTS").await;
    let me = clients
        .row_where("application_name", "admin_stats_test")
        .expect("SHOW CLIENTS lists the test's client");
    assert_eq!(clients.value(me, "user"), Some("app"));
    assert_eq!(clients.value(me, "database"), Some("app"));
    assert_eq!(clients.value(me, "state"), Some("idle"));
    assert_eq!(clients.value(me, "addr"), Some("127.0.0.1"));
    assert!(clients.value(me, "connect_time").is_some());

    let pools = show(&admin, "SHOW POOLS").await;
    let app_pool = pools
        .row_where("user", "app")
        .expect("the pool of user app");
    assert!(pools.number(app_pool, "cl_active") >= 1.0);
    assert!(
        pools.number(app_pool, "sv_idle") >= 1.0,
        "the reads' connections went back"
    );
    let servers = show(&admin, "SHOW SERVERS").await;
    assert!(
        servers.row_where("state", "idle").is_some(),
        "idle server connections are listed"
    );

    let hot = show(&admin, "SHOW HOT_SLOTS").await;
    let slot = pgshard::sharding::KeyValue::Int(KEY).slot().to_string();
    let row = hot
        .row_where("slot", &slot)
        .expect("the key's slot is among the busiest");
    assert!(hot.number(row, "statements") >= N as f64);
    assert!(hot.number(row, "bytes") > 0.0);
    let shard = format!("s{}", support::shard_of_id(KEY));
    assert_eq!(hot.value(row, "shard"), Some(shard.as_str()));
}

/// The session reads the clock once per wake-up: a statement that takes 300 ms is still timed
/// from the wake-up that read it to the one that read its answer, and its transaction from
/// checkout to release.
#[tokio::test]
async fn stats_time_a_slow_statement_and_its_transaction() {
    const SLEEP_MICROS: f64 = 300_000.0;
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let totals = |shown: &Shown, column: &str| {
        let db = shown.row_where("database", "app").expect("a row for app");
        shown.number(db, column)
    };
    let before = show(&admin, "SHOW STATS").await;
    let client = app(&proxy, "admin_stats_timing").await;
    client
        .batch_execute("BEGIN; SELECT pg_sleep(0.3); COMMIT")
        .await
        .expect("a slow transaction");
    client
        .simple_query("SELECT pg_sleep(0.3)")
        .await
        .expect("a slow statement");
    let after = show(&admin, "SHOW STATS").await;
    // Other tests' clients only add to the totals: these are lower bounds.
    let query_time = totals(&after, "total_query_time") - totals(&before, "total_query_time");
    let xact_time = totals(&after, "total_xact_time") - totals(&before, "total_xact_time");
    assert!(
        query_time >= 2.0 * SLEEP_MICROS,
        "two requests of 300 ms each: {query_time} µs"
    );
    assert!(
        xact_time >= 2.0 * SLEEP_MICROS,
        "two transactions of 300 ms each: {xact_time} µs"
    );
}

#[tokio::test]
async fn show_shards_has_both_shards_up_with_replica_lag() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let shards = show(&admin, "SHOW SHARDS").await;
    assert_eq!(
        shards.rows.len(),
        4,
        "two shards, a primary and a replica each"
    );
    for row in 0..shards.rows.len() {
        assert_eq!(shards.value(row, "status"), Some("up"));
        assert_eq!(shards.number(row, "slots"), 2048.0);
        match shards.value(row, "role") {
            Some("primary") => assert_eq!(shards.value(row, "lag_bytes"), None),
            Some("replica0") => {
                assert!(shards.number(row, "lag_bytes") >= 0.0);
                assert!(shards.value(row, "lag_seconds").is_some());
            }
            other => panic!("unexpected role {other:?}"),
        }
    }
    assert!(shards.row_where("shard", "s0").is_some() && shards.row_where("shard", "s1").is_some());
}

#[tokio::test]
async fn stats_users_may_only_show_and_other_users_get_28000() {
    let proxy = proxy().await;
    let stats = connect_as(&proxy, "stats", "secret", "pgbouncer", "stats")
        .await
        .expect("a stats user logs in to the console as pgbouncer too");
    assert!(!show(&stats, "SHOW POOLS").await.rows.is_empty());
    for command in [
        "RELOAD",
        "PAUSE",
        "RESUME",
        "DISABLE",
        "KILL_CLIENT 1",
        "SHUTDOWN",
    ] {
        let err = stats.simple_query(command).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{command}: {err:?}");
    }
    let err = refused(connect_as(&proxy, "app", "app", "pgshard", "nope").await);
    assert_eq!(sqlstate(&err), "28000");
    assert!(format!("{err:?}").contains("[admin] users"), "{err:?}");
    let err = refused(connect_as(&proxy, "admin", "wrong", "pgshard", "nope").await);
    assert_eq!(sqlstate(&err), "28P01");
    let err = refused(connect_as(&proxy, "admin", "secret", "app", "nope").await);
    assert_eq!(
        sqlstate(&err),
        "28P01",
        "a console user is no user of the database"
    );
}

#[tokio::test]
async fn disable_refuses_new_logins_until_enable() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let connected = app(&proxy, "before_disable").await;
    admin.simple_query("DISABLE").await.expect("DISABLE");
    let err = refused(connect_as(&proxy, "app", "app", "app", "during").await);
    assert_eq!(sqlstate(&err), "57P03");
    assert!(format!("{err:?}").contains("ENABLE"), "{err:?}");
    connected
        .simple_query("SELECT 1")
        .await
        .expect("clients already in keep working");
    let again = console(&proxy).await;
    admin.simple_query("ENABLE;").await.expect("ENABLE");
    let client = app(&proxy, "after_enable").await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("a login after ENABLE works");
    drop(again);
}

#[tokio::test]
async fn kill_client_closes_the_client() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let victim = app(&proxy, "kill_me").await;
    victim
        .simple_query("SELECT 1")
        .await
        .expect("the victim works");
    let clients = show(&admin, "SHOW CLIENTS").await;
    let row = clients
        .row_where("application_name", "kill_me")
        .expect("listed");
    let id = clients.value(row, "id").unwrap().to_string();
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("KILL_CLIENT");
    let outcome = tokio::time::timeout(HANG_GUARD, victim.simple_query("SELECT 1")).await;
    assert!(
        outcome.expect("no hang").is_err(),
        "the killed client's connection is closed"
    );
    let err = admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42704",
        "the client is gone from the registry"
    );
    let other = app(&proxy, "survivor").await;
    other
        .simple_query("SELECT 1")
        .await
        .expect("others are untouched");
}

#[tokio::test]
async fn pause_holds_queries_until_resume() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    let client = app(&proxy, "paused_client").await;
    client.simple_query("SELECT 1").await.expect("before PAUSE");
    let err = admin.simple_query("PAUSE nowhere").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
    tokio::time::timeout(HANG_GUARD, admin.simple_query("PAUSE"))
        .await
        .expect("PAUSE returns once no transaction is in flight")
        .expect("PAUSE");
    let held = tokio::spawn(async move { client.simple_query("SELECT 2").await.map(|_| ()) });
    // The query waits for a server connection: SHOW CLIENTS says so.
    let waiting = async {
        loop {
            assert!(!held.is_finished(), "the query ran during PAUSE");
            let clients = show(&admin, "SHOW CLIENTS").await;
            let row = clients
                .row_where("application_name", "paused_client")
                .expect("listed");
            if clients.value(row, "state") == Some("waiting") {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(HANG_GUARD, waiting)
        .await
        .expect("the query waits");
    let pools = show(&admin, "SHOW POOLS").await;
    let row = pools.row_where("user", "app").unwrap();
    assert!(pools.number(row, "cl_waiting") >= 1.0);
    let databases = show(&admin, "SHOW DATABASES").await;
    let row = databases.row_where("name", "app").unwrap();
    assert_eq!(databases.value(row, "paused"), Some("1"));
    assert!(!held.is_finished());
    admin.simple_query("RESUME").await.expect("RESUME");
    tokio::time::timeout(HANG_GUARD, held)
        .await
        .expect("RESUME releases the query")
        .unwrap()
        .expect("the held query succeeds");
}

/// `GET /metrics` on `port`: (status line, body); `None` while nothing listens.
fn http_get(port: u16) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test]
async fn prometheus_pgbouncer_exporter_scrapes_the_console() {
    let exporter = "/usr/bin/prometheus-pgbouncer-exporter";
    assert!(
        std::path::Path::new(exporter).exists(),
        "install Debian's prometheus-pgbouncer-exporter (apt-get install prometheus-pgbouncer-exporter)"
    );
    let proxy = proxy().await;
    let client = app(&proxy, "exported").await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("a query");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = std::process::Command::new(exporter)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--pgbouncer-host",
            "127.0.0.1",
            "--pgbouncer-port",
            &proxy.port().to_string(),
        ])
        .args(["--pgbouncer-user", "admin"])
        .env("PGPASSWORD", "secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the exporter");
    let scraped = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Some(exited) = child.try_wait().expect("exporter status") {
                return Err(format!("the exporter exited ({exited})"));
            }
            let got = tokio::task::spawn_blocking(move || http_get(port))
                .await
                .unwrap();
            if let Some(got) = got {
                return Ok(got);
            }
            // Not listening yet: it connects to the console and registers its collectors first.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the exporter serves /metrics");
    let _ = child.kill();
    let output = child.wait_with_output().expect("the exporter's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (status, body) = scraped.unwrap_or_else(|e| panic!("{e}; stderr:\n{stderr}"));
    assert!(
        status.contains(" 200 "),
        "scrape failed: {status}\n{body}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("Traceback"),
        "the exporter raised:\n{stderr}"
    );
    let sample = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    assert!(sample("pgbouncer_requests_total{database=\"app\"}") >= 5.0);
    assert!(sample("pgbouncer_active_clients{database=\"app\",user=\"app\"}") >= 1.0);
    assert!(sample("pgbouncer_pool_size{database=\"app\"}") >= 1.0);
    assert!(sample("pgbouncer_used_clients") >= 1.0);
    assert!(body.contains("pgbouncer_received_bytes_total{database=\"app\"}"));
}

#[tokio::test]
async fn the_console_refuses_the_extended_protocol_and_goes_on() {
    let proxy = proxy().await;
    let admin = console(&proxy).await;
    // tokio-postgres's query() sends Parse/Bind/Execute/Sync.
    let err = admin.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "0A000", "{err:?}");
    assert!(!show(&admin, "SHOW POOLS").await.rows.is_empty());
    let empty = admin.simple_query("").await.expect("an empty query");
    assert!(empty
        .iter()
        .all(|m| !matches!(m, SimpleQueryMessage::Row(_))));
}
