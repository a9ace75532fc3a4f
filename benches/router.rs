//! Cost of routing one statement, for a typical OLTP mix on two shards.
//!
//! - `cold`: `Router::plan` + `Router::route`: a statement seen for the first time.
//! - `cached`: `Router::route` from an existing `Arc<Plan>` with its Bind parameters: a
//!   prepared statement, or a simple query whose plan is cached. Must stay under 2 µs.
//! - `cache_hit`: `PlanCache::get` by query text + `Router::route`: a repeated simple query.
//! - `simple_literal`: what a session does for a simple query with a fresh literal (pgbench -S):
//!   `normalize_literals`, `PlanCache::get` of the normalized text behind a mutex, and
//!   `Router::route` with the literals as text parameters.
//! - `normalize`: `normalize_literals` alone, on texts with and without literals to replace.
//!
//! Each benchmark routes one statement; "time" is the cost per statement.
//! Run: `cargo bench --bench router`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use pgshard::config::Config;
use pgshard::router::{normalize_literals, Params, PlanCache, RouteContext, Router, Volatility};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"
[[users]]
name = "app"
password = "app"
[sharding]
key_column = "user_id"
key_type = "bigint"
reference_tables = ["countries"]
[[sharding.tables]]
name = "users"
[[sharding.tables]]
name = "orders"
[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
replicas = ["127.0.0.1:5433"]
[[shards]]
name = "s1"
primary = "127.0.0.1:5434"
replicas = ["127.0.0.1:5435"]
"#;

/// One statement of the mix: its text and its Bind parameters (text format).
struct Case {
    name: &'static str,
    sql: &'static str,
    params: &'static [Option<&'static [u8]>],
}

const MIX: &[Case] = &[
    Case {
        name: "point_select_param",
        sql: "SELECT user_id, name, email FROM users WHERE user_id = $1",
        params: &[Some(b"42")],
    },
    Case {
        name: "point_select_literal",
        sql: "SELECT user_id, name, email FROM users u WHERE u.user_id = 42 AND u.active",
        params: &[],
    },
    Case {
        name: "insert",
        sql: "INSERT INTO orders (user_id, total, status) VALUES ($1, $2, $3) RETURNING id",
        params: &[Some(b"42"), Some(b"9.99"), Some(b"open")],
    },
    Case {
        name: "update_by_key",
        sql: "UPDATE users SET visits = visits + 1, seen_at = now() WHERE user_id = $1",
        params: &[Some(b"7")],
    },
    Case {
        name: "select_in",
        sql: "SELECT * FROM orders WHERE user_id IN (1, 2, 3) ORDER BY id DESC LIMIT 20",
        params: &[],
    },
    Case {
        name: "begin",
        sql: "BEGIN",
        params: &[],
    },
    Case {
        name: "commit",
        sql: "COMMIT",
        params: &[],
    },
];

fn router() -> Router {
    let config = Config::from_toml_str(CONFIG).expect("bench config is valid");
    Router::new(&config, Volatility::builtin())
}

fn cold(c: &mut Criterion) {
    let router = router();
    let ctx = RouteContext::default();
    let mut group = c.benchmark_group("cold");
    for case in MIX {
        let params = Params::new(case.params, &[]);
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let plan = router.plan(black_box(case.sql));
                black_box(router.route(&plan, &params, &ctx))
            })
        });
    }
    group.finish();
}

fn cached(c: &mut Criterion) {
    let router = router();
    let ctx = RouteContext::default();
    let mut group = c.benchmark_group("cached");
    for case in MIX {
        let plan = router.plan(case.sql);
        let params = Params::new(case.params, &[]);
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(router.route(black_box(&plan), &params, &ctx)))
        });
    }
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let router = router();
    let ctx = RouteContext::default();
    let mut cache = PlanCache::new(1 << 20);
    let mut group = c.benchmark_group("cache_hit");
    for case in MIX.iter().filter(|case| case.params.is_empty()) {
        cache.get_or_plan(&router, case.sql);
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let plan = cache.get(black_box(case.sql));
                black_box(plan.map(|plan| router.route(&plan, &Params::NONE, &ctx)))
            })
        });
    }
    group.finish();
}

fn simple_literal(c: &mut Criterion) {
    let router = router();
    let ctx = RouteContext::default();
    let cache = std::sync::Mutex::new(PlanCache::new(1 << 20));
    let mut n = 0u64;
    c.bench_function("simple_literal/pgbench_select", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("SELECT abalance FROM users WHERE user_id = {n};");
            let (normalized, literals) = normalize_literals(black_box(&sql)).expect("literals");
            let plan = cache.lock().unwrap().get_or_plan(&router, &normalized);
            let values: Vec<Option<&[u8]>> = literals.iter().map(|l| Some(l.as_bytes())).collect();
            black_box(router.route(&plan, &Params::new(&values, &[]), &ctx))
        })
    });
}

/// Texts `normalize` measures: its name, and the text.
const NORMALIZE: &[(&str, &str)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    ),
    (
        "insert_row",
        "INSERT INTO orders (user_id, total, note) VALUES (42, 10.50, 'it''s a note') RETURNING id",
    ),
    (
        "comments_and_names",
        "/* pgshard: shard_key=7 */ SELECT \"col 1\", t2.x FROM t2 -- note 5\n\
         WHERE x = 3 AND name = 'ünïcødé'",
    ),
    (
        "nothing_to_replace",
        "SELECT user_id, name, email FROM users u WHERE u.user_id = u.parent_id AND u.active",
    ),
];

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, sql) in NORMALIZE {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(normalize_literals(black_box(sql))))
        });
    }
    group.finish();
}

/// Statements whose text `Router::text_effects` reads (may it change the session?), as every
/// simple-protocol statement is read: plain ones take the fast path of one pass over the bytes.
const TEXT_EFFECTS: &[(&str, &str)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 98765;",
    ),
    (
        "long_plain_select",
        "SELECT user_id, name, email, created_at, last_login_at, country, plan, status FROM users \
         WHERE user_id = 42 AND status = 1 ORDER BY created_at DESC LIMIT 10",
    ),
];

fn text_effects(c: &mut Criterion) {
    let router = router();
    let mut group = c.benchmark_group("text_effects");
    for (name, sql) in TEXT_EFFECTS {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(router.text_effects(black_box(sql))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = cold, cached, cache_hit, simple_literal, normalize, text_effects
}
criterion_main!(benches);
