//! A scatter-gather read's top-level ORDER BY, resolved to output columns ([`SortKey`]) so the
//! session can merge the shards' sorted rows without evaluating anything.
//!
//! Each ORDER BY item is resolved as PostgreSQL does, and only when the result is certainly an
//! output column: an integer literal is an ordinal (`ORDER BY 2`); a bare name is first an
//! output column name (a select item's alias, or its implicit name, e.g. `user_id` for
//! `u.user_id`, `lower` for `lower(name)`); anything else must equal a select item's expression
//! (textually, ignoring case of unquoted identifiers and, where that cannot change the meaning,
//! a table qualifier). When the select list has a wildcard, output positions after it and the
//! wildcard's column names are unknown here: a bare name, a column of a FROM item the wildcard
//! covers, or a select item after the wildcard is then named ([`SortColumn::Name`]) and the
//! session resolves it against the RowDescription, refusing a missing or ambiguous name.
//! Everything else (expressions not in the select list, COLLATE, constants) is refused: the
//! shards would need a hidden sort column, which is a later step.

use sqlparser::ast::{
    Expr, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Select,
    SelectItem, SelectItemQualifiedWildcardKind, TableFactor, TableWithJoins, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::read_plan::{KeyCollation, SortColumn, SortKey, FOREIGN};
use crate::sql::syntax::fold;

/// The construct named for an ORDER BY item that is not an output column.
const NOT_SELECTED: &str = "ORDER BY on an expression that is not in the select list";

/// Names PostgreSQL reads as SQL value functions, not columns, when unqualified.
const VALUE_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

/// The sort keys of `order_by`, the ORDER BY of the top-level `select`.
pub(super) fn sort_keys(select: &Select, order_by: &OrderBy) -> Result<Vec<SortKey>, String> {
    sort_keys_or(select, order_by, &mut |_| Err(NOT_SELECTED.into()))
}

/// Like [`sort_keys`], but an item that is not an output column is handed to `not_selected`,
/// which may give it a column of its own (a hidden sort column) or refuse it.
pub(super) fn sort_keys_or(
    select: &Select,
    order_by: &OrderBy,
    not_selected: &mut dyn FnMut(&Expr) -> Result<SortColumn, String>,
) -> Result<Vec<SortKey>, String> {
    if order_by.interpolate.is_some() {
        return Err(FOREIGN.into());
    }
    let OrderByKind::Expressions(items) = &order_by.kind else {
        return Err(FOREIGN.into());
    };
    let list = SelectList::new(select);
    items
        .iter()
        .map(|item| {
            if item.with_fill.is_some() {
                return Err(FOREIGN.to_string());
            }
            let descending = item.options.asc == Some(false);
            let (expr, written) = uncollated(&item.expr);
            let (column, selected) = match list.resolve(expr) {
                Err(why) if why == NOT_SELECTED => (not_selected(&item.expr)?, None),
                other => other?,
            };
            let collation = match written.or(selected) {
                Some(name) => KeyCollation::Named(name),
                None => KeyCollation::Implicit,
            };
            Ok(SortKey {
                column,
                descending,
                nulls_first: item.options.nulls_first.unwrap_or(descending),
                collation,
            })
        })
        .collect()
}

/// The select item (0-based) an expression stands for, as a GROUP BY item is read: an ordinal,
/// an output column name, or an expression equal to the item's; `None` otherwise or when the
/// select list has a wildcard.
pub(super) fn select_item_of(select: &Select, e: &Expr) -> Option<usize> {
    let list = SelectList::new(select);
    if list.first_wildcard.is_some() {
        return None;
    }
    match list.resolve(e) {
        Ok((SortColumn::Index(i), _)) => Some(i),
        _ => None,
    }
}

/// Whether two expressions of `select` are the same (see [`same_expr`]).
pub(super) fn same_expression(select: &Select, a: &Expr, b: &Expr) -> bool {
    let list = SelectList::new(select);
    same_expr(unnest(a), unnest(b), list.unify())
}

fn last_part(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(i) => Some(fold(i)),
        _ => None,
    }
}

