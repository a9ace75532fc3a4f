//! Cross-shard reads whose statement is rewritten for the shards ([`Merge`]): OFFSET (each
//! shard gets `LIMIT offset + limit`), DISTINCT, ORDER BY on what the select list lacks (hidden
//! sort columns, stripped again), and aggregates with or without GROUP BY, HAVING and an ORDER
//! BY/LIMIT over the groups (each shard returns partial aggregates per group; avg is sent as sum
//! and count). Decides only from the top level of an already checked statement (FROM, joins and
//! subqueries are [`super::scatter`](mod@super::scatter)'s). Pure: builds values and SQL text, never does I/O.

use std::sync::Arc;

use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    BinaryOperator, CaseWhen, Distinct, Expr, Function, GroupByExpr, Ident, LimitClause, LockType,
    ObjectNamePart, Query, Select, SelectItem, SetExpr, UnaryOperator, Value,
};

use super::aggregate::{combine, expr, is_aggregate};
use super::read_plan::{
    Combine, CompareOp, Groups, Merge, Operand, Output, Predicate, Scatter, SortColumn, FOREIGN,
};
use super::sort::{same_expression, select_item_of, sort_keys, sort_keys_or};

type Check<T = ()> = Result<T, String>;

/// How the top-level SELECT `s` of `q` combines across shards, once FROM and subqueries passed.
pub(super) fn top_level(q: &Query, s: &Select) -> Check<Scatter> {
    let (offset, limit) = limit_offset(q.limit_clause.as_ref())?;
    fetch_and_locks(q)?;
    let distinct = match &s.distinct {
        None => false,
        Some(Distinct::Distinct) => true,
        Some(Distinct::On(_)) => return Err("DISTINCT ON".into()),
    };
    if aggregated(s)? {
        return groups(q, s, distinct, offset, limit);
    }
    rows(q, s, distinct, offset, limit)
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

/// A top-level LIMIT and OFFSET as literal counts.
fn limit_offset(clause: Option<&LimitClause>) -> Check<(u64, Option<u64>)> {
    let count = |e: &Expr, what: &str| {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u64>().ok(),
                Value::Null if what == "LIMIT" => Some(u64::MAX),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| format!("{what} with a non-literal count"))
    };
    match clause {
        None => Ok((0, None)),
        Some(LimitClause::OffsetCommaLimit { .. }) => Err(FOREIGN.into()),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(FOREIGN.into());
            }
            let offset = match offset {
                Some(o) => count(&o.value, "OFFSET")?,
                None => 0,
            };
            let limit = match limit {
                Some(l) => Some(count(l, "LIMIT")?).filter(|&n| n != u64::MAX),
                None => None,
            };
            Ok((offset, limit))
        }
    }
}

/// Whether the SELECT aggregates (GROUP BY, HAVING, or an aggregate call in its select list).
fn aggregated(s: &Select) -> Check<bool> {
    let grouped = match &s.group_by {
        GroupByExpr::All(_) => return Err("GROUP BY ALL".into()),
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err("GROUP BY with ROLLUP, CUBE or GROUPING SETS".into());
            }
            !exprs.is_empty()
        }
    };
    if grouped || s.having.is_some() {
        return Ok(true);
    }
    for item in &s.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            if aggregate_call(e).is_some() {
                return Ok(true);
            }
            if let Err(why) = expr(e, 0) {
                if why.starts_with("aggregate function") {
                    return Ok(true);
                }
                return Err(why);
            }
        }
    }
    Ok(false)
}

/// The aggregate call an expression is exactly (parentheses aside).
fn aggregate_call(e: &Expr) -> Option<&Function> {
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    match e {
        Expr::Function(f) if f.over.is_none() && is_aggregate(f) => Some(f),
        _ => None,
    }
}

