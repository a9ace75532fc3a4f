//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES, POOLS, DATABASES, LISTS, USERS, MEM, CONFIG and
//! VERSION, with PgBouncer's columns and types. "Database" is the name clients connect to
//! (`server.database`); per-server detail is in SHOW SHARDS and SHOW SERVERS. Reads only.

use std::sync::atomic::Ordering;

use super::result::{ResultSet, Type, Value};
use super::views;
use crate::config::{AuthMethod, Config, PoolMode, SessionStatePolicy};
use crate::shared::Shared;
use crate::stats::Totals;

use Type::{Int4, Numeric, Text};

/// PgBouncer's total and average columns, in its order, with pgshard's values.
fn stat_columns(t: &Totals, logins: u64, uptime_secs: f64) -> Vec<(&'static str, Value)> {
    let per_sec = |n: u64| Value::Count((n as f64 / uptime_secs.max(1.0)) as u64);
    let per = |time: u64, n: u64| Value::Count(time.checked_div(n).unwrap_or(0));
    vec![
        (
            "total_server_assignment_count",
            t.server_assignment_count.into(),
        ),
        ("total_xact_count", t.xact_count.into()),
        ("total_query_count", t.query_count.into()),
        ("total_received", t.received.into()),
        ("total_sent", t.sent.into()),
        ("total_xact_time", t.xact_time.into()),
        ("total_query_time", t.query_time.into()),
        ("total_wait_time", t.wait_time.into()),
        ("total_client_parse_count", 0u64.into()),
        ("total_server_parse_count", 0u64.into()),
        ("total_bind_count", 0u64.into()),
        ("total_client_login_count", logins.into()),
        (
            "avg_server_assignment_count",
            per_sec(t.server_assignment_count),
        ),
        ("avg_xact_count", per_sec(t.xact_count)),
        ("avg_query_count", per_sec(t.query_count)),
        ("avg_recv", per_sec(t.received)),
        ("avg_sent", per_sec(t.sent)),
        ("avg_xact_time", per(t.xact_time, t.xact_count)),
        ("avg_query_time", per(t.query_time, t.query_count)),
        ("avg_wait_time", per(t.wait_time, t.server_assignment_count)),
        ("avg_client_parse_count", 0u64.into()),
        ("avg_server_parse_count", 0u64.into()),
        ("avg_bind_count", 0u64.into()),
        ("avg_client_login_count", per_sec(logins)),
        // PgBouncer before 1.8 had this instead of total_query_count; older exporters read it.
        ("total_requests", t.query_count.into()),
    ]
}

/// The client database's stats columns, as SHOW STATS has them.
fn database_stats(shared: &Shared) -> Vec<(&'static str, Value)> {
    let totals = views::database_totals(shared);
    let logins = shared.stats.clients.logins();
    stat_columns(&totals, logins, shared.stats.uptime().as_secs_f64())
}

