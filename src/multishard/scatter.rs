//! Whether a read that routes to several shards (the router's `Route::Shards`: no key, or an IN
//! list spanning shards) can be answered by running it unchanged on every involved shard and
//! concatenating or merging the rows, as a [`Scatter`] computed once at plan time.
//!
//! Concatenation is correct when every result row comes from rows of one shard and no row is
//! needed by two shards: a single plain `SELECT` whose FROM reads a sharded table directly, all
//! of whose sharded-table occurrences are joined or correlated on their shard key (co-located),
//! with no other tables than reference tables, and with nothing that combines rows across the
//! result (OFFSET, DISTINCT, GROUP BY, HAVING, aggregates, window functions, set operations,
//! row locks). A top-level ORDER BY whose items are all output columns ([`super::sort`]) is
//! kept: each shard returns its rows sorted and the session merges them ([`SortKey`]). A
//! top-level literal `LIMIT n` is kept: each shard stops after `n` rows and the merge stops
//! after `n` in total (`LIMIT ALL` is no limit; `TABLE t` is read as `SELECT * FROM t`).
//! Subqueries in WHERE or the select list may do
//! anything as long as they are co-located with the outer row (correlated on the key) or read
//! no sharded table. A top-level select list of only aggregate calls that add up across
//! shards (count, sum, min, max, bool_and/every, bool_or: each item exactly one call, no
//! DISTINCT, FILTER, ORDER BY or OVER in it), under the same FROM rules and with no GROUP BY,
//! HAVING, DISTINCT, ORDER BY, LIMIT or OFFSET, is [`Scatter::Aggregate`]: each shard returns
//! one row and the session combines them ([`Combine`]). Anything else is
//! [`Scatter::Unsupported`], naming the construct.
//!
//! Aggregates are recognised by PostgreSQL's built-in aggregate names (and by FILTER or WITHIN
//! GROUP): a user-defined aggregate called like a plain function cannot be told apart from one
//! and would be concatenated per shard. Likewise a function that reads tables itself is not
//! seen. Pure: never does I/O, never sees parameter values.

use sqlparser::ast::{
    Distinct, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentClause, FunctionArguments, GroupByExpr, JoinOperator, LimitClause, LockType,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr, SetOperator, Statement,
    TableFactor, TableWithJoins, Value,
};

use std::sync::Arc;

use super::gather::{self, Merge};
use super::input::{Facts, Tables};
use super::sort::sort_keys;
use crate::sql::syntax::{last_ident, lower, one_child, two_children, MAX_WALK_DEPTH};

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
    /// avg(x): sent to the shards as sum(x) and count(x) ([`super::gather::Output::Avg`]).
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

/// PostgreSQL's built-in aggregate functions (lowercase), sorted for binary search.
#[rustfmt::skip]
const AGGREGATES: &[&str] = &[
    "any_value", "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or",
    "corr", "count", "covar_pop", "covar_samp", "cume_dist", "dense_rank", "every", "grouping",
    "json_agg", "json_agg_strict", "json_arrayagg", "json_object_agg", "json_object_agg_strict",
    "json_object_agg_unique", "json_object_agg_unique_strict", "json_objectagg", "jsonb_agg",
    "jsonb_agg_strict", "jsonb_object_agg", "jsonb_object_agg_strict", "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict", "max", "min", "mode", "percent_rank", "percentile_cont",
    "percentile_disc", "range_agg", "range_intersect_agg", "rank", "regr_avgx", "regr_avgy",
    "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
    "stddev", "stddev_pop", "stddev_samp", "string_agg", "sum", "var_pop", "var_samp", "variance",
    "xmlagg",
];

type Check<T = ()> = Result<T, String>;

/// How `statements` combine across shards, given what the router found in them (`facts`) and
/// whether they are a read (`read`).
pub(crate) fn scatter(
    facts: &Facts,
    tables: &dyn Tables,
    statements: &[Statement],
    read: bool,
) -> Scatter {
    match check(facts, tables, statements, read) {
        Ok(scatter) => scatter,
        Err(construct) => Scatter::Unsupported(construct),
    }
}

