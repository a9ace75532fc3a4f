//! Opens many authenticated, idle client connections and holds them, so a script can read the
//! proxy's resident memory with them open (`benches/pgbench.sh` does).
//!
//! Each connection completes startup and authentication, runs `SELECT 1` once (so the proxy has
//! served it at least one transaction), then sits idle. Prints `ready <n> <failed>` on stdout once
//! every connection is open, then holds them until SIGINT/SIGTERM or until `HOLD_SECS` pass.
//!
//! Run: `cargo bench --bench idle_clients -- [COUNT]`, with PGHOST (127.0.0.1), PGPORT (6432),
//! PGUSER (app), PGPASSWORD (app), PGDATABASE (app), COUNT (2000), CONCURRENCY (64), HOLD_SECS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench`; the first purely numeric argument, if any, is the count.
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(env_or("COUNT", "2000").parse()?);
    let concurrency: usize = env_or("CONCURRENCY", "64").parse()?;
    let hold: Option<u64> = std::env::var("HOLD_SECS").ok().and_then(|v| v.parse().ok());

    let mut config = tokio_postgres::Config::new();
    config
        .host(env_or("PGHOST", "127.0.0.1"))
        .port(env_or("PGPORT", "6432").parse()?)
        .user(env_or("PGUSER", "app"))
        .password(env_or("PGPASSWORD", "app"))
        .dbname(env_or("PGDATABASE", "app"))
        .application_name("pgshard-idle-clients")
        .connect_timeout(Duration::from_secs(30));

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
                    let _turn = gate.acquire_owned().await?;
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    let driver = tokio::spawn(connection);
                    client.simple_query("SELECT 1").await?;
                    anyhow::Ok((client, driver))
                })
            })
            .collect();
        let mut held = Vec::with_capacity(count);
        let mut failed = 0usize;
        let mut first_error = None;
        for open in opens {
            match open.await? {
                Ok(conn) => held.push(conn),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            eprintln!("idle_clients: first error: {e:#}");
        }
        eprintln!(
            "idle_clients: {} open, {failed} failed, in {:?}",
            held.len(),
            started.elapsed()
        );
        println!("ready {} {failed}", held.len());

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