/// A one-row set: `database` then the stat columns `keep` names (renamed as it says).
fn stats_row(shared: &Shared, keep: impl Fn(&'static str) -> Option<&'static str>) -> ResultSet {
    let chosen: Vec<(&'static str, Value)> = database_stats(shared)
        .into_iter()
        .filter_map(|(name, value)| keep(name).map(|n| (n, value)))
        .collect();
    let mut header = vec![("database", Text)];
    header.extend(chosen.iter().map(|(name, _)| (*name, Numeric)));
    let mut set = ResultSet::new(&header);
    let mut row = vec![Value::from(shared.config.server.database.as_str())];
    row.extend(chosen.into_iter().map(|(_, v)| v));
    set.row(row);
    set
}

pub fn stats(shared: &Shared) -> ResultSet {
    stats_row(shared, Some)
}

/// SHOW STATS_TOTALS's columns, from SHOW STATS's.
const TOTALS: &[(&str, &str)] = &[
    ("total_server_assignment_count", "server_assignment_count"),
    ("total_xact_count", "xact_count"),
    ("total_query_count", "query_count"),
    ("total_received", "bytes_received"),
    ("total_sent", "bytes_sent"),
    ("total_xact_time", "xact_time"),
    ("total_query_time", "query_time"),
    ("total_wait_time", "wait_time"),
    ("total_client_parse_count", "client_parse_count"),
    ("total_server_parse_count", "server_parse_count"),
    ("total_bind_count", "bind_count"),
    ("total_client_login_count", "client_login_count"),
];

/// SHOW STATS_AVERAGES's columns, from SHOW STATS's.
const AVERAGES: &[(&str, &str)] = &[
    ("avg_server_assignment_count", "server_assignment_count"),
    ("avg_xact_count", "xact_count"),
    ("avg_query_count", "query_count"),
    ("avg_recv", "bytes_received"),
    ("avg_sent", "bytes_sent"),
    ("avg_xact_time", "xact_time"),
    ("avg_query_time", "query_time"),
    ("avg_wait_time", "wait_time"),
    ("avg_client_parse_count", "avg_client_parse_count"),
    ("avg_server_parse_count", "avg_server_parse_count"),
    ("avg_bind_count", "avg_bind_count"),
    ("avg_client_login_count", "avg_client_login_count"),
];

fn renamed(table: &'static [(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(from, _)| *from == name)
        .map(|(_, to)| *to)
}

pub fn stats_totals(shared: &Shared) -> ResultSet {
    stats_row(shared, |name| renamed(TOTALS, name))
}

pub fn stats_averages(shared: &Shared) -> ResultSet {
    stats_row(shared, |name| renamed(AVERAGES, name))
}

fn pool_mode(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

pub fn pools(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
    ]);
    for user in &shared.config.users {
        let (cl_active, cl_waiting) = views::clients(shared, Some(&user.name));
        let (active, idle, _, max_wait) = views::servers(shared, Some(&user.name));
        let being_canceled = views::being_canceled(shared, Some(&user.name));
        set.row(vec![
            shared.config.server.database.as_str().into(),
            user.name.as_str().into(),
            cl_active.into(),
            cl_waiting.into(),
            0i32.into(),
            0i32.into(),
            active.into(),
            0i32.into(),
            Value::Count(being_canceled),
            idle.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            Value::Count(max_wait.as_secs()),
            Value::Count(u64::from(max_wait.subsec_micros())),
            pool_mode(shared.config.server.pool_mode).into(),
            Value::Null,
        ]);
    }
    set
}

pub fn databases(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
        // The name before PgBouncer 1.9's reserve_pool_size; older exporters read it.
        ("reserve_pool", Int4),
    ]);
    let config = &shared.config;
    let default_shard = shared.router.load().default_shard();
    let (host, port) = views::host_port(&shared.shards[default_shard].primary.addr);
    let (active, idle, _, _) = views::servers(shared, None);
    let (clients, waiting) = views::clients(shared, None);
    let (all_paused, _) = shared.control.paused();
    let disabled = shared.control.is_disabled();
    let database = config.server.database.as_str();
    set.row(vec![
        database.into(),
        host.into(),
        port.into(),
        database.into(),
        Value::Null,
        config.pool.size.into(),
        config.pool.min_idle.into(),
        0i32.into(),
        Value::Count(config.pool.max_lifetime_ms / 1000),
        pool_mode(config.server.pool_mode).into(),
        Value::Null,
        0i32.into(),
        (active + idle).into(),
        config.server.max_client_connections.into(),
        (clients + waiting).into(),
        all_paused.into(),
        disabled.into(),
        0i32.into(),
    ]);
    let consoles = shared
        .stats
        .clients
        .list()
        .iter()
        .filter(|c| c.console)
        .count();
    let (listen_host, listen_port) = views::host_port(&config.server.listen);
    for name in super::DATABASES {
        set.row(vec![
            name.into(),
            listen_host.as_str().into(),
            listen_port.into(),
            name.into(),
            Value::Null,
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            "statement".into(),
            Value::Null,
            0i32.into(),
            0i32.into(),
            config.server.max_client_connections.into(),
            consoles.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
        ]);
    }
    set
}

