//! Multi-row INSERTs whose rows belong to several shards ([`super::Route::SplitInsert`]), cut into
//! one INSERT per shard holding only that shard's VALUES rows, with the same column list,
//! ON CONFLICT and RETURNING clauses.
//!
//! At plan time [`prepare`] renders the statement once into a head (`INSERT INTO t (a, b)
//! VALUES`), one text per row and a tail (` ON CONFLICT ... RETURNING ...`), and keeps them only
//! when sqlparser's rendering is faithful: the pieces put back together re-parse to exactly the
//! statement the client sent. [`super::Router::split_insert`] then groups the rows by their key's
//! shard. Keys may be literals or `$n` parameters (read at Bind): each shard's INSERT then
//! numbers its own parameters from `$1` and says which of the client's values it takes
//! ([`SplitPart::params`]). Pure: never does I/O, never looks at a server, never guesses a row's
//! shard (a row whose key is neither a literal nor a parameter makes the INSERT unsplittable).

use std::ops::ControlFlow;

use sqlparser::ast::{visit_expressions_mut, Expr, Insert, SetExpr, Statement, Value};

use super::plan::{KeyExpr, Placement, Plan};
use super::{Params, RouteError, Router};
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
    /// The shard key of each row, in order (literals, already hashed, or parameters).
    keys: Vec<KeyExpr>,
    /// The statement, when it has `$n` parameters: each part is rendered from it, renumbered.
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

