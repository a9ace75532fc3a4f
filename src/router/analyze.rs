//! Statement text → [`Plan`]: parse with sqlparser (PostgreSqlDialect), classify each
//! statement, and collect the facts routing needs. Text sqlparser cannot parse still gets a
//! plan (default shard, primary, kind from its first keyword), never an error.
//!
//! Runs once per query text; never does I/O, never sees parameter values, holds no state
//! between calls.

use std::sync::Arc;

use sqlparser::ast::{
    CopySource, Expr, ObjectName, ObjectNamePart, ObjectType, Query, Set, Statement,
    TransactionAccessMode, TransactionIsolationLevel, TransactionMode, Value,
};

use super::columns::PositionalInsert;
use super::constraints::{literal_text, KeyGraph};
use super::plan::{
    Hint, Isolation, IsolationChange, KeyExpr, KeyMove, Placement, Plan, SettingPlan,
    StatementKind, TransactionControl,
};
use super::text;
use super::Rules;
use crate::multishard::{self, Facts, Scatter, ShardedTable, Tables};
use crate::sql::parse;
use crate::sql::syntax::{last_ident, lower};

/// How the config classifies a table.
#[derive(Debug, Clone)]
pub(crate) enum TableRule {
    Sharded(Arc<ShardedTable>),
    Reference,
}

/// Facts gathered while walking one statement string.
pub(super) struct Analyzer<'r> {
    pub rules: &'r Rules,
    pub keys: KeyGraph,
    /// CTE names in scope (lowercase): they shadow tables.
    pub ctes: Vec<Box<str>>,
    pub writes: bool,
    /// `FOR UPDATE` / `FOR SHARE` somewhere.
    pub locks: bool,
    /// Calls a volatile (or unknown) function, or holds a construct not inspected.
    pub volatile: bool,
    /// Writes a reference table, or is DDL on a sharded or reference table.
    pub broadcast: bool,
    pub key_moves: Vec<KeyMove>,
    pub unsupported: Option<String>,
    /// Tables read that are neither sharded nor reference tables, nor CTEs (lowercase).
    pub others: Vec<Box<str>>,
    /// A WITH query reads a sharded table.
    pub cte_sharded: bool,
    /// Current nesting of the expression walk (bounded by `expr::MAX_WALK_DEPTH`).
    pub depth: usize,
    /// The last change of the isolation level in force.
    pub isolation: Option<IsolationChange>,
    /// INSERTs without a column list into sharded tables.
    pub positional: Vec<PositionalInsert>,
}

/// Analyses `sql` into a plan.
pub(super) fn plan(rules: &Rules, sql: &str) -> Plan {
    let (body, hint) = text::leading_comments(sql);
    if body
        .trim_matches(|c: char| c.is_whitespace() || c == ';')
        .is_empty()
    {
        return Plan::empty(hint);
    }
    let mut was_rewritten = false;
    let parsed = parse::parse(sql).or_else(|e| {
        was_rewritten = true;
        text::rewrite_for_parser(sql)
            .ok_or(e)
            .and_then(|rewritten| parse::parse(&rewritten))
    });
    // sqlparser wants `COPY ... FROM STDIN` to end with `;` (inline data may follow it).
    let parsed = parsed.or_else(|e| {
        text::terminated(sql)
            .ok_or(e)
            .and_then(|t| parse::parse(&t))
    });
    match parsed {
        Ok(statements) if !statements.is_empty() => {
            let mut analyzer = Analyzer::new(rules);
            let kind = analyzer.statements(&statements);
            let (scatter, copy) = {
                let mut facts = analyzer.facts();
                facts.collate_clauses = crate::sql::lexer::tokens(sql)
                    .filter(|t| matches!(t, crate::sql::lexer::Token::Word(w) if w.eq_ignore_ascii_case("collate")))
                    .count();
                let read = kind == StatementKind::Read;
                let scatter = multishard::scatter(&facts, rules, &statements, read);
                (
                    scatter,
                    multishard::copy_plan(&facts, rules, &statements, sql),
                )
            };
            let mut plan = analyzer.finish(kind, hint);
            plan.scatter = scatter;
            match copy {
                Ok(copy) => plan.copy = copy,
                Err(refusal) => plan.unsupported = plan.unsupported.or(Some(refusal)),
            }
            if !was_rewritten {
                let split = plan.split_keys().and_then(|keys| {
                    let parameterized = keys.iter().any(|k| matches!(k, KeyExpr::Param { .. }));
                    multishard::prepare_split(&statements, keys.len(), parameterized)
                });
                plan.split = split.map(Arc::new);
            }
            plan
        }
        Ok(_) => Plan::empty(hint),
        Err(_) => unparsed(rules, body, hint),
    }
}

