//! The analysed form of a statement: what [`super::Router::plan`] produces once per query text
//! and [`super::Router::route`] resolves per execution.
//!
//! A plan holds facts only (statement kind, read/write, where the shard key comes from); it
//! never holds the SQL text (except a multi-row INSERT re-rendered for splitting per shard),
//! never looks at parameters and never does I/O. Literal keys are
//! already hashed to slots here; `$n` keys wait for Bind.

use std::sync::Arc;

use super::columns::PositionalInsert;
use crate::multishard::{CopyPlan, InsertSplit, Scatter, ShardedTable, NO_SHARDED_TABLE};
use crate::sharding::{KeyType, ShardingError};

/// What a statement is, as far as routing and the session's state machine care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE, EXPLAIN without ANALYZE of anything, COPY ... TO.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, data-modifying CTEs, EXPLAIN ANALYZE of a write, CALL.
    Write,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT and friends.
    Transaction(TransactionControl),
    /// `SET pgshard.*` / `RESET pgshard.*` / `RESET ALL`: answered by pgshard itself
    /// ([`super::Route::Local`]), never sent to a server.
    Setting(SettingPlan),
    /// Everything else: DDL, utility statements, several statements in one string that mix
    /// kinds, statements that could not be parsed.
    Other,
}

/// Transaction control statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionControl {
    /// `BEGIN` / `START TRANSACTION`; `read_only` for `READ ONLY`.
    Begin { read_only: bool },
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint,
    /// `RELEASE [SAVEPOINT] name`.
    Release,
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo,
    /// `SET TRANSACTION READ ONLY | READ WRITE | ISOLATION LEVEL ...`; `read_only` is `None`
    /// when the access mode is not changed.
    SetTransaction { read_only: Option<bool> },
}

/// A `SET`/`RESET` of a pgshard setting, as written (the shard name is checked at route time).
/// `SET LOCAL` is treated as `SET`: the override lasts until reset, not until the transaction
/// ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingPlan {
    /// `SET pgshard.shard_key = <value>`: the key as text, parsed per table at route time.
    ShardKey(String),
    /// `SET pgshard.shard = '<name>'`.
    Shard(String),
    /// `RESET pgshard.shard_key` / `SET pgshard.shard_key TO DEFAULT`.
    ResetShardKey,
    /// `RESET pgshard.shard` / `SET pgshard.shard TO DEFAULT`.
    ResetShard,
    /// `RESET ALL`.
    ResetAll,
    /// `SET pgshard.<other>`: refused with the list of known settings.
    Unknown(String),
}

/// One value the shard key may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyExpr {
    /// A literal, already hashed.
    Slot(u16),
    /// `$n` (`index` = n - 1), parsed at Bind by the table's declared type.
    Param { index: usize, key_type: KeyType },
    /// `NULL`: matches no row.
    Null,
    /// A literal that does not parse as the declared type; reported at route time.
    Bad(ShardingError),
}

/// The values a key column is constrained to by one predicate: `= v` gives one value, `IN (...)`
/// several; a multi-row INSERT gives one per row (`rows`), each row going to its own shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySet {
    pub alts: Vec<KeyExpr>,
    pub rows: bool,
}

/// Sharded-table occurrences that must sit on the same shards: tables joined on the key, and
/// subqueries correlated on it. Every set applies (rows are on the intersection); no set
/// means the statement gives no key for these tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyClass {
    pub table: Arc<ShardedTable>,
    pub sets: Vec<KeySet>,
    /// An INSERT target is in the class (for the wording of "needs the key").
    pub insert: bool,
}

/// Where a statement's rows live, before parameters are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// No sharded table: the default shard (overrides may redirect it).
    Default,
    /// Every shard's primary: writes to reference tables, DDL and TRUNCATE on sharded or
    /// reference tables.
    All,
    /// Sharded tables, by key class.
    Sharded(Vec<KeyClass>),
}

