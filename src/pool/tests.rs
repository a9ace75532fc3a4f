//! Pool behaviour with an in-memory manager.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use super::*;

#[derive(Default)]
struct Counter {
    opened: AtomicUsize,
    resets: AtomicUsize,
}

#[derive(Debug)]
struct Conn {
    id: usize,
    state: Returned,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect")]
struct NoConnect;

impl Manager for Arc<Counter> {
    type Connection = Conn;
    type Error = NoConnect;
    async fn connect(&self) -> Result<Conn, NoConnect> {
        let id = self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            id,
            state: Returned::Clean,
        })
    }
    fn returned(&self, conn: &Conn) -> Returned {
        conn.state
    }
    fn is_alive(&self, conn: &mut Conn) -> bool {
        conn.id != DEAD_ON_IDLE
    }
    async fn reset(&self, conn: &mut Conn) -> Result<(), NoConnect> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        conn.state = Returned::Clean;
        Ok(())
    }
}

/// A connection with this id dies while idle.
const DEAD_ON_IDLE: usize = 100;

fn options(size: usize, checkout_ms: u64) -> PoolOptions {
    PoolOptions {
        size,
        checkout_timeout: Duration::from_millis(checkout_ms),
        min_idle: 0,
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(3600),
        reset_timeout: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn returned_connection_is_reused() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(2, 1000));
    let first = pool.get().await.unwrap().id;
    let second = pool.get().await.unwrap().id;
    assert_eq!(first, second);
    assert_eq!(counter.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn checkout_times_out_when_all_are_taken() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 50));
    let _held = pool.get().await.unwrap();
    assert!(matches!(pool.get().await, Err(PoolError::Timeout(_))));
}

#[tokio::test]
async fn broken_connection_is_not_reused() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(1, 1000));
    let mut c = pool.get().await.unwrap();
    c.state = Returned::Broken;
    drop(c);
    assert_eq!(pool.get().await.unwrap().id, 1);
}

#[tokio::test]
async fn dirty_connection_is_reset_before_reuse() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(1, 1000));
    let mut c = pool.get().await.unwrap();
    c.state = Returned::NeedsReset;
    drop(c);
    let again = pool.get().await.unwrap();
    assert_eq!(again.id, 0);
    assert_eq!(again.state, Returned::Clean);
    assert_eq!(counter.resets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 5000));
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (pool, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _c = pool.get().await.unwrap();
            order.lock().unwrap().push(i);
        }));
        // Let each waiter enqueue before the next one.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn discard_closes_instead_of_returning() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(1, 1000));
    pool.get().await.unwrap().discard();
    assert_eq!(pool.status().idle, 0);
    assert_eq!(pool.get().await.unwrap().id, 1);
}

#[tokio::test]
async fn dead_idle_connection_is_replaced() {
    let counter = Arc::new(Counter::default());
    counter.opened.store(DEAD_ON_IDLE, Ordering::SeqCst);
    let pool = Pool::new(counter.clone(), options(1, 1000));
    drop(pool.get().await.unwrap());
    assert_eq!(pool.status().idle, 1);
    assert_eq!(pool.get().await.unwrap().id, DEAD_ON_IDLE + 1);
}

#[tokio::test]
async fn shrinking_takes_permits_back_as_connections_return() {
    let pool = Pool::new(Arc::new(Counter::default()), options(4, 20));
    let held: Vec<_> = futures_get(&pool, 3).await;
    pool.reconfigure(options(2, 20));
    // 1 free permit taken at once, 2 owed: no checkout succeeds while 3 are out.
    assert!(pool.try_get().await.is_none());
    assert_eq!(pool.status().in_use, 3);
    let mut held = held.into_iter();
    drop(held.next());
    // Paid one debt: still 2 out, size 2: nothing free.
    assert!(pool.try_get().await.is_none());
    drop(held.next());
    // Now 1 out of 2.
    let again = pool
        .try_get()
        .await
        .expect("a permit is free")
        .expect("connects");
    assert!(pool.try_get().await.is_none());
    drop(again);
    drop(held.next());
    assert_eq!(
        pool.status(),
        PoolStatus {
            size: 2,
            idle: 2,
            in_use: 0,
            waiting: 0
        }
    );
}

