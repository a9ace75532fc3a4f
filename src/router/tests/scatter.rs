//! Scatter plans: which multi-shard reads can be answered by concatenating every shard's rows
//! (`concat`, `concat limit N`), and which constructs are refused (`unsupported: <words the
//! message must contain>`).

use super::router;
use crate::router::Scatter;

/// Checks every `(sql, expected)` fixture's [`Scatter`] and lists all mismatches at once.
fn check(cases: &[(&str, &str)]) {
    let router = router();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(sql, expected)| {
            let plan = router.plan(sql);
            let ok = match (plan.scatter(), expected.strip_prefix("unsupported: ")) {
                (Scatter::Unsupported(msg), Some(words)) => msg.contains(words),
                (Scatter::Concat { limit: None }, None) => *expected == "concat",
                (Scatter::Concat { limit: Some(n) }, None) => {
                    *expected == format!("concat limit {n}")
                }
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
        ("SELECT * FROM users ORDER BY name", "unsupported: ORDER BY"),
        ("SELECT * FROM users ORDER BY name LIMIT 10", "unsupported: ORDER BY"),
        ("SELECT * FROM users LIMIT 10 OFFSET 5", "unsupported: OFFSET"),
        ("SELECT * FROM users OFFSET 5", "unsupported: OFFSET"),
        ("SELECT count(*) FROM orders WHERE status = 'open'", "unsupported: aggregate function count()"),
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
