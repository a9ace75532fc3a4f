//! A generic, fair (first come, first served) connection pool. Knows nothing about PostgreSQL:
//! a [`Manager`] opens, judges and resets connections. Checkout waits on tokio's FIFO semaphore;
//! a [`Pooled`] guard hands its connection back on drop, reset first when the manager says so.
//! Must never hand out a connection the manager judged dirty or broken.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the manager says about a connection coming back from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Ready for the next client as is.
    Clean,
    /// Usable after [`Manager::reset`].
    NeedsReset,
    /// Close it.
    Broken,
}

/// Opens, judges and resets one kind of connection.
pub trait Manager: Send + Sync + 'static {
    type Connection: Send + 'static;
    type Error: std::error::Error + Send + 'static;

    /// Opens a new connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;
    /// Judges a connection a client gave back.
    fn returned(&self, conn: &Self::Connection) -> Returned;
    /// Cheap, synchronous check that an idle connection is still usable (e.g. the peer has not
    /// closed it), run when it is taken from the idle list. Defaults to `true`.
    fn is_alive(&self, _conn: &mut Self::Connection) -> bool {
        true
    }
    /// Brings a connection back to a clean state; an error discards it.
    fn reset(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Pool sizing and timing.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub size: usize,
    pub checkout_timeout: Duration,
    pub min_idle: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// Longest a [`Manager::reset`] may take before the connection is discarded.
    pub reset_timeout: Duration,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E: std::error::Error + 'static> {
    #[error("no connection became free within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Connect(E),
    #[error("the pool is closed")]
    Closed,
}

/// Connections are boxed once, when opened: a checkout moves a pointer, and the session holding
/// one (or waiting for one) stays small.
struct Idle<C> {
    conn: Box<C>,
    created: Instant,
    last_used: Instant,
}

struct Inner<M: Manager> {
    manager: M,
    /// Replaced whole by [`Pool::reconfigure`].
    options: ArcSwap<PoolOptions>,
    /// `options.max_lifetime` in nanoseconds, read by every checkout and release without
    /// loading the options (kept equal to them by [`Pool::reconfigure`]).
    max_lifetime_ns: AtomicU64,
    permits: Arc<Semaphore>,
    /// Permits still to take out of circulation after the pool shrank: each connection handed
    /// back while this is above zero is closed and its permit forgotten.
    shrink_debt: AtomicUsize,
    idle: Mutex<Vec<Idle<M::Connection>>>,
    /// Checkouts waiting for a permit (only contended checkouts count themselves).
    waiting: AtomicUsize,
}

impl<M: Manager> Inner<M> {
    fn max_lifetime(&self) -> Duration {
        Duration::from_nanos(self.max_lifetime_ns.load(Ordering::Relaxed))
    }
}

/// A lifetime in nanoseconds (a longer one than `u64` holds counts as the longest).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A fair pool of connections made by `M`. Cheap to clone.
pub struct Pool<M: Manager> {
    inner: Arc<Inner<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

/// Point-in-time counters of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: usize,
    pub idle: usize,
    pub in_use: usize,
    /// Checkouts waiting for a connection.
    pub waiting: usize,
}