/// The split form of `statements` when they are one `INSERT ... VALUES` into a sharded table
/// whose rows carry literal keys on more than one slot, and sqlparser renders it faithfully.
/// `None` otherwise (the INSERT then is not split, and is refused if it needs several shards).
pub(super) fn prepare(statements: &[Statement], plan: &Plan) -> Option<InsertSplit> {
    let [statement @ Statement::Insert(insert)] = statements else {
        return None;
    };
    let keys = row_keys(plan)?;
    let first = keys.first()?;
    if keys.iter().all(|k| k == first) {
        return None;
    }
    let rows = values_rows(insert)?;
    if rows.len() != keys.len() {
        return None;
    }
    let (head, tail) = head_and_tail(insert)?;
    let rows: Vec<Box<str>> = rows.iter().map(|row| render_row(row).into()).collect();
    let parameterized = keys
        .iter()
        .any(|k| matches!(k, KeyExpr::Param { .. }))
        .then(|| Box::new(statement.clone()));
    let split = InsertSplit {
        head: head.into(),
        rows,
        tail: tail.into(),
        keys,
        parameterized,
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

/// The literal key of each VALUES row: the plan's one key class must be the INSERT target's,
/// pinned by one per-row set of literals.
fn row_keys(plan: &Plan) -> Option<Vec<KeyExpr>> {
    let Placement::Sharded(classes) = &plan.placement else {
        return None;
    };
    let [class] = classes.as_slice() else {
        return None;
    };
    let [set] = class.sets.as_slice() else {
        return None;
    };
    if !class.insert || !set.rows || set.alts.len() < 2 {
        return None;
    }
    set.alts
        .iter()
        .all(|k| matches!(k, KeyExpr::Slot(_) | KeyExpr::Param { .. }))
        .then(|| set.alts.clone())
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
    /// The INSERT holding only the rows at `indexes`, and for a statement with parameters the
    /// client's parameter behind each of its renumbered `$n`.
    fn part(&self, indexes: &[usize]) -> (String, Vec<usize>) {
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

impl Router {
    /// The INSERTs a [`super::Route::SplitInsert`] runs: one per shard (ascending), each with only
    /// the VALUES rows whose key lives there, in the client's order. Refused (0A000) when the
    /// statement cannot be split: several statements in one string, keys or rows that are not
    /// plain literals, or a rendering sqlparser cannot reproduce faithfully.
    pub fn split_insert(
        &self,
        plan: &Plan,
        params: &Params<'_>,
    ) -> Result<Vec<SplitPart>, RouteError> {
        let Some(split) = &plan.split else {
            return Err(RouteError::Unsupported(UNSPLITTABLE.to_string()));
        };
        let mut by_shard: Vec<(usize, Vec<usize>)> = Vec::new();
        for (row, key) in split.keys.iter().enumerate() {
            let Some(shard) = self.key_shard(key, params)? else {
                return Err(RouteError::Unsupported(UNSPLITTABLE.to_string()));
            };
            match by_shard.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, rows)) => rows.push(row),
                None => by_shard.push((shard, vec![row])),
            }
        }
        by_shard.sort_unstable_by_key(|(shard, _)| *shard);
        Ok(by_shard
            .into_iter()
            .map(|(shard, rows)| {
                let (sql, params) = split.part(&rows);
                SplitPart { shard, sql, params }
            })
            .collect())
    }
}

const UNSPLITTABLE: &str = "this INSERT's rows belong to several shards, and pgshard splits only \
     a single INSERT ... VALUES whose shard keys are literals or $n parameters: send one INSERT \
     per shard (rows \
     whose keys are on the same shard may share one)";

#[cfg(test)]
mod tests {
    use super::super::tests::router;
    use super::*;

    /// The per-shard texts of `sql`, as `"shard: text"` lines.
    fn split(sql: &str) -> Vec<String> {
        let router = router();
        let plan = router.plan(sql);
        router
            .split_insert(&plan, &Params::NONE)
            .unwrap_or_else(|e| panic!("{sql} not split: {e}"))
            .into_iter()
            .map(|part| format!("{}: {}", part.shard, part.sql))
            .collect()
    }

    fn refused(sql: &str) -> String {
        let router = router();
        let plan = router.plan(sql);
        match router.split_insert(&plan, &Params::NONE) {
            Err(e) => e.sqlstate().to_string(),
            Ok(parts) => panic!("{sql} split into {parts:?}, expected a refusal"),
        }
    }

    #[test]
    fn rows_go_to_the_insert_of_their_keys_shard_in_the_clients_order() {
        assert_eq!(
            split(
                "INSERT INTO users (user_id, name) VALUES (1, 'a'), (42, 'b'), (2, 'c'), (4, 'd')"
            ),
            [
                "0: INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'c')",
                "1: INSERT INTO users (user_id, name) VALUES (42, 'b'), (4, 'd')",
            ]
        );
    }

    #[test]
    fn strings_with_commas_quotes_and_parentheses_survive_the_split() {
        assert_eq!(
            split(
                r#"insert into users (name, user_id) values ('a, b', 1), ('it''s (x)', 42), (E'tab\there', 3)"#
            ),
            [
                r#"0: INSERT INTO users (name, user_id) VALUES ('a, b', 1), (E'tab\there', 3)"#,
                "1: INSERT INTO users (name, user_id) VALUES ('it''s (x)', 42)",
            ]
        );
    }

    #[test]
    fn expressions_defaults_and_casts_are_kept_as_written() {
        assert_eq!(
            split("INSERT INTO users (user_id, name, created_at, n) VALUES (1, lower('A') || 'x', DEFAULT, 1 + 2 * 3), ('42', NULL, now(), '5'::int)"),
            [
                "0: INSERT INTO users (user_id, name, created_at, n) VALUES (1, lower('A') || 'x', DEFAULT, 1 + 2 * 3)",
                "1: INSERT INTO users (user_id, name, created_at, n) VALUES ('42', NULL, now(), '5'::INT)",
            ]
        );
    }

    #[test]
    fn on_conflict_and_returning_go_to_every_part() {
        assert_eq!(
            split("INSERT INTO users AS u (user_id, name) VALUES (1, 'a'), (42, 'b') ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *"),
            [
                "0: INSERT INTO users AS u (user_id, name) VALUES (1, 'a') ON CONFLICT(user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *",
                "1: INSERT INTO users AS u (user_id, name) VALUES (42, 'b') ON CONFLICT(user_id) DO UPDATE SET name = EXCLUDED.name WHERE u.name <> 'x' RETURNING *",
            ]
        );
        assert_eq!(
            split("INSERT INTO public.orders (user_id, total) VALUES (1, 10.50), (42, 1e3) ON CONFLICT DO NOTHING RETURNING user_id, total AS t"),
            [
                "0: INSERT INTO public.orders (user_id, total) VALUES (1, 10.50) ON CONFLICT DO NOTHING RETURNING user_id, total AS t",
                "1: INSERT INTO public.orders (user_id, total) VALUES (42, 1e3) ON CONFLICT DO NOTHING RETURNING user_id, total AS t",
            ]
        );
    }

    #[test]
    fn quoted_identifiers_and_text_keys_split_too() {
        assert_eq!(
            split(
                r#"INSERT INTO "accounts" ("email", "Name") VALUES ('alice', 'A'), ('carol', 'C'), ('bob', $$B's$$)"#
            ),
            [
                r#"0: INSERT INTO "accounts" ("email", "Name") VALUES ('alice', 'A'), ('bob', $$B's$$)"#,
                r#"1: INSERT INTO "accounts" ("email", "Name") VALUES ('carol', 'C')"#,
            ]
        );
    }

    #[test]
    fn each_part_routes_to_its_own_shard() {
        let router = router();
        let sql = "INSERT INTO users (user_id) VALUES (1), (42), (2), (0), (3), (5)";
        let plan = router.plan(sql);
        for SplitPart {
            shard, sql: text, ..
        } in router.split_insert(&plan, &Params::NONE).unwrap()
        {
            let part = router.plan(&text);
            let route = router.route(&part, &Params::NONE, &Default::default());
            assert_eq!(
                route,
                Ok(super::super::Route::Shard {
                    shard,
                    target: super::super::Target::Primary
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn reference_writes_that_also_use_sharded_tables_are_not_the_same_everywhere() {
        let router = router();
        let alike = |sql: &str| router.plan(sql).same_on_every_shard();
        assert!(alike(
            "INSERT INTO countries (code) VALUES ('fr'), ('de') RETURNING *"
        ));
        assert!(alike(
            "UPDATE countries SET name = upper(name) WHERE code IN (SELECT code FROM countries)"
        ));
        assert!(alike("TRUNCATE users, countries"));
        assert!(!alike(
            "INSERT INTO countries (code) SELECT name FROM users"
        ));
        assert!(!alike(
            "UPDATE countries c SET name = u.name FROM users u WHERE u.user_id = 1"
        ));
        assert!(!alike(
            "INSERT INTO countries (code) VALUES ('fr'); INSERT INTO users (user_id) VALUES (1)"
        ));
    }

    #[test]
    fn inserts_that_cannot_be_split_are_refused_with_0a000() {
        // Several statements in one string.
        assert_eq!(
            refused("INSERT INTO users (user_id) VALUES (1), (42); SELECT 1"),
            "0A000"
        );
        // A key given as an expression.
        assert_eq!(
            refused("INSERT INTO users (user_id) VALUES (abs(-1)), (42)"),
            "0A000"
        );
        // INSERT ... SELECT, and rows behind a WITH.
        assert_eq!(
            refused("INSERT INTO users (user_id) SELECT 1 UNION SELECT 42"),
            "0A000"
        );
        // One shard only: nothing to split.
        assert_eq!(
            refused("INSERT INTO users (user_id) VALUES (1), (1)"),
            "0A000"
        );
    }

    #[test]
    fn parameters_are_renumbered_per_part_with_the_clients_values_named() {
        let router = router();
        // Keys 1 and 2 are on shard 0, 42 on shard 1 (see each_part_routes_to_its_own_shard).
        let sql = "INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, $4), ($5, upper($2)) \
                   ON CONFLICT (user_id) DO UPDATE SET name = $6 RETURNING user_id";
        let plan = router.plan(sql);
        let values: Vec<Option<&[u8]>> = vec![
            Some(b"1"),
            Some(b"a"),
            Some(b"42"),
            Some(b"b"),
            Some(b"2"),
            Some(b"z"),
        ];
        let params = Params::new(&values, &[]);
        let parts = router.split_insert(&plan, &params).unwrap();
        let shown: Vec<(usize, &str, &[usize])> = parts
            .iter()
            .map(|p| (p.shard, p.sql.as_str(), p.params.as_slice()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    0,
                    "INSERT INTO users (user_id, name) VALUES ($1, $2), ($3, upper($2)) ON CONFLICT(user_id) DO UPDATE SET name = $4 RETURNING user_id",
                    &[0, 1, 4, 5][..]
                ),
                (
                    1,
                    "INSERT INTO users (user_id, name) VALUES ($1, $2) ON CONFLICT(user_id) DO UPDATE SET name = $3 RETURNING user_id",
                    &[2, 3, 5][..]
                ),
            ]
        );
    }
}
