//! What a read that spans shards is answered with, as the session executes it: [`Scatter`]
//! (concatenate, merge in order, combine a rewritten statement's rows with [`Merge`], or refuse,
//! naming the construct), and the sort keys, groups, aggregates and HAVING predicates a merge
//! needs. Data only: `scatter` and `gather` decide it; nothing is computed here.

use std::sync::Arc;

/// How results from several shards combine (computed at plan time, for reads only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scatter {
    /// Rows from every shard. When `order` is empty they are concatenated in any order; when
    /// it is not, each shard returns its rows sorted by it (the statement text keeps its ORDER
    /// BY and LIMIT) and the session merges them, comparing key by key. `limit`: stop after
    /// this many rows in total (a top-level literal LIMIT, without OFFSET; each shard also
    /// stops early).
    Concat {
        order: Vec<SortKey>,
        limit: Option<u64>,
    },
    /// A read the shards run rewritten ([`Merge::sql`]): OFFSET, DISTINCT, hidden sort columns,
    /// aggregates with or without GROUP BY and HAVING.
    Merge(Arc<Merge>),
    /// Cannot be merged correctly (yet): the construct, named for the user, e.g. "ORDER BY on
    /// an expression that is not in the select list", "OFFSET", "aggregate function avg()",
    /// "count(DISTINCT ...)", "an aggregate mixed with plain columns", "an aggregate inside an
    /// expression (aggregate function count())",
    /// "GROUP BY", "DISTINCT", "window function rank()", "HAVING", "FOR UPDATE", "a join of sharded tables not on their shard key",
    /// "several statements", "LIMIT with a non-literal count", "UNION".
    Unsupported(String),
}

/// A read answered from every shard with a rewritten statement, and how the session combines
/// the shards' rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The statement every shard runs instead of the client's.
    pub sql: String,
    /// Without `groups`: this many trailing columns of each shard row are hidden sort columns,
    /// dropped before the client sees the row (and its RowDescription).
    pub hidden: usize,
    /// Aggregates: how shard rows form groups and how each output column is computed.
    pub groups: Option<Groups>,
    /// The final ORDER BY: over shard columns (rows), or over [`Groups::outputs`] (groups).
    pub order: Vec<SortKey>,
    /// SELECT DISTINCT: duplicate output rows are dropped.
    pub distinct: bool,
    /// Rows skipped after merging (each shard skips none).
    pub offset: u64,
    /// Rows sent after the offset.
    pub limit: Option<u64>,
}

/// Aggregated reads: each shard row is one group's partial aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// The shard columns holding the GROUP BY values: rows equal in all of them are one group
    /// (none: the whole result is one group, as without GROUP BY).
    pub keys: Vec<usize>,
    /// Each output column of a group; the first `visible` are the client's, the rest exist for
    /// HAVING and ORDER BY.
    pub outputs: Vec<Output>,
    pub visible: usize,
    /// HAVING, evaluated on the combined outputs.
    pub having: Option<Predicate>,
    /// The statement has a COLLATE clause that may change the collation of aggregated or
    /// compared text (inside an aggregate's argument, in HAVING, in a subquery...): text
    /// min/max and HAVING comparisons of text are then refused.
    pub collation_unknown: bool,
}

/// How one output column of a group comes from the shards' columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A grouped value: the same in every row of the group.
    Column(usize),
    /// A partial aggregate in this shard column, combined across the group's rows.
    Aggregate(Combine, usize),
    /// avg(x): the sum of the `sum` column divided by the sum of the `count` column.
    Avg { sum: usize, count: usize },
}

/// A HAVING condition over a group's outputs, in SQL's three-valued logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Compare(Operand, CompareOp, Operand),
    /// `x IS NULL` (`false`) or `x IS NOT NULL` (`true`).
    IsNull(Operand, bool),
    Constant(bool),
}

/// A value in a HAVING condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// An output of the group (by position in [`Groups::outputs`]).
    Output(usize),
    /// A literal in its text form; `None` is NULL.
    Literal(Option<String>),
    /// A `$n` parameter: the shards return its value as an output column (this index), and it
    /// compares like a literal (by the type of the other side).
    Param(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// How a partial aggregate combines across shards (and across a group's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// count(*), count(x), count(DISTINCT ...) is NOT this (refuse it): add the shards' counts.
    Count,
    /// sum(x): add the shards' sums (the session refuses float results at run time).
    Sum,
    Min,
    Max,
    /// bool_and(x) / every(x)
    BoolAnd,
    /// bool_or(x)
    BoolOr,
    /// avg(x): sent to the shards as sum(x) and count(x) ([`Output::Avg`]).
    Avg,
}

/// One key of a top-level ORDER BY, as an output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Which output column holds the sort value.
    pub column: SortColumn,
    pub descending: bool,
    /// Where NULLs sort: PostgreSQL's default (NULLS LAST for ASC, NULLS FIRST for DESC)
    /// unless written.
    pub nulls_first: bool,
    /// The collation text values order by.
    pub collation: KeyCollation,
}

/// Which collation a sort key's text values order by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyCollation {
    /// No COLLATE: the column's own, or the expression's (the database's).
    #[default]
    Implicit,
    /// `COLLATE name` on the ORDER BY item or on the select item it names (the name as SQL,
    /// e.g. `"de_DE"`).
    Named(String),
    /// A COLLATE clause elsewhere in the statement may give the value another collation.
    Unknown,
}

/// The output column a [`SortKey`] sorts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    /// 0-based position among the output columns (the RowDescription's fields): `ORDER BY 2`,
    /// or a select item named by its alias or output name or equal to the ORDER BY expression.
    /// Without a wildcard this is the position in the select list; with one, only ordinals
    /// and select items before the first wildcard give an index, and an ordinal is not checked
    /// against the column count (the session refuses one past the RowDescription's fields).
    Index(usize),
    /// An output column name, when the select list has a wildcard (`*`, `t.*`): a bare name,
    /// a column `t.c` of a FROM item the wildcard outputs, or a select item after the
    /// wildcard (its alias or implicit name). Folded as PostgreSQL does (lowercase unless
    /// quoted), to compare exactly with the RowDescription's column names; the session
    /// refuses at run time when no column or more than one column has the name.
    Name(String),
    /// The n-th (0-based) hidden sort column the shards add after the client's columns
    /// ([`Merge::hidden`]).
    Hidden(usize),
}

/// The construct named for text sqlparser cannot parse.
pub(crate) const UNPARSED: &str = "a statement pgshard cannot parse";
/// The construct named for statements reading no sharded table (they never span shards).
pub(crate) const NO_SHARDED_TABLE: &str = "a statement that reads no sharded table";
/// The construct named for syntax PostgreSQL does not have (parsed by a permissive grammar).
pub(super) const FOREIGN: &str = "a construct PostgreSQL does not have";