impl<M: Manager> Pool<M> {
    /// Creates a pool and starts its reaper task (needs a tokio runtime).
    pub fn new(manager: M, options: PoolOptions) -> Pool<M> {
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(options.size)),
            manager,
            max_lifetime_ns: AtomicU64::new(nanos(options.max_lifetime)),
            options: ArcSwap::from_pointee(options),
            shrink_debt: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            waiting: AtomicUsize::new(0),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Pool { inner }
    }

    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    pub fn options(&self) -> Arc<PoolOptions> {
        self.inner.options.load_full()
    }

    pub fn status(&self) -> PoolStatus {
        let size = self.inner.options.load().size;
        let debt = self.inner.shrink_debt.load(Ordering::Relaxed);
        PoolStatus {
            size,
            idle: lock(&self.inner.idle).len(),
            in_use: (size + debt).saturating_sub(self.inner.permits.available_permits()),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        }
    }

    /// Calls `f` with each idle connection, when it was opened and when it was last used.
    /// Holds the idle list's lock meanwhile: keep `f` short.
    pub fn for_each_idle(&self, mut f: impl FnMut(&M::Connection, Instant, Instant)) {
        for entry in lock(&self.inner.idle).iter() {
            f(&entry.conn, entry.created, entry.last_used);
        }
    }

    /// Applies new options (a config reload): a larger size frees more permits at once; a
    /// smaller one takes free permits out now and the rest as connections come back, so the
    /// pool never holds more connections than its size for longer than they are in use.
    pub fn reconfigure(&self, options: PoolOptions) {
        let old = self.inner.options.swap(Arc::new(options.clone()));
        let lifetime = nanos(options.max_lifetime);
        self.inner
            .max_lifetime_ns
            .store(lifetime, Ordering::Relaxed);
        if options.size > old.size {
            let mut grow = options.size - old.size;
            // Growing first pays back what a recent shrink still owes.
            let _ =
                self.inner
                    .shrink_debt
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                        let paid = debt.min(grow);
                        grow = options.size - old.size - paid;
                        Some(debt - paid)
                    });
            self.inner.permits.add_permits(grow);
        } else if options.size < old.size {
            let shrink = old.size - options.size;
            let taken = self.inner.permits.forget_permits(shrink);
            self.inner
                .shrink_debt
                .fetch_add(shrink - taken, Ordering::AcqRel);
            let mut idle = lock(&self.inner.idle);
            let keep = idle.len().min(options.size);
            idle.truncate(keep);
        }
    }

    /// A connection now if a permit is free (an idle one, or a new one), else `None`: for
    /// work that must count against the size but must not queue behind clients (health checks).
    pub async fn try_get(&self) -> Option<Result<Pooled<M>, PoolError<M::Error>>> {
        let permit = self.inner.permits.clone().try_acquire_owned().ok()?;
        Some(self.with_permit(permit).await)
    }

    /// An idle connection now, without waiting or connecting, if a permit is free and one is
    /// idle: the common checkout, taken without the (larger) future of [`Pool::get`]. Never
    /// jumps a queue (a free permit means nobody waits).
    pub fn get_idle_now(&self) -> Option<Pooled<M>> {
        let permit = self.inner.permits.clone().try_acquire_owned().ok()?;
        let idle = self.take_idle()?;
        Some(Pooled {
            conn: Some(idle.conn),
            created: idle.created,
            permit: Some(permit),
            pool: self.inner.clone(),
        })
    }

    /// Waits in line (FIFO) for a connection, up to the checkout timeout.
    pub async fn get(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        let permit = match self.inner.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Only a contended checkout pays for a timer. FIFO still holds: tokio hands released
            // permits straight to queued waiters, so try_acquire never jumps a queue.
            Err(_) => self.wait_for_permit().await?,
        };
        self.with_permit(permit).await
    }

    /// An idle connection, or a new one, under `permit`.
    async fn with_permit(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let (conn, created) = match self.take_idle() {
            Some(idle) => (idle.conn, idle.created),
            None => {
                // Boxed: a connect is rare and its future large; inline, every checkout's
                // future (held by each waiting client) would be as large.
                let conn = Box::pin(self.inner.manager.connect())
                    .await
                    .map_err(PoolError::Connect)?;
                (Box::new(conn), Instant::now())
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            created,
            permit: Some(permit),
            pool: self.inner.clone(),
        })
    }

    async fn wait_for_permit(&self) -> Result<OwnedSemaphorePermit, PoolError<M::Error>> {
        let timeout = self.inner.options.load().checkout_timeout;
        let _waiting = Waiting::new(&self.inner.waiting);
        match tokio::time::timeout(timeout, self.inner.permits.clone().acquire_owned()).await {
            Err(_) => Err(PoolError::Timeout(timeout)),
            Ok(Err(_)) => Err(PoolError::Closed),
            Ok(Ok(permit)) => Ok(permit),
        }
    }

    /// The most recently used idle connection that is alive and has not outlived `max_lifetime`.
    fn take_idle(&self) -> Option<Idle<M::Connection>> {
        let max_lifetime = self.inner.max_lifetime();
        loop {
            let mut entry = lock(&self.inner.idle).pop()?;
            if entry.created.elapsed() < max_lifetime
                && self.inner.manager.is_alive(&mut entry.conn)
            {
                return Some(entry);
            }
        }
    }

    /// Closes every idle connection (e.g. after their server went down).
    pub fn clear_idle(&self) {
        lock(&self.inner.idle).clear();
    }
}

