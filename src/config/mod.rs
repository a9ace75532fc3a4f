//! The TOML configuration: serde types with defaults, loading, and validation at load.
//! Pure data: no I/O beyond reading the file in [`Config::load`] and checking that the TLS
//! files it names parse ([`Config::client_tls`], [`Config::server_tls`]), no sockets, no
//! globals.

mod reload;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::tls::{BackendTls, TlsError};

pub use crate::sharding::KeyType;
pub use crate::tls::settings::{BackendTlsConfig, BackendTlsMode, ClientTlsMode};
pub use validate::ConfigError;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub sharding: ShardingConfig,
    pub shards: Vec<ShardConfig>,
    /// `[metrics]`: the Prometheus endpoint; none without the section.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `[backend_tls]`: TLS to the servers.
    #[serde(default)]
    pub backend_tls: BackendTlsConfig,
    /// `[admin]`: who may use the admin console.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[catalog]`: where the live shard map is kept. Without the section `pgshard serve`
    /// routes by the `[[shards]]` slots alone (and `map show` / `rebalance plan` use the
    /// default catalog, [`Config::catalog_url`]).
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
}

/// `[catalog]`: the PostgreSQL database holding the live shard map (schema `pgshard`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// A libpq-style connection string (`host=... port=... dbname=... user=... password=...`
    /// or `postgres://user:password@host:port/db`). Default: see [`Config::catalog_url`].
    #[serde(default)]
    pub url: Option<String>,
    /// How often each router reads the catalog's epoch in case a notification was missed.
    #[serde(default = "default_catalog_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long a statement waits for a slot move's cutover before it fails with 55P03.
    #[serde(default = "default_catalog_hold_wait_ms")]
    pub hold_wait_ms: u64,
    /// How long a router keeps routing by its map while it cannot reach the catalog. Past it,
    /// statements on any slot and keyless ones wait until the catalog answers again (a move may
    /// have flipped slots meanwhile); a mover waits this long, and a poll and a second more,
    /// for a router it has not heard from before it cuts over without it. Default: 10 s, or
    /// two poll intervals and a second if that is longer ([`CatalogConfig::lease`]).
    #[serde(default)]
    pub lease_ms: Option<u64>,
}

impl CatalogConfig {
    /// `lease_ms`, or its default.
    pub fn lease(&self) -> std::time::Duration {
        let least = self
            .poll_interval_ms
            .saturating_mul(2)
            .saturating_add(1_000);
        std::time::Duration::from_millis(self.lease_ms.unwrap_or(least.max(10_000)))
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: None,
            poll_interval_ms: default_catalog_poll_interval_ms(),
            hold_wait_ms: default_catalog_hold_wait_ms(),
            lease_ms: None,
        }
    }
}

/// `[admin]`: who may use the admin console (the databases `pgshard` and `pgbouncer`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Users with full access: SHOW commands and RELOAD, PAUSE, RESUME, DISABLE, ENABLE,
    /// KILL_CLIENT, SHUTDOWN.
    pub users: Vec<String>,
    /// Users who may run SHOW commands only.
    pub stats_users: Vec<String>,
    /// Password of the console users not listed in `[[users]]` (those listed there use their
    /// own password).
    pub password: Option<String>,
}

impl AdminConfig {
    /// The console access of `user`: `Some(true)` full, `Some(false)` SHOW only.
    pub fn access(&self, user: &str) -> Option<bool> {
        if self.users.iter().any(|u| u == user) {
            Some(true)
        } else if self.stats_users.iter().any(|u| u == user) {
            Some(false)
        } else {
            None
        }
    }
}

/// `[metrics]`: where Prometheus scrapes `/metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint, e.g. `127.0.0.1:9930`.
    pub listen: String,
}

/// `[server]`: the client-facing side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the proxy listens on, e.g. `127.0.0.1:6432`.
    pub listen: String,
    /// The database name clients connect to.
    pub database: String,
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// How clients authenticate: `scram-sha-256` (default), `md5` or `trust`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Most client connections at once; further ones get SQLSTATE 53300.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Largest protocol message a client may send, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time a client has to finish startup and authentication.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Connections the kernel queues for the listener before pgshard accepts them (capped by
    /// the kernel's `net.core.somaxconn`): room for a storm of clients connecting at once.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
    /// Transaction mode: what to do with statements that leave state in the server session
    /// (temporary objects, cursors WITH HOLD, SQL PREPARE, LISTEN, session advisory locks).
    #[serde(default)]
    pub session_state: SessionStatePolicy,
    /// On SIGTERM (or the console's SHUTDOWN), how long transactions in flight may run before
    /// their clients are closed; new connections are refused at once.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// PEM file of the certificate chain shown to TLS clients.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of its private key.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Whether clients may or must use TLS; see [`ServerConfig::effective_tls_mode`].
    #[serde(default)]
    pub tls_mode: Option<ClientTlsMode>,
}

