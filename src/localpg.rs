//! Throw-away local PostgreSQL clusters (a primary and streaming replicas) for `pgshard demo` and
//! the integration tests.
//!
//! Each cluster lives in one directory (data directories, logs, unix sockets), runs its servers as an
//! unprivileged OS user (PostgreSQL refuses root) and is torn down, directory included, by
//! [`LocalCluster::stop`] or on drop. This is demo and test glue: it drives the PostgreSQL binaries
//! with blocking `std::process` calls and must never be used by the proxy's serving path.
//!
//! The binaries are taken from `$PGSHARD_PG_BINDIR`, else `/usr/lib/postgresql/15/bin`; `psql` from
//! that directory when present, else from `PATH`.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;

/// Where the PostgreSQL server binaries are looked for unless `$PGSHARD_PG_BINDIR` is set.
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";
/// The OS user the servers run as when we are root.
pub const DEFAULT_OS_USER: &str = "pgshard_pg";
/// How long a server may take to start, and a replica to catch up.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Table (in database `postgres`) whose counter shows how far a replica has replayed.
const PROBE_TABLE: &str = "localpg_replication_probe";
/// How many times a start is retried on a fresh port when the chosen one was taken meanwhile.
const PORT_RETRIES: usize = 5;

/// What [`LocalCluster::start`] sets up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas (default 1).
    pub replicas: usize,
    /// Password of the `postgres` superuser (default `postgres`).
    pub superuser_password: String,
    /// Login roles `(name, password)` created on the primary (SCRAM passwords).
    pub users: Vec<(String, String)>,
    /// Databases `(name, owner)` created on the primary.
    pub databases: Vec<(String, String)>,
    /// Directory the cluster lives in; created if missing, must be empty, removed by
    /// [`LocalCluster::stop`]; its parent must be traversable by `os_user`. Default: a new directory
    /// under `/tmp` (short, for the unix socket paths).
    pub base_dir: Option<PathBuf>,
    /// OS user the servers run as when this process is root (default `pgshard_pg`, created if missing).
    pub os_user: String,
    /// TLS for the servers: `ssl = on` with these files. Default: no TLS.
    pub ssl: Option<ClusterSsl>,
    /// `wal_level = logical` instead of `replica` (default false): logical decoding, as the
    /// slot mover (`rebalance`) needs.
    pub logical: bool,
}

/// PEM texts written into the primary's data directory (and copied to the replicas by their
/// base backups).
#[derive(Debug, Clone, Default)]
pub struct ClusterSsl {
    pub cert: String,
    pub key: String,
    /// CA whose client certificates the servers accept (`ssl_ca_file`), for `cert` logins.
    pub client_ca: Option<String>,
    /// pg_hba.conf lines put before the generated ones, e.g. `hostssl certs all 127.0.0.1/32 cert`.
    pub hba_first: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas: 1,
            superuser_password: "postgres".to_string(),
            users: Vec::new(),
            databases: Vec::new(),
            base_dir: None,
            os_user: DEFAULT_OS_USER.to_string(),
            ssl: None,
            logical: false,
        }
    }
}

/// A running primary with its replicas. Stopped and removed on [`LocalCluster::stop`] or drop.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    bindir: PathBuf,
    /// `Some(user)` when server commands run through `runuser -u user`.
    run_as: Option<String>,
    superuser_password: String,
    primary_port: u16,
    replica_ports: Vec<u16>,
    stopped: AtomicBool,
}

