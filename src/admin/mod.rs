//! The admin console: clients of the databases `pgshard` and `pgbouncer` who are `[admin]` users
//! get PgBouncer-style SHOW commands (same column names and types where PgBouncer has the
//! command), pgshard's own SHOW SHARDS / SLOTS / HOT_SLOTS, and RELOAD, PAUSE, RESUME, DISABLE,
//! ENABLE, KILL_CLIENT and SHUTDOWN, over the simple query protocol. Reads `Shared`'s counters,
//! registry and pool status; never takes a pooled server connection.

mod command;
mod ops;
mod result;
mod show_clients;
mod show_shards;
mod show_stats;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

pub use command::{parse, AdminError, Command, Show};
pub use result::{ResultSet, Type, Value};

use crate::error::ClientError;
use crate::shared::Shared;
use crate::stats::{ClientEntry, NewClient};
use crate::transport::{Conn, Stream};
use crate::wire::{build, client_tag, TransactionStatus};

/// The database names that reach the console.
pub const DATABASES: [&str; 2] = ["pgshard", "pgbouncer"];

/// Whether clients asking for `database` get the console.
pub fn is_console_database(database: &str) -> bool {
    DATABASES.contains(&database)
}

/// Largest message the console reads (commands are short).
const MAX_MESSAGE: usize = 64 * 1024;

/// Who is on the console.
pub struct Login {
    pub user: String,
    /// `[admin] users` (full access) rather than `stats_users` (SHOW only).
    pub full: bool,
    pub database: String,
    pub addr: Option<SocketAddr>,
}

/// Serves an authenticated console client until it leaves, is killed or its connection fails.
pub async fn serve<S: Stream>(mut client: Conn<S>, shared: Arc<Shared>, login: Login) {
    let registered = shared.stats.clients.register(NewClient {
        user: login.user.as_str().into(),
        database: login.database.as_str().into(),
        addr: login.addr,
        application_name: String::new(),
        console: true,
    });
    greet(&mut client.output, registered.entry.key());
    let mut console = Console {
        shared,
        login,
        entry: registered.entry.clone(),
    };
    let entry = registered.entry.clone();
    let served = entry.until_stopped(console.run(&mut client)).await;
    if served.is_err() {
        let e = crate::session::error::SessionError::Killed;
        ClientError::from(&e).fatal().encode(&mut client.output);
        let wait = std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, client.drain()).await;
    }
}

/// ParameterStatus for what drivers look at, BackendKeyData, ReadyForQuery.
fn greet(out: &mut BytesMut, key: (i32, i32)) {
    let version = concat!("15.0 (pgshard ", env!("CARGO_PKG_VERSION"), ")");
    let params = [
        ("server_version", version),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ];
    for (name, value) in params {
        build::parameter_status(out, name, value);
    }
    build::backend_key_data(out, key.0, key.1);
    build::ready_for_query(out, TransactionStatus::Idle);
}

struct Console {
    shared: Arc<Shared>,
    login: Login,
    entry: Arc<ClientEntry>,
}

impl Console {
    async fn run<S: Stream>(&mut self, client: &mut Conn<S>) {
        // After an extended-protocol message: its error is sent, the rest is skipped to Sync.
        let mut skipping = false;
        loop {
            if client.drain().await.is_err() {
                return;
            }
            let frame = match client.next_frame(MAX_MESSAGE) {
                Ok(Some(frame)) => frame,
                Ok(None) => match client.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(e) => {
                    ClientError::from(&e).fatal().encode(&mut client.output);
                    let _ = client.drain().await;
                    return;
                }
            };
            match frame.tag() {
                client_tag::TERMINATE => return,
                client_tag::QUERY => {
                    // After a reload, commands see the new generation's pools and config.
                    if let Some(newest) = self.shared.newest() {
                        self.shared = newest;
                    }
                    let body = frame.body();
                    let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
                    self.entry
                        .set_request_micros(self.shared.stats.micros(std::time::Instant::now()));
                    self.query(&text, &mut client.output).await;
                    build::ready_for_query(&mut client.output, TransactionStatus::Idle);
                }
                client_tag::SYNC => {
                    skipping = false;
                    build::ready_for_query(&mut client.output, TransactionStatus::Idle);
                }
                client_tag::FLUSH => {}
                _ if skipping => {}
                _ => {
                    skipping = true;
                    ClientError::from(&AdminError::ExtendedProtocol).encode(&mut client.output);
                }
            }
        }
    }

    /// Runs one command and appends its answer (or error) to `out`.
    async fn query(&self, text: &str, out: &mut BytesMut) {
        let command = match command::parse(text) {
            Ok(Some(command)) => command,
            Ok(None) => {
                out.extend_from_slice(b"I\0\0\0\x04");
                return;
            }
            Err(e) => return ClientError::from(&e).encode(out),
        };
        if !command.is_show() && !self.login.full {
            let e = AdminError::NotAllowed {
                user: self.login.user.clone(),
                command: command.name(),
            };
            return ClientError::from(&e).encode(out);
        }
        tracing::info!(user = %self.login.user, "admin console: {text}");
        match self.execute(&command).await {
            Ok(Answer::Rows(set)) => set.encode(out),
            Ok(Answer::Done(tag)) => build::command_complete(out, tag),
            Err(e) => ClientError::from(&e).encode(out),
        }
    }

    async fn execute(&self, command: &Command) -> Result<Answer, AdminError> {
        let shared = &self.shared;
        Ok(match command {
            Command::Show(what) => Answer::Rows(self.show(*what).await),
            Command::Reload => {
                shared.control.request_reload().await?;
                Answer::Done("RELOAD")
            }
            Command::Pause(shard) => {
                ops::pause(shared, shard.as_deref()).await?;
                Answer::Done("PAUSE")
            }
            Command::Resume(shard) => {
                ops::resume(shared, shard.as_deref())?;
                Answer::Done("RESUME")
            }
            Command::Disable => {
                shared.control.set_disabled(true);
                Answer::Done("DISABLE")
            }
            Command::Enable => {
                shared.control.set_disabled(false);
                Answer::Done("ENABLE")
            }
            Command::KillClient(id) => {
                ops::kill_client(shared, *id)?;
                Answer::Done("KILL_CLIENT")
            }
            Command::Shutdown => {
                shared.control.request_shutdown();
                Answer::Done("SHUTDOWN")
            }
        })
    }

    async fn show(&self, what: Show) -> ResultSet {
        let shared = &self.shared;
        match what {
            Show::Stats => show_stats::stats(shared),
            Show::StatsTotals => show_stats::stats_totals(shared),
            Show::StatsAverages => show_stats::stats_averages(shared),
            Show::Pools => show_stats::pools(shared),
            Show::Databases => show_stats::databases(shared),
            Show::Lists => show_stats::lists(shared),
            Show::Users => show_stats::users(shared),
            Show::Mem => show_stats::mem(shared),
            Show::Config => show_stats::config(shared),
            Show::Version => show_stats::version(),
            Show::Clients => show_clients::clients(shared),
            Show::Servers => show_clients::servers(shared),
            Show::Shards => show_shards::shards(shared).await,
            Show::Slots => show_shards::slots(shared),
            Show::HotSlots => show_shards::hot_slots(shared),
        }
    }
}

/// What a command answers.
enum Answer {
    Rows(ResultSet),
    Done(&'static str),
}