/// `UPDATE ... SET <key> = v`: the new key must stay on the row's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyMove {
    pub table: Arc<ShardedTable>,
    /// `None` when the new value is not a literal or parameter.
    pub to: Option<KeyExpr>,
}

/// A leading `/* pgshard: shard_key=42 */` or `/* pgshard: shard=s1 */` comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hint {
    pub shard_key: Option<String>,
    pub shard: Option<String>,
}

/// The analysed statement. Cheap to share (`Arc<Plan>`) and immutable: cache it per prepared
/// statement at Parse, and per query text for simple queries ([`super::PlanCache`]). A plan
/// belongs to the [`super::Router`] that made it: after a config reload or a new volatility
/// table, plan again with the new router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub(crate) kind: StatementKind,
    /// A read with no row locks and no volatile calls: may run on a replica.
    pub(crate) plain_read: bool,
    /// Changes data somewhere (keyless writes are refused, not scattered).
    pub(crate) writes: bool,
    /// sqlparser understood the text.
    pub(crate) parsed: bool,
    pub(crate) placement: Placement,
    pub(crate) key_moves: Vec<KeyMove>,
    pub(crate) hint: Option<Hint>,
    /// Why the plan is refused outright (e.g. COPY into a sharded table), as a user message.
    pub(crate) unsupported: Option<String>,
    /// How results combine when the statement runs on several shards.
    pub(crate) scatter: Scatter,
    /// A multi-row INSERT rendered for cutting per shard ([`super::Router::split_insert`]).
    pub(crate) split: Option<Arc<InsertSplit>>,
    /// Routes to every shard but also uses a sharded table (whose rows differ per shard).
    pub(crate) everywhere_with_sharded: bool,
    /// A COPY into a sharded table (split by key) or out of several shards (gathered).
    pub(crate) copy: Option<CopyPlan>,
    /// What the statement does to the transaction isolation level in force.
    pub(crate) isolation: Option<IsolationChange>,
    /// INSERTs without a column list into sharded tables, with the key's place assumed.
    pub(crate) positional: Vec<PositionalInsert>,
}

impl Plan {
    /// What kind of statement this is.
    pub fn kind(&self) -> &StatementKind {
        &self.kind
    }

    /// A read with no `FOR UPDATE/SHARE` and no volatile function: replica-eligible outside
    /// read-write transactions.
    pub fn is_plain_read(&self) -> bool {
        self.plain_read
    }

    /// Whether the statement changes data.
    pub fn is_write(&self) -> bool {
        self.writes
    }

    /// False when sqlparser could not parse the text: the plan then routes to the default
    /// (or overridden) shard's primary, and its kind comes from the first keyword.
    pub fn is_parsed(&self) -> bool {
        self.parsed
    }

    /// Whether routing needs the Bind parameters (a key is a `$n` placeholder).
    pub fn needs_params(&self) -> bool {
        let param = |e: &KeyExpr| matches!(e, KeyExpr::Param { .. });
        let in_classes = match &self.placement {
            Placement::Sharded(classes) => classes
                .iter()
                .flat_map(|c| &c.sets)
                .any(|s| s.alts.iter().any(param)),
            _ => false,
        };
        in_classes
            || self
                .key_moves
                .iter()
                .any(|m| m.to.as_ref().is_some_and(param))
    }

    /// How the statement's results combine when it routes to several shards
    /// ([`super::Route::Shards`]): run unchanged on each and concatenate, or not mergeable
    /// (yet), naming the construct. Reads only; anything else is `Unsupported`.
    pub fn scatter(&self) -> &Scatter {
        &self.scatter
    }

    /// What a COPY statement needs beyond its route: rows split by key (`COPY <sharded table>
    /// FROM STDIN`), or whether several shards' output may be concatenated (`COPY ... TO`).
    pub fn copy(&self) -> Option<&CopyPlan> {
        self.copy.as_ref()
    }