#[tokio::test]
async fn growing_pays_back_a_shrink_first() {
    let pool = Pool::new(Arc::new(Counter::default()), options(3, 20));
    let held = futures_get(&pool, 3).await;
    pool.reconfigure(options(1, 20));
    pool.reconfigure(options(4, 20));
    // Size 4 with 3 out: exactly one more.
    let one = pool.try_get().await.expect("one free").expect("connects");
    assert!(pool.try_get().await.is_none());
    drop(one);
    drop(held);
    assert_eq!(pool.status().in_use, 0);
    assert_eq!(futures_get(&pool, 4).await.len(), 4);
}

#[tokio::test]
async fn try_get_never_waits_for_a_busy_pool() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 10_000));
    let held = pool.get().await.unwrap();
    assert!(pool.try_get().await.is_none());
    drop(held);
    assert!(pool.try_get().await.is_some());
}

async fn futures_get(pool: &Pool<Arc<Counter>>, n: usize) -> Vec<Pooled<Arc<Counter>>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get().await.expect("checkout"));
    }
    out
}

#[tokio::test]
async fn waiting_checkouts_are_counted_while_they_wait() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 10_000));
    let held = pool.get().await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.id) })
    };
    while pool.status().waiting == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.status().in_use, 1);
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 0);
    assert_eq!(pool.status().waiting, 0);
    let mut idle = 0;
    pool.for_each_idle(|_, _, _| idle += 1);
    assert_eq!(idle, 1);
}

#[tokio::test]
async fn get_idle_now_takes_only_an_idle_connection_under_a_free_permit() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 50));
    assert!(
        pool.get_idle_now(Instant::now()).is_none(),
        "nothing idle yet: no connect here"
    );
    drop(pool.get().await.unwrap());
    let held = pool
        .get_idle_now(Instant::now())
        .expect("the idle connection");
    assert!(
        pool.get_idle_now(Instant::now()).is_none(),
        "the only permit is taken"
    );
    drop(held);
    assert!(
        pool.get_idle_now(Instant::now()).is_some(),
        "back and idle again"
    );
}

#[tokio::test]
async fn a_reloaded_max_lifetime_applies_to_idle_and_returned_connections() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(2, 1000));
    let first = pool.get().await.unwrap().id;
    assert_eq!(
        pool.get_idle_now(Instant::now()).map(|c| c.id),
        Some(first),
        "kept while young"
    );
    pool.reconfigure(PoolOptions {
        max_lifetime: Duration::ZERO,
        ..options(2, 1000)
    });
    assert!(
        pool.get_idle_now(Instant::now()).is_none(),
        "an idle one past the new lifetime is closed"
    );
    let second = pool.get().await.unwrap().id;
    assert_ne!(first, second);
    assert_eq!(pool.status().idle, 0, "a returned one past it is not kept");
    pool.reconfigure(options(2, 1000));
    let third = pool.get().await.unwrap().id;
    assert_eq!(pool.get_idle_now(Instant::now()).map(|c| c.id), Some(third));
}

/// The clock a caller passes is the one the pool judges by: a checkout or a return at a time
/// past `max_lifetime` (one hour here) closes the connection; a return before it keeps it.
#[tokio::test]
async fn the_callers_clock_reading_decides_the_lifetime() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 1000));
    let later = Instant::now() + Duration::from_secs(2 * 3600);
    let first = pool.get().await.unwrap();
    let first_id = first.id;
    first.put_back(Instant::now());
    assert!(
        pool.get_idle_now(later).is_none(),
        "idle past its lifetime at the given time: closed"
    );
    assert_eq!(pool.status().idle, 0);
    let second = pool.get().await.unwrap();
    let second_id = second.id;
    assert_ne!(first_id, second_id);
    second.put_back(later);
    assert_eq!(
        pool.status().idle,
        0,
        "returned past its lifetime: not kept"
    );
    let third = pool.get().await.unwrap();
    let third_id = third.id;
    third.put_back(Instant::now());
    assert_eq!(
        pool.get_idle_now(Instant::now()).map(|c| c.id),
        Some(third_id),
        "returned and taken while young: kept"
    );
}