impl LocalCluster {
    /// Creates and starts a primary, its roles and databases, then its replicas, and waits until
    /// every replica has replayed the primary's WAL. On error nothing is left behind.
    pub fn start(opts: &ClusterOptions) -> anyhow::Result<LocalCluster> {
        let bindir = std::env::var_os("PGSHARD_PG_BINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINDIR));
        if !bindir.join("initdb").exists() {
            bail!(
                "PostgreSQL binaries not found: {} has no initdb (set PGSHARD_PG_BINDIR)",
                bindir.display()
            );
        }
        let run_as = if is_root() {
            ensure_os_user(&opts.os_user)?;
            Some(opts.os_user.clone())
        } else {
            None
        };
        let dir = make_cluster_dir(opts.base_dir.as_deref())?;
        // From here on, dropping `cluster` stops whatever runs and removes `dir`.
        let mut cluster = LocalCluster {
            dir,
            bindir,
            run_as,
            superuser_password: opts.superuser_password.clone(),
            primary_port: 0,
            replica_ports: Vec::new(),
            stopped: AtomicBool::new(false),
        };
        cluster.chown_dir()?;
        cluster.init_primary(opts.logical)?;
        if let Some(ssl) = &opts.ssl {
            cluster.enable_ssl(ssl)?;
        }
        cluster.primary_port =
            cluster.start_fresh_node(&cluster.primary_data(), "postgresql.conf")?;
        cluster.create_roles_and_databases(opts)?;
        for i in 0..opts.replicas {
            cluster.base_backup(i)?;
            let port =
                cluster.start_fresh_node(&cluster.replica_data(i), "postgresql.auto.conf")?;
            cluster.replica_ports.push(port);
        }
        cluster.wait_for_replay(START_TIMEOUT)?;
        Ok(cluster)
    }

    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    pub fn replica_ports(&self) -> &[u16] {
        &self.replica_ports
    }

    /// `127.0.0.1:PORT` of the primary.
    pub fn primary_addr(&self) -> String {
        format!("127.0.0.1:{}", self.primary_port)
    }

    /// `127.0.0.1:PORT` of each replica.
    pub fn replica_addrs(&self) -> Vec<String> {
        self.replica_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The directory holding everything of this cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops replica `i` (`pg_ctl stop -m fast`).
    pub fn stop_replica(&self, i: usize) -> anyhow::Result<()> {
        self.replica_port(i)?;
        self.pg_ctl_stop(&self.replica_data(i), "fast")
    }

    /// Starts replica `i` again and waits until it has caught up with the primary.
    pub fn start_replica(&self, i: usize) -> anyhow::Result<()> {
        let port = self.replica_port(i)?;
        self.pg_ctl_start(&self.replica_data(i))
            .with_context(|| format!("starting replica {i} on port {port}"))?;
        self.wait_replica_replayed(i, self.bump_probe()?, START_TIMEOUT)
    }

    /// Stops the primary (`pg_ctl stop -m fast`).
    pub fn stop_primary(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop(&self.primary_data(), "fast")
    }

    /// Starts the primary again.
    pub fn start_primary(&self) -> anyhow::Result<()> {
        self.pg_ctl_start(&self.primary_data())
            .with_context(|| format!("starting the primary on port {}", self.primary_port))
    }

    /// Runs `sql` with `psql -X -A -t` as the superuser over TCP and returns its stdout.
    /// Stops at the first error; the error carries psql's stderr.
    pub fn psql(&self, port: u16, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.psql_binary())
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", &self.superuser_password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "psql on port {port}, database {db} failed ({}): {}\nSQL: {sql}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every replica has replayed everything committed on the primary so far, by
    /// writing a row on the primary (in database `postgres`) and polling until each replica sees it.
    pub fn wait_for_replay(&self, timeout: Duration) -> anyhow::Result<()> {
        let n = self.bump_probe()?;
        for i in 0..self.replica_ports.len() {
            self.wait_replica_replayed(i, n, timeout)?;
        }
        Ok(())
    }

    /// Stops every server (`pg_ctl stop -m immediate`) and removes the directory. Idempotent.
    pub fn stop(&mut self) {
        self.stop_shared();
    }

    /// [`LocalCluster::stop`] through a shared reference, for clusters kept in a `static`
    /// (e.g. stopped from an `atexit` hook). Idempotent; afterwards the cluster is unusable.
    pub fn stop_shared(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for i in 0..self.replica_ports.len() {
            let _ = self.pg_ctl_stop(&self.replica_data(i), "immediate");
        }
        let _ = self.pg_ctl_stop(&self.primary_data(), "immediate");
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("localpg: cannot remove {}: {e}", self.dir.display());
            }
        }
    }

    fn primary_data(&self) -> PathBuf {
        self.dir.join("primary")
    }

    fn replica_data(&self, i: usize) -> PathBuf {
        self.dir.join(format!("replica{i}"))
    }

    fn replica_port(&self, i: usize) -> anyhow::Result<u16> {
        self.replica_ports.get(i).copied().ok_or_else(|| {
            anyhow!(
                "no replica {i}: the cluster has {}",
                self.replica_ports.len()
            )
        })
    }

    fn psql_binary(&self) -> PathBuf {
        let own = self.bindir.join("psql");
        if own.exists() {
            own
        } else {
            PathBuf::from("psql")
        }
    }

