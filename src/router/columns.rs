//! The column order of sharded tables, as data: where an `INSERT INTO t VALUES (...)` without a
//! column list carries each row's shard key. The order is learned from the shards' catalogs by
//! `shared` and handed to the router ([`Router::learn_columns`]); this module only stores it,
//! finds the key's place in it, and tells whether a plan was made with the order known now.
//!
//! Pure: never learns anything by itself, never does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use super::{table_key, Plan, Router};
use crate::multishard::ShardedTable;

/// Column names of each sharded table in `attnum` order (dropped columns left out), by the
/// router's table key (lowercase, unqualified).
#[derive(Debug, Clone, Default)]
pub(crate) struct TableColumns {
    by_table: HashMap<Box<str>, Arc<[Box<str>]>>,
}

impl TableColumns {
    /// The 0-based place of `table`'s shard key among its columns; `None` when the order is
    /// unknown or the key column is not among them.
    pub(crate) fn key_position(&self, table: &ShardedTable) -> Option<usize> {
        self.by_table
            .get(&table.name)?
            .iter()
            .position(|c| c.eq_ignore_ascii_case(&table.key_column))
    }
}

/// An INSERT without a column list into a sharded table, as planned: the key's place the plan
/// assumed (so a plan made before the order changed is noticed), and how many values its
/// shortest row gives (for the wording of a refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PositionalInsert {
    pub table: Arc<ShardedTable>,
    /// The key column's 0-based place when planned; `None`: the order was unknown.
    pub key_position: Option<usize>,
    /// The fewest values a VALUES row gives (the select list's length for `INSERT ... SELECT`).
    pub fewest_values: usize,
}

/// Why an INSERT without a column list gives no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionalGap {
    /// pgshard does not know the table's column order.
    UnknownOrder,
    /// The rows stop before the key column (trailing defaults include the key).
    KeyNotGiven { given: usize, position: usize },
    /// The key's value is an expression (not a literal or `$n`) in some row.
    KeyNotPlaceable { position: usize },
}

impl PositionalInsert {
    pub(crate) fn gap(&self) -> PositionalGap {
        match self.key_position {
            None => PositionalGap::UnknownOrder,
            Some(position) if self.fewest_values <= position => PositionalGap::KeyNotGiven {
                given: self.fewest_values,
                position,
            },
            Some(position) => PositionalGap::KeyNotPlaceable { position },
        }
    }
}

impl Router {
    /// Sets (or, with `None`, forgets) the column order of the sharded table configured as
    /// `table`: column names in `attnum` order, without dropped columns. Plans made before no
    /// longer count as current ([`Router::plan_is_current`]) if the key's place changed.
    pub fn learn_columns(&mut self, table: &str, columns: Option<Vec<String>>) {
        let key = table_key(table);
        match columns {
            Some(columns) => {
                let columns: Arc<[Box<str>]> = columns.into_iter().map(Into::into).collect();
                self.rules.columns.by_table.insert(key, columns);
            }
            None => {
                self.rules.columns.by_table.remove(&key);
            }
        }
    }

    /// The column order to keep for the sharded table configured as `table`, from what each
    /// shard's catalog said (`None`: no such table there): only when every shard has the table
    /// with its shard key at the same place (each shard fills an INSERT's values by its own
    /// order, so the key must be where the router reads it on all of them). The default shard's
    /// list is kept.
    pub fn agreed_columns(
        &self,
        table: &str,
        per_shard: &[Option<Vec<String>>],
    ) -> Option<Vec<String>> {
        let sharded = self.rules.sharded_table(&table_key(table))?;
        let key_at = |columns: &Vec<String>| {
            columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(&sharded.key_column))
        };
        let first = key_at(per_shard.first()?.as_ref()?)?;
        let agree = per_shard
            .iter()
            .all(|c| c.as_ref().and_then(key_at) == Some(first));
        agree.then(|| per_shard.get(self.default_shard)?.clone())?
    }

    /// The 0-based place of the shard key among the columns of the sharded table configured as
    /// `table`, if its column order is known.
    pub fn key_position(&self, table: &str) -> Option<usize> {
        let table = self.rules.sharded_table(&table_key(table))?;
        self.rules.columns.key_position(&table)
    }

    /// Whether `plan` was made with the column order this router knows: false for a plan of an
    /// INSERT without a column list whose table's key has moved (or become known, or unknown)
    /// since. Such a plan must be made again from its text. True for every other plan.
    pub fn plan_is_current(&self, plan: &Plan) -> bool {
        plan.positional
            .iter()
            .all(|p| self.rules.columns.key_position(&p.table) == p.key_position)
    }
}

impl Plan {
    /// An INSERT without a column list into a sharded table whose column order was unknown
    /// when planned: learning it may let the statement route.
    pub fn lacks_column_order(&self) -> bool {
        self.positional.iter().any(|p| p.key_position.is_none())
    }

    /// The statement holds an INSERT without a column list into a sharded table: an error
    /// saying a column or type does not match may mean the table changed.
    pub fn has_positional_insert(&self) -> bool {
        !self.positional.is_empty()
    }
}