/// Rows from the shards, possibly with hidden sort columns, deduplicated or offset.
fn rows(q: &Query, s: &Select, distinct: bool, offset: u64, limit: Option<u64>) -> Check<Scatter> {
    for item in &s.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            expr(e, 0)?;
        }
    }
    let mut hidden: Vec<Expr> = Vec::new();
    let order = match &q.order_by {
        None => Vec::new(),
        Some(order_by) if distinct => sort_keys(s, order_by).map_err(|why| {
            format!("{why} (with SELECT DISTINCT, ORDER BY items must be in the select list)")
        })?,
        Some(order_by) => sort_keys_or(s, order_by, &mut |e| {
            expr(e, 0)?;
            hidden.push(e.clone());
            Ok(SortColumn::Hidden(hidden.len() - 1))
        })?,
    };
    if hidden.is_empty() && offset == 0 && !distinct {
        return Ok(Scatter::Concat { order, limit });
    }
    let mut shard_query = q.clone();
    if let SetExpr::Select(select) = &mut *shard_query.body {
        select
            .projection
            .extend(hidden.iter().cloned().map(SelectItem::UnnamedExpr));
    }
    shard_query.limit_clause = limit.map(|n| limit_clause(n.saturating_add(offset)));
    Ok(Scatter::Merge(Arc::new(Merge {
        sql: shard_query.to_string(),
        hidden: hidden.len(),
        groups: None,
        order,
        distinct,
        offset,
        limit,
    })))
}

fn limit_clause(n: u64) -> LimitClause {
    LimitClause::LimitOffset {
        limit: Some(Expr::value(Value::Number(n.to_string(), false))),
        offset: None,
        limit_by: Vec::new(),
    }
}

/// Builds the shards' select list and the outputs of a grouped read.
struct Builder<'a> {
    select: &'a Select,
    /// The shards' select list: the client's items in place (avg as sum), then hidden ones.
    projection: Vec<SelectItem>,
    outputs: Vec<Output>,
    /// GROUP BY expressions and the shard column holding each.
    keys: Vec<(&'a Expr, usize)>,
}

fn groups(
    q: &Query,
    s: &Select,
    distinct: bool,
    offset: u64,
    limit: Option<u64>,
) -> Check<Scatter> {
    let mut b = Builder {
        select: s,
        projection: Vec::with_capacity(s.projection.len()),
        outputs: Vec::new(),
        keys: Vec::new(),
    };
    for item in &s.projection {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            _ => return Err("SELECT * with GROUP BY or aggregates".into()),
        };
        b.visible_item(e, alias)?;
    }
    let visible = b.outputs.len();
    if let GroupByExpr::Expressions(exprs, _) = &s.group_by {
        for g in exprs {
            match g {
                // GROUP BY () is the grand total; GROUP BY (a, b) groups by a and b.
                Expr::Tuple(items) => items.iter().try_for_each(|g| b.group_key(g))?,
                g => b.group_key(g)?,
            }
        }
    }
    let having = s.having.as_ref().map(|h| b.predicate(h, 0)).transpose()?;
    let partials = b.outputs.iter().any(|o| !matches!(o, Output::Column(_)));
    if b.keys.is_empty() && !partials {
        // Without GROUP BY and aggregates the shards' query would not aggregate at all.
        return Err("HAVING without GROUP BY or aggregates".into());
    }
    let order = match &q.order_by {
        None => Vec::new(),
        Some(order_by) => sort_keys_or(s, order_by, &mut |e| {
            b.hidden_output(e)
                .map(SortColumn::Index)
                .map_err(|_| format!("ORDER BY {e}, which is neither an aggregate nor grouped"))
        })?,
    };
    let mut shard_query = q.clone();
    shard_query.order_by = None;
    shard_query.limit_clause = None;
    if let SetExpr::Select(select) = &mut *shard_query.body {
        select.projection = b.projection;
        select.having = None;
        select.distinct = None;
    }
    Ok(Scatter::Merge(Arc::new(Merge {
        sql: shard_query.to_string(),
        hidden: 0,
        groups: Some(Groups {
            keys: b.keys.iter().map(|(_, column)| *column).collect(),
            outputs: b.outputs,
            visible,
            having,
            collation_unknown: false,
        }),
        order,
        distinct,
        offset,
        limit,
    })))
}

