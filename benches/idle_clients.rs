//! Opens many authenticated, idle client connections and holds them, so a script can read the
//! proxy's resident memory with them open (`benches/pgbench.sh` does).
//!
//! Each connection completes startup and authentication, runs `SELECT 1` once (so the proxy has
//! served it at least one transaction), then sits idle. Prints `ready <n> <failed> <ms>` on stdout
//! once every connection is open or has failed (`ms`: from the first connect to the last one
//! done), and `errors <SQLSTATE or kind>=<count> ...` when some failed; then holds them until
//! SIGINT/SIGTERM or until `HOLD_SECS` pass.
//!
//! With `CONCURRENCY` at `COUNT` every connection is opened at once: a connection storm
//! (`benches/storm.sh`).
//!
//! Run: `cargo bench --bench idle_clients -- [COUNT]`, with PGHOST (127.0.0.1), PGPORT (6432),
//! PGUSER (app), PGPASSWORD (app), PGDATABASE (app), COUNT (2000), CONCURRENCY (64), HOLD_SECS,
//! CONNECT_TIMEOUT_SECS (30; per connection, startup and authentication included).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The SQLSTATE of a refused connection, or what else ended it (`timeout`, `io`, `other`).
fn error_kind(e: &tokio_postgres::Error) -> String {
    if let Some(code) = e.code() {
        return code.code().to_string();
    }
    let text = e.to_string();
    if text.contains("timeout") || text.contains("timed out") {
        "timeout".into()
    } else if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        "io".into()
    } else {
        "other".into()
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench`; the first purely numeric argument, if any, is the count.
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(env_or("COUNT", "2000").parse()?);
    let concurrency: usize = env_or("CONCURRENCY", "64").parse()?;
    let hold: Option<u64> = std::env::var("HOLD_SECS").ok().and_then(|v| v.parse().ok());
    let connect_timeout: u64 = env_or("CONNECT_TIMEOUT_SECS", "30").parse()?;

    let mut config = tokio_postgres::Config::new();
    config
        .host(env_or("PGHOST", "127.0.0.1"))
        .port(env_or("PGPORT", "6432").parse()?)
        .user(env_or("PGUSER", "app"))
        .password(env_or("PGPASSWORD", "app"))
        .dbname(env_or("PGDATABASE", "app"))
        .application_name("pgshard-idle-clients")
        .connect_timeout(Duration::from_secs(connect_timeout));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(concurrency));
        let opens: Vec<_> = (0..count)
            .map(|_| {
                let config = config.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let _turn = gate.acquire_owned().await.expect("the gate stays open");
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    let driver = tokio::spawn(connection);
                    client.simple_query("SELECT 1").await?;
                    Ok::<_, tokio_postgres::Error>((client, driver))
                })
            })
            .collect();
        let mut held = Vec::with_capacity(count);
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        let mut first_error = None;
        for open in opens {
            match open.await? {
                Ok(conn) => held.push(conn),
                Err(e) => {
                    *errors.entry(error_kind(&e)).or_default() += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let took = started.elapsed();
        let failed: usize = errors.values().sum();
        if let Some(e) = first_error {
            eprintln!("idle_clients: first error: {e:#}");
        }
        eprintln!(
            "idle_clients: {} open, {failed} failed, in {took:?}",
            held.len()
        );
        println!("ready {} {failed} {}", held.len(), took.as_millis());
        if !errors.is_empty() {
            let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!("errors {}", kinds.join(" "));
        }

        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            anyhow::Ok(())
        };
        match hold {
            Some(secs) => {
                tokio::select! {
                    r = stop => r?,
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                }
            }
            None => stop.await?,
        }
        let still_open = held
            .iter()
            .filter(|(client, _)| !client.is_closed())
            .count();
        eprintln!(
            "idle_clients: {still_open} of {} still open at the end",
            held.len()
        );
        anyhow::Ok(())
    })
}
