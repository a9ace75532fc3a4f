//! SHOW CLIENTS and SHOW SERVERS with PgBouncer's columns: clients from the registry, server
//! connections held by clients (from the registry) and idle in the pools (from their idle
//! lists, read under the pool's lock). SHOW SERVERS adds a `shard` column at the end. Reads only.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::result::{ResultSet, Type, Value};
use super::views;
use crate::shared::Shared;
use crate::stats::{ClientEntry, ClientState};

use Type::{Int4, Text, Timestamptz};

/// The columns SHOW CLIENTS and SHOW SERVERS share (PgBouncer's, in its order).
const SOCKET_COLUMNS: [(&str, Type); 21] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Timestamptz),
    ("request_time", Timestamptz),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int4),
];

/// One SHOW CLIENTS / SHOW SERVERS row.
struct Socket {
    kind: &'static str,
    user: String,
    database: String,
    state: &'static str,
    addr: Option<(String, i64)>,
    local: (String, i64),
    connect_time: Option<SystemTime>,
    request_time: Option<SystemTime>,
    wait_us: u64,
    ptr: String,
    link: Option<String>,
    remote_pid: i32,
    application_name: String,
    id: i64,
}

impl Socket {
    fn values(self) -> Vec<Value> {
        let (addr, port) = match self.addr {
            Some((addr, port)) => (Value::Text(addr), Value::Int(port)),
            None => (Value::Null, Value::Null),
        };
        vec![
            self.kind.into(),
            self.user.into(),
            self.database.into(),
            "no".into(),
            self.state.into(),
            addr,
            port,
            self.local.0.into(),
            self.local.1.into(),
            self.connect_time.map_or(Value::Null, Value::Time),
            self.request_time.map_or(Value::Null, Value::Time),
            Value::Count(self.wait_us / 1_000_000),
            Value::Count(self.wait_us % 1_000_000),
            0i32.into(),
            self.ptr.into(),
            self.link.into(),
            self.remote_pid.into(),
            "".into(),
            self.application_name.into(),
            0i32.into(),
            self.id.into(),
        ]
    }
}

fn state_name(state: ClientState) -> &'static str {
    match state {
        ClientState::Active => "active",
        ClientState::Waiting => "waiting",
        ClientState::Idle => "idle",
    }
}

fn request_time(shared: &Shared, client: &ClientEntry) -> Option<SystemTime> {
    client.request_micros().map(|m| shared.stats.wall(m))
}

pub fn clients(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&SOCKET_COLUMNS);
    let local = views::host_port(&shared.config.server.listen);
    let now = shared.stats.micros(Instant::now());
    for client in shared.stats.clients.list() {
        let state = client.state();
        let wait_us = client
            .waiting_since()
            .map_or(0, |since| now.saturating_sub(since));
        let socket = Socket {
            kind: "C",
            user: client.user.to_string(),
            database: client.database.to_string(),
            state: state_name(state),
            addr: client
                .addr
                .map(|a| (a.ip().to_string(), i64::from(a.port()))),
            local: local.clone(),
            connect_time: Some(client.connect_time),
            request_time: request_time(shared, &client).or(Some(client.connect_time)),
            wait_us,
            ptr: format!("{:x}", client.id),
            link: client.server().map(|(_, pid)| format!("{pid:x}")),
            remote_pid: 0,
            application_name: client.application_name.clone(),
            id: i64::from(client.id),
        };
        set.row(socket.values());
    }
    set
}

pub fn servers(shared: &Shared) -> ResultSet {
    let mut columns = SOCKET_COLUMNS.to_vec();
    columns.push(("shard", Text));
    let mut set = ResultSet::new(&columns);
    let pools = views::pools(shared);
    let by_id: HashMap<u32, &views::PoolView<'_>> = pools
        .iter()
        .map(|view| (view.pool.manager().stats.id, view))
        .collect();
    let database = |view: &views::PoolView<'_>| view.pool.manager().login.database.clone();
    let server_user = |view: &views::PoolView<'_>| view.pool.manager().login.user.clone();
    for client in shared.stats.clients.list() {
        let Some((pool, pid)) = client.server() else {
            continue;
        };
        let Some(view) = by_id.get(&pool) else {
            continue;
        };
        let socket = Socket {
            kind: "S",
            user: server_user(view),
            database: database(view),
            state: "active",
            addr: Some(views::host_port(&view.backend.addr)),
            local: (String::new(), 0),
            connect_time: None,
            request_time: request_time(shared, &client),
            wait_us: 0,
            ptr: format!("{pid:x}"),
            link: Some(format!("{:x}", client.id)),
            remote_pid: pid,
            application_name: String::new(),
            id: i64::from(pid),
        };
        let mut row = socket.values();
        row.push(view.shard.into());
        set.row(row);
    }
    let now = (SystemTime::now(), Instant::now());
    let wall = |at: Instant| now.0 - now.1.saturating_duration_since(at);
    for view in &pools {
        let mut idle = Vec::new();
        view.pool.for_each_idle(|conn, created, last_used| {
            idle.push((conn.cancel_key().process_id, created, last_used));
        });
        for (pid, created, last_used) in idle {
            let socket = Socket {
                kind: "S",
                user: server_user(view),
                database: database(view),
                state: "idle",
                addr: Some(views::host_port(&view.backend.addr)),
                local: (String::new(), 0),
                connect_time: Some(wall(created)),
                request_time: Some(wall(last_used)),
                wait_us: 0,
                ptr: format!("{pid:x}"),
                link: None,
                remote_pid: pid,
                application_name: String::new(),
                id: i64::from(pid),
            };
            let mut row = socket.values();
            row.push(view.shard.into());
            set.row(row);
        }
    }
    set
}
