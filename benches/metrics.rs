//! Cost of what a session records per transaction when `[metrics]` is on, against the same
//! calls with metrics off (every method returns at once), for a single-shard statement outside
//! a transaction (pgbench -S): one checkout timed, one statement counted, one request timed
//! at its ReadyForQuery (which also counts the transaction). A scrape drains the histogram
//! samples every so often, as the `/metrics` task does.
//!
//! Each benchmark records one transaction; "time" is the cost per transaction.
//! Run: `cargo bench --bench metrics`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use pgshard::config::Config;
use pgshard::metrics::{Metrics, RouteKind};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"
[[users]]
name = "app"
password = "app"
[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
[[shards]]
name = "s1"
primary = "127.0.0.1:5433"
"#;

/// One transaction's recording, as the session does it: a checkout that finds an idle
/// connection, and the two clock readings of its two wake-ups (the request read, the answer read).
fn transaction(metrics: &Metrics, shard: usize) {
    let woke = std::time::Instant::now();
    metrics.checkout_at_once(shard);
    metrics.statement(RouteKind::SingleShard);
    let request = metrics.enabled().then_some(woke);
    metrics.request_done(shard, request, std::time::Instant::now(), true);
}

fn bench(c: &mut Criterion) {
    let off = Metrics::new(&Config::from_toml_str(CONFIG).expect("valid config"));
    let on_config = format!("{CONFIG}\n[metrics]\nlisten = \"127.0.0.1:9930\"\n");
    let on = Metrics::new(&Config::from_toml_str(&on_config).expect("valid config"));
    assert!(on.enabled() && !off.enabled());
    let mut group = c.benchmark_group("metrics");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("off", |b| {
        b.iter(|| transaction(black_box(&off), 0));
    });
    let mut n = 0u32;
    group.bench_function("on", |b| {
        b.iter(|| {
            transaction(black_box(&on), (n & 1) as usize);
            n = n.wrapping_add(1);
            // The /metrics task drains the samples every 5 s: at 100k transactions/s, about
            // every 500,000 transactions.
            if n.is_multiple_of(500_000) {
                on.upkeep();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
