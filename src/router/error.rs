//! Why a statement cannot be routed, worded for the client, with the SQLSTATE it is sent with.
//! Messages say what to do next; they never quote internal state beyond table, column and
//! shard names the user configured.

use super::columns::PositionalGap;
use super::plan::{KeyClass, Placement};
use super::{Plan, Route, Router};
use crate::error::{ClientError, SqlState};
use crate::sharding::ShardingError;

/// A statement pgshard refuses to route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A write (or, until scatter-gather lands, a read the session refuses) on a sharded table
    /// that gives no shard key.
    #[error(
        "{verb} on sharded table {table} needs its shard key: {advice}, or pick a shard with \
         SET pgshard.shard_key = ... or a leading /* pgshard: shard_key=... */ comment",
        verb = if *.insert { "INSERT" } else { "this statement" },
        advice = if *.insert {
            format!("list {column} among the columns and give it a literal or $n in every row")
        } else {
            format!("add WHERE {column} = ... (a literal or $n parameter)")
        }
    )]
    KeyNeeded {
        table: String,
        column: String,
        insert: bool,
    },

    /// An INSERT without a column list into a sharded table whose key pgshard cannot find.
    #[error("{}", positional_message(table, column, *gap))]
    PositionalKey {
        table: String,
        column: String,
        gap: PositionalGap,
    },

    /// A key value that does not parse as the declared type (or a bad binary parameter).
    #[error("{0}")]
    BadKey(ShardingError),

    /// A NULL shard key where a row must be placed.
    #[error(
        "the shard key {column} of {table} cannot be NULL: pgshard places each row by its key; \
         give {column} a value"
    )]
    NullKey { table: String, column: String },

    /// `SET pgshard.shard = 'nope'`, or a hint naming no configured shard.
    #[error("shard {name:?} does not exist; use one of {known}")]
    UnknownShard { name: String, known: String },

    /// `SET pgshard.<other>`.
    #[error(
        "unrecognized configuration parameter \"{0}\"; pgshard knows pgshard.shard_key and \
         pgshard.shard"
    )]
    UnknownSetting(String),

    /// An UPDATE that would move rows to another shard by changing their key.
    #[error(
        "this UPDATE changes the shard key {column} of {table}, which would move the row to \
         another shard; DELETE the row and INSERT it with the new key instead"
    )]
    KeyChange { table: String, column: String },

    /// Bind gave fewer parameters than the key placeholder needs.
    #[error(
        "the shard key is parameter ${number}, bound in binary as a type (OID {oid}) pgshard cannot \
         read as the key: bind it as an integer, text or uuid"
    )]
    KeyParamType { number: usize, oid: u32 },

    #[error("the shard key is parameter ${number}, but Bind gave {given} parameters")]
    MissingParam { number: usize, given: usize },

    /// A construct pgshard does not route yet (e.g. COPY into a sharded table).
    #[error("{0}")]
    Unsupported(String),

    #[error("{0}")]
    Refused(#[from] super::execution::Refusal),

    /// One statement whose keys are on several shards, refused until cross-shard queries land.
    #[error(
        "this statement's shard keys are on shards {shards}; pgshard cannot run one statement \
         on several shards yet: split it so that each statement's keys are on one shard"
    )]
    CrossShard { shards: String },

    /// A statement in a transaction held on one shard that routes to another.
    #[error(
        "this transaction runs on shard {pinned}, but this statement routes to shard {wanted}; \
         pgshard never splits a transaction across shards: finish the transaction first"
    )]
    CrossShardTransaction { pinned: String, wanted: String },
}

impl RouteError {
    /// The SQLSTATE sent with the ErrorResponse.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            RouteError::KeyNeeded { .. }
            | RouteError::PositionalKey { .. }
            | RouteError::KeyChange { .. }
            | RouteError::Unsupported(_)
            | RouteError::Refused(_)
            | RouteError::CrossShard { .. }
            | RouteError::CrossShardTransaction { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            RouteError::BadKey(e) => e.sqlstate(),
            RouteError::NullKey { .. } => SqlState::NULL_VALUE_NOT_ALLOWED,
            RouteError::UnknownShard { .. } | RouteError::UnknownSetting(_) => {
                SqlState::UNDEFINED_OBJECT
            }
            RouteError::MissingParam { .. } => SqlState::PROTOCOL_VIOLATION,
            RouteError::KeyParamType { .. } => SqlState::DATATYPE_MISMATCH,
        }
    }
}

