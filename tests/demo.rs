//! `pgshard demo` end to end: it comes up, announces itself, serves the sample table, and on
//! Ctrl-C stops PostgreSQL and removes the cluster directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY: &str = "pgshard demo ready";
const DIR_PREFIX: &str = "PostgreSQL cluster directory: ";

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

    /// Reads stdout until the ready line; returns the cluster directory printed before it.
    fn wait_ready(&mut self, timeout: Duration) -> PathBuf {
        let deadline = Instant::now() + timeout;
        let mut dir = None;
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
            if line.trim() == READY {
                return dir.expect("the cluster directory is printed before the ready line");
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

/// Counts the sample rows through the proxy as app/app.
async fn count_users(port: u16) -> Result<i64, String> {
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .map_err(|e| format!("query: {e}"))?;
    Ok(row.get(0))
}

#[test]
fn demo_serves_sample_table_and_cleans_up_on_ctrl_c() {
    let port = pgshard::localpg::free_port();
    let mut demo = Demo::spawn(port);
    let dir = demo.wait_ready(Duration::from_secs(120));
    assert!(
        dir.exists(),
        "the printed cluster directory {} exists while running",
        dir.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counted = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), count_users(port))
            .await
            .unwrap_or_else(|_| Err("no answer through the proxy within 15 s".to_string()))
    });
    drop(runtime);

    demo.interrupt();
    let status = demo.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the demo exits successfully on Ctrl-C: {status}"
    );
    assert!(
        !dir.exists(),
        "the cluster directory {} is removed",
        dir.display()
    );
    assert_eq!(
        counted,
        Ok(100),
        "SELECT count(*) FROM users through the proxy"
    );
}
