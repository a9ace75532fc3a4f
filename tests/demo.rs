//! `pgshard demo` end to end: it comes up with three shards (the third empty), announces itself,
//! serves the sample `users` table by key with every row on one shard primary, moves slots to the
//! empty shard with the command it printed (run as printed), and on Ctrl-C
//! stops PostgreSQL and removes its directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY: &str = "pgshard demo ready";
const DIR_PREFIX: &str = "Demo directory: ";
/// Users the demo inserts.
const SAMPLE_USERS: i64 = 1000;

/// What the demo printed before its ready line.
struct Announced {
    dir: PathBuf,
    /// Port of each shard's primary, in the order printed.
    primary_ports: Vec<u16>,
    /// The admin console command the demo prints, as printed.
    console_command: Option<String>,
    /// The `pgshard rebalance move` command the demo prints, as printed.
    move_command: Option<String>,
}

/// The running demo; interrupted (and, failing that, killed) if the test ends early.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn spawn(port: u16) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgshard"))
            .args(["demo", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning pgshard demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("demo> {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines }
    }

    /// Reads stdout until the ready line; returns what was printed before it.
    fn wait_ready(&mut self, timeout: Duration) -> Announced {
        let deadline = Instant::now() + timeout;
        let mut dir = None;
        let mut primary_ports = Vec::new();
        let mut console_command = None;
        let mut move_command = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "no `{READY}` within {timeout:?} ({e:?}); exit status: {:?}",
                    self.child.try_wait()
                )
            });
            if let Some(path) = line.strip_prefix(DIR_PREFIX) {
                dir = Some(PathBuf::from(path.trim()));
            }
            if let Some(port) = primary_port(&line) {
                primary_ports.push(port);
            }
            if line.trim_start().starts_with("psql ") && line.contains("/pgshard\"") {
                console_command = Some(line.trim().to_string());
            }
            if line.contains(" rebalance move --config ") {
                move_command = Some(line.trim().to_string());
            }
            if line.trim() == READY {
                let dir = dir.expect("the demo directory is printed before the ready line");
                return Announced {
                    dir,
                    primary_ports,
                    console_command,
                    move_command,
                };
            }
        }
    }

    fn interrupt(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    }

    /// Waits for the exit, bounded.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the demo") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt();
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The primary's port from a layout line `  shard s0 (slots 0-2047): primary 127.0.0.1:N, ...`.
fn primary_port(line: &str) -> Option<u16> {
    if !line.trim_start().starts_with("shard ") {
        return None;
    }
    let rest = line.split_once("primary 127.0.0.1:")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn connect(port: u16) -> Result<tokio_postgres::Client, String> {
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `SELECT count(*) FROM users WHERE user_id = $1` through the proxy, for a few keys.
async fn counts_by_key(proxy_port: u16, keys: &[i64]) -> Result<Vec<i64>, String> {
    let client = connect(proxy_port).await?;
    let mut counts = Vec::new();
    for key in keys {
        let row = client
            .query_one("SELECT count(*) FROM users WHERE user_id = $1", &[key])
            .await
            .map_err(|e| format!("count of user {key}: {e}"))?;
        counts.push(row.get(0));
    }
    Ok(counts)
}

/// `SELECT count(*) FROM users` straight on each shard primary.
async fn counts_per_primary(ports: &[u16]) -> Result<Vec<i64>, String> {
    let mut counts = Vec::new();
    for &port in ports {
        let client = connect(port).await?;
        let row = client
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .map_err(|e| format!("count on port {port}: {e}"))?;
        counts.push(row.get(0));
    }
    Ok(counts)
}

/// Runs `f` on a fresh runtime, bounded by 30 s.
fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .unwrap_or_else(|_| Err("no answer within 30 s".to_string()))
    })
}

#[test]
fn demo_serves_sharded_sample_table_and_cleans_up_on_ctrl_c() {
    let port = pgshard::localpg::free_port();
    let mut demo = Demo::spawn(port);
    let announced = demo.wait_ready(Duration::from_secs(180));
    let dir = announced.dir.clone();
    assert!(
        dir.exists(),
        "the printed demo directory {} exists while running",
        dir.display()
    );
    let by_key = block_on(counts_by_key(port, &[1, 42, 500, SAMPLE_USERS]));
    let per_primary = block_on(counts_per_primary(&announced.primary_ports));
    // The admin console command runs as printed.
    let console = announced
        .console_command
        .clone()
        .expect("the demo prints the admin console command");
    let shown = Command::new("sh")
        .args(["-c", &console])
        .output()
        .expect("running the printed console command");
    // The move command runs as printed (it names the demo's own binary).
    let move_command = announced
        .move_command
        .clone()
        .expect("the demo prints a rebalance move command");
    let moved = Command::new("sh")
        .args(["-c", &move_command])
        .output()
        .expect("running the printed move command");
    let after_move = block_on(counts_per_primary(&announced.primary_ports));
    let by_key_after = block_on(counts_by_key(port, &[1, 42, 500, SAMPLE_USERS]));

    demo.interrupt();
    let status = demo.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the demo exits successfully on Ctrl-C: {status}"
    );
    assert!(
        !dir.exists(),
        "the demo directory {} is removed",
        dir.display()
    );
    assert_eq!(
        by_key,
        Ok(vec![1, 1, 1, 1]),
        "SELECT count(*) FROM users WHERE user_id = $1 through the proxy"
    );
    assert_eq!(
        announced.primary_ports.len(),
        3,
        "a primary port is printed for each of the three shards"
    );
    assert!(
        moved.status.success(),
        "{move_command}: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let after_move = after_move.expect("counting users on each shard primary after the move");
    assert_eq!(
        after_move.iter().sum::<i64>(),
        SAMPLE_USERS,
        "every user once after the move: {after_move:?}"
    );
    assert!(
        after_move[2] > 0,
        "s2 holds users after the move: {after_move:?}"
    );
    assert_eq!(
        by_key_after,
        Ok(vec![1, 1, 1, 1]),
        "keys still found after the move"
    );
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && shown_text.contains("s0") && shown_text.contains("s1"),
        "{console}: {shown:?}"
    );
    let per_primary = per_primary.expect("counting users on each shard primary");
    assert_eq!(
        per_primary.iter().sum::<i64>(),
        SAMPLE_USERS,
        "the shards together hold every sample user exactly once: {per_primary:?}"
    );
    assert!(
        per_primary[..2].iter().all(|&n| n > 0) && per_primary[2] == 0,
        "s0 and s1 hold sample users, s2 none before the move: {per_primary:?}"
    );
}