/// The top-level select list and FROM, as ORDER BY resolution needs them.
struct SelectList<'a> {
    /// Per select item: its expression (`None` for a wildcard) and its output column name
    /// (`None` when unknown here).
    items: Vec<(Option<&'a Expr>, Option<String>)>,
    /// Position of the first wildcard in the select list.
    first_wildcard: Option<usize>,
    /// A bare `*` is in the select list.
    star: bool,
    /// The qualifiers of `q.*` items (folded last part).
    qualified_stars: Vec<String>,
    /// The names FROM items are referred to by (alias, or table or function name), folded.
    from_names: Vec<String>,
    /// FROM has a USING or NATURAL join, whose merged columns are neither side's column.
    merged_columns: bool,
}

impl<'a> SelectList<'a> {
    fn new(select: &'a Select) -> Self {
        let mut list = SelectList {
            items: Vec::with_capacity(select.projection.len()),
            first_wildcard: None,
            star: false,
            qualified_stars: Vec::new(),
            from_names: Vec::new(),
            merged_columns: false,
        };
        for (i, item) in select.projection.iter().enumerate() {
            let entry = match item {
                SelectItem::UnnamedExpr(e) => (Some(e), implicit_name(e)),
                SelectItem::ExprWithAlias { expr, alias } => (Some(expr), Some(fold(alias))),
                SelectItem::Wildcard(_) => {
                    list.star = true;
                    (None, None)
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    if let SelectItemQualifiedWildcardKind::ObjectName(name) = kind {
                        list.qualified_stars.extend(last_part(name));
                    }
                    (None, None)
                }
            };
            if entry.0.is_none() && list.first_wildcard.is_none() {
                list.first_wildcard = Some(i);
            }
            list.items.push(entry);
        }
        for twj in &select.from {
            list.table_with_joins(twj);
        }
        list
    }

