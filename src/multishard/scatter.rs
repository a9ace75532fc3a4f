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
//! kept: each shard returns its rows sorted and the session merges them ([`SortKey`](super::SortKey)). A
//! top-level literal `LIMIT n` is kept: each shard stops after `n` rows and the merge stops
//! after `n` in total (`LIMIT ALL` is no limit; `TABLE t` is read as `SELECT * FROM t`).
//! Subqueries in WHERE or the select list may do
//! anything as long as they are co-located with the outer row (correlated on the key) or read
//! no sharded table. A top-level select list of only aggregate calls that add up across
//! shards (count, sum, min, max, bool_and/every, bool_or: each item exactly one call, no
//! DISTINCT, FILTER, ORDER BY or OVER in it), under the same FROM rules and with no GROUP BY,
//! HAVING, DISTINCT, ORDER BY, LIMIT or OFFSET, is a [`Scatter::Merge`]: each shard returns
//! one row and the session combines them ([`Combine`](super::Combine)); `gather` decides the
//! rest of the top level (GROUP BY, HAVING, DISTINCT, OFFSET). Anything else is
//! [`Scatter::Unsupported`], naming the construct.
//!
//! Aggregates are recognised by PostgreSQL's built-in aggregate names (and by FILTER or WITHIN
//! GROUP): a user-defined aggregate called like a plain function cannot be told apart from one
//! and would be concatenated per shard. Likewise a function that reads tables itself is not
//! seen. Pure: never does I/O, never sees parameter values.

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, JoinOperator, LimitClause, ObjectName, Query, Select, SelectItem,
    SetExpr, SetOperator, Statement, TableFactor, TableWithJoins, Value,
};

use super::aggregate::expr;
use super::gather::{self, fetch_and_locks};
use super::input::{Facts, Tables};
use super::read_plan::{Scatter, FOREIGN, NO_SHARDED_TABLE};
use super::sort::sort_keys;
use crate::sql::syntax::{last_ident, lower};

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
    let mut merge = walk.query(query, true)?;
    if stray_collate(facts.collate_clauses, query) {
        super::sort::collation_unknown(&mut merge);
    }
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

/// Whether the statement, which holds `all` COLLATE clauses, has one other than at the top of
/// a top-level select item or ORDER BY item (where the sort keys account for it).
fn stray_collate(all: usize, query: &Query) -> bool {
    if all == 0 {
        return false;
    }
    let layers = |mut e: &Expr| {
        let mut n = 0;
        loop {
            match e {
                Expr::Nested(inner) => e = inner,
                Expr::Collate { expr, .. } => {
                    n += 1;
                    e = expr;
                }
                _ => return n,
            }
        }
    };
    let mut top = 0;
    if let SetExpr::Select(s) = &*query.body {
        for item in &s.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                top += layers(e);
            }
        }
    }
    if let Some(sqlparser::ast::OrderByKind::Expressions(items)) =
        query.order_by.as_ref().map(|o| &o.kind)
    {
        top += items.iter().map(|i| layers(&i.expr)).sum::<usize>();
    }
    all > top
}

/// The walk over the statement's top level and the subqueries in its FROM.
struct Walk<'a> {
    tables: &'a dyn Tables,
    /// CTE names in scope (lowercase): they shadow tables.
    ctes: Vec<Box<str>>,
}

impl Walk<'_> {
    /// A query at the top (`top`) or in FROM; returns how its rows combine (a
    /// [`Scatter::Concat`] with its ORDER BY and literal LIMIT, or, only at the top, what
    /// [`gather::top_level`] makes of it).
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
