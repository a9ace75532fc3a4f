//! The running `pgshard serve` binary against the real cluster: SIGHUP reloads the config under
//! a pgbench load (users added and removed, pool resized, 0 client errors; an invalid file is
//! refused naming its key), SIGTERM lets open transactions commit and closes idle clients,
//! SIGINT and the shutdown timeout close at once with nothing half-done.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{base_config_with, cluster};
use tokio::sync::OnceCell;

/// `pgbench -i` has loaded database `pgbench`.
static PGBENCH_TABLES: OnceCell<()> = OnceCell::const_new();

/// Longest any wait in these tests may take before it fails the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `pgshard serve` process with its config file and its log.
struct Served {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Served {
    /// Writes `config` and starts `pgshard serve` on it; returns once it listens.
    fn start(config: &str) -> Served {
        Served::start_with(config, &[])
    }

    /// As [`Served::start`], with more arguments for `pgshard serve`.
    fn start_with(config: &str, args: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pgshard.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgshard"))
            .args(["serve", "--config"])
            .arg(dir.path().join("pgshard.toml"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pgshard binary runs");
        let mut served = Served {
            child,
            dir,
            port: 0,
        };
        let line = served.wait_for_log("pgshard listening on ");
        let addr = line.rsplit(' ').next().unwrap().trim();
        served.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        served
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgshard.toml")
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(self.dir.path().join("log"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// The first log line containing `needle`, waiting for it.
    fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < PATIENCE,
                "pgshard never logged {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "cannot signal pgshard");
    }

    /// Writes a new config and sends SIGHUP.
    fn reload(&self, config: &str) {
        std::fs::write(self.config_path(), config).unwrap();
        self.signal(libc::SIGHUP);
    }

    fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Waits for the process to exit; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "pgshard did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// A config serving the cluster's database `database` as `app` to users app/app and the
/// `(name, password)` pairs in `extra` (logging in to the cluster as app), pools of `size`.
fn config(database: &str, size: usize, extra: &[(&str, &str)], more: &str) -> String {
    let mut text = base_config_with(&[
        (
            "read_from = \"primary\"",
            "read_from = \"primary\"\nslots = \"0-4095\"",
        ),
        (
            "size = 4",
            &format!("size = {size}\nhealth_check_interval_ms = 50"),
        ),
        (
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"transaction\"\n{more}"),
        ),
    ]);
    text.push_str(&format!("database = \"{database}\"\n"));
    for (name, password) in extra {
        text.push_str(&format!(
            "\n[[users]]\nname = \"{name}\"\npassword = \"{password}\"\n\
             server_user = \"app\"\nserver_password = \"app\"\n"
        ));
    }
    text
}

async fn pgbench_tables() {
    PGBENCH_TABLES
        .get_or_init(|| async {
            let out = tokio::process::Command::new("pgbench")
                .args(["-i", "-q", "-h", "127.0.0.1", "-U", "app", "pgbench"])
                .args(["-p", &cluster().primary_port().to_string()])
                .env("PGPASSWORD", "app")
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "pgbench -i: {out:?}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_and_pools_under_load_without_a_client_error() {
    pgbench_tables().await;
    let before = config("pgbench", 4, &[("leaving", "bye")], "");
    let served = Served::start(&before);
    let old_session = connect(&served.url("leaving", "bye", "app")).await.unwrap();
    let bench = tokio::process::Command::new("pgbench")
        .args([
            "-S",
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-t",
            "3000",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
        ])
        .args(["-p", &served.port.to_string(), "app"])
        .env("PGPASSWORD", "app")
        .kill_on_drop(true)
        .output();
    let bench = tokio::spawn(bench);

    // Under the load: `leaving` goes, `arriving` comes, the pool shrinks to 3, and shard s1
    // (the cluster's database `app`) joins, owning no slots yet.
    let mut after = config("pgbench", 3, &[("arriving", "hello")], "");
    after.push_str(&format!(
        "\n[[shards]]\nname = \"s1\"\nprimary = \"{}\"\ndatabase = \"app\"\nslots = \"\"\n\
         read_from = \"primary\"\n",
        cluster().primary_addr()
    ));
    served.reload(&after);
    served.wait_for_log("(generation 1)");
    let arriving = connect(&served.url("arriving", "hello", "app"))
        .await
        .expect("a user added by the reload logs in");
    let one: i32 = arriving.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // The new shard is reachable (by a hint: it owns no slots), the old one still serves.
    let on = |shard: &str| format!("/* pgshard: shard={shard} */ SELECT current_database()");
    let db: String = arriving.query_one(&on("s1"), &[]).await.unwrap().get(0);
    assert_eq!(db, "app");
    let db: String = arriving.query_one(&on("s0"), &[]).await.unwrap().get(0);
    assert_eq!(db, "pgbench");
    let refused = connect(&served.url("leaving", "bye", "app"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "28P01", "{refused}");
    // A client logged in before the reload keeps its session.
    let two: i32 = old_session.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);

    // An invalid file is refused naming the key, and the running config stays.
    served.reload(&after.replace("size = 3", "size = 0"));
    let line = served.wait_for_log("was not reloaded");
    assert!(line.contains("pool.size"), "{line}");
    let three: i32 = arriving.query_one("SELECT 3", &[]).await.unwrap().get(0);
    assert_eq!(three, 3);

    let out = bench.await.unwrap().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pgbench failed across the reload:\n{text}"
    );
    assert!(
        text.contains("number of transactions actually processed: 12000/12000"),
        "{text}"
    );
    assert!(text.contains("number of failed transactions: 0"), "{text}");
}

/// `--threads 1` runs everything on one thread (tokio's current-thread runtime): pgbench in
/// both protocols is served across a reload with no failed transaction, and SIGTERM ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_serves_a_load_across_a_reload_and_shuts_down() {
    pgbench_tables().await;
    let before = config("pgbench", 4, &[], "");
    let mut served = Served::start_with(&before, &["--threads", "1"]);
    served.wait_for_log("one thread");
    let bench = |protocol: &'static str| {
        tokio::process::Command::new("pgbench")
            .args([
                "-S", "-n", "-c", "8", "-j", "2", "-t", "1000", "-M", protocol,
            ])
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "app",
                "-p",
                &served.port.to_string(),
                "app",
            ])
            .env("PGPASSWORD", "app")
            .kill_on_drop(true)
            .output()
    };
    let (simple, prepared) = (
        tokio::spawn(bench("simple")),
        tokio::spawn(bench("prepared")),
    );
    served.reload(&config("pgbench", 3, &[], ""));
    served.wait_for_log("(generation 1)");
    for out in [
        simple.await.unwrap().unwrap(),
        prepared.await.unwrap().unwrap(),
    ] {
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench failed:\n{text}");
        assert!(
            text.contains("number of transactions actually processed: 8000/8000"),
            "{text}"
        );
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    served.signal(libc::SIGTERM);
    let status = served.wait_exit();
    assert!(status.success(), "{status}:\n{}", served.log());
}

/// Rows of table `name` on the cluster's primary, database `app`.
fn count_rows(table: &str) -> i64 {
    cluster()
        .psql(
            cluster().primary_port(),
            "app",
            &format!("SELECT count(*) FROM {table}"),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn create_table(table: &str) {
    cluster()
        .psql(
            cluster().primary_port(),
            "app",
            &format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int); \
                 ALTER TABLE {table} OWNER TO app"
            ),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_and_closes_idle_clients() {
    create_table("drained");
    let served_config = config("app", 4, &[], "shutdown_timeout_ms = 20000");
    let mut served = Served::start(&served_config);
    let url = served.url("app", "app", "app");
    let mut open = Vec::new();
    for i in 0..3 {
        let client = connect(&url).await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(&format!("INSERT INTO drained VALUES ({i})"), &[])
            .await
            .unwrap();
        open.push(client);
    }
    let (idle, idle_connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let idle_connection = tokio::spawn(idle_connection);
    // The simple protocol: an extended query would leave the Close of its unnamed statement
    // in flight, and the 57P01 below would answer it instead of arriving on its own.
    idle.simple_query("SELECT 1").await.unwrap();

    served.signal(libc::SIGTERM);
    served.wait_for_log("shutting down");
    // No new clients.
    let refused = connect(&url).await;
    assert!(
        refused.is_err(),
        "a new client was let in during the shutdown"
    );
    // The idle client is closed.
    let start = Instant::now();
    while !idle.is_closed() {
        assert!(
            start.elapsed() < PATIENCE,
            "the idle client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and told why, as PostgreSQL's own shutdown tells its clients.
    let told = idle_connection.await.unwrap();
    assert_eq!(
        told.as_ref().map_err(sqlstate),
        Err("57P01".to_string()),
        "the idle client was closed without 57P01: {told:?}"
    );
    // Open transactions go on and commit.
    for (i, client) in open.iter().enumerate() {
        client
            .execute(&format!("INSERT INTO drained VALUES ({})", 10 + i), &[])
            .await
            .unwrap();
        client.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(count_rows("drained"), 6);
    // Each is closed at its transaction's end, and the process exits cleanly.
    let status = served.wait_exit();
    assert!(status.success(), "{status:?}:\n{}", served.log());
    for client in &open {
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_timeout_and_sigint_leave_nothing_half_done() {
    for (table, signal, timeout) in [
        ("timed_out", libc::SIGTERM, 300),
        ("interrupted", libc::SIGINT, 60_000),
    ] {
        create_table(table);
        let served_config = config("app", 4, &[], &format!("shutdown_timeout_ms = {timeout}"));
        let mut served = Served::start(&served_config);
        let client = connect(&served.url("app", "app", "app")).await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
            .await
            .unwrap();
        served.signal(signal);
        let status = served.wait_exit();
        assert!(status.success(), "{status:?}:\n{}", served.log());
        assert!(client.batch_execute("COMMIT").await.is_err());
        // The server rolled the transaction back: nothing of it is there.
        assert_eq!(count_rows(table), 0, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_reload_and_shutdown_act_as_the_signals_do() {
    create_table("console_drained");
    let console_section = "\n[admin]\nusers = [\"app\"]\n";
    let mut before = config("app", 4, &[], "shutdown_timeout_ms = 20000");
    before = before.replacen("\n[[shards]]", &format!("{console_section}\n[[shards]]"), 1);
    let mut served = Served::start(&before);
    let console = connect(&served.url("app", "app", "pgshard")).await.unwrap();

    // RELOAD answers once the new file is in use: a user it adds logs in right after.
    let after = config("app", 4, &[("joiner", "pw")], "shutdown_timeout_ms = 20000").replacen(
        "\n[[shards]]",
        &format!("{console_section}\n[[shards]]"),
        1,
    );
    std::fs::write(served.config_path(), &after).unwrap();
    console
        .simple_query("RELOAD")
        .await
        .expect("RELOAD of a valid file");
    let joiner = connect(&served.url("joiner", "pw", "app")).await.unwrap();
    joiner.simple_query("SELECT 1").await.unwrap();

    // An invalid file: RELOAD fails naming the key, and the running config stays.
    std::fs::write(served.config_path(), after.replace("size = 4", "size = 0")).unwrap();
    let refused = console.simple_query("RELOAD").await.unwrap_err();
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "F0000", "{db:?}");
    assert!(db.message().contains("pool.size"), "{}", db.message());
    joiner.simple_query("SELECT 2").await.unwrap();

    // SHUTDOWN drains as SIGTERM does: an open transaction still commits.
    let open = connect(&served.url("app", "app", "app")).await.unwrap();
    open.batch_execute("BEGIN; INSERT INTO console_drained VALUES (1)")
        .await
        .unwrap();
    let _ = console.simple_query("SHUTDOWN").await;
    served.wait_for_log("shutting down");
    open.batch_execute("INSERT INTO console_drained VALUES (2); COMMIT")
        .await
        .unwrap();
    assert_eq!(count_rows("console_drained"), 2);
    let status = served.wait_exit();
    assert!(status.success(), "{status:?}:\n{}", served.log());
}
