//! Why a client session failed or refused a statement, and how each reason reaches the client:
//! every error here converts into a [`ClientError`] (SQLSTATE from [`SqlState`]'s constants, the
//! text the client sees), and each kind's text is written once, here. Internal details (socket
//! errors, addresses of other clients) never reach a client through here.

use bytes::{Bytes, BytesMut};

use crate::auth::AuthError;
use crate::backend::BackendError;
use crate::error::{ClientError, SqlState};
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
    #[error("too many client connections for user \"{user}\" (limit {limit})")]
    TooManyClientsForUser { user: String, limit: usize },
    #[error(
        "user \"{user}\" is over its statement rate limit ({per_second} per second) and this \
         statement could not run within {waited_ms} ms"
    )]
    RateLimited {
        user: String,
        per_second: f64,
        waited_ms: u64,
    },
    #[error("pgshard is shutting down")]
    ShuttingDown,
    #[error("database \"{asked}\" does not exist here; connect to \"{served}\"")]
    UnknownDatabase { asked: String, served: String },
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
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
        "this client holds {reason} on its server connection of shard {held}, which keeps it on \
         that connection until they are gone (DROP, CLOSE, DEALLOCATE, UNLISTEN, \
         pg_advisory_unlock_all() or DISCARD ALL), but this statement needs {wanted}: release \
         that state first, or run this statement on another connection"
    )]
    StatePinned {
        reason: String,
        held: String,
        wanted: String,
    },
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
    #[error(
        "this server accepts TLS connections only (server.tls_mode = \"require\"): connect \
         with sslmode=require (or verify-ca, verify-full)"
    )]
    TlsRequired,
    #[error("the client sent data after its SSLRequest, before the TLS handshake")]
    DataAfterSslRequest,
    #[error("connection terminated by an administrator (KILL_CLIENT)")]
    Killed,
    #[error("user \"{0}\" may not use the admin console: list it in [admin] users or stats_users")]
    NotConsoleUser(String),
    #[error(
        "pgshard does not accept new logins now (DISABLE on its admin console); retry after ENABLE"
    )]
    LoginsDisabled,
    #[error(
        "this statement waited {waited_ms} ms (catalog.hold_wait_ms) for the cutover of slot \
         move {moves}, which has not finished"
    )]
    HeldTooLong { moves: String, waited_ms: u64 },
    #[error(
        "the slot this statement routes to moved to another shard while this transaction was \
         open"
    )]
    SlotMoved,
    /// The client was sent the server's own FATAL error (nothing more to tell it).
    #[error("the server ended the session with a FATAL error, sent on to the client")]
    ServerEnded,
}

impl SessionError {
    /// Whether the client can still be told (false when its own connection failed).
    pub fn reaches_client(&self) -> bool {
        !matches!(self, SessionError::ClientIo(_) | SessionError::ServerEnded)
    }
}