/// A plan for text sqlparser cannot parse: the default (or overridden) shard's primary.
fn unparsed(rules: &Rules, body: &str, hint: Option<Hint>) -> Plan {
    let fallback = text::fallback(body);
    let mut plan = Plan::other(hint, false);
    plan.kind = fallback.kind;
    plan.writes = fallback.writes;
    plan.scatter = Scatter::Unsupported(multishard::UNPARSED.to_string());
    if let Some(table) = fallback.copy_from {
        match rules.tables.get(table.as_str()) {
            Some(TableRule::Sharded(t)) => {
                plan.unsupported = Some(format!(
                    "pgshard cannot parse this COPY into sharded table {}, so it cannot split its \
                     rows by key; write it as COPY {} (<columns>) FROM STDIN WITH (FORMAT csv, \
                     HEADER true, ...) (HEADER MATCH is not supported)",
                    t.name, t.name
                ));
            }
            Some(TableRule::Reference) => plan.placement = Placement::All,
            None => {}
        }
    }
    plan
}

impl<'r> Analyzer<'r> {
    pub(super) fn new(rules: &'r Rules) -> Self {
        Analyzer {
            rules,
            keys: KeyGraph::default(),
            ctes: Vec::new(),
            writes: false,
            locks: false,
            volatile: false,
            broadcast: false,
            key_moves: Vec::new(),
            unsupported: None,
            others: Vec::new(),
            cte_sharded: false,
            depth: 0,
            isolation: None,
            positional: Vec::new(),
        }
    }

    fn finish(self, kind: StatementKind, hint: Option<Hint>) -> Plan {
        let plain_read =
            kind == StatementKind::Read && !self.writes && !self.locks && !self.volatile;
        // Each shard would see only its own rows of these sharded tables.
        let everywhere_with_sharded = self.broadcast && self.keys.occ_count() > 0;
        let placement = if self.broadcast {
            Placement::All
        } else {
            let classes = self.keys.finish();
            if classes.is_empty() {
                Placement::Default
            } else {
                Placement::Sharded(classes)
            }
        };
        Plan {
            kind,
            plain_read,
            writes: self.writes,
            parsed: true,
            placement,
            key_moves: self.key_moves,
            hint,
            unsupported: self.unsupported,
            scatter: Scatter::Unsupported(multishard::NO_SHARDED_TABLE.to_string()),
            split: None,
            everywhere_with_sharded,
            copy: None,
            isolation: self.isolation,
            positional: self.positional,
        }
    }

    /// Several statements in one string: a read if all are reads, a write if all are reads or
    /// writes, else `Other`. Their keys all count.
    fn statements(&mut self, statements: &[Statement]) -> StatementKind {
        if let [only] = statements {
            return self.statement(only);
        }
        let mut kind = StatementKind::Read;
        for s in statements {
            kind = match (kind, self.statement(s)) {
                (StatementKind::Read, StatementKind::Read) => StatementKind::Read,
                (
                    StatementKind::Read | StatementKind::Write,
                    StatementKind::Read | StatementKind::Write,
                ) => StatementKind::Write,
                _ => StatementKind::Other,
            };
        }
        kind
    }