/// Polls `fut` once, with a waker that does nothing.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test]
async fn a_connection_handed_to_a_waiter_that_gave_up_goes_to_the_next() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 10_000));
    let held = pool.get().await.unwrap();
    let mut first = Box::pin(pool.get());
    assert!(poll_once(first.as_mut()).is_pending(), "first in line");
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.id) })
    };
    while pool.status().waiting < 2 {
        tokio::task::yield_now().await;
    }
    // Handed to the first waiter, which leaves before it ever looks.
    drop(held);
    drop(first);
    assert_eq!(second.await.unwrap().unwrap(), 0, "the same connection");
    assert_eq!(
        pool.status(),
        PoolStatus {
            size: 1,
            idle: 1,
            in_use: 0,
            waiting: 0
        }
    );
}

#[tokio::test]
async fn a_waiter_that_leaves_gives_up_its_place_in_line() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 10_000));
    let held = pool.get().await.unwrap();
    let gone = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.id) })
    };
    while pool.status().waiting == 0 {
        tokio::task::yield_now().await;
    }
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    assert_eq!(pool.status().waiting, 0, "out of the line");
    drop(held);
    assert_eq!(pool.status().in_use, 0, "nobody to hand the connection to");
    assert_eq!(pool.get_idle_now(Instant::now()).map(|c| c.id), Some(0));
}

#[tokio::test]
async fn a_waiter_with_an_earlier_deadline_times_out_first() {
    let pool = Pool::new(Arc::new(Counter::default()), options(1, 10_000));
    let held = pool.get().await.unwrap();
    let patient = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.id) })
    };
    while pool.status().waiting == 0 {
        tokio::task::yield_now().await;
    }
    // A reload shortens the timeout: the next waiter's deadline comes before the first's.
    pool.reconfigure(options(1, 50));
    // The outer timeout only keeps a broken sweep from hanging the test.
    let hasty = tokio::time::timeout(Duration::from_secs(30), pool.get()).await;
    assert!(
        matches!(hasty, Ok(Err(PoolError::Timeout(t))) if t == Duration::from_millis(50)),
        "timed out at its own deadline"
    );
    assert_eq!(pool.status().waiting, 1, "the first waiter keeps its place");
    drop(held);
    assert_eq!(patient.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn growing_serves_waiters_at_once() {
    let counter = Arc::new(Counter::default());
    let pool = Pool::new(counter.clone(), options(1, 10_000));
    let _held = pool.get().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await })
        })
        .collect();
    while pool.status().waiting < 2 {
        tokio::task::yield_now().await;
    }
    pool.reconfigure(options(3, 60_000));
    let mut served = Vec::new();
    for w in waiters {
        served.push(w.await.unwrap().unwrap());
    }
    let mut ids: Vec<_> = served.iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2],
        "two new connections, while the first is held"
    );
    assert_eq!(counter.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn shrinking_closes_the_idle_connections_used_longest_ago() {
    let pool = Pool::new(Arc::new(Counter::default()), options(3, 1000));
    let held = futures_get(&pool, 3).await;
    let ids: Vec<_> = held.iter().map(|c| c.id).collect();
    // Returned in this order: the last one is the most recently used.
    drop(held);
    pool.reconfigure(options(1, 1000));
    assert_eq!(pool.status().idle, 1);
    assert_eq!(
        pool.get_idle_now(Instant::now()).map(|c| c.id),
        ids.last().copied()
    );
}
