//! Scatter plans: which multi-shard reads can be answered by concatenating every shard's rows
//! (`concat`, `concat limit N`) or by merging their sorted rows (`order by <keys>[ limit N]`,
//! each key `#i` for output column i or a bare name, then `asc|desc nulls first|last`), which
//! combine one row per shard column by column (`aggregate count, sum, min, max, bool_and,
//! bool_or`), and which constructs are refused (`unsupported: <words the message must
//! contain>`).

use super::router;
use crate::router::{Combine, KeyCollation, Merge, Output, Scatter, SortColumn, SortKey};

/// A [`Scatter::Concat`] in the fixtures' notation.
fn describe(order: &[SortKey], limit: Option<u64>) -> String {
    let keys: Vec<String> = order
        .iter()
        .map(|k| {
            let column = match &k.column {
                SortColumn::Index(i) => format!("#{i}"),
                SortColumn::Name(name) => name.clone(),
                SortColumn::Hidden(i) => format!("hidden#{i}"),
            };
            let direction = if k.descending { "desc" } else { "asc" };
            let nulls = if k.nulls_first { "first" } else { "last" };
            let collation = match &k.collation {
                KeyCollation::Implicit => String::new(),
                KeyCollation::Named(name) => format!(" collate {name}"),
                KeyCollation::Unknown => " collate unknown".to_string(),
            };
            format!("{column} {direction} nulls {nulls}{collation}")
        })
        .collect();
    let mut out = if keys.is_empty() {
        "concat".to_string()
    } else {
        format!("order by {}", keys.join(", "))
    };
    if let Some(n) = limit {
        out += &format!(" limit {n}");
    }
    out
}

/// A [`Scatter::Merge`] in the fixtures' notation: `merge <shard SQL> | rows hidden N` or
/// `| groups keys [..] outputs ..` (`#c` a grouped shard column, `count#c` a partial aggregate,
/// `avg#s/#c`), then `visible N`, `having`, `distinct`, the order, `offset N`, `limit N`.
fn describe_merge(m: &Merge) -> String {
    let mut out = format!("merge {} |", m.sql);
    match &m.groups {
        None => out += &format!(" rows hidden {}", m.hidden),
        Some(g) => {
            let keys: Vec<String> = g.keys.iter().map(|k| k.to_string()).collect();
            let outputs: Vec<String> = g
                .outputs
                .iter()
                .map(|o| match o {
                    Output::Column(c) => format!("#{c}"),
                    Output::Aggregate(how, c) => format!("{}#{c}", combine_name(*how)),
                    Output::Avg { sum, count } => format!("avg#{sum}/#{count}"),
                })
                .collect();
            out += &format!(
                " groups keys [{}] outputs {}",
                keys.join(","),
                outputs.join(", ")
            );
            if g.visible < g.outputs.len() {
                out += &format!(" visible {}", g.visible);
            }
            if g.having.is_some() {
                out += " having";
            }
            if g.collation_unknown {
                out += " collation unknown";
            }
        }
    }
    if m.distinct {
        out += " distinct";
    }
    if !m.order.is_empty() {
        out += &format!(" {}", describe(&m.order, None));
    }
    if m.offset > 0 {
        out += &format!(" offset {}", m.offset);
    }
    if let Some(n) = m.limit {
        out += &format!(" limit {n}");
    }
    out
}

fn combine_name(c: Combine) -> &'static str {
    match c {
        Combine::Count => "count",
        Combine::Sum => "sum",
        Combine::Min => "min",
        Combine::Max => "max",
        Combine::BoolAnd => "bool_and",
        Combine::BoolOr => "bool_or",
        Combine::Avg => "avg",
    }
}

