//! Why a client session failed, with the SQLSTATE and the text the client sees. Internal details
//! (socket errors, addresses of other clients) never reach a client through here.

use crate::auth::AuthError;
use crate::backend::BackendError;
use crate::router::RouteError;
use crate::wire::WireError;

/// A failure in one client's session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Wire(#[from] WireError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("no server connection for pool {pool} became free within {waited_ms} ms")]
    CheckoutTimeout { pool: String, waited_ms: u64 },
    #[error("too many client connections (limit {0})")]
    TooManyClients(usize),
    #[error("database \"{asked}\" does not exist here; connect to \"{served}\"")]
    UnknownDatabase { asked: String, served: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(
        "current transaction is aborted (pgshard refused a statement in it), commands ignored until \
         end of transaction block: ROLLBACK"
    )]
    TransactionAborted,
    #[error(
        "this session runs on shard {held} (pool_mode = \"session\" pins a client to one server), \
         but this statement routes to shard {wanted}: use pool_mode = \"transaction\" to reach several shards"
    )]
    SessionPinned { held: String, wanted: String },
    #[error(
        "the primary of shard {shard} ({addr}) is down; writes to this shard fail until it is back"
    )]
    ShardDown { shard: String, addr: String },
    #[error("startup parameter {0:?} is not a valid setting name")]
    BadSettingName(String),
    #[error("client did not finish startup in time")]
    StartupTimeout,
    #[error("client connection failed: {0}")]
    ClientIo(#[from] std::io::Error),
    #[error("expected {expected} during authentication, got message type {got:?}")]
    UnexpectedMessage { expected: &'static str, got: char },
}

impl SessionError {
    pub fn sqlstate(&self) -> &str {
        match self {
            SessionError::Wire(e) => e.sqlstate(),
            SessionError::Auth(e) => e.sqlstate(),
            SessionError::Backend(e) => e.sqlstate(),
            SessionError::CheckoutTimeout { .. } | SessionError::TooManyClients(_) => "53300",
            SessionError::UnknownDatabase { .. } => "3D000",
            SessionError::Unsupported(_) | SessionError::SessionPinned { .. } => "0A000",
            SessionError::Route(e) => e.sqlstate(),
            SessionError::TransactionAborted => "25P02",
            SessionError::ShardDown { .. } => "08006",
            SessionError::BadSettingName(_) => "42704",
            SessionError::StartupTimeout | SessionError::UnexpectedMessage { .. } => "08P01",
            SessionError::ClientIo(_) => "08006",
        }
    }

    /// The message for the client; `None` when the client cannot be told (its socket failed).
    pub fn client_message(&self) -> Option<String> {
        match self {
            SessionError::ClientIo(_) => None,
            SessionError::Backend(e) => Some(e.client_message()),
            SessionError::CheckoutTimeout { .. } => Some(format!(
                "pgshard: {self}; retry later, or raise [pool] size or checkout_timeout_ms"
            )),
            SessionError::TooManyClients(_) => Some(format!(
                "pgshard: {self}; close idle connections or raise [server] max_client_connections"
            )),
            other => Some(format!("pgshard: {other}")),
        }
    }
}