/// Never `Ok(Scatter::Unsupported(_))`.
fn check(
    facts: &Facts,
    tables: &dyn Tables,
    statements: &[Statement],
    read: bool,
) -> Check<Scatter> {
    let [statement] = statements else {
        return Err("several statements".into());
    };
    let query = match statement {
        Statement::Query(q) => q,
        Statement::Explain { .. } => return Err("EXPLAIN".into()),
        Statement::Copy { .. } => return Err("COPY".into()),
        _ => return Err("a statement that is not a SELECT".into()),
    };
    if !read || facts.writes {
        return Err("a statement that writes".into());
    }
    if facts.sharded_occurrences == 0 {
        return Err(NO_SHARDED_TABLE.into());
    }
    if facts.cte_sharded {
        return Err("a WITH query that reads a sharded table".into());
    }
    let mut walk = Walk {
        tables,
        ctes: Vec::new(),
    };
    let merge = walk.query(query, true)?;
    if facts.locks {
        return Err("FOR UPDATE".into());
    }
    if let Some(table) = facts.other_table {
        return Err(format!(
            "a join of a sharded table with table {table}, which is neither sharded nor a \
             reference table"
        ));
    }
    if !facts.not_colocated.is_empty() {
        return Err(format!(
            "a join of sharded tables not on their shard key ({})",
            facts.not_colocated.join(", ")
        ));
    }
    Ok(merge)
}

/// The walk over the statement's top level and the subqueries in its FROM.
struct Walk<'a> {
    tables: &'a dyn Tables,
    /// CTE names in scope (lowercase): they shadow tables.
    ctes: Vec<Box<str>>,
}