/// Checks every `(sql, expected)` fixture's [`Scatter`] and lists all mismatches at once.
fn check(cases: &[(&str, &str)]) {
    let router = router();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(sql, expected)| {
            let plan = router.plan(sql);
            let ok = match (plan.scatter(), expected.strip_prefix("unsupported: ")) {
                (Scatter::Unsupported(msg), Some(words)) => msg.contains(words),
                (Scatter::Concat { order, limit }, None) => *expected == describe(order, *limit),
                (Scatter::Merge(m), None) => *expected == describe_merge(m),
                _ => false,
            };
            let got = match plan.scatter() {
                Scatter::Merge(m) => describe_merge(m),
                other => format!("{other:?}"),
            };
            (!ok).then(|| format!("  {sql}\n    expected {expected}, got {got}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
#[rustfmt::skip]
fn plain_keyless_and_spanning_reads_concatenate() {
    check(&[
        ("SELECT * FROM users", "concat"),
        ("SELECT name, email FROM users WHERE active AND age > 30", "concat"),
        ("SELECT * FROM orders WHERE status = 'open'", "concat"),
        ("SELECT * FROM users WHERE user_id IN (1, 42)", "concat"),
        ("SELECT * FROM users WHERE user_id > 42", "concat"),
        ("SELECT * FROM users LIMIT 10", "concat limit 10"),
        ("SELECT * FROM users WHERE name = 'x' LIMIT 0", "concat limit 0"),
        ("select lower(name), coalesce(email, ''), user_id + 1 from USERS", "concat"),
        ("SELECT CASE WHEN age > 3 THEN 'a' ELSE 'b' END, age BETWEEN 1 AND 2 FROM users", "concat"),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id", "concat"),
        ("SELECT * FROM users u JOIN orders o USING (user_id) WHERE o.total > 10", "concat"),
        ("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.user_id", "concat"),
        ("SELECT * FROM users u JOIN countries c ON c.code = u.country", "concat"),
        ("SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.user_id)", "concat"),
        ("SELECT u.*, (SELECT count(*) FROM orders o WHERE o.user_id = u.user_id) FROM users u", "concat"),
        ("SELECT *, (SELECT count(*) FROM countries) FROM users", "concat"),
        ("SELECT * FROM (SELECT user_id, name FROM users WHERE active) s", "concat"),
        ("SELECT * FROM users, generate_series(1, 3)", "concat"),
        ("WITH c AS (SELECT * FROM countries) SELECT * FROM users u JOIN c ON c.code = u.country", "concat"),
        ("SELECT random() FROM users", "concat"),
        ("TABLE users", "concat"),
    ]);
}

#[test]
#[rustfmt::skip]
fn constructs_that_combine_rows_are_rewritten_or_named() {
    check(&[
        ("SELECT * FROM users ORDER BY lower(name)", "merge SELECT *, lower(name) FROM users ORDER BY lower(name) | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT * FROM users ORDER BY name LIMIT 10 OFFSET 5", "merge SELECT * FROM users ORDER BY name LIMIT 15 | rows hidden 0 order by name asc nulls last offset 5 limit 10"),
        ("SELECT * FROM users LIMIT 10 OFFSET 5", "merge SELECT * FROM users LIMIT 15 | rows hidden 0 offset 5 limit 10"),
        ("SELECT * FROM users OFFSET 5", "merge SELECT * FROM users | rows hidden 0 offset 5"),
        ("SELECT count(*) FROM orders WHERE status = 'open'", "merge SELECT count(*) FROM orders WHERE status = 'open' | groups keys [] outputs count#0"),
        ("SELECT coalesce(sum(total), -1) FROM orders", "unsupported: aggregate function sum()"),
        ("SELECT string_agg(name, ',' ORDER BY name) FROM users", "unsupported: string_agg"),
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM users", "unsupported: percentile_cont"),
        ("SELECT status FROM orders GROUP BY status", "merge SELECT status FROM orders GROUP BY status | groups keys [0] outputs #0"),
        ("SELECT 1 FROM orders HAVING true", "unsupported: HAVING"),
        ("SELECT DISTINCT name FROM users", "merge SELECT DISTINCT name FROM users | rows hidden 0 distinct"),
        ("SELECT DISTINCT ON (name) * FROM users", "unsupported: DISTINCT ON"),
        ("SELECT name, row_number() OVER (ORDER BY name) FROM users", "unsupported: window function row_number()"),
        ("SELECT name, sum(age) OVER w FROM users WINDOW w AS (PARTITION BY name)", "unsupported: window function"),
        ("SELECT * FROM users UNION SELECT * FROM users", "unsupported: UNION"),
        ("SELECT user_id FROM users EXCEPT SELECT user_id FROM orders", "unsupported: EXCEPT"),
        ("SELECT * FROM users FOR UPDATE", "unsupported: FOR UPDATE"),
        ("SELECT * FROM users FOR SHARE", "unsupported: FOR SHARE"),
        ("SELECT * FROM users LIMIT $1", "unsupported: LIMIT with a non-literal count"),
        ("SELECT * FROM users LIMIT ALL", "concat"),
        ("SELECT * FROM users FETCH FIRST 3 ROWS ONLY", "unsupported: FETCH FIRST"),
    ]);
}

#[test]
#[rustfmt::skip]
fn reads_not_partitioned_by_shard_are_refused() {
    check(&[
        ("SELECT * FROM users u JOIN orders o ON o.note = u.name", "unsupported: a join of sharded tables not on their shard key (orders, users)"),
        ("SELECT * FROM users a JOIN users b ON a.name = b.name", "unsupported: a join of sharded tables"),
        ("SELECT * FROM users WHERE user_id IN (SELECT user_id FROM orders WHERE total > 5)", "unsupported: a join of sharded tables"),
        ("SELECT *, (SELECT max(total) FROM orders) FROM users", "unsupported: a join of sharded tables"),
        ("SELECT (SELECT count(*) FROM users)", "unsupported: a sharded table read only in a subquery"),
        ("SELECT * FROM countries c WHERE EXISTS (SELECT 1 FROM users u WHERE u.country = c.code)", "unsupported: only in a subquery"),
        ("SELECT * FROM countries c LEFT JOIN users u ON u.country = c.code", "unsupported: outer join"),
        ("SELECT * FROM users u JOIN settings s ON s.k = u.name", "unsupported: table settings"),
        ("WITH o AS (SELECT * FROM orders) SELECT * FROM o", "unsupported: a WITH query that reads a sharded table"),
        ("SELECT * FROM (SELECT count(*) FROM orders) c", "unsupported: aggregate function count()"),
        ("SELECT * FROM (SELECT * FROM users LIMIT 5) s", "unsupported: LIMIT in a subquery"),
        ("SELECT * FROM users; SELECT * FROM orders", "unsupported: several statements"),
        ("UPDATE users SET name = 'x'", "unsupported: a statement that is not a SELECT"),
        ("EXPLAIN SELECT * FROM users", "unsupported: EXPLAIN"),
        ("SELECT 1", "unsupported: a statement that reads no sharded table"),
        ("VALUES (1), (2)", "unsupported: a statement that reads no sharded table"),
        ("SELECT * FROM users LIMIT 1 + 1", "unsupported: LIMIT with a non-literal count"),
        ("SELECT * FROM users WHERE (", "unsupported: a statement pgshard cannot parse"),
    ]);
}

#[test]
#[rustfmt::skip]
fn order_by_output_columns_merges() {
    check(&[
        ("SELECT user_id, name FROM users ORDER BY user_id", "order by #0 asc nulls last"),
        ("SELECT user_id, name FROM users ORDER BY 2 DESC", "order by #1 desc nulls first"),
        ("SELECT user_id, name FROM users ORDER BY (2) ASC NULLS FIRST", "order by #1 asc nulls first"),
        ("SELECT name AS n, user_id FROM users ORDER BY n", "order by #0 asc nulls last"),
        ("SELECT name AS \"N\", user_id FROM users ORDER BY \"N\" DESC", "order by #0 desc nulls first"),
        ("SELECT * FROM users ORDER BY name DESC NULLS LAST", "order by name desc nulls last"),
        ("SELECT * FROM users ORDER BY \"Name\", USER_ID", "order by Name asc nulls last, user_id asc nulls last"),
        ("SELECT u.* FROM users u ORDER BY u.name", "order by name asc nulls last"),
        ("SELECT * FROM users ORDER BY 3", "order by #2 asc nulls last"),
        ("SELECT u.user_id FROM users u ORDER BY u.user_id", "order by #0 asc nulls last"),
        ("SELECT user_id FROM users u ORDER BY u.user_id", "order by #0 asc nulls last"),
        ("SELECT u.user_id FROM users u ORDER BY user_id DESC", "order by #0 desc nulls first"),
        ("SELECT USER_ID, lower(name) FROM users ORDER BY LOWER(Name) DESC, user_id", "order by #1 desc nulls first, #0 asc nulls last"),
        ("SELECT lower(u.name) FROM users u ORDER BY lower(name)", "order by #0 asc nulls last"),
        ("SELECT lower(name) FROM users ORDER BY lower", "order by #0 asc nulls last"),
        ("SELECT name AS user_id, user_id AS name FROM users ORDER BY user_id", "order by #0 asc nulls last"),
        ("SELECT u.user_id AS id FROM users u ORDER BY user_id", "order by #0 asc nulls last"),
        ("SELECT name, age FROM users ORDER BY age DESC, name ASC NULLS FIRST LIMIT 10", "order by #1 desc nulls first, #0 asc nulls first limit 10"),
        ("SELECT user_id, total FROM orders WHERE user_id IN (1, 42) ORDER BY total DESC LIMIT 3", "order by #1 desc nulls first limit 3"),
        ("SELECT o.user_id, o.total FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.total", "order by #1 asc nulls last"),
        ("SELECT user_id, name, *, lower(name) AS l FROM users ORDER BY 2, l", "order by #1 asc nulls last, l asc nulls last"),
        ("SELECT user_id, * FROM users ORDER BY user_id", "order by user_id asc nulls last"),
        ("SELECT user_id, * FROM users ORDER BY users.user_id", "order by #0 asc nulls last"),
        ("SELECT u.*, o.total FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.total", "order by total asc nulls last"),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.total DESC", "order by total desc nulls first"),
        ("SELECT * FROM users ORDER BY name LIMIT ALL", "order by name asc nulls last"),
    ]);
}

#[test]
#[rustfmt::skip]
fn order_by_what_is_not_an_output_column_gets_a_hidden_column() {
    check(&[
        ("SELECT user_id FROM users ORDER BY lower(name)", "merge SELECT user_id, lower(name) FROM users ORDER BY lower(name) | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id FROM users ORDER BY name", "merge SELECT user_id, name FROM users ORDER BY name | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id + 1 FROM users ORDER BY user_id", "merge SELECT user_id + 1, user_id FROM users ORDER BY user_id | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT name AS n FROM users ORDER BY lower(n)", "merge SELECT name AS n, lower(n) FROM users ORDER BY lower(n) | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id FROM users ORDER BY 2", "unsupported: ORDER BY position 2"),
        ("SELECT user_id FROM users ORDER BY 0", "unsupported: ORDER BY position 0"),
        ("SELECT user_id FROM users ORDER BY 'x'", "unsupported: ORDER BY on a constant"),
        ("SELECT name FROM users ORDER BY name COLLATE \"C\"", "order by #0 asc nulls last collate \"C\""),
        ("SELECT name COLLATE \"C\" FROM users ORDER BY 1 COLLATE \"de_DE\"", "order by #0 asc nulls last collate \"de_DE\""),
        ("SELECT name COLLATE \"C\" AS n FROM users ORDER BY n DESC", "order by #0 desc nulls first collate \"C\""),
        ("SELECT name COLLATE pg_catalog.\"C\" AS n FROM users ORDER BY 1", "order by #0 asc nulls last collate pg_catalog.\"C\""),
        ("SELECT name COLLATE \"C\" FROM users ORDER BY name", "merge SELECT name COLLATE \"C\", name FROM users ORDER BY name | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id FROM users ORDER BY name COLLATE \"de_DE\"", "merge SELECT user_id, name COLLATE \"de_DE\" FROM users ORDER BY name COLLATE \"de_DE\" | rows hidden 1 order by hidden#0 asc nulls last collate \"de_DE\""),
        ("SELECT name FROM users WHERE name COLLATE \"C\" > 'a' ORDER BY name", "order by #0 asc nulls last collate unknown"),
        ("SELECT *, name COLLATE \"de_DE\" AS n FROM users ORDER BY n", "order by n asc nulls last collate \"de_DE\""),
        ("SELECT lower(name COLLATE \"C\") AS l FROM users ORDER BY l", "order by #0 asc nulls last collate unknown"),
        ("SELECT name FROM users ORDER BY name COLLATE \"C\", lower(name COLLATE \"C\") DESC", "merge SELECT name, lower(name COLLATE \"C\") FROM users ORDER BY name COLLATE \"C\", lower(name COLLATE \"C\") DESC | rows hidden 1 order by #0 asc nulls last collate \"C\", hidden#0 desc nulls first collate unknown"),
        ("SELECT name FROM users ORDER BY name USING <", "unsupported: a statement pgshard cannot parse"),
        ("SELECT name AS x, email AS x FROM users ORDER BY x", "unsupported: several select items"),
        ("SELECT * FROM users ORDER BY lower(name)", "merge SELECT *, lower(name) FROM users ORDER BY lower(name) | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT * FROM users ORDER BY user_id + 1", "merge SELECT *, user_id + 1 FROM users ORDER BY user_id + 1 | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT u.* FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.total", "merge SELECT u.*, o.total FROM users AS u JOIN orders AS o ON o.user_id = u.user_id ORDER BY o.total | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT * FROM users ORDER BY addr.city", "merge SELECT *, addr.city FROM users ORDER BY addr.city | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT * FROM users u JOIN orders o USING (user_id) ORDER BY o.user_id", "merge SELECT *, o.user_id FROM users AS u JOIN orders AS o USING(user_id) ORDER BY o.user_id | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id FROM users u FULL JOIN orders o USING (user_id) ORDER BY u.user_id", "unsupported: a join of sharded tables not on their shard key (orders, users)"),
        ("SELECT u.user_id FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.user_id", "merge SELECT u.user_id, o.user_id FROM users AS u JOIN orders AS o ON o.user_id = u.user_id ORDER BY o.user_id | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT current_date FROM users u ORDER BY u.current_date", "merge SELECT current_date, u.current_date FROM users AS u ORDER BY u.current_date | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT user_id::text FROM users ORDER BY user_id::public.text", "merge SELECT user_id::TEXT, user_id::public.text FROM users ORDER BY user_id::public.text | rows hidden 1 order by hidden#0 asc nulls last"),
        ("SELECT * FROM (SELECT * FROM users ORDER BY name) s", "unsupported: ORDER BY in a subquery in FROM"),
        ("SELECT count(*) FROM users ORDER BY 1", "merge SELECT count(*) FROM users | groups keys [] outputs count#0 order by #0 asc nulls last"),
        ("SELECT DISTINCT name FROM users ORDER BY name", "merge SELECT DISTINCT name FROM users ORDER BY name | rows hidden 0 distinct order by #0 asc nulls last"),
        ("SELECT name FROM users GROUP BY name ORDER BY name", "merge SELECT name FROM users GROUP BY name | groups keys [0] outputs #0 order by #0 asc nulls last"),
        ("SELECT name, rank() OVER (ORDER BY age) FROM users ORDER BY name", "unsupported: window function rank()"),
        ("SELECT name FROM users UNION SELECT name FROM users ORDER BY name", "unsupported: UNION"),
        ("SELECT name FROM users ORDER BY name FETCH FIRST 3 ROWS ONLY", "unsupported: FETCH FIRST"),
        ("SELECT name FROM users ORDER BY name LIMIT $1", "unsupported: LIMIT with a non-literal count"),
        ("SELECT name FROM users ORDER BY name FOR UPDATE", "unsupported: FOR UPDATE"),
    ]);
}

#[test]
#[rustfmt::skip]
fn select_lists_of_only_mergeable_aggregates_combine() {
    check(&[
        ("SELECT count(*) FROM users", "merge SELECT count(*) FROM users | groups keys [] outputs count#0"),
        ("SELECT count(*), sum(amount), min(created_at), max(amount) FROM orders WHERE amount > 5", "merge SELECT count(*), sum(amount), min(created_at), max(amount) FROM orders WHERE amount > 5 | groups keys [] outputs count#0, sum#1, min#2, max#3"),
        ("SELECT bool_and(active), bool_or(active) FROM users", "merge SELECT bool_and(active), bool_or(active) FROM users | groups keys [] outputs bool_and#0, bool_or#1"),
        ("SELECT COUNT(email) AS n, Every(active) AS all_active, pg_catalog.sum(age) FROM users", "merge SELECT COUNT(email) AS n, Every(active) AS all_active, pg_catalog.sum(age) FROM users | groups keys [] outputs count#0, bool_and#1, sum#2"),
        ("SELECT (count(*)), \"max\"(age) FROM users WHERE user_id IN (1, 42)", "merge SELECT (count(*)), \"max\"(age) FROM users WHERE user_id IN (1, 42) | groups keys [] outputs count#0, max#1"),
        ("SELECT count(ALL email), sum(coalesce(age, 0) * 2), min(lower(name)) FROM users", "merge SELECT count(ALL email), sum(coalesce(age, 0) * 2), min(lower(name)) FROM users | groups keys [] outputs count#0, sum#1, min#2"),
        ("SELECT count(u.*) FROM users u", "merge SELECT count(u.*) FROM users AS u | groups keys [] outputs count#0"),
        ("SELECT count(*), max(o.total) FROM users u JOIN orders o ON o.user_id = u.user_id", "merge SELECT count(*), max(o.total) FROM users AS u JOIN orders AS o ON o.user_id = u.user_id | groups keys [] outputs count#0, max#1"),
        ("SELECT count(*) FROM users u JOIN countries c ON c.code = u.country WHERE c.name = 'x'", "merge SELECT count(*) FROM users AS u JOIN countries AS c ON c.code = u.country WHERE c.name = 'x' | groups keys [] outputs count#0"),
        ("SELECT sum((SELECT count(*) FROM orders o WHERE o.user_id = u.user_id)) FROM users u", "merge SELECT sum((SELECT count(*) FROM orders AS o WHERE o.user_id = u.user_id)) FROM users AS u | groups keys [] outputs sum#0"),
        ("SELECT count(*) FROM (SELECT * FROM users WHERE active) s", "merge SELECT count(*) FROM (SELECT * FROM users WHERE active) AS s | groups keys [] outputs count#0"),
        ("SELECT count(*) FROM users LIMIT ALL", "merge SELECT count(*) FROM users | groups keys [] outputs count#0"),
    ]);
}

#[test]
#[rustfmt::skip]
fn aggregates_that_do_not_combine_are_named() {
    check(&[
        ("SELECT avg(amount) FROM orders", "merge SELECT sum(amount) AS \"avg\", count(amount) FROM orders | groups keys [] outputs avg#0/#1"),
        ("SELECT count(*), avg(amount) FROM orders", "merge SELECT count(*), sum(amount) AS \"avg\", count(amount) FROM orders | groups keys [] outputs count#0, avg#1/#2"),
        ("SELECT count(DISTINCT user_id) FROM users", "unsupported: count(DISTINCT ...)"),
        ("SELECT user_id, count(*) FROM users GROUP BY user_id", "merge SELECT user_id, count(*) FROM users GROUP BY user_id | groups keys [0] outputs #0, count#1"),
        ("SELECT count(*) FROM users GROUP BY ()", "merge SELECT count(*) FROM users GROUP BY () | groups keys [] outputs count#0"),
        ("SELECT count(*) + 1 FROM users", "unsupported: an aggregate inside an expression (aggregate function count())"),
        ("SELECT coalesce(sum(age), 1) FROM users", "unsupported: an aggregate inside an expression"),
        ("SELECT name, count(*) FROM users", "merge SELECT name, count(*) FROM users | groups keys [] outputs #0, count#1"),
        ("SELECT *, count(*) FROM users", "unsupported: SELECT * with GROUP BY or aggregates"),
        ("SELECT 1, count(*) FROM users", "merge SELECT 1, count(*) FROM users | groups keys [] outputs #0, count#1"),
        ("SELECT count(*) FILTER (WHERE active) FROM users", "merge SELECT count(*) FILTER (WHERE active) FROM users | groups keys [] outputs count#0"),
        ("SELECT max(age ORDER BY name) FROM users", "unsupported: ORDER BY inside aggregate function max()"),
        ("SELECT count(*) OVER () FROM users", "unsupported: window function count()"),
        ("SELECT count(*), rank() OVER (ORDER BY 1) FROM users", "unsupported: window function rank()"),
        ("SELECT sum(*) FROM users", "unsupported: sum(*)"),
        ("SELECT count() FROM users", "unsupported: aggregate function count() with 0 arguments"),
        ("SELECT min(age, name) FROM users", "unsupported: aggregate function min() with 2 arguments"),
        ("SELECT myschema.count(*) FROM users", "unsupported: qualified with a schema other than pg_catalog"),
        ("SELECT \"COUNT\"(*) FROM users", "unsupported: aggregate function count()"),
        ("SELECT max(name COLLATE \"C\") FROM users", "merge SELECT max(name COLLATE \"C\") FROM users | groups keys [] outputs max#0 collation unknown"),
        ("SELECT max(name) COLLATE \"C\" AS m FROM users ORDER BY m", "unsupported: an aggregate inside an expression"),
        ("SELECT count(*) FROM users HAVING count(*) > 1", "merge SELECT count(*), count(*) FROM users | groups keys [] outputs count#0, count#1 visible 1 having"),
        ("SELECT DISTINCT count(*) FROM users", "merge SELECT count(*) FROM users | groups keys [] outputs count#0 distinct"),
        ("SELECT count(*) FROM users LIMIT 1", "merge SELECT count(*) FROM users | groups keys [] outputs count#0 limit 1"),
        ("SELECT count(*) FROM users OFFSET 1", "merge SELECT count(*) FROM users | groups keys [] outputs count#0 offset 1"),
        ("SELECT max(age) FROM users ORDER BY 1", "merge SELECT max(age) FROM users | groups keys [] outputs max#0 order by #0 asc nulls last"),
        ("SELECT count(*) FROM users FOR UPDATE", "unsupported: FOR UPDATE"),
        ("SELECT count(*) FROM users a JOIN users b ON a.name = b.name", "unsupported: a join of sharded tables"),
        ("SELECT count(*) FROM users u JOIN settings s ON s.k = u.name", "unsupported: table settings"),
        ("SELECT max((SELECT max(total) FROM orders)) FROM users", "unsupported: a join of sharded tables"),
        ("SELECT count(*) FROM users UNION ALL SELECT count(*) FROM orders", "unsupported: UNION"),
        ("SELECT * FROM (SELECT count(*) FROM orders) c", "unsupported: aggregate function count()"),
        ("SELECT (SELECT count(*) FROM users)", "unsupported: a sharded table read only in a subquery"),
    ]);
}

#[test]
#[rustfmt::skip]
fn grouped_reads_send_partial_aggregates_per_group() {
    check(&[
        ("SELECT status, count(*) FROM orders GROUP BY status", "merge SELECT status, count(*) FROM orders GROUP BY status | groups keys [0] outputs #0, count#1"),
        ("SELECT status, avg(total) AS mean FROM orders GROUP BY 1 HAVING count(*) > 2 ORDER BY mean DESC LIMIT 3", "merge SELECT status, sum(total) AS mean, count(total), count(*) FROM orders GROUP BY 1 | groups keys [0] outputs #0, avg#1/#2, count#3 visible 2 having order by #1 desc nulls first limit 3"),
        ("SELECT count(*) FROM orders GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 10", "merge SELECT count(*), user_id FROM orders GROUP BY user_id | groups keys [1] outputs count#0, #1 visible 1 order by #0 desc nulls first, #1 asc nulls last limit 10"),
        ("SELECT lower(status) AS s, sum(total) FROM orders GROUP BY s HAVING sum(total) >= 10 AND NOT bool_or(paid) OR min(total) IS NULL", "merge SELECT lower(status) AS s, sum(total), sum(total), bool_or(paid), min(total) FROM orders GROUP BY s | groups keys [0] outputs #0, sum#1, sum#2, bool_or#3, min#4 visible 2 having"),
        ("SELECT status, max(total) FROM orders GROUP BY status ORDER BY avg(total)", "merge SELECT status, max(total), sum(total), count(total) FROM orders GROUP BY status | groups keys [0] outputs #0, max#1, avg#2/#3 visible 2 order by #2 asc nulls last"),
        ("SELECT DISTINCT count(*) FROM orders GROUP BY user_id", "merge SELECT count(*), user_id FROM orders GROUP BY user_id | groups keys [1] outputs count#0 distinct"),
        ("SELECT status, count(*) FILTER (WHERE paid), avg(total) FILTER (WHERE paid) FROM orders GROUP BY status", "merge SELECT status, count(*) FILTER (WHERE paid), sum(total) FILTER (WHERE paid) AS \"avg\", count(total) FILTER (WHERE paid) FROM orders GROUP BY status | groups keys [0] outputs #0, count#1, avg#2/#3"),
        ("SELECT count(*) FROM orders GROUP BY (user_id, status) OFFSET 2", "merge SELECT count(*), user_id, status FROM orders GROUP BY (user_id, status) | groups keys [1,2] outputs count#0 offset 2"),
        ("SELECT status, count(*) FROM orders GROUP BY status HAVING status <> 'x' AND count(*) BETWEEN 1 AND 5", "unsupported: HAVING"),
        ("SELECT status, count(*) FROM orders GROUP BY status ORDER BY note", "unsupported: neither an aggregate nor grouped"),
        ("SELECT status, count(*) FROM orders GROUP BY ROLLUP (status)", "unsupported: ROLLUP"),
        ("SELECT status, count(DISTINCT user_id) FROM orders GROUP BY status", "unsupported: count(DISTINCT ...)"),
        ("SELECT status, string_agg(note, ',') FROM orders GROUP BY status", "unsupported: aggregate function string_agg()"),
        ("SELECT status, round(avg(total), 2) FROM orders GROUP BY status", "unsupported: an aggregate inside an expression"),
        ("SELECT status, rank() OVER (ORDER BY count(*)) FROM orders GROUP BY status", "unsupported: window function rank()"),
        ("SELECT 1 FROM orders HAVING true", "unsupported: HAVING without GROUP BY or aggregates"),
        ("SELECT DISTINCT ON (status) status, total FROM orders", "unsupported: DISTINCT ON"),
        ("SELECT DISTINCT status FROM orders ORDER BY total", "unsupported: with SELECT DISTINCT"),
        ("SELECT * FROM users OFFSET $1", "unsupported: OFFSET with a non-literal count"),
    ]);
}

#[test]
#[rustfmt::skip]
fn having_parameters_come_back_from_the_shards_as_hidden_columns() {
    check(&[
        ("SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > $1", "merge SELECT status, count(*), count(*), CASE WHEN false THEN count(*) ELSE $1 END FROM orders GROUP BY status | groups keys [0] outputs #0, count#1, count#2, #3 visible 2 having"),
    ]);
}

#[test]
#[rustfmt::skip]
fn a_sum_coalesced_to_zero_combines_as_a_sum() {
    check(&[
        ("SELECT coalesce(sum(total), 0) FROM orders", "merge SELECT coalesce(sum(total), 0) FROM orders | groups keys [] outputs sum#0"),
        ("SELECT status, COALESCE(count(note), 0.00) AS n FROM orders GROUP BY status ORDER BY coalesce(sum(total), 0) DESC", "merge SELECT status, COALESCE(count(note), 0.00) AS n, coalesce(sum(total), 0) FROM orders GROUP BY status | groups keys [0] outputs #0, sum#1, sum#2 visible 2 order by #2 desc nulls first"),
        ("SELECT coalesce(sum(total), 1) FROM orders", "unsupported: an aggregate inside an expression"),
        ("SELECT coalesce(max(total), 0) FROM orders", "unsupported: an aggregate inside an expression"),
    ]);
}