impl ServerConfig {
    /// `server.tls_mode`, or when unset: `allow` with a certificate, `disable` without.
    pub fn effective_tls_mode(&self) -> ClientTlsMode {
        self.tls_mode.unwrap_or(if self.tls_cert.is_some() {
            ClientTlsMode::Allow
        } else {
            ClientTlsMode::Disable
        })
    }
}

/// `server.session_state`: how transaction mode treats state no other server connection has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatePolicy {
    /// The client keeps its server connection while it holds such state.
    #[default]
    Pin,
    /// Such statements are refused with 0A000 before they run.
    Refuse,
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Held for one transaction (or one statement outside a transaction).
    #[default]
    Transaction,
    /// Held for the client's whole session; reset with DISCARD ALL afterwards.
    Session,
}

/// Client authentication method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

/// `[pool]`: server connection pools, one per (backend, user).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Server connections per backend per user.
    pub size: usize,
    /// How long a client waits in the queue for a server connection.
    pub checkout_timeout_ms: u64,
    /// Idle server connections kept open per pool even when unused.
    pub min_idle: usize,
    /// An idle server connection unused this long is closed (down to `min_idle`).
    pub idle_timeout_ms: u64,
    /// A server connection older than this is closed when it next goes idle.
    pub max_lifetime_ms: u64,
    /// Time allowed to open and authenticate a new server connection.
    pub connect_timeout_ms: u64,
    /// How often each server is health-checked (`SELECT 1`).
    pub health_check_interval_ms: u64,
    /// A health check slower than this marks the server down.
    pub health_check_timeout_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 20,
            checkout_timeout_ms: 5_000,
            min_idle: 0,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 3_600_000,
            connect_timeout_ms: 5_000,
            health_check_interval_ms: 1_000,
            health_check_timeout_ms: 2_000,
        }
    }
}

/// `[[users]]`: who may connect, and as whom pgshard logs in to the servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    /// User name towards the servers (default: `name`).
    pub server_user: Option<String>,
    /// Password towards the servers (default: `password`).
    pub server_password: Option<String>,
    /// Overrides `[pool] size` for this user.
    pub pool_size: Option<usize>,
    /// Most client connections this user may have at once (SQLSTATE 53300 beyond).
    pub max_client_connections: Option<usize>,
    /// Statements per second this user's clients may send together (a token bucket; unset:
    /// no limit). A statement over the limit waits up to `rate_limit_wait_ms`, then fails
    /// with SQLSTATE 53400.
    pub statements_per_second: Option<f64>,
    /// Statements the bucket holds when full: a burst allowed at once (default: one second's
    /// worth, at least 1).
    pub statement_burst: Option<u32>,
    /// Longest a statement waits for the rate limit before it is refused.
    #[serde(default = "default_rate_limit_wait_ms")]
    pub rate_limit_wait_ms: u64,
}

impl UserConfig {
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }
    pub fn server_password(&self) -> &str {
        self.server_password.as_deref().unwrap_or(&self.password)
    }
}

/// `[sharding]`: how statements map to shards.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardingConfig {
    pub key_column: String,
    pub key_type: KeyType,
    pub tables: Vec<TableConfig>,
    /// Tables copied on every shard.
    pub reference_tables: Vec<String>,
    /// Shard holding every table that is neither sharded nor a reference table (default: the first).
    pub default_shard: Option<String>,
    /// Most memory one cross-shard read may hold while merging (GROUP BY groups, DISTINCT rows,
    /// rows sorted by an aggregate), in MiB; above it the client gets an error (53200).
    pub max_merge_memory_mb: usize,
    /// After a client's write commits on a shard, its reads of that shard go to a replica only
    /// once that replica has replayed the commit (else to the primary).
    pub read_your_writes: bool,
    /// How often, while some client waits for a replica to replay its write, each shard's
    /// servers are asked for their WAL positions.
    pub replay_check_interval_ms: u64,
    /// The shortest time between two such samples while a client waits for the next one (its
    /// write just committed, or a replica is still short of it).
    pub replay_check_gap_ms: u64,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        ShardingConfig {
            key_column: "user_id".to_string(),
            key_type: KeyType::Bigint,
            tables: Vec::new(),
            reference_tables: Vec::new(),
            default_shard: None,
            max_merge_memory_mb: 64,
            read_your_writes: true,
            replay_check_interval_ms: 10,
            replay_check_gap_ms: 1,
        }
    }
}

