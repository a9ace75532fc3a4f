//! Checkout fairness of pgshard's generic pool, next to bb8 under the same load.
//!
//! 1,000 tokio tasks share a pool of 16 in-memory connections. Each task checks out, holds the
//! connection ~1 ms (tokio::time::sleep), gives it back and repeats. Every checkout wait is
//! recorded; the table shows p50/p99/max and whether max stays within 10× p99 (a FIFO queue
//! keeps the tail close to the median; a pool that lets a returning task re-take its connection
//! starves some waiters). Plain `main`, no criterion: the wait distribution is the result.
//!
//! Run: `cargo bench --bench pool_fairness`. Knobs (env): TASKS (1000), POOL_SIZE (16),
//! ROUNDS (5 checkouts per task), HOLD_US (1000), RUNS (3).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgshard::pool::{Manager, Pool, PoolOptions, Returned};

/// A connection is just a number; connecting costs nothing.
#[derive(Default)]
struct Counter(AtomicU64);

impl Manager for Counter {
    type Connection = u64;
    type Error = Infallible;

    fn connect(&self) -> impl Future<Output = Result<u64, Infallible>> + Send {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        async move { Ok(n) }
    }

    fn returned(&self, _conn: &u64) -> Returned {
        Returned::Clean
    }

    async fn reset(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
}

impl bb8::ManageConnection for Counter {
    type Connection = u64;
    type Error = Infallible;

    fn connect(&self) -> impl Future<Output = Result<u64, Infallible>> + Send {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        async move { Ok(n) }
    }

    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

#[derive(Clone, Copy)]
struct Load {
    tasks: usize,
    pool_size: usize,
    rounds: usize,
    hold: Duration,
}

/// Long enough that no checkout in this workload ever times out.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(120);

/// Something that hands out a connection and takes it back when the guard drops.
trait Checkout: Clone + Send + Sync + 'static {
    fn checkout_and_hold(&self, hold: Duration) -> impl Future<Output = Duration> + Send;
}

impl Checkout for Pool<Counter> {
    async fn checkout_and_hold(&self, hold: Duration) -> Duration {
        let start = Instant::now();
        let conn = self.get().await.expect("checkout within the timeout");
        let waited = start.elapsed();
        tokio::time::sleep(hold).await;
        drop(conn);
        waited
    }
}

impl Checkout for bb8::Pool<Counter> {
    async fn checkout_and_hold(&self, hold: Duration) -> Duration {
        let start = Instant::now();
        let conn = self.get().await.expect("checkout within the timeout");
        let waited = start.elapsed();
        tokio::time::sleep(hold).await;
        drop(conn);
        waited
    }
}

/// Runs the workload; returns every checkout wait and the wall time.
async fn run<P: Checkout>(pool: P, load: Load) -> (Vec<Duration>, Duration) {
    let start_line = Arc::new(tokio::sync::Barrier::new(load.tasks));
    let started = Instant::now();
    let handles: Vec<_> = (0..load.tasks)
        .map(|_| {
            let pool = pool.clone();
            let start_line = start_line.clone();
            tokio::spawn(async move {
                start_line.wait().await;
                let mut waits = Vec::with_capacity(load.rounds);
                for _ in 0..load.rounds {
                    waits.push(pool.checkout_and_hold(load.hold).await);
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::with_capacity(load.tasks * load.rounds);
    for h in handles {
        waits.extend(h.await.expect("task finished"));
    }
    (waits, started.elapsed())
}

async fn pgshard_pool(load: Load) -> Pool<Counter> {
    Pool::new(
        Counter::default(),
        PoolOptions {
            size: load.pool_size,
            checkout_timeout: CHECKOUT_TIMEOUT,
            min_idle: 0,
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            reset_timeout: Duration::from_secs(5),
        },
    )
}

async fn bb8_pool(load: Load) -> bb8::Pool<Counter> {
    bb8::Pool::builder()
        .max_size(load.pool_size as u32)
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(false)
        .build(Counter::default())
        .await
        .expect("in-memory pool builds")
}

struct Summary {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    wall: Duration,
}

fn summarise(mut waits: Vec<Duration>, wall: Duration) -> Summary {
    waits.sort_unstable();
    let at = |q: f64| waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1];
    Summary {
        n: waits.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        wall,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(label: &str, s: &Summary) {
    let ratio = s.max.as_secs_f64() / s.p99.as_secs_f64().max(1e-9);
    println!(
        "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {} | {:.0} |",
        s.n,
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.max),
        ratio,
        if s.max <= s.p99 * 10 { "yes" } else { "no" },
        ms(s.wall),
    );
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here, so all are ignored.
    let load = Load {
        tasks: env_or("TASKS", 1000) as usize,
        pool_size: env_or("POOL_SIZE", 16) as usize,
        rounds: env_or("ROUNDS", 5) as usize,
        hold: Duration::from_micros(env_or("HOLD_US", 1000)),
    };
    let runs = env_or("RUNS", 3) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "pool fairness: {} tasks, pool of {}, {} checkouts each, hold {:?}, {} runs, {} worker threads\n",
        load.tasks,
        load.pool_size,
        load.rounds,
        load.hold,
        runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!("| pool | checkouts | p50 wait ms | p90 wait ms | p99 wait ms | max wait ms | max/p99 | max ≤ 10×p99 | wall ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut all_ours, mut all_bb8) = (Vec::new(), Vec::new());
    let (mut wall_ours, mut wall_bb8) = (Duration::ZERO, Duration::ZERO);
    for i in 1..=runs {
        // Alternate so neither pool always runs on a warmer (or noisier) machine.
        let (waits, wall) = runtime.block_on(async { run(pgshard_pool(load).await, load).await });
        row(&format!("pgshard run {i}"), &summarise(waits.clone(), wall));
        all_ours.extend(waits);
        wall_ours += wall;
        let (waits, wall) = runtime.block_on(async { run(bb8_pool(load).await, load).await });
        row(&format!("bb8 0.9 run {i}"), &summarise(waits.clone(), wall));
        all_bb8.extend(waits);
        wall_bb8 += wall;
    }
    let ours = summarise(all_ours, wall_ours);
    let theirs = summarise(all_bb8, wall_bb8);
    row("**pgshard, all runs**", &ours);
    row("**bb8 0.9, all runs**", &theirs);
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "\nratios bb8/pgshard: p50 {:.3}×, p90 {:.2}×, p99 {:.2}×, max {:.2}×, wall {:.2}×",
        r(theirs.p50, ours.p50),
        r(theirs.p90, ours.p90),
        r(theirs.p99, ours.p99),
        r(theirs.max, ours.max),
        r(theirs.wall, ours.wall),
    );
    println!(
        "bar (pgshard max ≤ 10× p99): {}",
        if ours.max <= ours.p99 * 10 {
            "met"
        } else {
            "NOT met"
        }
    );
}