impl From<&RouteError> for ClientError {
    fn from(e: &RouteError) -> ClientError {
        match e {
            RouteError::BadKey(key) => ClientError::from(key),
            other => ClientError::new(other.sqlstate(), format!("pgshard: {other}")),
        }
    }
}

impl From<ShardingError> for RouteError {
    fn from(e: ShardingError) -> Self {
        RouteError::BadKey(e)
    }
}

/// The refusal of an INSERT without a column list, saying what to do.
fn positional_message(table: &str, column: &str, gap: PositionalGap) -> String {
    let name_them = format!(
        "name the columns, as in INSERT INTO {table} ({column}, ...) VALUES (...), or pick a \
         shard with SET pgshard.shard_key = ... or a leading /* pgshard: shard_key=... */ comment"
    );
    match gap {
        PositionalGap::UnknownOrder => format!(
            "INSERT into sharded table {table} without a column list: pgshard does not know the \
             column order of {table} (the table was not found on every shard, a shard could not \
             be asked, or the shards do not agree on where {column} is), so it cannot find the \
             shard key {column}; {name_them}"
        ),
        PositionalGap::KeyNotGiven { given, position } => format!(
            "INSERT into sharded table {table} without a column list gives {given} value(s) per \
             row, but its shard key {column} is column {} of {table}: give values up to and \
             including {column}, or {name_them}",
            position + 1
        ),
        PositionalGap::KeyNotPlaceable { position } => format!(
            "INSERT into sharded table {table} without a column list: its shard key {column} \
             (column {} of {table}) must be a literal or a $n parameter in every row; give it \
             one, or {name_them}",
            position + 1
        ),
    }
}

impl Router {
    /// The refusal of a write giving no key for `class`'s tables: worded for an INSERT without
    /// a column list when that is what the class holds.
    pub(super) fn key_needed(&self, plan: &Plan, class: &KeyClass) -> RouteError {
        let table = class.table.name.to_string();
        let column = class.table.key_column.to_string();
        let positional = plan
            .positional
            .iter()
            .find(|p| p.table.name == class.table.name);
        match positional {
            Some(p) if class.insert => RouteError::PositionalKey {
                table,
                column,
                gap: p.gap(),
            },
            _ => RouteError::KeyNeeded {
                table,
                column,
                insert: class.insert,
            },
        }
    }

    /// The error for a [`Route::Shards`] or [`Route::SplitInsert`] the session cannot serve
    /// yet: "needs the shard key" naming the keyless table, else the shards the keys span.
    pub fn multi_shard_error(&self, plan: &Plan, route: &Route) -> RouteError {
        if let Placement::Sharded(classes) = &plan.placement {
            if let Some(class) = classes.iter().find(|c| c.sets.is_empty()) {
                return self.key_needed(plan, class);
            }
        }
        let shards: Vec<&str> = match route {
            Route::Shards { shards, .. } | Route::SplitInsert { shards } => {
                shards.iter().map(|&s| self.map.shard_name(s)).collect()
            }
            _ => (0..self.map.len())
                .map(|s| self.map.shard_name(s))
                .collect(),
        };
        RouteError::CrossShard {
            shards: shards.join(", "),
        }
    }

    /// The error for a statement routed to shard `wanted` inside a transaction held on
    /// shard `pinned`.
    pub fn cross_transaction_error(&self, pinned: usize, wanted: usize) -> RouteError {
        RouteError::CrossShardTransaction {
            pinned: self.map.shard_name(pinned).to_string(),
            wanted: self.map.shard_name(wanted).to_string(),
        }
    }
}