impl Walk<'_> {
    /// A query at the top (`top`) or in FROM; returns how its rows combine (a
    /// [`Scatter::Concat`] with its ORDER BY and literal LIMIT, or, only at the top, a
    /// [`Scatter::Aggregate`]).
    fn query(&mut self, q: &Query, top: bool) -> Check<Scatter> {
        if !q.pipe_operators.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
        {
            return Err(FOREIGN.into());
        }
        let ctes_before = self.ctes.len();
        if let Some(with) = &q.with {
            self.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|c| lower(&c.alias.name.value).into()),
            );
        }
        let select = match &*q.body {
            SetExpr::Select(s) => self.select(s, top).map(|()| &**s),
            SetExpr::SetOperation { op, .. } => Err(match op {
                SetOperator::Union => "UNION",
                SetOperator::Intersect => "INTERSECT",
                SetOperator::Except | SetOperator::Minus => "EXCEPT",
            }
            .into()),
            SetExpr::Values(_) => Err("VALUES".into()),
            SetExpr::Table(_) => Err("TABLE".into()),
            SetExpr::Query(_) => Err("a parenthesized query".into()),
            _ => Err("a data-modifying statement".into()),
        };
        self.ctes.truncate(ctes_before);
        let select = select?;
        if top {
            return gather::top_level(q, select);
        }
        let order = match (&q.order_by, &*q.body) {
            (None, _) => Vec::new(),
            (Some(_), _) if !top => return Err("ORDER BY in a subquery in FROM".into()),
            (Some(order_by), SetExpr::Select(s)) => sort_keys(s, order_by)?,
            (Some(_), _) => return Err("ORDER BY".into()),
        };
        let limit = limit(q.limit_clause.as_ref())?;
        fetch_and_locks(q)?;
        if !top && limit.is_some() {
            return Err("LIMIT in a subquery in FROM".into());
        }
        Ok(Scatter::Concat { order, limit })
    }

    /// A SELECT; at the top (`top`) its select list, DISTINCT, GROUP BY and HAVING are left to
    /// [`gather::top_level`].
    fn select(&mut self, s: &Select, top: bool) -> Check {
        if !top {
            match &s.distinct {
                Some(Distinct::Distinct) => return Err("DISTINCT in a subquery in FROM".into()),
                Some(Distinct::On(_)) => return Err("DISTINCT ON".into()),
                None => {}
            }
            let grouped = match &s.group_by {
                GroupByExpr::All(_) => true,
                GroupByExpr::Expressions(exprs, modifiers) => {
                    !exprs.is_empty() || !modifiers.is_empty()
                }
            };
            if grouped {
                return Err("GROUP BY in a subquery in FROM".into());
            }
            if s.having.is_some() {
                return Err("HAVING in a subquery in FROM".into());
            }
        }
        if !s.named_window.is_empty() {
            return Err("window function (WINDOW clause)".into());
        }
        if s.top.is_some()
            || s.exclude.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.qualify.is_some()
            || s.connect_by.is_some()
            || s.value_table_mode.is_some()
        {
            return Err(FOREIGN.into());
        }
        if !top {
            for item in &s.projection {
                match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        expr(e, 0)?
                    }
                    SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(_) => {}
                }
            }
        }
        let mut sharded = false;
        for from in &s.from {
            sharded |= self.table_with_joins(from)?;
        }
        if !sharded {
            return Err("a sharded table read only in a subquery".into());
        }
        Ok(())
    }

    /// A FROM item and its joins; whether they read a sharded table. An outer join must not
    /// preserve rows of a side without sharded tables: every shard would return them.
    fn table_with_joins(&mut self, twj: &TableWithJoins) -> Check<bool> {
        let mut left = self.relation(&twj.relation)?;
        for join in &twj.joins {
            let right = self.relation(&join.relation)?;
            use JoinOperator as J;
            let preserves_unsharded = match &join.join_operator {
                J::Join(_) | J::Inner(_) | J::CrossJoin(_) => false,
                J::Left(_) | J::LeftOuter(_) => right && !left,
                J::Right(_) | J::RightOuter(_) => left && !right,
                J::FullOuter(_) => left != right,
                _ => return Err(FOREIGN.into()),
            };
            if preserves_unsharded {
                return Err("an outer join that keeps rows of a table that is not sharded".into());
            }
            left |= right;
        }
        Ok(left)
    }

    /// One FROM item; whether it reads a sharded table.
    fn relation(&mut self, factor: &TableFactor) -> Check<bool> {
        match factor {
            TableFactor::Table { name, args, .. } => Ok(args.is_none() && self.sharded(name)),
            TableFactor::Derived { subquery, .. } => {
                if !self.reads_sharded(subquery) {
                    return Ok(false);
                }
                self.query(subquery, false)?;
                Ok(true)
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.table_with_joins(table_with_joins),
            TableFactor::Function { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::UNNEST { .. } => Ok(false),
            _ => Err(FOREIGN.into()),
        }
    }

    /// A table name that is a sharded table (not a CTE of that name).
    fn sharded(&self, name: &ObjectName) -> bool {
        let table = lower(last_ident(name).unwrap_or_default());
        let is_cte = name.0.len() == 1 && self.ctes.iter().any(|c| **c == *table);
        !is_cte && self.tables.sharded(name).is_some()
    }

    /// Whether a subquery reads a sharded table anywhere.
    fn reads_sharded(&self, q: &Query) -> bool {
        self.tables.reads_sharded(q, &self.ctes)
    }
}

/// FETCH FIRST and row locks (FOR UPDATE/SHARE), which no merge reproduces.
pub(super) fn fetch_and_locks(q: &Query) -> Check {
    if q.fetch.is_some() {
        return Err("FETCH FIRST".into());
    }
    if let Some(lock) = q.locks.first() {
        return Err(match lock.lock_type {
            LockType::Update => "FOR UPDATE",
            LockType::Share => "FOR SHARE",
        }
        .into());
    }
    Ok(())
}

/// A top-level LIMIT: `None` without one, the count for a literal; OFFSET and other counts
/// are refused.
fn limit(clause: Option<&LimitClause>) -> Check<Option<u64>> {
    match clause {
        None => Ok(None),
        Some(LimitClause::OffsetCommaLimit { .. }) => Err("OFFSET".into()),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if offset.is_some() {
                return Err("OFFSET".into());
            }
            if !limit_by.is_empty() {
                return Err(FOREIGN.into());
            }
            let count = match limit {
                Some(Expr::Value(v)) => match &v.value {
                    Value::Number(n, _) => n.parse::<u64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            count
                .map(Some)
                .ok_or_else(|| "LIMIT with a non-literal count".into())
        }
    }
}

/// A call of a built-in aggregate (by name), or one with FILTER or WITHIN GROUP.
pub(super) fn is_aggregate(f: &Function) -> bool {
    let name = lower(last_ident(&f.name).unwrap_or_default());
    AGGREGATES.binary_search(&&*name).is_ok() || f.filter.is_some() || !f.within_group.is_empty()
}

/// How an aggregate call (not a window function) combines across shards, or the construct
/// that keeps it from combining.
pub(super) fn combine(f: &Function) -> Check<Combine> {
    let lowered = lower(last_ident(&f.name).unwrap_or_default()).into_owned();
    let named = format!("aggregate function {lowered}()");
    // PostgreSQL folds unquoted names; a quoted name is taken as written.
    let folded = match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) if i.quote_style.is_some() => i.value.clone(),
        _ => lowered.clone(),
    };
    let schema_ok = match &f.name.0[..] {
        [_] => true,
        [ObjectNamePart::Identifier(schema), _] => {
            let schema = if schema.quote_style.is_some() {
                schema.value.clone()
            } else {
                lower(&schema.value).into_owned()
            };
            schema == "pg_catalog"
        }
        _ => false,
    };
    if !schema_ok {
        return Err(format!(
            "{named} qualified with a schema other than pg_catalog"
        ));
    }
    let combine = match folded.as_str() {
        "count" => Combine::Count,
        "sum" => Combine::Sum,
        "min" => Combine::Min,
        "max" => Combine::Max,
        "bool_and" | "every" => Combine::BoolAnd,
        "bool_or" => Combine::BoolOr,
        "avg" => Combine::Avg,
        _ => return Err(named),
    };
    if !f.within_group.is_empty() {
        return Err(format!("WITHIN GROUP on {named}"));
    }
    if f.uses_odbc_syntax
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(FOREIGN.into());
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(FOREIGN.into());
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(format!("{folded}(DISTINCT ...)"));
    }
    if let Some(clause) = list.clauses.first() {
        return Err(match clause {
            FunctionArgumentClause::OrderBy(_) => format!("ORDER BY inside {named}"),
            _ => FOREIGN.into(),
        });
    }
    let [arg] = &list.args[..] else {
        return Err(format!("{named} with {} arguments", list.args.len()));
    };
    let FunctionArg::Unnamed(arg) = arg else {
        return Err(format!("a named argument to {named}"));
    };
    match arg {
        FunctionArgExpr::Expr(e) => expr(e, 1)?,
        FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_)
            if combine == Combine::Count => {}
        FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_) => {
            return Err(format!("{lowered}(*)"))
        }
    }
    Ok(combine)
}