impl<'a> Builder<'a> {
    /// A client select item: kept in place (avg becomes sum there, its count is added hidden).
    fn visible_item(&mut self, e: &Expr, alias: Option<&Ident>) -> Check {
        let column = self.projection.len();
        if zero_coalesced_sum(e) {
            // Each shard's coalesce(sum, 0) is its sum or 0, and they add up to the total's.
            self.projection.push(item(e.clone(), alias.cloned()));
            self.outputs.push(Output::Aggregate(Combine::Sum, column));
            return Ok(());
        }
        let Some(f) = aggregate_call(e) else {
            expr(e, 0).map_err(|why| match why.starts_with("aggregate function") {
                true => format!("an aggregate inside an expression ({why})"),
                false => why,
            })?;
            self.projection.push(item(e.clone(), alias.cloned()));
            self.outputs.push(Output::Column(column));
            return Ok(());
        };
        match combine(f)? {
            Combine::Avg => {
                let name = alias
                    .cloned()
                    .unwrap_or_else(|| Ident::with_quote('"', "avg"));
                self.projection
                    .push(item(Expr::Function(renamed(f, "sum")), Some(name)));
                let count = self.push_hidden(Expr::Function(renamed(f, "count")));
                self.outputs.push(Output::Avg { sum: column, count });
            }
            how => {
                self.projection.push(item(e.clone(), alias.cloned()));
                self.outputs.push(Output::Aggregate(how, column));
            }
        }
        Ok(())
    }

    /// A GROUP BY expression: the select item it names, or a hidden column of its own.
    fn group_key(&mut self, g: &'a Expr) -> Check {
        if let Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_) = g {
            return Err("GROUP BY with ROLLUP, CUBE or GROUPING SETS".into());
        }
        let grouped_item = select_item_of(self.select, g)
            .filter(|&i| matches!(self.outputs.get(i), Some(Output::Column(_))));
        let column = match grouped_item {
            Some(i) => i,
            None => {
                if let Expr::Value(_) = g {
                    return Err(format!("GROUP BY {g}, which is not a plain select item"));
                }
                expr(g, 0)?;
                self.push_hidden(g.clone())
            }
        };
        self.keys.push((g, column));
        Ok(())
    }

    fn push_hidden(&mut self, e: Expr) -> usize {
        self.projection.push(SelectItem::UnnamedExpr(e));
        self.projection.len() - 1
    }

    /// An output for an aggregate call or grouped expression the select list may lack: its
    /// index in `outputs`, added hidden when needed.
    fn hidden_output(&mut self, e: &Expr) -> Check<usize> {
        if zero_coalesced_sum(e) {
            let column = self.push_hidden(e.clone());
            self.outputs.push(Output::Aggregate(Combine::Sum, column));
            return Ok(self.outputs.len() - 1);
        }
        if let Some(f) = aggregate_call(e) {
            let output = match combine(f)? {
                Combine::Avg => Output::Avg {
                    sum: self.push_hidden(Expr::Function(renamed(f, "sum"))),
                    count: self.push_hidden(Expr::Function(renamed(f, "count"))),
                },
                how => Output::Aggregate(how, self.push_hidden(e.clone())),
            };
            self.outputs.push(output);
            return Ok(self.outputs.len() - 1);
        }
        let key = self
            .keys
            .iter()
            .find(|(g, _)| same_expression(self.select, g, e))
            .map(|(_, column)| *column)
            .ok_or_else(|| format!("{e}, which is neither an aggregate nor grouped"))?;
        self.outputs.push(Output::Column(key));
        Ok(self.outputs.len() - 1)
    }

    /// A HAVING condition.
    fn predicate(&mut self, e: &Expr, depth: usize) -> Check<Predicate> {
        if depth > 64 {
            return Err("a HAVING condition nested too deeply".into());
        }
        let next = |b: &mut Self, e: &Expr| b.predicate(e, depth + 1).map(Box::new);
        use BinaryOperator as B;
        Ok(match e {
            Expr::Nested(inner) => return self.predicate(inner, depth + 1),
            Expr::BinaryOp { left, op, right } => match op {
                B::And => Predicate::And(next(self, left)?, next(self, right)?),
                B::Or => Predicate::Or(next(self, left)?, next(self, right)?),
                _ => {
                    let op = match op {
                        B::Eq => CompareOp::Eq,
                        B::NotEq => CompareOp::NotEq,
                        B::Lt => CompareOp::Lt,
                        B::LtEq => CompareOp::LtEq,
                        B::Gt => CompareOp::Gt,
                        B::GtEq => CompareOp::GtEq,
                        _ => return Err(format!("HAVING with the operator {op}")),
                    };
                    let l = self.operand(left, Some(right))?;
                    Predicate::Compare(l, op, self.operand(right, Some(left))?)
                }
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr: inner,
            } => Predicate::Not(next(self, inner)?),
            Expr::IsNull(x) => Predicate::IsNull(self.operand(x, None)?, false),
            Expr::IsNotNull(x) => Predicate::IsNull(self.operand(x, None)?, true),
            Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => {
                Predicate::Constant(v.value == Value::Boolean(true))
            }
            // A boolean value on its own: HAVING bool_or(x).
            other => Predicate::Compare(
                self.operand(other, None)?,
                CompareOp::Eq,
                Operand::Literal(Some("true".into())),
            ),
        })
    }

    /// One side of a HAVING condition; `other` is the side it is compared with.
    fn operand(&mut self, e: &Expr, other: Option<&Expr>) -> Check<Operand> {
        let mut bare = e;
        while let Expr::Nested(inner) = bare {
            bare = inner;
        }
        let literal = |v: &Value, minus: bool| match v {
            Value::Number(n, _) if minus => Some(Some(format!("-{n}"))),
            Value::Number(n, _) => Some(Some(n.clone())),
            Value::SingleQuotedString(s) if !minus => Some(Some(s.clone())),
            Value::Null if !minus => Some(None),
            _ => None,
        };
        let found = match bare {
            Expr::Value(v) => literal(&v.value, false),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } => match &**inner {
                Expr::Value(v) => literal(&v.value, true),
                _ => None,
            },
            _ => None,
        };
        if let Some(text) = found {
            return Ok(Operand::Literal(text));
        }
        if let Expr::Value(v) = bare {
            if let Value::Placeholder(_) = v.value {
                // `CASE WHEN false THEN <other side> ELSE $n END` gives $n the type it has in
                // the comparison, as PostgreSQL infers it, where a bare `$n` would be text.
                let typed = match other {
                    Some(other) if !matches!(other, Expr::Value(_)) => Expr::Case {
                        case_token: AttachedToken::empty(),
                        end_token: AttachedToken::empty(),
                        operand: None,
                        conditions: vec![CaseWhen {
                            condition: Expr::value(Value::Boolean(false)),
                            result: other.clone(),
                        }],
                        else_result: Some(Box::new(bare.clone())),
                    },
                    _ => bare.clone(),
                };
                let column = self.push_hidden(typed);
                self.outputs.push(Output::Column(column));
                return Ok(Operand::Param(self.outputs.len() - 1));
            }
        }
        self.hidden_output(bare)
            .map(Operand::Output)
            .map_err(|why| format!("HAVING on {why}"))
    }
}