    /// A command for a server binary, run as the cluster's OS user, from the cluster directory.
    fn server_command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user.as_str(), "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    fn chown_dir(&self) -> anyhow::Result<()> {
        match &self.run_as {
            Some(user) => run_checked(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{user}:"))
                    .arg(&self.dir),
                "chown the cluster directory",
            )
            .map(drop),
            None => Ok(()),
        }
    }

    fn init_primary(&self, logical: bool) -> anyhow::Result<()> {
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.superuser_password))
            .context("writing the password file")?;
        self.chown_dir()?;
        let result = run_checked(
            self.server_command("initdb")
                .arg("-D")
                .arg(self.primary_data())
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8", "--locale=C", "--no-sync"]),
            "initdb",
        );
        let _ = fs::remove_file(&pwfile);
        result?;
        let settings = format!(
            "\n# added by pgshard localpg\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 64MB\n\
             wal_level = {}\n\
             max_wal_senders = 10\n\
             wal_keep_size = 256MB\n\
             hot_standby = on\n\
             logging_collector = off\n",
            self.dir.display(),
            if logical { "logical" } else { "replica" },
        );
        append(&self.primary_data().join("postgresql.conf"), &settings)
    }

    /// Writes `server.crt` and `server.key` (mode 0600, owned by the server's user) into the
    /// primary's data directory and turns `ssl` on.
    fn enable_ssl(&self, ssl: &ClusterSsl) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.primary_data();
        fs::write(data.join("server.crt"), &ssl.cert).context("writing server.crt")?;
        let key_path = data.join("server.key");
        fs::write(&key_path, &ssl.key).context("writing server.key")?;
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
            .context("restricting server.key")?;
        let mut conf =
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_string();
        if let Some(ca) = &ssl.client_ca {
            fs::write(data.join("client-ca.crt"), ca).context("writing client-ca.crt")?;
            conf.push_str("ssl_ca_file = 'client-ca.crt'\n");
        }
        if !ssl.hba_first.is_empty() {
            let hba = data.join("pg_hba.conf");
            let old = fs::read_to_string(&hba).context("reading pg_hba.conf")?;
            fs::write(&hba, format!("{}\n{old}", ssl.hba_first.join("\n")))
                .context("writing pg_hba.conf")?;
        }
        self.chown_dir()?;
        append(&data.join("postgresql.conf"), &conf)
    }

    /// Picks a free port, writes it into `conf_file` of `data` and starts the server; retries on a
    /// new port when another process grabbed the chosen one in between.
    fn start_fresh_node(&self, data: &Path, conf_file: &str) -> anyhow::Result<u16> {
        let mut last_error = None;
        for _ in 0..PORT_RETRIES {
            let port = free_port();
            append(&data.join(conf_file), &format!("port = {port}\n"))?;
            match self.pg_ctl_start(data) {
                Ok(()) => return Ok(port),
                Err(e) if log_says_port_taken(&self.log_file(data)) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!("no free port after {PORT_RETRIES} attempts")))
    }

    fn log_file(&self, data: &Path) -> PathBuf {
        let name = data.file_name().map(|n| n.to_string_lossy().into_owned());
        self.dir
            .join(format!("{}.log", name.unwrap_or_else(|| "server".into())))
    }

    fn pg_ctl_start(&self, data: &Path) -> anyhow::Result<()> {
        let log = self.log_file(data);
        let out = self
            .server_command("pg_ctl")
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-D"])
            .arg(data)
            .arg("-l")
            .arg(&log)
            .arg("start")
            .output()
            .context("cannot run pg_ctl")?;
        if out.status.success() {
            return Ok(());
        }
        bail!(
            "pg_ctl start of {} failed ({}): {}\n--- last lines of {} ---\n{}",
            data.display(),
            out.status,
            output_text(&out),
            log.display(),
            log_tail(&log, 30)
        )
    }

    fn pg_ctl_stop(&self, data: &Path, mode: &str) -> anyhow::Result<()> {
        run_checked(
            self.server_command("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(data)
                .args(["-m", mode, "stop"]),
            "pg_ctl stop",
        )
        .map(drop)
        .with_context(|| format!("stopping {}", data.display()))
    }

    fn create_roles_and_databases(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let port = self.primary_port;
        for (name, password) in &opts.users {
            let sql = format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN PASSWORD {}",
                quote_ident(name),
                quote_literal(password)
            );
            self.psql(port, "postgres", &sql)
                .with_context(|| format!("creating role {name}"))?;
        }
        for (db, owner) in &opts.databases {
            let sql = format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(db),
                quote_ident(owner)
            );
            self.psql(port, "postgres", &sql)
                .with_context(|| format!("creating database {db}"))?;
        }
        let probe = format!("CREATE TABLE {PROBE_TABLE} (id int PRIMARY KEY, n bigint NOT NULL)");
        self.psql(port, "postgres", &probe)
            .context("creating the replication probe table")?;
        Ok(())
    }

    fn base_backup(&self, i: usize) -> anyhow::Result<()> {
        let data = self.replica_data(i);
        run_checked(
            self.server_command("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &self.primary_port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
                .env("PGPASSWORD", &self.superuser_password),
            "pg_basebackup",
        )
        .with_context(|| format!("creating replica {i}"))?;
        Ok(())
    }

    /// Bumps the probe counter on the primary (committed and flushed) and returns its new value.
    fn bump_probe(&self) -> anyhow::Result<i64> {
        let out = self.psql(
            self.primary_port,
            "postgres",
            &format!(
                "SET synchronous_commit = on; \
                 INSERT INTO {PROBE_TABLE} VALUES (1, 1) \
                 ON CONFLICT (id) DO UPDATE SET n = {PROBE_TABLE}.n + 1 RETURNING n"
            ),
        )?;
        out.trim()
            .parse()
            .with_context(|| format!("unexpected probe answer {out:?}"))
    }

    /// Polls replica `i` until it is in recovery and shows probe value `n` (or a later one),
    /// i.e. has replayed everything committed on the primary before that value.
    fn wait_replica_replayed(&self, i: usize, n: i64, timeout: Duration) -> anyhow::Result<()> {
        let port = self.replica_port(i)?;
        let sql = format!("SELECT pg_is_in_recovery() AND n >= {n} FROM {PROBE_TABLE}");
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.psql(port, "postgres", &sql);
            match &answer {
                Ok(out) if out.trim() == "t" => return Ok(()),
                _ if Instant::now() >= deadline => {
                    bail!(
                        "replica {i} (port {port}) did not catch up with the primary within \
                         {timeout:?} (last answer: {answer:?})\n--- last lines of its log ---\n{}",
                        log_tail(&self.log_file(&self.replica_data(i)), 30)
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop()
    }
}

/// A free loopback TCP port in 20000..32000, checked by binding it. Ports are handed out in
/// sequence from a random start, so clusters started at the same time by different test threads
/// never get the same port before one of them binds it (hence the process-wide counter).
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = rand::thread_rng().gen_range(20000..26000);
    let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(20000..32000).contains(&port) {
            NEXT.store(20000, Ordering::Relaxed);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates the system user `user` unless it exists. Tolerates a concurrent creation.
fn ensure_os_user(user: &str) -> anyhow::Result<()> {
    let exists = || {
        Command::new("id")
            .arg("-u")
            .arg(user)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if exists() {
        return Ok(());
    }
    let result = run_checked(
        Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(user),
        "useradd",
    );
    match result {
        Ok(_) => Ok(()),
        Err(_) if exists() => Ok(()),
        Err(e) => Err(e.context(format!("creating OS user {user} to run PostgreSQL"))),
    }
}

/// Creates the cluster directory: `base` (absent or empty) or a new one under `/tmp`.
/// Its permissions let the server's OS user reach it.
fn make_cluster_dir(base: Option<&Path>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match base {
        Some(base) => {
            fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
            let mut entries =
                fs::read_dir(base).with_context(|| format!("reading {}", base.display()))?;
            if entries.next().is_some() {
                bail!("cluster directory {} is not empty", base.display());
            }
            base.to_path_buf()
        }
        None => tempfile::Builder::new()
            .prefix("pgsh")
            .tempdir_in("/tmp")
            .context("creating a directory under /tmp")?
            .keep(),
    };
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting permissions of {}", dir.display()))?;
    Ok(dir)
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `cmd`; a non-zero exit becomes an error carrying its output.
fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, output_text(&out));
    }
    Ok(out)
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        text.push('\n');
        text.push_str(stdout.trim());
    }
    text
}

/// The last `lines` lines of a log file, or a note why there are none.
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn log_says_port_taken(log: &Path) -> bool {
    log_tail(log, 20).contains("Address already in use")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