/// Checks a select-list expression for aggregates and window functions. Subqueries are not
/// entered: they are per row, and co-location is checked on the key graph.
pub(super) fn expr(e: &Expr, depth: usize) -> Check {
    if depth >= MAX_WALK_DEPTH {
        return Err("an expression nested too deeply".into());
    }
    let depth = depth + 1;
    if let Some(child) = one_child(e) {
        return expr(child, depth);
    }
    if let Some((a, b)) = two_children(e) {
        expr(a, depth)?;
        return expr(b, depth);
    }
    use Expr as E;
    let all = |items: &[Expr]| items.iter().try_for_each(|e| expr(e, depth));
    let opt = |e: Option<&Expr>| e.map_or(Ok(()), |e| expr(e, depth));
    match e {
        E::Identifier(_)
        | E::CompoundIdentifier(_)
        | E::Value(_)
        | E::TypedString(_)
        | E::Wildcard(_)
        | E::QualifiedWildcard(..)
        | E::Exists { .. }
        | E::Subquery(_) => Ok(()),
        E::InSubquery { expr: x, .. } => expr(x, depth),
        E::InList { expr: x, list, .. } => {
            expr(x, depth)?;
            all(list)
        }
        E::Between {
            expr: x, low, high, ..
        } => {
            expr(x, depth)?;
            expr(low, depth)?;
            expr(high, depth)
        }
        E::Substring {
            expr: x,
            substring_from,
            substring_for,
            ..
        } => {
            expr(x, depth)?;
            opt(substring_from.as_deref())?;
            opt(substring_for.as_deref())
        }
        E::Trim {
            expr: x,
            trim_what,
            trim_characters,
            ..
        } => {
            expr(x, depth)?;
            opt(trim_what.as_deref())?;
            all(trim_characters.as_deref().unwrap_or_default())
        }
        E::Overlay {
            expr: x,
            overlay_what,
            overlay_from,
            overlay_for,
        } => {
            expr(x, depth)?;
            expr(overlay_what, depth)?;
            expr(overlay_from, depth)?;
            opt(overlay_for.as_deref())
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            opt(operand.as_deref())?;
            for when in conditions {
                expr(&when.condition, depth)?;
                expr(&when.result, depth)?;
            }
            opt(else_result.as_deref())
        }
        E::Function(f) => function(f, depth),
        E::GroupingSets(sets) | E::Cube(sets) | E::Rollup(sets) => {
            sets.iter().try_for_each(|set| all(set))
        }
        E::Tuple(items) => all(items),
        E::Array(array) => all(&array.elem),
        E::Interval(interval) => expr(&interval.value, depth),
        _ => Err("an expression pgshard does not inspect".into()),
    }
}

/// A function call: window functions (`OVER`) and aggregates are refused; arguments are
/// checked (a subquery argument, as in `ARRAY(SELECT ...)`, is per row).
fn function(f: &Function, depth: usize) -> Check {
    let name = lower(last_ident(&f.name).unwrap_or_default()).into_owned();
    if f.over.is_some() {
        return Err(format!("window function {name}()"));
    }
    let aggregate = AGGREGATES.binary_search(&name.as_str()).is_ok()
        || f.filter.is_some()
        || !f.within_group.is_empty();
    if aggregate {
        return Err(format!("aggregate function {name}()"));
    }
    for args in [&f.parameters, &f.args] {
        if let FunctionArguments::List(list) = args {
            for arg in &list.args {
                let (FunctionArg::Named { arg, .. }
                | FunctionArg::ExprNamed { arg, .. }
                | FunctionArg::Unnamed(arg)) = arg;
                if let FunctionArgExpr::Expr(e) = arg {
                    expr(e, depth)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AGGREGATES;

    #[test]
    fn aggregate_names_are_sorted_for_binary_search() {
        assert!(AGGREGATES.windows(2).all(|w| w[0] < w[1]));
    }
}
