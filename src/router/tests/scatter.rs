//! Scatter plans: which multi-shard reads can be answered by concatenating every shard's rows
//! (`concat`, `concat limit N`) or by merging their sorted rows (`order by <keys>[ limit N]`,
//! each key `#i` for output column i or a bare name, then `asc|desc nulls first|last`), which
//! combine one row per shard column by column (`aggregate count, sum, min, max, bool_and,
//! bool_or`), and which constructs are refused (`unsupported: <words the message must
//! contain>`).

use super::router;
use crate::router::{Combine, Scatter, SortColumn, SortKey};

/// A [`Scatter::Concat`] in the fixtures' notation.
fn describe(order: &[SortKey], limit: Option<u64>) -> String {
    let keys: Vec<String> = order
        .iter()
        .map(|k| {
            let column = match &k.column {
                SortColumn::Index(i) => format!("#{i}"),
                SortColumn::Name(name) => name.clone(),
            };
            let direction = if k.descending { "desc" } else { "asc" };
            let nulls = if k.nulls_first { "first" } else { "last" };
            format!("{column} {direction} nulls {nulls}")
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

/// A [`Scatter::Aggregate`] in the fixtures' notation.
fn describe_aggregate(combines: &[Combine]) -> String {
    let names: Vec<&str> = combines
        .iter()
        .map(|c| match c {
            Combine::Count => "count",
            Combine::Sum => "sum",
            Combine::Min => "min",
            Combine::Max => "max",
            Combine::BoolAnd => "bool_and",
            Combine::BoolOr => "bool_or",
        })
        .collect();
    format!("aggregate {}", names.join(", "))
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
                (Scatter::Aggregate(combines), None) => *expected == describe_aggregate(combines),
                _ => false,
            };
            (!ok).then(|| format!("  {sql}\n    expected {expected}, got {:?}", plan.scatter()))
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
fn constructs_that_combine_rows_are_named() {
    check(&[
        ("SELECT * FROM users ORDER BY lower(name)", "unsupported: ORDER BY on an expression that is not in the select list"),
        ("SELECT * FROM users ORDER BY name LIMIT 10 OFFSET 5", "unsupported: OFFSET"),
        ("SELECT * FROM users LIMIT 10 OFFSET 5", "unsupported: OFFSET"),
        ("SELECT * FROM users OFFSET 5", "unsupported: OFFSET"),
        ("SELECT count(*) FROM orders WHERE status = 'open'", "aggregate count"),
        ("SELECT coalesce(sum(total), 0) FROM orders", "unsupported: aggregate function sum()"),
        ("SELECT string_agg(name, ',' ORDER BY name) FROM users", "unsupported: string_agg"),
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM users", "unsupported: percentile_cont"),
        ("SELECT status FROM orders GROUP BY status", "unsupported: GROUP BY"),
        ("SELECT 1 FROM orders HAVING true", "unsupported: HAVING"),
        ("SELECT DISTINCT name FROM users", "unsupported: DISTINCT"),
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
fn order_by_what_is_not_an_output_column_is_refused() {
    check(&[
        ("SELECT user_id FROM users ORDER BY lower(name)", "unsupported: ORDER BY on an expression that is not in the select list"),
        ("SELECT user_id FROM users ORDER BY name", "unsupported: not in the select list"),
        ("SELECT user_id + 1 FROM users ORDER BY user_id", "unsupported: not in the select list"),
        ("SELECT name AS n FROM users ORDER BY lower(n)", "unsupported: not in the select list"),
        ("SELECT user_id FROM users ORDER BY 2", "unsupported: ORDER BY position 2"),
        ("SELECT user_id FROM users ORDER BY 0", "unsupported: ORDER BY position 0"),
        ("SELECT user_id FROM users ORDER BY 'x'", "unsupported: ORDER BY on a constant"),
        ("SELECT name FROM users ORDER BY name COLLATE \"C\"", "unsupported: COLLATE"),
        ("SELECT name COLLATE \"C\" FROM users ORDER BY 1 COLLATE \"C\"", "unsupported: COLLATE"),
        ("SELECT name COLLATE \"C\" AS n FROM users ORDER BY n", "unsupported: COLLATE"),
        ("SELECT name FROM users ORDER BY name USING <", "unsupported: a statement pgshard cannot parse"),
        ("SELECT name AS x, email AS x FROM users ORDER BY x", "unsupported: several select items"),
        ("SELECT * FROM users ORDER BY lower(name)", "unsupported: not in the select list"),
        ("SELECT * FROM users ORDER BY user_id + 1", "unsupported: not in the select list"),
        ("SELECT u.* FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.total", "unsupported: not in the select list"),
        ("SELECT * FROM users ORDER BY addr.city", "unsupported: not in the select list"),
        ("SELECT * FROM users u JOIN orders o USING (user_id) ORDER BY o.user_id", "unsupported: not in the select list"),
        ("SELECT user_id FROM users u FULL JOIN orders o USING (user_id) ORDER BY u.user_id", "unsupported: not in the select list"),
        ("SELECT u.user_id FROM users u JOIN orders o ON o.user_id = u.user_id ORDER BY o.user_id", "unsupported: not in the select list"),
        ("SELECT current_date FROM users u ORDER BY u.current_date", "unsupported: not in the select list"),
        ("SELECT user_id::text FROM users ORDER BY user_id::public.text", "unsupported: not in the select list"),
        ("SELECT * FROM (SELECT * FROM users ORDER BY name) s", "unsupported: ORDER BY in a subquery in FROM"),
        ("SELECT count(*) FROM users ORDER BY 1", "unsupported: ORDER BY with aggregates"),
        ("SELECT DISTINCT name FROM users ORDER BY name", "unsupported: DISTINCT"),
        ("SELECT name FROM users GROUP BY name ORDER BY name", "unsupported: GROUP BY"),
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
        ("SELECT count(*) FROM users", "aggregate count"),
        ("SELECT count(*), sum(amount), min(created_at), max(amount) FROM orders WHERE amount > 5", "aggregate count, sum, min, max"),
        ("SELECT bool_and(active), bool_or(active) FROM users", "aggregate bool_and, bool_or"),
        ("SELECT COUNT(email) AS n, Every(active) AS all_active, pg_catalog.sum(age) FROM users", "aggregate count, bool_and, sum"),
        ("SELECT (count(*)), \"max\"(age) FROM users WHERE user_id IN (1, 42)", "aggregate count, max"),
        ("SELECT count(ALL email), sum(coalesce(age, 0) * 2), min(lower(name)) FROM users", "aggregate count, sum, min"),
        ("SELECT count(u.*) FROM users u", "aggregate count"),
        ("SELECT count(*), max(o.total) FROM users u JOIN orders o ON o.user_id = u.user_id", "aggregate count, max"),
        ("SELECT count(*) FROM users u JOIN countries c ON c.code = u.country WHERE c.name = 'x'", "aggregate count"),
        ("SELECT sum((SELECT count(*) FROM orders o WHERE o.user_id = u.user_id)) FROM users u", "aggregate sum"),
        ("SELECT count(*) FROM (SELECT * FROM users WHERE active) s", "aggregate count"),
        ("SELECT count(*) FROM users LIMIT ALL", "aggregate count"),
    ]);
}

#[test]
#[rustfmt::skip]
fn aggregates_that_do_not_combine_are_named() {
    check(&[
        ("SELECT avg(amount) FROM orders", "unsupported: aggregate function avg()"),
        ("SELECT count(*), avg(amount) FROM orders", "unsupported: aggregate function avg()"),
        ("SELECT count(DISTINCT user_id) FROM users", "unsupported: count(DISTINCT ...)"),
        ("SELECT user_id, count(*) FROM users GROUP BY user_id", "unsupported: GROUP BY"),
        ("SELECT count(*) FROM users GROUP BY ()", "unsupported: GROUP BY"),
        ("SELECT count(*) + 1 FROM users", "unsupported: an aggregate inside an expression (aggregate function count())"),
        ("SELECT coalesce(sum(age), 0) FROM users", "unsupported: an aggregate inside an expression"),
        ("SELECT name, count(*) FROM users", "unsupported: an aggregate mixed with plain columns"),
        ("SELECT *, count(*) FROM users", "unsupported: an aggregate mixed with plain columns"),
        ("SELECT 1, count(*) FROM users", "unsupported: an aggregate mixed with plain columns"),
        ("SELECT count(*) FILTER (WHERE active) FROM users", "unsupported: FILTER on aggregate function count()"),
        ("SELECT max(age ORDER BY name) FROM users", "unsupported: ORDER BY inside aggregate function max()"),
        ("SELECT count(*) OVER () FROM users", "unsupported: window function count()"),
        ("SELECT count(*), rank() OVER (ORDER BY 1) FROM users", "unsupported: window function rank()"),
        ("SELECT sum(*) FROM users", "unsupported: sum(*)"),
        ("SELECT count() FROM users", "unsupported: aggregate function count() with 0 arguments"),
        ("SELECT min(age, name) FROM users", "unsupported: aggregate function min() with 2 arguments"),
        ("SELECT myschema.count(*) FROM users", "unsupported: qualified with a schema other than pg_catalog"),
        ("SELECT \"COUNT\"(*) FROM users", "unsupported: aggregate function count()"),
        ("SELECT count(*) FROM users HAVING count(*) > 1", "unsupported: HAVING"),
        ("SELECT DISTINCT count(*) FROM users", "unsupported: DISTINCT"),
        ("SELECT count(*) FROM users LIMIT 1", "unsupported: LIMIT with aggregates"),
        ("SELECT count(*) FROM users OFFSET 1", "unsupported: OFFSET"),
        ("SELECT max(age) FROM users ORDER BY 1", "unsupported: ORDER BY with aggregates"),
        ("SELECT count(*) FROM users FOR UPDATE", "unsupported: FOR UPDATE"),
        ("SELECT count(*) FROM users a JOIN users b ON a.name = b.name", "unsupported: a join of sharded tables"),
        ("SELECT count(*) FROM users u JOIN settings s ON s.k = u.name", "unsupported: table settings"),
        ("SELECT max((SELECT max(total) FROM orders)) FROM users", "unsupported: a join of sharded tables"),
        ("SELECT count(*) FROM users UNION ALL SELECT count(*) FROM orders", "unsupported: UNION"),
        ("SELECT * FROM (SELECT count(*) FROM orders) c", "unsupported: aggregate function count()"),
        ("SELECT (SELECT count(*) FROM users)", "unsupported: a sharded table read only in a subquery"),
    ]);
}
