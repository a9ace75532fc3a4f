//! What can go wrong moving slots, each kind worded once, naming the table, setting or step.

use crate::error::{ClientError, SqlState};
use crate::sharding::ShardingError;

/// An error of the slot mover. Every variant names what to look at or do.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The source cannot do logical decoding.
    #[error(
        "wal_level is '{found}' on the source shard ({server}); moving slots reads changes by \
         logical decoding, which needs wal_level = logical: set it (ALTER SYSTEM SET wal_level \
         = logical, or in postgresql.conf) and restart that server"
    )]
    WalLevel { server: String, found: String },

    /// A sharded table without a primary key: changes could not be applied by key.
    #[error(
        "sharded table {table} has no primary key; moving slots applies changes by primary \
         key: add one (ALTER TABLE {table} ADD PRIMARY KEY (...)) before moving"
    )]
    NoPrimaryKey { table: String },

    /// A replica identity that does not carry the primary key of deleted rows.
    #[error(
        "sharded table {table} has REPLICA IDENTITY {identity}; moving slots needs the \
         primary key of updated and deleted rows: ALTER TABLE {table} REPLICA IDENTITY DEFAULT"
    )]
    ReplicaIdentity { table: String, identity: String },

    /// A configured table that does not exist on one side.
    #[error("sharded table {table} does not exist on the {side} shard ({server})")]
    NoTable {
        table: String,
        side: &'static str,
        server: String,
    },

    /// The shard key column is missing from a table.
    #[error("sharded table {table} has no column {column} (its configured shard key)")]
    NoKeyColumn { table: String, column: String },

    /// Source and target define a table differently.
    #[error(
        "sharded table {table} differs between the source and the target: {detail}; make \
         both definitions alike before moving"
    )]
    TableMismatch { table: String, detail: String },

    /// Two moved tables whose staging tables would share a name.
    #[error("sharded tables {first} and {second} share the name {name} in different schemas")]
    StagingNameClash {
        first: String,
        second: String,
        name: String,
    },

    /// A move id unfit for the names of a replication slot and publication.
    #[error("move id {0:?} must be 1 to 40 characters of a-z, 0-9 and _")]
    BadMoveId(String),

    /// A step that needs an earlier one.
    #[error("{step} needs {missing}: run {run} first")]
    NotPrepared {
        step: &'static str,
        missing: String,
        run: &'static str,
    },

    /// TRUNCATE on the source during a move: its rows would be lost on the target.
    #[error(
        "table {table} was truncated on the source during the move; a move cannot carry a \
         TRUNCATE: abort this move and start it again"
    )]
    Truncated { table: String },

    /// A logical decoding message that does not read as pgoutput protocol 1.
    #[error("cannot decode a pgoutput message: {0}")]
    Decode(String),

    /// A binary COPY stream that does not read as PostgreSQL's format.
    #[error("cannot read the binary COPY of {table}: {detail}")]
    Copy { table: String, detail: String },

    /// A shard key value that does not read as its declared type.
    #[error("table {table}: {source}")]
    Key {
        table: String,
        source: ShardingError,
    },

    /// The catalog (map, holds, journal) could not be read or changed.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),

    /// Routers that did not answer a cutover hold in time, on every attempt.
    #[error(
        "router(s) {routers} did not acknowledge the cutover hold of move {move_id} within \
         {timeout_ms} ms on {attempts} attempts (a transaction older than the hold stayed \
         open, or the router cannot reach the catalog); the source still owns the slots: run \
         `pgshard rebalance resume` to try again, or `abort`"
    )]
    NoAcknowledgement {
        move_id: String,
        routers: String,
        timeout_ms: u64,
        attempts: u32,
    },

    /// The copy differs from the source under the hold: nothing was flipped.
    #[error(
        "verification failed for move {move_id}: table {table} has {source_rows} rows in the \
         moving slots on the source and {target_rows} on the target, or their checksums differ \
         (was a moving slot written around pgshard?); nothing was flipped: run `pgshard \
         rebalance abort`, then move again"
    )]
    Mismatch {
        move_id: String,
        table: String,
        source_rows: u64,
        target_rows: u64,
    },

    /// Slots of a move that its source no longer owns (another move took them).
    #[error(
        "slots {slots} of move {move_id} are no longer owned by its source shard {source_shard}; \
         run `pgshard map show` and plan again"
    )]
    NotOwned {
        move_id: String,
        slots: String,
        source_shard: String,
    },

    /// A move that cannot go back any more.
    #[error(
        "move {move_id} has already flipped the map to {target}; it cannot be aborted: run \
         `pgshard rebalance resume` to finish it, then move the slots back if needed"
    )]
    PastNoReturn { move_id: String, target: String },

    /// Another process runs this move now.
    #[error("move {0} is being run by another pgshard process (it holds the move's lock)")]
    Busy(String),

    /// A statement of the mover failed on a server (the message names what the server said:
    /// tokio-postgres's own text is only "db error").
    #[error("{what}: {}", crate::catalog::detail(.error))]
    Postgres {
        what: String,
        error: tokio_postgres::Error,
    },
}

impl MoveError {
    /// Wraps a server error with what the mover was doing.
    pub(crate) fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> MoveError {
        let what = what.into();
        move |error| MoveError::Postgres { what, error }
    }

    /// The SQLSTATE a client would see for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            MoveError::WalLevel { .. } => SqlState::CONFIG_FILE_ERROR,
            MoveError::NoPrimaryKey { .. }
            | MoveError::ReplicaIdentity { .. }
            | MoveError::Truncated { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            MoveError::NoTable { .. } => SqlState::UNDEFINED_TABLE,
            MoveError::NoKeyColumn { .. } => SqlState::UNDEFINED_COLUMN,
            MoveError::Postgres { error, .. } => error
                .code()
                .map(|c| SqlState::from_server(c.code()))
                .unwrap_or(SqlState::CONNECTION_FAILURE),
            _ => SqlState::INTERNAL_ERROR,
        }
    }
}

impl From<&MoveError> for ClientError {
    fn from(error: &MoveError) -> ClientError {
        ClientError::new(error.sqlstate(), error.to_string())
    }
}