pub fn lists(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[("list", Text), ("items", Int4)]);
    let registered = shared.stats.clients.len();
    let connected = shared.clients.load(Ordering::Relaxed);
    let (active, idle, _, _) = views::servers(shared, None);
    let items: [(&str, usize); 14] = [
        ("databases", 1 + super::DATABASES.len()),
        ("users", shared.config.users.len()),
        ("peers", 0),
        ("pools", views::pools(shared).len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", registered),
        ("login_clients", connected.saturating_sub(registered)),
        ("free_servers", idle),
        ("used_servers", active),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (name, n) in items {
        set.row(vec![name.into(), n.into()]);
    }
    set
}

pub fn users(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let config = &shared.config;
    for user in &config.users {
        let (active, idle, _, _) = views::servers(shared, Some(&user.name));
        let (clients, waiting) = views::clients(shared, Some(&user.name));
        set.row(vec![
            user.name.as_str().into(),
            user.pool_size
                .unwrap_or(config.pool.size)
                .to_string()
                .into(),
            "".into(),
            pool_mode(config.server.pool_mode).into(),
            0i32.into(),
            (active + idle).into(),
            0i32.into(),
            (clients + waiting).into(),
        ]);
    }
    set
}

pub fn mem(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("name", Text),
        ("size", Int4),
        ("used", Int4),
        ("free", Int4),
        ("memtotal", Int4),
    ]);
    let entry = std::mem::size_of::<crate::stats::ClientEntry>();
    let clients = shared.stats.clients.len();
    let slot_bytes = shared.stats.slots.memory();
    let (active, idle, _, _) = views::servers(shared, None);
    let server = std::mem::size_of::<crate::backend::ServerConnection>();
    let rows: [(&str, usize, usize); 3] = [
        ("client_registry", entry, clients),
        ("slot_counters", slot_bytes, 1),
        ("server_connections", server, active + idle),
    ];
    for (name, size, used) in rows {
        set.row(vec![
            name.into(),
            size.into(),
            used.into(),
            0i32.into(),
            (size * used).into(),
        ]);
    }
    set
}

pub fn version() -> ResultSet {
    let mut set = ResultSet::new(&[("version", Text)]);
    set.row(vec![concat!("pgshard ", env!("CARGO_PKG_VERSION")).into()]);
    set
}

pub fn config(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for (key, value, default, changeable) in config_rows(&shared.config) {
        let changeable = if changeable { "yes" } else { "no" };
        set.row(vec![
            key.into(),
            value.into(),
            default.into(),
            changeable.into(),
        ]);
    }
    set
}

/// Every setting as (key, value, default, changed by RELOAD); never a password.
fn config_rows(c: &Config) -> Vec<ConfigRow> {
    let mut rows = server_rows(c);
    rows.extend(pool_rows(c));
    rows.extend(sharding_rows(c));
    let names = |v: &[String]| v.join(",");
    let users: Vec<String> = c.users.iter().map(|u| u.name.clone()).collect();
    let shards: Vec<String> = c.shards.iter().map(|s| s.name.clone()).collect();
    rows.extend([
        row("users", names(&users), "", true),
        row("shards", names(&shards), "", true),
        row("admin.users", names(&c.admin.users), "", true),
        row("admin.stats_users", names(&c.admin.stats_users), "", true),
    ]);
    rows.extend(catalog_rows(c));
    rows
}

/// `[catalog]` needs a restart to change. The url is shown as `host:port/db` (never its
/// password), empty without the section (the live map is off).
fn catalog_rows(c: &Config) -> Vec<ConfigRow> {
    let url = match &c.catalog {
        None => String::new(),
        Some(_) => crate::catalog::parse_url(&c.catalog_url())
            .map(|u| crate::catalog::describe(&u))
            .unwrap_or_default(),
    };
    let poll = c.catalog_poll_interval().as_millis().to_string();
    vec![
        row("catalog.url", url, "", false),
        row("catalog.poll_interval_ms", poll, "1000", false),
    ]
}

