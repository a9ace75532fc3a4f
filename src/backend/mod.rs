//! Server connections: opening and authenticating them, bringing their settings in line with a
//! client's, resetting them between clients, and the [`crate::pool::Manager`] that ties this to the
//! generic pool. Knows no client sockets and no routing.

pub mod cancel;
pub mod catalog;
pub mod collations;
pub mod connection;
pub mod health;
pub mod manager;
pub mod wal;

pub use connection::ServerConnection;
pub use manager::{BackendManager, ServerPool};

use crate::error::{ClientError, SqlState};

/// Largest message accepted from a server (PostgreSQL's own limit is 1 GiB per field).
pub const MAX_SERVER_MESSAGE: usize = (1 << 30) + 1024;

/// Something went wrong with a server connection.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to server {0}")]
    ConnectTimeout(String),
    #[error("server {addr} refused login for user \"{user}\": {message}")]
    Login {
        addr: String,
        user: String,
        message: String,
    },
    #[error(
        "server {addr} asked for an authentication method pgshard does not support (code {code})"
    )]
    UnsupportedAuth { addr: String, code: i32 },
    /// An ErrorResponse from the server, passed on as is.
    #[error("{message}")]
    Server { sqlstate: String, message: String },
    #[error("lost connection to server {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("server {0} broke the protocol")]
    Protocol(String),
    #[error("cannot use TLS with server {addr}: {source}")]
    Tls {
        addr: String,
        source: crate::tls::BackendTlsError,
    },
}

impl BackendError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            BackendError::Server { sqlstate, .. } => SqlState::from_server(sqlstate),
            _ => SqlState::CONNECTION_FAILURE,
        }
    }
}

/// Text a client may see. Connection details are the DBA's, but naming the server helps the
/// operator and leaks nothing the client could not learn from the config it was given.
impl From<&BackendError> for ClientError {
    fn from(e: &BackendError) -> ClientError {
        let message = match e {
            BackendError::Server { message, .. } => message.clone(),
            other => format!(
                "pgshard: {other}; check that the server is up and the [[shards]] config is right"
            ),
        };
        ClientError::new(e.sqlstate(), message)
    }
}
