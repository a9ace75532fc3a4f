//! The walk over queries and data-changing statements: CTEs, FROM lists and joins, WHERE,
//! INSERT rows, UPDATE and DELETE targets. It binds names to sharded-table occurrences and
//! hands predicates to the key graph; expressions are walked in `expr.rs`.
//! Never does I/O and never looks at parameter values.

use std::sync::Arc;

use sqlparser::ast::{
    Assignment, AssignmentTarget, Delete, Expr, FromTable, Insert, JoinConstraint, JoinOperator,
    ObjectName, OnConflictAction, OnInsert, Query, Select, SelectItem, SetExpr, Statement,
    TableAlias, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind,
};

use super::analyze::{Analyzer, TableRule};
use super::columns::PositionalInsert;
use super::constraints::{key_expr, Mode};
use super::plan::{KeyMove, KeySet};
use crate::multishard::ShardedTable;
use crate::sql::syntax::{last_ident, lower, MAX_WALK_DEPTH};

impl Analyzer<'_> {
    pub(super) fn query(&mut self, q: &Query) {
        let ctes_before = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name: Box<str> = lower(&cte.alias.name.value).into();
                if with.recursive {
                    self.ctes.push(name.clone());
                }
                let before = self.keys.occ_count();
                self.query(&cte.query);
                self.cte_sharded |= self.keys.occ_count() > before;
                self.ctes.push(name);
            }
        }
        self.set_expr(&q.body);
        if !q.locks.is_empty() {
            self.locks = true;
        }
        if let Some(order_by) = &q.order_by {
            if let sqlparser::ast::OrderByKind::Expressions(items) = &order_by.kind {
                for item in items {
                    self.expr(&item.expr);
                }
            }
        }
        self.ctes.truncate(ctes_before);
    }

    fn set_expr(&mut self, body: &SetExpr) {
        if self.depth >= MAX_WALK_DEPTH {
            self.volatile = true;
            return;
        }
        self.depth += 1;
        self.set_expr_inner(body);
        self.depth -= 1;
    }

    fn set_expr_inner(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            SetExpr::Values(values) => {
                for e in values.rows.iter().flatten() {
                    self.expr(e);
                }
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                self.data_statement(s);
            }
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    self.keys.push_frame();
                    let name = ObjectName::from(vec![sqlparser::ast::Ident::new(name)]);
                    self.bind_table(&name, None, false);
                    self.keys.pop_frame();
                }
            }
        }
    }

    fn select(&mut self, s: &Select) {
        self.keys.push_frame();
        for from in &s.from {
            self.table_with_joins(from, false);
        }
        if let Some(selection) = &s.selection {
            self.expr(selection);
            self.keys.apply(selection, Mode::Filter);
        }
        for item in &s.projection {
            self.select_item(item);
        }
        if let sqlparser::ast::GroupByExpr::Expressions(exprs, _) = &s.group_by {
            for e in exprs {
                self.expr(e);
            }
        }
        if let Some(having) = &s.having {
            self.expr(having);
        }
        if s.into.is_some() {
            // SELECT INTO creates a table.
            self.writes = true;
        }
        self.keys.pop_frame();
    }

    fn select_item(&mut self, item: &SelectItem) {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => self.expr(e),
            SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(_) => {}
        }
    }

    /// A FROM item and its joins; `write` marks the first relation as the statement's target.
    fn table_with_joins(&mut self, twj: &TableWithJoins, write: bool) {
        self.relation(&twj.relation, write);
        for join in &twj.joins {
            let new_from = self.keys.occ_count();
            self.relation(&join.relation, false);
            use JoinOperator as J;
            let (constraint, mode) = match &join.join_operator {
                J::Join(c) | J::Inner(c) | J::CrossJoin(c) | J::StraightJoin(c) => {
                    (c, Some(Mode::Filter))
                }
                J::Semi(c)
                | J::LeftSemi(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Anti(c)
                | J::LeftAnti(c) => (c, Some(Mode::LeftOuter { new_from })),
                J::Right(c) | J::RightOuter(c) | J::RightSemi(c) | J::RightAnti(c) => {
                    (c, Some(Mode::RightOuter { new_from }))
                }
                J::FullOuter(c) => (c, None),
                J::AsOf {
                    match_condition,
                    constraint,
                } => {
                    self.expr(match_condition);
                    (constraint, None)
                }
                J::CrossApply | J::OuterApply => continue,
            };
            match constraint {
                JoinConstraint::On(e) => {
                    self.expr(e);
                    if let Some(mode) = mode {
                        self.keys.apply(e, mode);
                    }
                }
                JoinConstraint::Using(columns) => {
                    for column in columns.iter().filter_map(last_ident) {
                        if let Some(mode) = mode {
                            self.keys.using(&lower(column), mode, new_from);
                        }
                    }
                }
                JoinConstraint::Natural | JoinConstraint::None => {}
            }
        }
    }

    /// Binds one FROM item; returns the occurrence when it is a sharded table.
    fn relation(&mut self, factor: &TableFactor, write: bool) -> Option<usize> {
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if let Some(args) = args {
                    // A set-returning function in FROM: `generate_series(1, 3)`.
                    self.function_name(name);
                    self.function_args_list(&args.args);
                    self.bind_alias(alias.as_ref());
                    return None;
                }
                self.bind_table(name, alias.as_ref(), write)
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.query(subquery);
                self.bind_alias(alias.as_ref());
                None
            }
            TableFactor::TableFunction { expr, alias } => {
                self.expr(expr);
                self.bind_alias(alias.as_ref());
                None
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                self.function_name(name);
                self.function_args_list(args);
                self.bind_alias(alias.as_ref());
                None
            }
            TableFactor::UNNEST {
                array_exprs, alias, ..
            } => {
                for e in array_exprs {
                    self.expr(e);
                }
                self.bind_alias(alias.as_ref());
                None
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.table_with_joins(table_with_joins, write);
                self.bind_alias(alias.as_ref());
                None
            }
            _ => {
                // Constructs PostgreSQL does not have: assume the worst.
                self.volatile = true;
                None
            }
        }
    }

    fn bind_alias(&mut self, alias: Option<&TableAlias>) {
        if let Some(alias) = alias {
            self.keys.bind(&lower(&alias.name.value), None);
        }
    }

    /// Binds a table (or CTE) name under its alias; records reference-table writes.
    pub(super) fn bind_table(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        write: bool,
    ) -> Option<usize> {
        let table = lower(last_ident(name).unwrap_or_default()).into_owned();
        let bound = alias.map_or(table.clone(), |a| lower(&a.name.value).into_owned());
        let is_cte = name.0.len() == 1 && self.ctes.iter().any(|c| **c == *table);
        let rule = if is_cte { None } else { self.table_rule(name) };
        match rule {
            Some(TableRule::Sharded(t)) => self.keys.bind(&bound, Some(t)),
            Some(TableRule::Reference) => {
                self.broadcast |= write;
                self.keys.bind(&bound, None)
            }
            None => {
                if !is_cte {
                    self.others.push(table.as_str().into());
                }
                self.keys.bind(&bound, None)
            }
        }
    }

    pub(super) fn data_statement(&mut self, s: &Statement) {
        self.writes = true;
        self.keys.push_frame();
        match s {
            Statement::Insert(insert) => self.insert(insert),
            Statement::Update {
                table,
                assignments,
                from,
                selection,
                returning,
                ..
            } => {
                let target = self.relation(&table.relation, true);
                for join in &table.joins {
                    self.relation(&join.relation, false);
                }
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    from
                {
                    for twj in f {
                        self.table_with_joins(twj, false);
                    }
                }
                self.assignments(assignments, target, false);
                self.filter(selection.as_ref());
                self.returning(returning.as_deref());
            }
            Statement::Delete(delete) => self.delete(delete),
            Statement::Merge {
                table, source, on, ..
            } => {
                // Rows a MERGE inserts may carry any key: its target is never pinned.
                self.relation(table, true);
                self.relation(source, false);
                self.expr(on);
                self.volatile = true;
            }
            _ => {}
        }
        self.keys.pop_frame();
    }

    fn delete(&mut self, delete: &Delete) {
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &delete.from;
        for twj in tables {
            self.table_with_joins(twj, true);
        }
        for twj in delete.using.iter().flatten() {
            self.table_with_joins(twj, false);
        }
        self.filter(delete.selection.as_ref());
        self.returning(delete.returning.as_deref());
    }

    fn filter(&mut self, selection: Option<&Expr>) {
        if let Some(selection) = selection {
            self.expr(selection);
            self.keys.apply(selection, Mode::Filter);
        }
    }

    fn returning(&mut self, items: Option<&[SelectItem]>) {
        for item in items.into_iter().flatten() {
            self.select_item(item);
        }
    }

    /// `SET col = v`: walks the values and records changes of the target's shard key.
    /// `excluded.<key>` in ON CONFLICT keeps the row where the conflicting row already is.
    fn assignments(&mut self, assignments: &[Assignment], target: Option<usize>, upsert: bool) {
        for a in assignments {
            self.expr(&a.value);
            let Some(occ) = target else { continue };
            let table = self.keys.table(occ).clone();
            let names: Vec<&ObjectName> = match &a.target {
                AssignmentTarget::ColumnName(n) => vec![n],
                AssignmentTarget::Tuple(ns) => ns.iter().collect(),
            };
            let sets_key = names
                .iter()
                .filter_map(|n| last_ident(n))
                .any(|c| *lower(c) == *table.key_column);
            if !sets_key || (upsert && is_excluded_key(&a.value, &table.key_column)) {
                continue;
            }
            let to = match &a.target {
                AssignmentTarget::ColumnName(_) => key_expr(&a.value, table.key_type),
                AssignmentTarget::Tuple(_) => None,
            };
            self.key_moves.push(KeyMove { table, to });
        }
    }

    fn insert(&mut self, insert: &Insert) {
        let TableObject::TableName(name) = &insert.table else {
            self.volatile = true;
            return;
        };
        let target = match self.table_rule(name) {
            Some(TableRule::Sharded(t)) => {
                let occ = self.keys.add_occurrence(t.clone(), true);
                let column = match &insert.source {
                    Some(source) if insert.columns.is_empty() => self.positional_key(&t, source),
                    _ => insert
                        .columns
                        .iter()
                        .position(|c| *lower(&c.value) == *t.key_column),
                };
                if let (Some(column), Some(source)) = (column, &insert.source) {
                    if let Some(set) = insert_keys(source, column, t.key_type) {
                        self.keys.pin(occ, set);
                    }
                }
                Some(occ)
            }
            Some(TableRule::Reference) => {
                self.broadcast = true;
                None
            }
            None => None,
        };
        if let Some(source) = &insert.source {
            self.query(source);
        }
        if let Some(OnInsert::OnConflict(on_conflict)) = &insert.on {
            if let OnConflictAction::DoUpdate(update) = &on_conflict.action {
                self.assignments(&update.assignments, target, true);
                if let Some(selection) = &update.selection {
                    self.expr(selection);
                }
            }
        }
        self.returning(insert.returning.as_deref());
    }
}