/// A SHOW CONFIG row: key, value, default, whether a reload can change it.
type ConfigRow = (&'static str, String, String, bool);

fn row(key: &'static str, value: String, default: &str, changeable: bool) -> ConfigRow {
    (key, value, default.to_string(), changeable)
}

fn server_rows(c: &Config) -> Vec<ConfigRow> {
    let s = &c.server;
    let auth = match s.auth_method {
        AuthMethod::ScramSha256 => "scram-sha-256",
        AuthMethod::Md5 => "md5",
        AuthMethod::Trust => "trust",
    };
    let state = match s.session_state {
        SessionStatePolicy::Pin => "pin",
        SessionStatePolicy::Refuse => "refuse",
    };
    let n = |v: u64| v.to_string();
    vec![
        row("server.listen", s.listen.clone(), "", false),
        row("server.database", s.database.clone(), "", true),
        row(
            "server.pool_mode",
            pool_mode(s.pool_mode).into(),
            "transaction",
            false,
        ),
        row("server.auth_method", auth.into(), "scram-sha-256", true),
        row(
            "server.max_client_connections",
            n(s.max_client_connections as u64),
            "10000",
            true,
        ),
        row(
            "server.max_message_bytes",
            n(s.max_message_bytes as u64),
            "67108864",
            true,
        ),
        row(
            "server.startup_timeout_ms",
            n(s.startup_timeout_ms),
            "15000",
            true,
        ),
        row(
            "server.shutdown_timeout_ms",
            n(s.shutdown_timeout_ms),
            "30000",
            true,
        ),
        row("server.session_state", state.into(), "pin", true),
    ]
}

fn pool_rows(c: &Config) -> Vec<ConfigRow> {
    let p = &c.pool;
    let d = crate::config::PoolConfig::default();
    let pair = |k, v: u64, d: u64| row(k, v.to_string(), &d.to_string(), true);
    vec![
        pair("pool.size", p.size as u64, d.size as u64),
        pair(
            "pool.checkout_timeout_ms",
            p.checkout_timeout_ms,
            d.checkout_timeout_ms,
        ),
        pair("pool.min_idle", p.min_idle as u64, d.min_idle as u64),
        pair("pool.idle_timeout_ms", p.idle_timeout_ms, d.idle_timeout_ms),
        pair("pool.max_lifetime_ms", p.max_lifetime_ms, d.max_lifetime_ms),
        pair(
            "pool.connect_timeout_ms",
            p.connect_timeout_ms,
            d.connect_timeout_ms,
        ),
        pair(
            "pool.health_check_interval_ms",
            p.health_check_interval_ms,
            d.health_check_interval_ms,
        ),
        pair(
            "pool.health_check_timeout_ms",
            p.health_check_timeout_ms,
            d.health_check_timeout_ms,
        ),
    ]
}

/// `[sharding]` needs a restart to change (a reload refuses it).
fn sharding_rows(c: &Config) -> Vec<ConfigRow> {
    let sh = &c.sharding;
    vec![
        row(
            "sharding.key_column",
            sh.key_column.clone(),
            "user_id",
            false,
        ),
        row(
            "sharding.key_type",
            sh.key_type.to_string(),
            "bigint",
            false,
        ),
        row(
            "sharding.default_shard",
            sh.default_shard.clone().unwrap_or_default(),
            "",
            false,
        ),
        row(
            "sharding.max_merge_memory_mb",
            sh.max_merge_memory_mb.to_string(),
            "64",
            false,
        ),
        row(
            "sharding.read_your_writes",
            sh.read_your_writes.to_string(),
            "true",
            false,
        ),
        row(
            "sharding.replay_check_interval_ms",
            sh.replay_check_interval_ms.to_string(),
            "10",
            false,
        ),
        row(
            "sharding.replay_check_gap_ms",
            sh.replay_check_gap_ms.to_string(),
            "1",
            false,
        ),
    ]
}