    /// Whether a statement for every shard ([`super::Route::All`]) does the same on each: false
    /// when it also reads or writes a sharded table (`INSERT INTO countries SELECT ... FROM
    /// users`, or a string that also writes `users`), whose rows differ per shard.
    pub fn same_on_every_shard(&self) -> bool {
        !self.everywhere_with_sharded
    }

    /// What the statement does to the transaction isolation level (BEGIN ISOLATION LEVEL,
    /// SET default_transaction_isolation, ...).
    pub fn isolation_change(&self) -> Option<IsolationChange> {
        self.isolation
    }

    /// Names of the sharded tables the statement touches (for logs and the demo).
    pub fn sharded_tables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = match &self.placement {
            Placement::Sharded(classes) => classes.iter().map(|c| &*c.table.name).collect(),
            _ => Vec::new(),
        };
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The shard key of each VALUES row of a multi-row INSERT into one sharded table, when the
    /// keys are literals or `$n` parameters and not all the same: such an INSERT may be split
    /// per shard ([`super::Router::split_insert`]).
    pub(crate) fn split_keys(&self) -> Option<&[KeyExpr]> {
        let Placement::Sharded(classes) = &self.placement else {
            return None;
        };
        let [class] = classes.as_slice() else {
            return None;
        };
        let [set] = class.sets.as_slice() else {
            return None;
        };
        if !class.insert || !set.rows || set.alts.len() < 2 {
            return None;
        }
        let keys = set.alts.as_slice();
        let placeable = keys
            .iter()
            .all(|k| matches!(k, KeyExpr::Slot(_) | KeyExpr::Param { .. }));
        let spread = keys.iter().any(|k| *k != keys[0]);
        (placeable && spread).then_some(keys)
    }

    /// A plan for text with no statement in it (empty, or only comments).
    pub(crate) fn empty(hint: Option<Hint>) -> Plan {
        Plan::other(hint, true)
    }

    /// An `Other` plan on the default shard's primary.
    pub(crate) fn other(hint: Option<Hint>, parsed: bool) -> Plan {
        Plan {
            kind: StatementKind::Other,
            plain_read: false,
            writes: false,
            parsed,
            placement: Placement::Default,
            key_moves: Vec::new(),
            hint,
            unsupported: None,
            scatter: Scatter::Unsupported(NO_SHARDED_TABLE.to_string()),
            split: None,
            everywhere_with_sharded: false,
            copy: None,
            isolation: None,
            positional: Vec::new(),
        }
    }
}

/// Transaction isolation, as far as reads across shards care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// READ COMMITTED (or READ UNCOMMITTED): each statement takes its own snapshot.
    #[default]
    ReadCommitted,
    /// REPEATABLE READ or SERIALIZABLE: one snapshot for the whole transaction.
    Snapshot,
}

impl Isolation {
    /// Reads a `default_transaction_isolation` / `transaction_isolation` value; `None` when it
    /// is not one (the caller keeps what it had).
    pub fn parse(value: &str) -> Option<Isolation> {
        let words: Vec<String> = value
            .split(|c: char| c.is_whitespace() || c == '_' || c == '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["read", "committed"] | ["read", "uncommitted"] => Some(Isolation::ReadCommitted),
            ["repeatable", "read"] | ["serializable"] => Some(Isolation::Snapshot),
            _ => None,
        }
    }
}

/// A statement's effect on the isolation level in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationChange {
    /// `BEGIN ISOLATION LEVEL ...` / `SET TRANSACTION ISOLATION LEVEL ...`: this transaction.
    Transaction(Isolation),
    /// `SET default_transaction_isolation = ...` / `SET SESSION CHARACTERISTICS AS TRANSACTION
    /// ISOLATION LEVEL ...`: later transactions.
    SessionDefault(Isolation),
    /// `SET default_transaction_isolation TO DEFAULT`, `RESET ALL`: back to the start.
    ResetSessionDefault,
}