impl From<&SessionError> for ClientError {
    fn from(e: &SessionError) -> ClientError {
        let code = match e {
            SessionError::Wire(e) => return e.into(),
            SessionError::Auth(e) => return e.into(),
            SessionError::Backend(e) => return e.into(),
            SessionError::Route(e) => return e.into(),
            SessionError::CheckoutTimeout { .. } => {
                return ClientError::new(
                    SqlState::TOO_MANY_CONNECTIONS,
                    format!(
                        "pgshard: {e}; retry later, or raise [pool] size or checkout_timeout_ms"
                    ),
                )
            }
            SessionError::TooManyClientsForUser { .. } => {
                return ClientError::new(
                    SqlState::TOO_MANY_CONNECTIONS,
                    format!(
                        "pgshard: {e}; close idle connections or raise max_client_connections \
                         of this user's [[users]] entry"
                    ),
                )
            }
            SessionError::RateLimited { .. } => {
                return ClientError::new(
                    SqlState::CONFIGURATION_LIMIT_EXCEEDED,
                    format!(
                        "pgshard: {e}; send statements more slowly, or raise \
                         statements_per_second (or statement_burst, rate_limit_wait_ms) of this \
                         user's [[users]] entry"
                    ),
                )
            }
            SessionError::ShuttingDown => {
                return ClientError::new(
                    SqlState::ADMIN_SHUTDOWN,
                    "pgshard: pgshard is shutting down and closed this connection between \
                     transactions; reconnect (to another pgshard, or to this one once it is back)",
                )
            }
            SessionError::TooManyClients(_) => {
                return ClientError::new(
                    SqlState::TOO_MANY_CONNECTIONS,
                    format!(
                    "pgshard: {e}; close idle connections or raise [server] max_client_connections"
                ),
                )
            }
            // Only logged in practice: the client's own socket failed.
            SessionError::ClientIo(_) => {
                return ClientError::new(SqlState::CONNECTION_FAILURE, e.to_string())
            }
            SessionError::HeldTooLong { .. } => {
                return ClientError::new(
                    SqlState::LOCK_NOT_AVAILABLE,
                    format!(
                        "pgshard: {e}; retry the statement; if this persists, the mover stopped: \
                         run `pgshard rebalance status`, then `resume` or `abort` the move"
                    ),
                )
            }
            SessionError::SlotMoved => {
                return ClientError::new(
                    SqlState::SERIALIZATION_FAILURE,
                    format!("pgshard: {e}; roll back and run the transaction again"),
                )
            }
            SessionError::UnknownDatabase { .. } => SqlState::INVALID_CATALOG_NAME,
            SessionError::Unsupported(_)
            | SessionError::SessionPinned { .. }
            | SessionError::StatePinned { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            SessionError::TransactionAborted => SqlState::IN_FAILED_SQL_TRANSACTION,
            SessionError::ShardDown { .. } | SessionError::ServerEnded => {
                SqlState::CONNECTION_FAILURE
            }
            SessionError::BadSettingName(_) => SqlState::UNDEFINED_OBJECT,
            SessionError::TlsRequired => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::DataAfterSslRequest => SqlState::PROTOCOL_VIOLATION,
            SessionError::StartupTimeout | SessionError::UnexpectedMessage { .. } => {
                SqlState::PROTOCOL_VIOLATION
            }
            SessionError::Killed => SqlState::ADMIN_SHUTDOWN,
            SessionError::NotConsoleUser(_) => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::LoginsDisabled => SqlState::CANNOT_CONNECT_NOW,
        };
        ClientError::new(code, format!("pgshard: {e}"))
    }
}

/// Something pgshard refuses to run for a client (SQLSTATE 0A000), decided before anything of
/// it is sent to a server.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "replication connections are not supported through pgshard; connect to the server directly"
    )]
    Replication,
    #[error("startup option {word:?} is not supported; use -c name=value")]
    StartupOption { word: String },
    #[error(
        "{statement} keeps state in the server session, and pgshard is set to refuse such \
         statements in transaction mode (session_state = \"refuse\"): use a transaction-scoped \
         form (ON COMMIT DROP, a cursor without HOLD, pg_advisory_xact_lock, the protocol's \
         prepared statements), or ask for session_state = \"pin\""
    )]
    SessionState { statement: &'static str },
    #[error(
        "this cross-shard read binds an unnamed statement parsed in an earlier batch: send its \
         Parse in the same batch as the Bind, or name the statement"
    )]
    ScatterUnnamedFromEarlierBatch,
    #[error(
        "a cross-shard read fetched in parts (Execute with a row limit, as for a cursor or fetch \
         size): fetch all rows at once, or add LIMIT"
    )]
    ScatterFetchInParts,
    #[error("a split INSERT of an unknown statement")]
    SplitUnknownStatement,
    #[error(
        "this INSERT's rows belong to several shards and were never bound: send Parse, Bind and \
         Execute for it"
    )]
    SplitUnbound,
    #[error(
        "COPY across shards cannot start in the middle of an extended-protocol batch that \
         already runs on a server: send Sync first"
    )]
    CopyMidBatch,
    #[error(
        "send the Parse of an unnamed COPY statement in the same batch as its Bind, or use a \
         named statement"
    )]
    CopyUnnamedFromEarlierBatch,
    #[error("expected Execute after the Bind of a COPY statement, got message type {got:?}")]
    CopyExpectedExecute { got: char },
}

