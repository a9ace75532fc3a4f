//! Real client programs through the proxy against the real cluster: pgbench in each query mode,
//! psycopg 3 and asyncpg (the scripts in `tests/clients/`), fifty clients on a pool of two.
//! These runs are heavy on two cores, so they take turns.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use support::{base_config, cluster, start_proxy, Proxy};
use tokio::process::Command;
use tokio::sync::{Mutex, OnceCell};

/// pgbench clients per run: 50 clients on a pool of 2.
const CLIENTS: u64 = 50;

/// One heavy client run at a time.
static TURN: Mutex<()> = Mutex::const_new(());
/// `pgbench -i` has loaded database `pgbench`.
static PGBENCH_TABLES: OnceCell<()> = OnceCell::const_new();

/// Bounds each client program, so that a hang fails the test instead of stalling the suite.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// A proxy serving database `app` from the cluster's database `database`, with pools of `size`.
async fn proxy(database: &str, size: usize) -> Proxy {
    let mut config = base_config(cluster()).replacen("size = 4", &format!("size = {size}"), 1);
    // The `[[shards]]` entry ends the base config.
    config.push_str(&format!("database = \"{database}\"\n"));
    start_proxy(&config).await
}

/// Runs a client program to completion; its exit status, stdout and stderr.
async fn run(command: &mut Command) -> Output {
    let child = command.kill_on_drop(true).output();
    tokio::time::timeout(HANG_GUARD, child)
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {HANG_GUARD:?}"))
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// pgbench

fn pgbench(port: u16) -> Command {
    let mut command = Command::new("pgbench");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .env("PGPASSWORD", "app")
        .env("PGSSLMODE", "disable");
    command
}

/// Loads the pgbench tables (scale 1) straight into the primary's database `pgbench`, once.
async fn pgbench_tables() {
    PGBENCH_TABLES
        .get_or_init(|| async {
            let out = run(pgbench(cluster().primary_port()).args(["-i", "-q", "pgbench"])).await;
            assert!(out.status.success(), "pgbench -i failed:\n{}", text(&out));
        })
        .await;
}

/// Runs pgbench with `args` through a proxy with a pool of 2 in front of database `pgbench`: 50
/// clients, `per_client` transactions each, every one of which must succeed.
///
/// A fixed count, not a duration (`-T`): pgbench starts its `-T` clock before it opens its
/// connections, so a run whose 50 logins took longer than the duration (a starved CPU) processed
/// nothing without anything being wrong. With `-t`, a stall of the proxy is a hang, reported by
/// [`HANG_GUARD`] with what each server connection was doing.
async fn pgbench_through_proxy(args: &[&str], per_client: u64) {
    let _turn = TURN.lock().await;
    pgbench_tables().await;
    let proxy = proxy("pgbench", 2).await;
    let count = per_client.to_string();
    let mut command = pgbench(proxy.port());
    command
        .args(args)
        .args(["-c", &CLIENTS.to_string(), "-t", &count, "app"]);
    let out = tokio::time::timeout(HANG_GUARD, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "pgbench {args:?} did not finish within {HANG_GUARD:?}; server activity:\n{}",
                pgbench_activity()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run pgbench: {e}"));
    let report = text(&out);
    println!("pgbench {args:?}:\n{report}");
    assert!(out.status.success(), "pgbench {args:?} failed:\n{report}");
    assert!(
        report.contains("number of failed transactions: 0 "),
        "pgbench {args:?} reported failures:\n{report}"
    );
    assert!(
        !report.to_lowercase().contains("error"),
        "pgbench {args:?} printed an error:\n{report}"
    );
    let expected = format!(
        "number of transactions actually processed: {}/{}",
        CLIENTS * per_client,
        CLIENTS * per_client
    );
    assert!(
        report.contains(&expected),
        "pgbench {args:?} did not process every transaction ({expected}):\n{report}"
    );
}

/// What the primary's sessions in database `pgbench` are doing and waiting for (for a hang).
fn pgbench_activity() -> String {
    let sql = "SELECT pid, state, wait_event_type, wait_event, now() - state_change, query \
               FROM pg_stat_activity WHERE datname = 'pgbench'";
    cluster()
        .psql(cluster().primary_port(), "pgbench", sql)
        .unwrap_or_else(|e| format!("(pg_stat_activity unavailable: {e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_select_only_50_clients_on_2_server_connections() {
    pgbench_through_proxy(&["-M", "prepared", "-S", "-j", "2"], 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_tpcb_50_clients_on_2_server_connections() {
    // pgbench prepares with a synchronous PQprepare: a thread serving several clients would wait
    // there for a server connection one of its own clients holds inside a transaction. One
    // thread per client avoids that deadlock, which is pgbench's, not the proxy's.
    pgbench_through_proxy(&["-M", "prepared", "-j", "50"], 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_tpcb_50_clients_on_2_server_connections() {
    pgbench_through_proxy(&["-M", "extended", "-j", "2"], 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_tpcb_50_clients_on_2_server_connections() {
    pgbench_through_proxy(&["-M", "simple", "-j", "2"], 20).await;
}

// ---------------------------------------------------------------------------------------------
// Python drivers

/// Runs `tests/clients/<script>` with python3 and `args`; fails the test unless it exits 0.
async fn python_client(script: &str, args: &[&str]) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "clients", script]
        .iter()
        .collect();
    let out = run(Command::new("python3").arg(&path).args(args)).await;
    let report = text(&out);
    println!("{script}:\n{report}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{report}",
        out.status
    );
}

fn dsn(proxy: &Proxy) -> String {
    format!("postgresql://app:app@127.0.0.1:{}/app", proxy.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_statements_50_clients_on_2_server_connections() {
    let _turn = TURN.lock().await;
    let proxy = proxy("app", 2).await;
    python_client("psycopg_prepared.py", &[&dsn(&proxy), "clients_psycopg"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_50_clients_on_2_server_connections() {
    let _turn = TURN.lock().await;
    let proxy = proxy("app", 2).await;
    python_client("asyncpg_prepared.py", &[&dsn(&proxy), "clients_asyncpg"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_sees_the_timezone_it_asked_for_in_parameter_status() {
    let proxy = proxy("app", 1).await;
    python_client("psycopg_timezone.py", &[&dsn(&proxy)]).await;
}