impl Analyzer<'_> {
    /// `INSERT INTO t VALUES (...)` (no column list): the key is the value at the key column's
    /// place in the table's learned column order. Recorded in the plan, so a plan made with
    /// another order (or none) is noticed and made again.
    fn positional_key(&mut self, table: &Arc<ShardedTable>, source: &Query) -> Option<usize> {
        let key_position = self.rules.key_position(table);
        let fewest_values = match &*source.body {
            SetExpr::Values(values) => values.rows.iter().map(Vec::len).min().unwrap_or(0),
            SetExpr::Select(select) => select.projection.len(),
            _ => usize::MAX,
        };
        self.positional.push(PositionalInsert {
            table: table.clone(),
            key_position,
            fewest_values,
        });
        key_position
    }
}

/// The key of each inserted row: from `VALUES` rows, or the select list of `INSERT ...
/// SELECT <values>`. `None` when any row's key is computed.
fn insert_keys(
    source: &Query,
    column: usize,
    key_type: crate::sharding::KeyType,
) -> Option<KeySet> {
    let alts = match &*source.body {
        SetExpr::Values(values) => values
            .rows
            .iter()
            .map(|row| key_expr(row.get(column)?, key_type))
            .collect::<Option<Vec<_>>>()?,
        SetExpr::Select(select) => match select.projection.get(column)? {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                vec![key_expr(e, key_type)?]
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(KeySet { alts, rows: true })
}

/// `excluded.<key column>`.
fn is_excluded_key(e: &Expr, key_column: &str) -> bool {
    match e {
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, column] => {
                table.value.eq_ignore_ascii_case("excluded")
                    && column.value.eq_ignore_ascii_case(key_column)
            }
            _ => false,
        },
        _ => false,
    }
}