/// pgshard's own errors found while running one statement on several shards (cross-shard
/// reads, writes on several shards, COPY split by key). The client gets one of these instead of
/// the answer; the session goes on.
#[derive(Debug, thiserror::Error)]
pub(super) enum MultiShardError {
    #[error(
        "this cross-shard read needs more than {mib} MiB to merge (sharding.max_merge_memory_mb): \
         add WHERE <shard key> = ... to read one shard, narrow the query, or raise the limit"
    )]
    MergeMemory { mib: usize },
    /// What the shards' answer showed cannot be merged exactly (`0` names it).
    #[error(
        "pgshard cannot merge {0} across shards yet: add WHERE <shard key> = ... to read one shard"
    )]
    CannotMerge(String),
    #[error("a server sent a malformed DataRow")]
    MalformedRow,
    #[error(
        "the shards returned different columns for this query; check that every shard has the \
         same schema"
    )]
    DifferentColumns,
    #[error(
        "the write applied on every shard, but the shards returned different RETURNING columns; \
         check that every shard has the same schema"
    )]
    DifferentReturning,
    #[error(
        "COPY into a reference table is not supported (every shard would need the same rows, and \
         nothing was loaded): load it with INSERT ... VALUES, which runs on every shard, or COPY \
         into each shard's primary directly"
    )]
    CopyIntoReference,
    /// A split INSERT that failed on some shards: `code` is the first failed shard's SQLSTATE,
    /// `reasons` says why each failed.
    #[error(
        "this INSERT was split into one INSERT per shard; the rows for shards {applied} were \
         inserted and stay inserted, the rows for shards {failed} were not: {reasons}; re-run the \
         INSERT with only the rows that failed (or delete the inserted ones): a split INSERT is \
         not atomic"
    )]
    SplitInsertPartial {
        code: SqlState,
        applied: String,
        failed: String,
        reasons: String,
    },
    /// A write to every shard that failed on some of them (as for a split INSERT).
    #[error(
        "this write to every shard (a reference table) applied on shards {applied} and failed on \
         shards {failed}: {reasons}; it is not undone where it applied: fix the cause and re-run \
         it on each failed shard with a leading /* pgshard: shard=<name> */ comment (or undo it \
         on the others the same way)"
    )]
    EverywherePartial {
        code: SqlState,
        applied: String,
        failed: String,
        reasons: String,
    },
    /// `CopyIn::with_columns`'s refusal: the table's columns lack its shard key.
    #[error("{0}")]
    CopyColumns(String),
    #[error("COPY from stdin failed: {0}")]
    CopyFailed(String),
    #[error(
        "unexpected message type {0:?} during COPY from stdin; the COPY was rolled back on every \
         shard"
    )]
    CopyUnexpectedMessage(char),
    #[error("no shard answered the COPY")]
    NoShardAnswered,
    /// The server's COMMIT error (`code`, `message`) after other shards may have committed.
    #[error(
        "COMMIT of the COPY failed on a shard after the others may have committed; check the \
         table on every shard: {message}"
    )]
    CopyCommit { code: SqlState, message: String },
}

impl From<&MultiShardError> for ClientError {
    fn from(e: &MultiShardError) -> ClientError {
        let code = match e {
            MultiShardError::MergeMemory { .. } => SqlState::OUT_OF_MEMORY,
            // The only one worded without the "pgshard: " prefix, as it always was.
            MultiShardError::CannotMerge(_) => {
                return ClientError::new(SqlState::FEATURE_NOT_SUPPORTED, e.to_string())
            }
            MultiShardError::CopyIntoReference | MultiShardError::CopyColumns(_) => {
                SqlState::FEATURE_NOT_SUPPORTED
            }
            MultiShardError::MalformedRow
            | MultiShardError::DifferentColumns
            | MultiShardError::DifferentReturning
            | MultiShardError::NoShardAnswered => SqlState::INTERNAL_ERROR,
            MultiShardError::SplitInsertPartial { code, .. }
            | MultiShardError::EverywherePartial { code, .. }
            | MultiShardError::CopyCommit { code, .. } => *code,
            MultiShardError::CopyFailed(_) => SqlState::QUERY_CANCELED,
            MultiShardError::CopyUnexpectedMessage(_) => SqlState::PROTOCOL_VIOLATION,
        };
        ClientError::new(code, format!("pgshard: {e}"))
    }
}