    pub(super) fn statement(&mut self, s: &Statement) -> StatementKind {
        use StatementKind as K;
        use TransactionControl as T;
        match s {
            Statement::Query(q) => {
                self.query(q);
                K::Read
            }
            Statement::Insert(_)
            | Statement::Update { .. }
            | Statement::Delete(_)
            | Statement::Merge { .. } => {
                self.data_statement(s);
                K::Write
            }
            Statement::Explain {
                statement, analyze, ..
            } => self.explain(statement, *analyze),
            Statement::StartTransaction { modes, .. } => {
                if let Some(level) = isolation_level(modes) {
                    self.isolation = Some(IsolationChange::Transaction(level));
                }
                K::Transaction(T::Begin {
                    read_only: access_mode(modes) == Some(true),
                })
            }
            Statement::Commit { .. } => K::Transaction(T::Commit),
            Statement::Rollback { savepoint, .. } => K::Transaction(match savepoint {
                Some(_) => T::RollbackTo,
                None => T::Rollback,
            }),
            Statement::Savepoint { .. } => K::Transaction(T::Savepoint),
            Statement::ReleaseSavepoint { .. } => K::Transaction(T::Release),
            Statement::Set(set) => {
                if let Some(change) = isolation_setting(set) {
                    self.isolation = Some(change);
                }
                set_statement(set)
            }
            Statement::Copy { source, to, .. } => self.copy(source, *to),
            Statement::Call(f) => {
                self.function(f);
                K::Write
            }
            _ => {
                self.ddl(s);
                K::Other
            }
        }
    }

    /// EXPLAIN runs its statement only with ANALYZE; otherwise it is a read wherever the
    /// statement would go.
    fn explain(&mut self, statement: &Statement, analyze: bool) -> StatementKind {
        let writes_before = self.writes;
        let kind = self.statement(statement);
        if analyze {
            return kind;
        }
        self.writes = writes_before;
        match kind {
            StatementKind::Read | StatementKind::Write => StatementKind::Read,
            _ => StatementKind::Other,
        }
    }

    fn copy(&mut self, source: &CopySource, to: bool) -> StatementKind {
        match source {
            CopySource::Query(q) => {
                self.query(q);
                StatementKind::Read
            }
            CopySource::Table { table_name, .. } if to => {
                self.keys.push_frame();
                self.bind_table(table_name, None, false);
                self.keys.pop_frame();
                StatementKind::Read
            }
            CopySource::Table { table_name, .. } => {
                self.writes = true;
                // Into a sharded table: rows are split by key (`copy::copy_plan`).
                if let Some(TableRule::Reference) = self.table_rule(table_name) {
                    self.broadcast = true;
                }
                StatementKind::Write
            }
        }
    }

    /// DDL and TRUNCATE naming a sharded or reference table go to every shard.
    fn ddl(&mut self, s: &Statement) {
        let names: Vec<&ObjectName> = match s {
            Statement::CreateTable(t) => vec![&t.name],
            Statement::AlterTable { name, .. } => vec![name],
            Statement::CreateIndex(i) => vec![&i.table_name],
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => names.iter().collect(),
            Statement::Truncate { table_names, .. } => {
                self.writes = true;
                table_names.iter().map(|t| &t.name).collect()
            }
            _ => Vec::new(),
        };
        if names.iter().any(|n| self.table_rule(n).is_some()) {
            self.broadcast = true;
        }
    }

    /// The config's rule for a table name (schema ignored, case folded).
    pub(super) fn table_rule(&self, name: &ObjectName) -> Option<TableRule> {
        self.rules.table_rule(name)
    }

    /// What the cross-shard planning needs to know of this analysis.
    fn facts(&self) -> Facts<'_> {
        let mut not_colocated = Vec::new();
        if self.keys.colocated_groups() > 1 {
            not_colocated = (0..self.keys.occ_count())
                .map(|o| &*self.keys.table(o).name)
                .collect();
            not_colocated.sort_unstable();
            not_colocated.dedup();
        }
        Facts {
            writes: self.writes,
            locks: self.locks,
            sharded_occurrences: self.keys.occ_count(),
            cte_sharded: self.cte_sharded,
            other_table: self.others.first().map(|t| &**t),
            not_colocated,
            collate_clauses: 0,
        }
    }
}

impl Rules {
    /// The config's rule for a table name (schema ignored, case folded).
    fn table_rule(&self, name: &ObjectName) -> Option<TableRule> {
        let last = last_ident(name)?;
        self.tables.get(&*lower(last)).cloned()
    }

    /// The sharded table with this table key (lowercase, unqualified).
    pub(super) fn sharded_table(&self, key: &str) -> Option<Arc<ShardedTable>> {
        match self.tables.get(key)? {
            TableRule::Sharded(table) => Some(table.clone()),
            TableRule::Reference => None,
        }
    }

