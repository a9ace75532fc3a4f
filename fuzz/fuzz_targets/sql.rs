//! Fuzzes the router's pure text functions on arbitrary UTF-8: `router::lexer::tokens`,
//! `router::normalize_literals`, `Router::plan` (and `route`, `split_insert`) on a small two-shard
//! config, and `Router::may_change_session`.
//!
//! Runs on a thread with a 2 MiB stack, like a tokio worker running a session, so a recursion
//! that would overflow a session's stack is a crash here too. Checked: no panic, no stack
//! overflow; tokens are non-empty, in order and never overlap; a normalized text holds exactly
//! its `$1..$n` parameters (as the lexer sees them); and a statement the session routes through
//! its literal-normalized plan (a parsed read or write landing on one shard) lands where the plan
//! of its own text sends it.

#![no_main]

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pgshard::config::Config;
use pgshard::router::lexer::{tokens, Token};
use pgshard::router::{
    normalize_literals, Params, Route, RouteContext, Router, StatementKind, TransactionMode,
    Volatility,
};

/// Two shards; sharded tables keyed by bigint, integer, text and uuid; a reference table.
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
name = "pgbench_accounts"
key_column = "aid"
[[sharding.tables]]
name = "events"
key_type = "integer"
[[sharding.tables]]
name = "accounts"
key_column = "email"
key_type = "text"
[[sharding.tables]]
name = "public.devices"
key_column = "device_id"
key_type = "uuid"
[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
replicas = ["127.0.0.1:5433"]
[[shards]]
name = "s1"
primary = "127.0.0.1:5434"
"#;

/// Stack of a tokio worker thread (tokio's default), where sessions run.
const SESSION_STACK: usize = 2 << 20;

struct Worker {
    inputs: SyncSender<String>,
    done: Receiver<()>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (inputs, jobs) = sync_channel::<String>(0);
        let (finished, done) = sync_channel(0);
        std::thread::Builder::new()
            .name("session-stack".into())
            .stack_size(SESSION_STACK)
            .spawn(move || {
                let config = Config::from_toml_str(CONFIG).expect("the fuzz config is valid");
                let router = Router::new(&config, Volatility::builtin());
                for sql in jobs {
                    check(&router, &sql);
                    finished.send(()).expect("the fuzzer waits for each input");
                }
            })
            .expect("spawn the worker");
        Mutex::new(Worker { inputs, done })
    });
    let worker = worker.lock().unwrap();
    worker.inputs.send(sql.to_string()).unwrap();
    // A panic on the worker aborts the process (libFuzzer's panic hook), so this always returns.
    worker.done.recv().unwrap();
});

fn check(router: &Router, sql: &str) {
    check_tokens(sql);
    let _ = router.may_change_session(sql);

    let plan = router.plan(sql);
    let _ = plan.scatter();
    let _ = plan.sharded_tables();
    for transaction in [TransactionMode::Outside, TransactionMode::ReadWrite] {
        let ctx = RouteContext {
            transaction,
            ..RouteContext::default()
        };
        if let Ok(Route::SplitInsert { .. }) = router.route(&plan, &Params::NONE, &ctx) {
            let _ = router.split_insert(&plan, &Params::NONE);
        }
    }

    let Some((normalized, literals)) = normalize_literals(sql) else {
        return;
    };
    let params: Vec<&str> = tokens(&normalized)
        .filter_map(|t| match t {
            Token::Param(p) => Some(p),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (1..=literals.len()).map(|n| format!("${n}")).collect();
    assert_eq!(params, expected, "parameters of {normalized:?}");

    // What the session does with it (session/route.rs, route_normalized).
    let normalized_plan = router.plan(&normalized);
    if !normalized_plan.is_parsed()
        || !matches!(
            normalized_plan.kind(),
            StatementKind::Read | StatementKind::Write
        )
    {
        return;
    }
    let values: Vec<Option<&[u8]>> = literals.iter().map(|l| Some(l.as_bytes())).collect();
    let ctx = RouteContext::default();
    let via_params = router.route(&normalized_plan, &Params::new(&values, &[]), &ctx);
    if let Ok(route @ Route::Shard { .. }) = via_params {
        let original = router.route(&plan, &Params::NONE, &ctx);
        assert_eq!(
            original,
            Ok(route),
            "{sql:?} normalized to {normalized:?} with {literals:?}"
        );
    }
}

/// Tokens are non-empty slices of `sql`, in order, never overlapping.
fn check_tokens(sql: &str) {
    let base = sql.as_ptr() as usize;
    let mut at = 0;
    for token in tokens(sql) {
        let text = match token {
            Token::Word(s)
            | Token::QuotedIdent(s)
            | Token::String(s)
            | Token::Number(s)
            | Token::Param(s) => s,
            Token::Punct(b) => {
                assert!(b.is_ascii(), "punctuation {b:#x}");
                continue;
            }
        };
        assert!(!text.is_empty());
        let start = text.as_ptr() as usize - base;
        assert!(start >= at && start + text.len() <= sql.len());
        at = start + text.len();
    }
}
