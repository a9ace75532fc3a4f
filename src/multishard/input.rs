//! What the router hands the cross-shard planning: the sharded tables the config declares
//! ([`ShardedTable`]), what its analysis found in one statement string ([`Facts`], plain data),
//! and answers about table names ([`Tables`]). Declarations only: nothing here decides anything,
//! reads the config or walks a statement.

use std::sync::Arc;

use sqlparser::ast::{ObjectName, Query};

use crate::sharding::KeyType;

/// A sharded table as the config declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedTable {
    /// Lowercase, unqualified.
    pub name: Box<str>,
    /// Lowercase.
    pub key_column: Box<str>,
    pub key_type: KeyType,
}

/// What the router's analysis found in one statement string, as the cross-shard judgements
/// need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts<'a> {
    /// Changes data somewhere.
    pub writes: bool,
    /// Holds `FOR UPDATE` / `FOR SHARE` somewhere.
    pub locks: bool,
    /// How many times it names a sharded table (none: it never spans shards).
    pub sharded_occurrences: usize,
    /// A WITH query reads a sharded table.
    pub cte_sharded: bool,
    /// The first table it reads that is neither sharded nor a reference table, nor a CTE.
    pub other_table: Option<&'a str>,
    /// The sharded tables it reads (sorted, each once) when their rows are not all co-located,
    /// that is joined or correlated on their shard keys; empty when they are.
    pub not_colocated: Vec<&'a str>,
    /// How many COLLATE clauses the statement text holds.
    pub collate_clauses: usize,
}

/// What the router knows of table names.
pub(crate) trait Tables {
    /// The sharded table `name` refers to (schema ignored, case folded), if it is one.
    fn sharded(&self, name: &ObjectName) -> Option<Arc<ShardedTable>>;

    /// Whether `query` reads a sharded table anywhere, the CTE names in `ctes` (lowercase)
    /// shadowing tables of that name.
    fn reads_sharded(&self, query: &Query, ctes: &[Box<str>]) -> bool;
}
