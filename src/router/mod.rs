//! The sharding router: statement text → [`Plan`] (once) → [`Route`] (per execution).
//!
//! [`Router::plan`] parses a statement with sqlparser (PostgreSqlDialect) and records what
//! routing needs: the statement kind, whether it is a plain read (replica-eligible), the
//! sharded tables it touches and where their keys come from (literals, already hashed, or
//! `$n` placeholders), and any leading `/* pgshard: shard_key=... */` hint. Plans are
//! immutable and cacheable: per prepared statement at Parse, and per query text for simple
//! queries in a [`PlanCache`]. [`Router::route`] then resolves a plan with the Bind
//! parameters and the session's [`RouteContext`] (its `SET pgshard.*` overrides and its
//! transaction mode) to a [`Route`]. Nothing downstream reads the SQL again.
//!
//! Rules: a sharded table's rows go where their key's slot lives (`sharding`, SHARDING.md);
//! reference tables are read from any shard (the default one when nothing else decides) and
//! written on all; other tables live on the default shard; statements naming no table go to
//! the default shard. A statement's own key wins over overrides; overrides (hint comment,
//! then `pgshard.shard`, then `pgshard.shard_key`) decide where the statement gives none.
//! Keyless writes on sharded tables are refused; keyless reads route to every shard.
//! Statements sqlparser cannot parse go to the default (or overridden) shard's primary.
//!
//! What a statement needs when it runs on several shards (how a read's rows merge, a split
//! INSERT's text, a COPY's plan) is [`crate::multishard`]'s to decide: the router calls it with
//! what its analysis found and re-exports its types; it never calls back.
//!
//! Pure and synchronous: this module never does I/O, never awaits, holds no globals and never
//! learns anything by itself (volatility comes in as data).

mod analyze;
mod cache;
mod columns;
mod constraints;
mod error;
mod execution;
mod expr;
mod normalize;
mod plan;
mod query;
mod route;
mod session_effects;
mod text;
mod volatility;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::sharding::{KeyType, ShardMap};

use analyze::TableRule;

pub use cache::{PlanCache, ENTRY_OVERHEAD_BYTES};
pub use columns::PositionalGap;
pub use error::RouteError;
pub use execution::{Execution, FanOutPlan, HeldServer, Refusal, SessionView, TransactionView};
pub use normalize::normalize_literals;
pub use plan::{Isolation, IsolationChange, Plan, SettingPlan, StatementKind, TransactionControl};
pub use route::{OverrideChange, Params, Route, RouteContext, Target, TransactionMode};
pub use session_effects::{placeholder_settings, session_state_statement, TextEffects};
pub use volatility::Volatility;

// What the cross-shard planning (`multishard`) puts in a plan, under the names sessions use.
pub use crate::multishard::{
    Combine, CompareOp, CopyFormat, CopyIn, CopyKeyError, CopyOut, CopyPlan, CopyRow, CopyRowError,
    Groups, KeyCollation, Merge, Operand, Output, Predicate, RowSplitter, Scatter, ShardedTable,
    SortColumn, SortKey, SplitPart,
};

impl Router {
    /// Whether `sql` may change its server session's role or settings beyond what its
    /// CommandComplete tag shows (see `session_effects`): the connection is then reset before
    /// the next client uses it.
    pub fn may_change_session(&self, sql: &str) -> bool {
        session_effects::may_change_session(sql, &self.rules.volatility)
    }

    /// What `sql` may do to its server session (see `session_effects`).
    pub fn text_effects(&self, sql: &str) -> TextEffects {
        session_effects::text_effects(sql, &self.rules.volatility)
    }
}

/// What the analysis consults: table rules, function volatility and the sharded tables'
/// column order.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Lowercase unqualified table name → rule.
    tables: HashMap<Box<str>, TableRule>,
    volatility: Volatility,
    /// Learned from the shards' catalogs; empty until then.
    columns: columns::TableColumns,
}

/// Routes statements for one config. Immutable once shared; rebuild (or clone and change) it,
/// and drop cached plans, on reload, when the volatility table changes or a column order is
/// learned.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Rules,
    map: ShardMap,
    default_shard: usize,
    default_key_type: KeyType,
    /// Every declared key type, for checking `SET pgshard.shard_key` values.
    key_types: Vec<KeyType>,
}

impl Router {
    /// A router for `config`, which must have been validated (as [`Config::load`] does).
    pub fn new(config: &Config, volatility: Volatility) -> Router {
        let sharding = &config.sharding;
        let map = config.shard_map();
        let mut tables = HashMap::new();
        let mut key_types = Vec::new();
        for t in &sharding.tables {
            let key_type = t.key_type.unwrap_or(sharding.key_type);
            let key_column = t.key_column.as_deref().unwrap_or(&sharding.key_column);
            let table = ShardedTable {
                name: table_key(&t.name),
                key_column: key_column.trim().to_ascii_lowercase().into(),
                key_type,
            };
            if !key_types.contains(&key_type) {
                key_types.push(key_type);
            }
            tables.insert(table.name.clone(), TableRule::Sharded(Arc::new(table)));
        }
        for name in &sharding.reference_tables {
            tables.insert(table_key(name), TableRule::Reference);
        }
        if key_types.is_empty() {
            key_types.push(sharding.key_type);
        }
        let default_shard = sharding
            .default_shard
            .as_deref()
            .and_then(|name| map.shard_index(name))
            .unwrap_or(0);
        Router {
            rules: Rules {
                tables,
                volatility,
                columns: columns::TableColumns::default(),
            },
            map,
            default_shard,
            default_key_type: sharding.key_type,
            key_types,
        }
    }

    /// This router routing by `map` (a live map from the catalog, over the same shards, in
    /// the same order, possibly with new ones at the end); everything learned is kept.
    pub fn with_map(&self, map: ShardMap) -> Router {
        let mut next = self.clone();
        next.map = map;
        next
    }

    /// This router with another volatility table (the learned column orders are kept).
    pub fn with_volatility(&self, volatility: Volatility) -> Router {
        let mut next = self.clone();
        next.rules.volatility = volatility;
        next
    }

    /// Analyses a statement string (one or several statements). Never fails: text sqlparser
    /// cannot parse gets a plan for the default (or overridden) shard's primary. The result
    /// depends only on the text and this router, so it may be cached by text.
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        Arc::new(analyze::plan(&self.rules, sql))
    }

    /// The shard map routes are computed with.
    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Index of the shard holding unsharded tables.
    pub fn default_shard(&self) -> usize {
        self.default_shard
    }

    /// A route in words, with shard names: `s1 (replica)`, `s0, s1 (primary)`, `every shard`.
    pub fn describe(&self, route: &Route) -> String {
        let names = |shards: &[usize]| {
            let names: Vec<&str> = shards.iter().map(|&s| self.map.shard_name(s)).collect();
            names.join(", ")
        };
        let target = |t: &Target| match t {
            Target::Primary => "primary",
            Target::Replica => "replica",
        };
        match route {
            Route::Shard { shard, target: t } => format!("{} ({})", names(&[*shard]), target(t)),
            Route::Shards { shards, target: t } => format!("{} ({})", names(shards), target(t)),
            Route::SplitInsert { shards } => format!("{} (split insert)", names(shards)),
            Route::All => "every shard (primary)".to_string(),
            Route::Local(change) => format!("pgshard itself ({change:?})"),
        }
    }
}

/// `Public."Users"` → `users`: config names match on the unqualified, lowercased name.
fn table_key(name: &str) -> Box<str> {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.trim().trim_matches('"').to_ascii_lowercase().into()
}