/// The error a statement run on several shards ends with: a server's ErrorResponse, forwarded
/// as it came, or pgshard's own.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Server(Bytes),
    Own(ClientError),
}

impl Failure {
    /// Its SQLSTATE.
    pub(super) fn sqlstate(&self) -> &str {
        match self {
            Failure::Server(bytes) => {
                crate::metrics::sqlstate_of(bytes.get(5..).unwrap_or_default())
            }
            Failure::Own(error) => error.code.as_str(),
        }
    }

    /// Appends the ErrorResponse for the client.
    pub(super) fn write_to(&self, out: &mut BytesMut) {
        match self {
            Failure::Server(bytes) => out.extend_from_slice(bytes),
            Failure::Own(error) => error.encode(out),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Own(error)
    }
}

impl From<MultiShardError> for Failure {
    fn from(e: MultiShardError) -> Failure {
        Failure::Own(ClientError::from(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_keep_their_sqlstate_and_pgshard_prefix() {
        let pinned = ClientError::from(&SessionError::SessionPinned {
            held: "s0".into(),
            wanted: "s1".into(),
        });
        assert_eq!(pinned.code, SqlState::FEATURE_NOT_SUPPORTED);
        assert!(pinned
            .message
            .starts_with("pgshard: this session runs on shard s0"));
        let timeout = ClientError::from(&SessionError::CheckoutTimeout {
            pool: "p".into(),
            waited_ms: 5,
        });
        assert_eq!(timeout.code, SqlState::TOO_MANY_CONNECTIONS);
        assert!(timeout
            .message
            .ends_with("raise [pool] size or checkout_timeout_ms"));
        let refused = ClientError::from(&SessionError::from(Unsupported::CopyMidBatch));
        assert_eq!(refused.code, SqlState::FEATURE_NOT_SUPPORTED);
        assert!(refused
            .message
            .starts_with("pgshard: COPY across shards cannot start"));
        // A server's own error keeps its SQLSTATE and message.
        let server = SessionError::Backend(BackendError::Server {
            sqlstate: SqlState::NOT_NULL_VIOLATION.to_string(),
            message: "null value in column".into(),
        });
        let server = ClientError::from(&server);
        assert_eq!(server.code, SqlState::NOT_NULL_VIOLATION);
        assert_eq!(server.message, "null value in column");
        let lost = SessionError::ClientIo(std::io::ErrorKind::BrokenPipe.into());
        assert!(!lost.reaches_client());
    }

    #[test]
    fn multi_shard_errors_say_pgshard_except_the_merge_refusal() {
        let memory = ClientError::from(&MultiShardError::MergeMemory { mib: 64 });
        assert_eq!(memory.code, SqlState::OUT_OF_MEMORY);
        assert!(memory
            .message
            .starts_with("pgshard: this cross-shard read needs more than 64 MiB"));
        let merge = ClientError::from(&MultiShardError::CannotMerge("string_agg(x)".into()));
        assert_eq!(merge.code, SqlState::FEATURE_NOT_SUPPORTED);
        assert!(merge
            .message
            .starts_with("pgshard cannot merge string_agg(x) across shards yet"));
        let partial = ClientError::from(&MultiShardError::EverywherePartial {
            code: SqlState::NOT_NULL_VIOLATION,
            applied: "s0".into(),
            failed: "s1".into(),
            reasons: "s1: null value in column".into(),
        });
        assert_eq!(partial.code, SqlState::NOT_NULL_VIOLATION);
        assert!(partial.message.starts_with(
            "pgshard: this write to every shard (a reference table) applied on shards s0 and \
             failed on shards s1: s1: null value in column;"
        ));
    }

    #[test]
    fn a_failure_writes_server_bytes_unchanged() {
        let mut out = BytesMut::new();
        Failure::Server(Bytes::from_static(b"E\0\0\0\x04")).write_to(&mut out);
        assert_eq!(&out[..], b"E\0\0\0\x04");
        Failure::from(MultiShardError::NoShardAnswered).write_to(&mut out);
        assert_eq!(out[5], b'E');
    }
}