/// A checked-out connection; goes back to the pool (reset if needed) when dropped.
pub struct Pooled<M: Manager> {
    conn: Option<Box<M::Connection>>,
    created: Instant,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner<M>>,
}

impl<M: Manager> Pooled<M> {
    /// Closes the connection instead of returning it.
    pub fn discard(mut self) {
        self.conn = None;
    }

    /// The manager of the pool this connection comes from.
    pub fn manager(&self) -> &M {
        &self.pool.manager
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        // Infallible: `conn` is only taken in `drop` and `discard`, which consume the guard.
        self.conn.as_deref().expect("connection present until drop")
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        // Infallible: see `deref`.
        self.conn
            .as_deref_mut()
            .expect("connection present until drop")
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let created = self.created;
        match self.pool.manager.returned(&conn) {
            Returned::Clean => give_back(&self.pool, conn, created, permit),
            Returned::Broken => close(&self.pool, permit),
            Returned::NeedsReset => {
                // The permit travels with the reset, so the pool never exceeds its size.
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    let reset = pool.manager.reset(&mut conn);
                    let limit = pool.options.load().reset_timeout;
                    if let Ok(Ok(())) = tokio::time::timeout(limit, reset).await {
                        give_back(&pool, conn, created, permit);
                    } else {
                        close(&pool, permit);
                    }
                });
            }
        }
    }
}

/// Puts a clean connection on the idle list, then frees its permit for the next waiter.
fn give_back<M: Manager>(
    pool: &Inner<M>,
    conn: Box<M::Connection>,
    created: Instant,
    permit: OwnedSemaphorePermit,
) {
    if pay_shrink_debt(pool) {
        permit.forget();
        return;
    }
    // One clock reading for both.
    let now = Instant::now();
    if now.saturating_duration_since(created) < pool.max_lifetime() {
        lock(&pool.idle).push(Idle {
            conn,
            created,
            last_used: now,
        });
    }
    drop(permit);
}

/// A connection was closed: its permit goes to the next waiter, or out of circulation if the
/// pool shrank.
fn close<M: Manager>(pool: &Inner<M>, permit: OwnedSemaphorePermit) {
    if pay_shrink_debt(pool) {
        permit.forget();
    }
}

/// Takes one permit out of circulation if the pool shrank below what is in use.
fn pay_shrink_debt<M: Manager>(pool: &Inner<M>) -> bool {
    pool.shrink_debt.load(Ordering::Relaxed) > 0
        && pool
            .shrink_debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
}

/// Counts a checkout among the waiters while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicUsize) -> Waiting<'a> {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves only a Vec of idle connections behind: still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes idle connections past `idle_timeout` (down to `min_idle`) or `max_lifetime`, and opens
/// connections up to `min_idle`. Ends when the pool is dropped.
async fn reap<M: Manager>(pool: Weak<Inner<M>>) {
    let period = match pool.upgrade() {
        Some(p) => (p.options.load().idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let opts = pool.options.load_full();
        {
            let mut idle = lock(&pool.idle);
            let mut keep = idle.len();
            idle.retain(|e| {
                let expired = e.created.elapsed() >= opts.max_lifetime
                    || (e.last_used.elapsed() >= opts.idle_timeout && keep > opts.min_idle);
                if expired {
                    keep -= 1;
                }
                !expired
            });
        }
        while lock(&pool.idle).len() < opts.min_idle {
            let Ok(permit) = pool.permits.clone().try_acquire_owned() else {
                break;
            };
            match pool.manager.connect().await {
                Ok(conn) => give_back(&pool, Box::new(conn), Instant::now(), permit),
                Err(_) => break,
            }
        }
    }
}