    fn table_with_joins(&mut self, twj: &TableWithJoins) {
        self.relation(&twj.relation);
        for join in &twj.joins {
            self.relation(&join.relation);
            use JoinOperator as J;
            let constraint = match &join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c) => c,
                _ => &JoinConstraint::Natural,
            };
            if matches!(
                constraint,
                JoinConstraint::Using(_) | JoinConstraint::Natural
            ) {
                self.merged_columns = true;
            }
        }
    }

    fn relation(&mut self, factor: &TableFactor) {
        let name = match factor {
            TableFactor::Table { name, alias, .. } | TableFactor::Function { name, alias, .. } => {
                match alias {
                    Some(a) => Some(fold(&a.name)),
                    None => last_part(name),
                }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => match alias {
                Some(a) => Some(fold(&a.name)),
                None => {
                    self.table_with_joins(table_with_joins);
                    None
                }
            },
            TableFactor::Derived { alias, .. }
            | TableFactor::TableFunction { alias, .. }
            | TableFactor::UNNEST { alias, .. } => alias.as_ref().map(|a| fold(&a.name)),
            _ => None,
        };
        self.from_names.extend(name);
    }

    /// The output column an ORDER BY expression sorts by, and the collation the select item
    /// it names gives itself (`COLLATE` at its top), if any.
    fn resolve(&self, e: &Expr) -> Result<(SortColumn, Option<String>), String> {
        let e = unnest(e);
        match e {
            Expr::Collate { .. } => Err("ORDER BY with COLLATE".into()),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let position = n.parse::<usize>().ok().filter(|p| *p > 0);
                    match position {
                        Some(p) if self.first_wildcard.is_some() || p <= self.items.len() => {
                            let item = self.items.get(p - 1).and_then(|(e, _)| *e);
                            Ok((SortColumn::Index(p - 1), item.and_then(collation_of)))
                        }
                        _ => Err(format!(
                            "ORDER BY position {n}, which is not in the select list"
                        )),
                    }
                }
                _ => Err("ORDER BY on a constant".into()),
            },
            Expr::Identifier(ident) => self.output_name(e, fold(ident)),
            _ => self.expression(e),
        }
    }

    /// A bare name: an output column name (PostgreSQL prefers these to input columns), else
    /// an input column equal to a select item.
    fn output_name(&self, e: &Expr, name: String) -> Result<(SortColumn, Option<String>), String> {
        if self.first_wildcard.is_some() {
            // A select item of that name (after the wildcard) may carry its own COLLATE.
            let collation = self
                .items
                .iter()
                .filter(|(_, n)| n.as_deref() == Some(&*name))
                .find_map(|(e, _)| e.and_then(collation_of));
            return Ok((SortColumn::Name(name), collation));
        }
        let mut matches = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| n.as_deref() == Some(&*name));
        let Some((i, (first, _))) = matches.next() else {
            return self.expression(e);
        };
        let (first, unify) = (first.expect("not a wildcard"), self.unify());
        if matches.all(|(_, (e, _))| e.is_some_and(|e| same_expr(first, e, unify))) {
            Ok((SortColumn::Index(i), collation_of(first)))
        } else {
            Err(format!("ORDER BY {name}, which names several select items"))
        }
    }

    /// Any other expression: equal to a select item, or a column a wildcard outputs.
    fn expression(&self, e: &Expr) -> Result<(SortColumn, Option<String>), String> {
        let unify = self.unify();
        let found = self
            .items
            .iter()
            .enumerate()
            .find(|(_, (item, _))| item.is_some_and(|item| same_expr(item, e, unify)));
        if let Some((i, (item, name))) = found {
            let collation = collation_of(item.expect("not a wildcard"));
            if self.first_wildcard.is_none_or(|w| i < w) {
                return Ok((SortColumn::Index(i), collation));
            }
            if let Some(name) = name {
                return Ok((SortColumn::Name(name.clone()), collation));
            }
            return Err(
                "ORDER BY on a select item after a wildcard that has no known column name".into(),
            );
        }
        if let Expr::CompoundIdentifier(parts) = e {
            if let [.., qualifier, column] = &parts[..] {
                let qualifier = fold(qualifier);
                let covered = self.star || self.qualified_stars.contains(&qualifier);
                if covered && !self.merged_columns && self.from_names.contains(&qualifier) {
                    return Ok((SortColumn::Name(fold(column)), None));
                }
            }
        }
        Err(NOT_SELECTED.into())
    }

    /// How expressions may be compared: which qualifiers can be ignored.
    fn unify(&self) -> Unify<'_> {
        Unify {
            tables: if self.merged_columns {
                &[]
            } else {
                &self.from_names
            },
        }
    }
}

/// Marks every sort key without a COLLATE of its own, and the groups' text comparisons, as
/// of unknown collation (a COLLATE clause elsewhere in the statement may change it).
pub(super) fn collation_unknown(scatter: &mut super::read_plan::Scatter) {
    use super::read_plan::Scatter;
    let unknown = |keys: &mut Vec<SortKey>| {
        for key in keys.iter_mut() {
            if key.collation == KeyCollation::Implicit {
                key.collation = KeyCollation::Unknown;
            }
        }
    };
    match scatter {
        Scatter::Concat { order, .. } => unknown(order),
        Scatter::Merge(merge) => {
            let merge = std::sync::Arc::make_mut(merge);
            unknown(&mut merge.order);
            if let Some(groups) = &mut merge.groups {
                groups.collation_unknown = true;
            }
        }
        Scatter::Unsupported(_) => {}
    }
}

/// The collation a select item gives itself with `COLLATE` at its top (the outermost one).
fn collation_of(item: &Expr) -> Option<String> {
    uncollated(item).1
}

/// An expression without the COLLATE clauses at its top, and the outermost one's name (SQL).
pub(super) fn uncollated(e: &Expr) -> (&Expr, Option<String>) {
    let mut e = unnest(e);
    let mut name = None;
    while let Expr::Collate { expr, collation } = e {
        name.get_or_insert_with(|| collation.to_string());
        e = unnest(expr);
    }
    (e, name)
}