    /// The 0-based place of `table`'s shard key among its learned columns.
    pub(super) fn key_position(&self, table: &ShardedTable) -> Option<usize> {
        self.columns.key_position(table)
    }
}

impl Tables for Rules {
    fn sharded(&self, name: &ObjectName) -> Option<Arc<ShardedTable>> {
        match self.table_rule(name)? {
            TableRule::Sharded(table) => Some(table),
            TableRule::Reference => None,
        }
    }

    fn reads_sharded(&self, query: &Query, ctes: &[Box<str>]) -> bool {
        let mut analyzer = Analyzer::new(self);
        analyzer.ctes = ctes.to_vec();
        analyzer.query(query);
        analyzer.keys.occ_count() > 0
    }
}

/// The isolation level among transaction modes, if one is given.
fn isolation_level(modes: &[TransactionMode]) -> Option<Isolation> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::IsolationLevel(level) => Some(match level {
            TransactionIsolationLevel::ReadUncommitted
            | TransactionIsolationLevel::ReadCommitted => Isolation::ReadCommitted,
            TransactionIsolationLevel::RepeatableRead
            | TransactionIsolationLevel::Serializable
            | TransactionIsolationLevel::Snapshot => Isolation::Snapshot,
        }),
        _ => None,
    })
}

/// `SET [SESSION CHARACTERISTICS AS] TRANSACTION ISOLATION LEVEL ...`, `SET
/// default_transaction_isolation = ...` and `SET transaction_isolation = ...`.
fn isolation_setting(set: &Set) -> Option<IsolationChange> {
    match set {
        Set::SetTransaction { modes, session, .. } => {
            let level = isolation_level(modes)?;
            Some(if *session {
                IsolationChange::SessionDefault(level)
            } else {
                IsolationChange::Transaction(level)
            })
        }
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = last_ident(variable)?.to_ascii_lowercase();
            let value = values.first().map(setting_value);
            match (name.as_str(), value) {
                ("default_transaction_isolation", Some(None)) => {
                    Some(IsolationChange::ResetSessionDefault)
                }
                ("default_transaction_isolation", Some(Some(v))) => {
                    // A value PostgreSQL would refuse changes nothing.
                    Isolation::parse(&v).map(IsolationChange::SessionDefault)
                }
                ("transaction_isolation", Some(Some(v))) => {
                    Isolation::parse(&v).map(IsolationChange::Transaction)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `READ ONLY` → `Some(true)`, `READ WRITE` → `Some(false)`.
fn access_mode(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        _ => None,
    })
}

/// `SET pgshard.*` becomes a setting; `SET TRANSACTION` transaction control; other SETs are
/// `Other` (sent to a server).
fn set_statement(set: &Set) -> StatementKind {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let parts: Vec<&str> = variable
                .0
                .iter()
                .filter_map(|p| match p {
                    ObjectNamePart::Identifier(i) => Some(i.value.as_str()),
                    _ => None,
                })
                .collect();
            match parts.as_slice() {
                [ns, name] if ns.eq_ignore_ascii_case("pgshard") => {
                    StatementKind::Setting(pgshard_setting(name, values.first()))
                }
                _ => StatementKind::Other,
            }
        }
        Set::SetTransaction {
            modes,
            session: false,
            ..
        } => StatementKind::Transaction(TransactionControl::SetTransaction {
            read_only: access_mode(modes),
        }),
        _ => StatementKind::Other,
    }
}

fn pgshard_setting(name: &str, value: Option<&Expr>) -> SettingPlan {
    let value = value.and_then(setting_value);
    match (name.to_ascii_lowercase().as_str(), value) {
        ("shard_key", Some(v)) => SettingPlan::ShardKey(v),
        ("shard_key", None) => SettingPlan::ResetShardKey,
        ("shard", Some(v)) => SettingPlan::Shard(v),
        ("shard", None) => SettingPlan::ResetShard,
        (other, _) => SettingPlan::Unknown(format!("pgshard.{other}")),
    }
}

/// The value of `SET x = <value>` as text; `None` for `DEFAULT`.
fn setting_value(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => None,
            other => Some(literal_text(other).map_or_else(|| other.to_string(), String::from)),
        },
        Expr::Identifier(i)
            if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
        {
            None
        }
        Expr::Identifier(i) => Some(i.value.clone()),
        other => Some(other.to_string()),
    }
}