/// `[[sharding.tables]]`: a sharded table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    pub key_column: Option<String>,
    pub key_type: Option<KeyType>,
}

/// `[[shards]]`: one shard, a primary and its replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    pub name: String,
    /// `host:port` of the primary.
    pub primary: String,
    /// `host:port` of each streaming replica.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Database name on this shard's servers (default: `[server] database`).
    pub database: Option<String>,
    /// Slot ranges this shard owns, e.g. `"0-99,300-511"` (default: an even split).
    pub slots: Option<String>,
    /// Where plain reads go: `replicas` (default) or `primary`.
    #[serde(default)]
    pub read_from: ReadFrom,
}

/// Where a shard's plain reads go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Replicas,
    Primary,
}

fn default_max_client_connections() -> usize {
    10_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_listen_backlog() -> u32 {
    4096
}
fn default_startup_timeout_ms() -> u64 {
    15_000
}
fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
fn default_rate_limit_wait_ms() -> u64 {
    1_000
}
fn default_catalog_hold_wait_ms() -> u64 {
    30_000
}

fn default_catalog_poll_interval_ms() -> u64 {
    1_000
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Config::from_toml_str(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        // The files must parse (and keys go with their certificates) before anything runs.
        let tls_files = config.client_tls().and_then(|_| config.server_tls());
        tls_files.map_err(|e| ConfigError::Invalid {
            key: e.key.to_string(),
            problem: e.problem,
        })?;
        Ok(config)
    }

    /// The rustls config for TLS clients, read from `server.tls_cert` / `tls_key` now (`None`
    /// when `server.tls_mode` is `disable`).
    pub fn client_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        let server = &self.server;
        crate::tls::server_config(
            server.effective_tls_mode(),
            server.tls_cert.as_deref(),
            server.tls_key.as_deref(),
        )
    }

    /// How pgshard opens TLS to servers, read from `[backend_tls]`'s files now (`None` when
    /// its mode is `disable`).
    pub fn server_tls(&self) -> Result<Option<Arc<BackendTls>>, TlsError> {
        crate::tls::backend_tls(&self.backend_tls)
    }

    /// The user entry for a client-supplied name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The password a console user authenticates with: their `[[users]]` one, else
    /// `[admin] password`.
    pub fn admin_password(&self, name: &str) -> Option<&str> {
        self.admin.access(name)?;
        match self.user(name) {
            Some(user) => Some(&user.password),
            None => self.admin.password.as_deref(),
        }
    }

    /// The catalog's connection string: `catalog.url`, or by default the first shard's
    /// primary and database, logged in as the first `[[users]]` entry's server user and
    /// password ([`Config::primary_url`] of shard 0 with `application_name=pgshard-catalog`).
    pub fn catalog_url(&self) -> String {
        match self.catalog.as_ref().and_then(|c| c.url.clone()) {
            Some(url) => url,
            None => format!("{} application_name=pgshard-catalog", self.primary_url(0)),
        }
    }

    /// A libpq connection string to shard `idx`'s primary and database as the first
    /// `[[users]]` entry's server user: `host='H' port='P' dbname='D' user='U' password='W'`.
    /// Panics if `idx` is not a shard's index.
    pub fn primary_url(&self, idx: usize) -> String {
        self.server_url(idx, &self.shards[idx].primary)
    }

    /// [`Config::primary_url`] for another server of shard `idx` (one of its replicas).
    pub fn server_url(&self, idx: usize, addr: &str) -> String {
        let shard = &self.shards[idx];
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut url = format!(
            "host={} port={} dbname={}",
            quote(host),
            quote(port),
            quote(self.shard_database(shard))
        );
        if let Some(user) = self.users.first() {
            url.push_str(&format!(
                " user={} password={}",
                quote(user.server_user()),
                quote(user.server_password())
            ));
        }
        url
    }

    /// How often routers poll the catalog (`catalog.poll_interval_ms`).
    pub fn catalog_poll_interval(&self) -> std::time::Duration {
        let ms = self
            .catalog
            .as_ref()
            .map_or_else(default_catalog_poll_interval_ms, |c| c.poll_interval_ms);
        std::time::Duration::from_millis(ms)
    }

    /// Backend database name of a shard.
    pub fn shard_database<'a>(&'a self, shard: &'a ShardConfig) -> &'a str {
        shard.database.as_deref().unwrap_or(&self.server.database)
    }
}