/// Parentheses do not matter (PostgreSQL's grammar drops them).
fn unnest(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// The column name PostgreSQL gives an unaliased select item, where it is certain.
fn implicit_name(e: &Expr) -> Option<String> {
    match unnest(e) {
        Expr::Identifier(ident) => Some(fold(ident)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        Expr::Function(f) => last_part(&f.name),
        Expr::Cast { expr, .. } => match unnest(expr) {
            inner @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_)) => {
                implicit_name(inner)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The FROM items whose qualifier may be dropped when comparing (`u.name` equals `name` when
/// `u` is a FROM item: an unambiguous unqualified `name` is then `u`'s column); empty when
/// FROM has USING or NATURAL joins.
#[derive(Clone, Copy)]
struct Unify<'a> {
    tables: &'a [String],
}

/// Whether two expressions are the same: equal, or equal token by token with unquoted
/// identifiers lowercased and, outside subqueries, function names and type names, a column's
/// qualifier dropped on one side when it names a FROM item.
fn same_expr(a: &Expr, b: &Expr, unify: Unify) -> bool {
    if a == b {
        return true;
    }
    let (Some(ta), Some(tb)) = (parts(a), parts(b)) else {
        return false;
    };
    if ta.len() != tb.len() {
        return false;
    }
    let subquery = |t: &[Part]| {
        t.iter()
            .any(|p| matches!(p, Part::Path { names, .. } if names == &["select"]))
    };
    let unify = if subquery(&ta) || subquery(&tb) {
        Unify { tables: &[] }
    } else {
        unify
    };
    ta.iter().zip(&tb).all(|pair| match pair {
        (Part::Token(x), Part::Token(y)) => x == y,
        (
            Part::Path {
                names: x,
                column: cx,
            },
            Part::Path {
                names: y,
                column: cy,
            },
        ) => x == y || (*cx && *cy && (same_column(x, y, unify) || same_column(y, x, unify))),
        _ => false,
    })
}

/// `qualified` (`q.c`) and `bare` (`c`) name the same column.
fn same_column(qualified: &[String], bare: &[String], unify: Unify) -> bool {
    match (qualified, bare) {
        ([q, c], [b]) => {
            c == b && unify.tables.contains(q) && !VALUE_FUNCTIONS.contains(&b.as_str())
        }
        _ => false,
    }
}

/// An expression's text, tokenized: dotted names (folded) and other tokens.
#[derive(Debug)]
enum Part {
    Path {
        names: Vec<String>,
        /// Could be a column reference: not a function name or a type name.
        column: bool,
    },
    Token(Token),
}

fn parts(e: &Expr) -> Option<Vec<Part>> {
    let text = e.to_string();
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, &text)
        .tokenize()
        .ok()?;
    let mut tokens = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let mut out: Vec<Part> = Vec::new();
    while let Some(token) = tokens.next() {
        let Token::Word(word) = token else {
            out.push(Part::Token(token));
            continue;
        };
        let folded = |w: &sqlparser::tokenizer::Word| match w.quote_style {
            Some(_) => w.value.clone(),
            None => w.value.to_ascii_lowercase(),
        };
        let mut names = vec![folded(&word)];
        while tokens.peek() == Some(&Token::Period) {
            tokens.next();
            match tokens.next() {
                Some(Token::Word(w)) => names.push(folded(&w)),
                Some(other) => {
                    out.push(Part::Path {
                        names,
                        column: false,
                    });
                    out.push(Part::Token(Token::Period));
                    out.push(Part::Token(other));
                    names = Vec::new();
                    break;
                }
                None => return None,
            }
        }
        if names.is_empty() {
            continue;
        }
        let after_type_marker = matches!(out.last(), Some(Part::Token(Token::DoubleColon)))
            || matches!(out.last(), Some(Part::Path { names, .. }) if names == &["as"]);
        let column = !after_type_marker && tokens.peek() != Some(&Token::LParen);
        out.push(Part::Path { names, column });
    }
    Some(out)
}
