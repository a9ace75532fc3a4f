//! Multi-row INSERTs whose rows belong to several shards, cut into one INSERT per shard
//! holding only that shard's VALUES rows, with the same column list, ON CONFLICT and RETURNING
//! clauses.
//!
//! At plan time [`prepare`] renders the statement once into a head (`INSERT INTO t (a, b)
//! VALUES`), one text per row and a tail (` ON CONFLICT ... RETURNING ...`), and keeps them only
//! when sqlparser's rendering is faithful: the pieces put back together re-parse to exactly the
//! statement the client sent. Which row goes to which shard is the router's to say (it reads the
//! keys); [`InsertSplit::part`] then writes one shard's INSERT. With `$n` parameters each part
//! numbers its own from `$1` and says which of the client's values it takes
//! ([`SplitPart::params`]). Pure: never does I/O, never reads a key and never knows a shard.

use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions_mut, Expr, Insert, SetExpr, Statement, Value};

use crate::sql::parse;

/// A multi-row `INSERT ... VALUES` rendered in pieces, ready to be cut per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InsertSplit {
    /// `INSERT INTO users (user_id, name) VALUES`
    head: Box<str>,
    /// `(1, 'a')`, one per VALUES row, in order.
    rows: Vec<Box<str>>,
    /// ` ON CONFLICT ... RETURNING ...`, or empty.
    tail: Box<str>,
    /// The statement, when a key is a `$n` parameter: each part is rendered from it, renumbered.
    parameterized: Option<Box<Statement>>,
}

/// One shard's INSERT of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    pub shard: usize,
    pub sql: String,
    /// For a statement with parameters: the client's parameter (0-based) behind each of this
    /// part's `$1`, `$2`, ...; empty otherwise.
    pub params: Vec<usize>,
}

/// The split form of `statements` when they are one `INSERT ... VALUES` with `rows` rows (one
/// per key the router read) that sqlparser renders faithfully; `parameterized` when a key is a
/// `$n` parameter. `None` otherwise (the INSERT then is not split, and is refused if it
/// needs several shards).
pub(crate) fn prepare(
    statements: &[Statement],
    rows: usize,
    parameterized: bool,
) -> Option<InsertSplit> {
    let [statement @ Statement::Insert(insert)] = statements else {
        return None;
    };
    let values = values_rows(insert)?;
    if values.len() != rows {
        return None;
    }
    let (head, tail) = head_and_tail(insert)?;
    let split = InsertSplit {
        head: head.into(),
        rows: values.iter().map(|row| render_row(row).into()).collect(),
        tail: tail.into(),
        parameterized: parameterized.then(|| Box::new(statement.clone())),
    };
    // The pieces must rebuild sqlparser's own rendering, and that must mean what the client sent.
    let all: Vec<usize> = (0..split.rows.len()).collect();
    let whole = split.text(&all);
    if whole != statement.to_string() {
        return None;
    }
    match parse::parse(&whole) {
        Ok(reparsed) if reparsed.as_slice() == statements => Some(split),
        _ => None,
    }
}

/// The VALUES rows of a plain `INSERT ... VALUES` (no WITH, ORDER BY, LIMIT on its source).
fn values_rows(insert: &Insert) -> Option<&[Vec<Expr>]> {
    let source = insert.source.as_deref()?;
    let plain = source.with.is_none()
        && source.order_by.is_none()
        && source.limit_clause.is_none()
        && source.fetch.is_none()
        && source.locks.is_empty()
        && source.settings.is_none()
        && source.format_clause.is_none()
        && source.pipe_operators.is_empty()
        && source.for_clause.is_none();
    match &*source.body {
        SetExpr::Values(values) if plain && !values.explicit_row => Some(&values.rows),
        _ => None,
    }
}

/// `INSERT INTO t (cols) VALUES` and what follows the rows, rendered by sqlparser.
fn head_and_tail(insert: &Insert) -> Option<(String, String)> {
    let mut rowless = insert.clone();
    let source = rowless.source.as_deref_mut()?;
    match &mut *source.body {
        SetExpr::Values(values) => values.rows.clear(),
        _ => return None,
    }
    let with_clauses = rowless.to_string();
    rowless.on = None;
    rowless.returning = None;
    let head = rowless.to_string();
    let tail = with_clauses.strip_prefix(head.as_str())?.to_string();
    Some((head, tail))
}

/// `(a, b, c)`, as sqlparser renders a VALUES row.
fn render_row(row: &[Expr]) -> String {
    let fields: Vec<String> = row.iter().map(ToString::to_string).collect();
    format!("({})", fields.join(", "))
}

impl InsertSplit {
    /// The INSERT `shard` runs: only the rows at `indexes` (ascending), and for a statement with
    /// parameters the client's parameter behind each of its renumbered `$n`.
    pub(crate) fn part(&self, shard: usize, indexes: &[usize]) -> SplitPart {
        let (sql, params) = self.render(indexes);
        SplitPart { shard, sql, params }
    }

    fn render(&self, indexes: &[usize]) -> (String, Vec<usize>) {
        let Some(statement) = &self.parameterized else {
            return (self.text(indexes), Vec::new());
        };
        let mut part = (**statement).clone();
        if let Statement::Insert(insert) = &mut part {
            if let Some(source) = insert.source.as_deref_mut() {
                if let SetExpr::Values(values) = &mut *source.body {
                    values.rows = indexes.iter().map(|&i| values.rows[i].clone()).collect();
                }
            }
        }
        let mut order: Vec<usize> = Vec::new();
        let _ = visit_expressions_mut(&mut part, |e| {
            if let Expr::Value(v) = e {
                if let Value::Placeholder(p) = &mut v.value {
                    let index = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                    if let Some(old) = index.filter(|&n| n > 0).map(|n| n - 1) {
                        let new = match order.iter().position(|&o| o == old) {
                            Some(new) => new,
                            None => {
                                order.push(old);
                                order.len() - 1
                            }
                        };
                        *p = format!("${}", new + 1);
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
        (part.to_string(), order)
    }

    /// The INSERT holding only the rows at `indexes` (ascending).
    fn text(&self, indexes: &[usize]) -> String {
        let mut sql = String::with_capacity(
            self.head.len() + self.tail.len() + indexes.len() * 16 + indexes.len() * 2,
        );
        sql.push_str(&self.head);
        for (n, &i) in indexes.iter().enumerate() {
            sql.push_str(if n == 0 { " " } else { ", " });
            sql.push_str(&self.rows[i]);
        }
        sql.push_str(&self.tail);
        sql
    }
}