/// `coalesce(sum(x), 0)` or `coalesce(count(x), 0)` (any zero literal): computed per shard, the
/// partials add up to the whole's value, so it combines as a sum.
fn zero_coalesced_sum(e: &Expr) -> bool {
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    let Expr::Function(f) = e else {
        return false;
    };
    let named_coalesce = matches!(&f.name.0[..], [ObjectNamePart::Identifier(i)]
        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("coalesce"));
    let sqlparser::ast::FunctionArguments::List(list) = &f.args else {
        return false;
    };
    if !named_coalesce || f.over.is_some() || f.filter.is_some() || !list.clauses.is_empty() {
        return false;
    }
    use sqlparser::ast::{FunctionArg, FunctionArgExpr};
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(first)), FunctionArg::Unnamed(FunctionArgExpr::Expr(second))] =
        &list.args[..]
    else {
        return false;
    };
    let summed = aggregate_call(first)
        .is_some_and(|agg| matches!(combine(agg), Ok(Combine::Sum | Combine::Count)));
    let zero = matches!(second, Expr::Value(v)
        if matches!(&v.value, Value::Number(n, _) if n.bytes().all(|c| c == b'0' || c == b'.')));
    summed && zero
}

fn item(e: Expr, alias: Option<Ident>) -> SelectItem {
    match alias {
        Some(alias) => SelectItem::ExprWithAlias { expr: e, alias },
        None => SelectItem::UnnamedExpr(e),
    }
}

/// The same aggregate call under another name (avg(x) FILTER (...) → sum(x) FILTER (...)).
fn renamed(f: &Function, name: &str) -> Function {
    let mut f = f.clone();
    if let Some(last) = f.name.0.last_mut() {
        *last = ObjectNamePart::Identifier(Ident::new(name));
    }
    f
}
