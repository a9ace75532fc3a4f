//! A generic, fair (first come, first served) connection pool. Knows nothing about PostgreSQL:
//! a [`Manager`] opens, judges and resets connections. A checkout that finds every connection
//! out waits in the pool's own FIFO (`queue`); a [`Pooled`] guard hands its connection back on
//! drop (straight to the oldest waiter), reset first when the manager says so. Must never hand
//! out a connection the manager judged dirty or broken.

mod queue;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use queue::{lock, Grant, Idle, State, Wait};

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
}

struct Inner<M: Manager> {
    manager: M,
    /// Replaced whole by [`Pool::reconfigure`].
    options: ArcSwap<PoolOptions>,
    /// `options.max_lifetime` in nanoseconds, read by every checkout and release without
    /// loading the options (kept equal to them by [`Pool::reconfigure`]).
    max_lifetime_ns: AtomicU64,
    /// Permits, idle connections and waiters (see `queue`).
    state: Mutex<State<M::Connection>>,
    /// Tells the sweep task of an earlier deadline, and of the pool's end.
    sweep: Arc<Notify>,
}

impl<M: Manager> Inner<M> {
    fn max_lifetime(&self) -> Duration {
        Duration::from_nanos(self.max_lifetime_ns.load(Ordering::Relaxed))
    }

    /// Gives a permit back (see [`State::release`]).
    fn release(&self, conn: Option<Idle<M::Connection>>) {
        let after = lock(&self.state).release(conn);
        after.run();
    }

    /// Puts a clean connection back (to a waiter or the idle list) at `now`, unless it
    /// outlived `max_lifetime`; either way its permit is given back.
    fn give_back(&self, conn: Box<M::Connection>, created: Instant, now: Instant) {
        let keep = now.saturating_duration_since(created) < self.max_lifetime();
        self.release(keep.then_some(Idle {
            conn,
            created,
            last_used: now,
        }));
    }

    /// Whether an idle connection may be handed out at `now`: alive, and younger than
    /// `max_lifetime`.
    fn usable(&self, idle: &mut Idle<M::Connection>, now: Instant) -> bool {
        now.saturating_duration_since(idle.created) < self.max_lifetime()
            && self.manager.is_alive(&mut idle.conn)
    }

    /// The most recently used idle connection that is usable at `now` (the others are closed).
    fn take_idle(&self, now: Instant) -> Option<Idle<M::Connection>> {
        loop {
            let mut idle = lock(&self.state).idle.pop()?;
            if self.usable(&mut idle, now) {
                return Some(idle);
            }
        }
    }
}

impl<M: Manager> Drop for Inner<M> {
    fn drop(&mut self) {
        // The sweep task ends once it finds the pool gone.
        self.sweep.notify_one();
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
    /// Creates a pool and starts its reaper and sweep tasks (needs a tokio runtime).
    pub fn new(manager: M, options: PoolOptions) -> Pool<M> {
        let sweep = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            manager,
            max_lifetime_ns: AtomicU64::new(nanos(options.max_lifetime)),
            state: Mutex::new(State::new(options.size)),
            options: ArcSwap::from_pointee(options),
            sweep: sweep.clone(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        tokio::spawn(queue::sweep(Arc::downgrade(&inner), sweep));
        Pool { inner }
    }

    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    pub fn options(&self) -> Arc<PoolOptions> {
        self.inner.options.load_full()
    }

    pub fn status(&self) -> PoolStatus {
        let state = lock(&self.inner.state);
        PoolStatus {
            size: state.size,
            idle: state.idle.len(),
            in_use: state.out,
            waiting: state.waiting(),
        }
    }

    /// Calls `f` with each idle connection, when it was opened and when it was last used.
    /// Holds the pool's lock meanwhile: keep `f` short.
    pub fn for_each_idle(&self, mut f: impl FnMut(&M::Connection, Instant, Instant)) {
        for entry in lock(&self.inner.state).idle.iter() {
            f(&entry.conn, entry.created, entry.last_used);
        }
    }

    /// Applies new options (a config reload): a larger size serves waiters at once; a smaller
    /// one closes idle connections beyond it now and takes permits back as connections come
    /// back, so the pool never holds more connections than its size for longer than they are
    /// in use. Checkouts already waiting keep the deadline they started with.
    pub fn reconfigure(&self, options: PoolOptions) {
        let size = options.size;
        self.inner
            .max_lifetime_ns
            .store(nanos(options.max_lifetime), Ordering::Relaxed);
        self.inner.options.store(Arc::new(options));
        let after = lock(&self.inner.state).resize(size);
        after.run();
    }

    /// A connection now if a permit is free (an idle one, or a new one), else `None`: for
    /// work that must count against the size but must not queue behind clients (health checks).
    pub async fn try_get(&self) -> Option<Result<Pooled<M>, PoolError<M::Error>>> {
        if !lock(&self.inner.state).try_take() {
            return None;
        }
        Some(self.with_grant(Grant::Permit).await)
    }

    /// An idle connection now, without waiting or connecting, if a permit is free and one is
    /// idle: the common checkout, taken without the (larger) future of [`Pool::get`]. Never
    /// jumps a queue (a free permit means nobody waits). `now`: the caller's clock reading (a
    /// session reads the clock once per wake-up), against which `max_lifetime` is checked.
    pub fn get_idle_now(&self, now: Instant) -> Option<Pooled<M>> {
        let mut first = {
            let mut state = lock(&self.inner.state);
            if state.out >= state.size {
                return None;
            }
            let idle = state.idle.pop()?;
            state.out += 1;
            idle
        };
        // From here the permit is the guard's: dropped without a connection, it goes back.
        let permit = Permit(Some(self.inner.clone()));
        let idle = if self.inner.usable(&mut first, now) {
            first
        } else {
            drop(first);
            self.inner.take_idle(now)?
        };
        Some(permit.into_pooled(idle.conn, idle.created))
    }

    /// Waits in line (FIFO) for a connection, up to the checkout timeout.
    pub async fn get(&self) -> Result<Pooled<M>, PoolError<M::Error>> {
        let grant = match Wait::checkout(&self.inner) {
            Ok(grant) => grant,
            Err(wait) => wait
                .await
                .map_err(|queue::TimedOut(waited)| PoolError::Timeout(waited))?,
        };
        self.with_grant(grant).await
    }

    /// The connection of `grant`: the one handed over, else an idle one, else a new one.
    async fn with_grant(
        &self,
        grant: Grant<M::Connection>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        // The permit is the guard's from here: a failed or abandoned connect gives it back.
        let permit = Permit(Some(self.inner.clone()));
        let idle = match grant {
            Grant::Handed(idle) => Some(idle),
            Grant::Permit => self.inner.take_idle(Instant::now()),
        };
        if let Some(idle) = idle {
            return Ok(permit.into_pooled(idle.conn, idle.created));
        }
        // Boxed: a connect is rare and its future large; inline, every checkout's future (held
        // by each waiting client) would be as large.
        let conn = Box::pin(self.inner.manager.connect())
            .await
            .map_err(PoolError::Connect)?;
        Ok(permit.into_pooled(Box::new(conn), Instant::now()))
    }

    /// Closes every idle connection (e.g. after their server went down).
    pub fn clear_idle(&self) {
        let idle = std::mem::take(&mut lock(&self.inner.state).idle);
        drop(idle);
    }
}

/// A checked-out connection; goes back to the pool (reset if needed) when dropped, with the
/// permit it holds.
pub struct Pooled<M: Manager> {
    conn: Option<Box<M::Connection>>,
    created: Instant,
    pool: Arc<Inner<M>>,
    /// When it is given back, if the holder said ([`Pooled::put_back`]); else the clock is
    /// read then.
    returned_at: Option<Instant>,
}

impl<M: Manager> Pooled<M> {
    /// Gives the connection back as dropping it does, at `now` (the holder's clock reading:
    /// a session reads the clock once per wake-up).
    pub fn put_back(mut self, now: Instant) {
        self.returned_at = Some(now);
    }

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
        let Some(mut conn) = self.conn.take() else {
            // Discarded: only the permit goes back.
            self.pool.release(None);
            return;
        };
        match self.pool.manager.returned(&conn) {
            Returned::Clean => {
                let now = self.returned_at.unwrap_or_else(Instant::now);
                self.pool.give_back(conn, self.created, now)
            }
            Returned::Broken => {
                drop(conn);
                self.pool.release(None);
            }
            Returned::NeedsReset => {
                // The permit travels with the reset, so the pool never exceeds its size; its
                // guard gives it back if the task is dropped before it finishes.
                let permit = Permit(Some(self.pool.clone()));
                let created = self.created;
                tokio::spawn(async move {
                    let Some(pool) = permit.0.as_ref() else {
                        return;
                    };
                    let limit = pool.options.load().reset_timeout;
                    let reset = pool.manager.reset(&mut conn);
                    if let Ok(Ok(())) = tokio::time::timeout(limit, reset).await {
                        permit.give_back(conn, created);
                    }
                });
            }
        }
    }
}

/// A permit held without a connection (before a checkout has one, during a reset): given back
/// when dropped.
struct Permit<M: Manager>(Option<Arc<Inner<M>>>);

impl<M: Manager> Permit<M> {
    /// The permit and `conn`, checked out.
    fn into_pooled(mut self, conn: Box<M::Connection>, created: Instant) -> Pooled<M> {
        Pooled {
            conn: Some(conn),
            created,
            // Infallible: only the consuming methods take the pool out.
            pool: self.0.take().expect("a permit has its pool until consumed"),
            returned_at: None,
        }
    }

    /// Gives the permit back with a connection.
    fn give_back(mut self, conn: Box<M::Connection>, created: Instant) {
        if let Some(pool) = self.0.take() {
            pool.give_back(conn, created, Instant::now());
        }
    }
}

impl<M: Manager> Drop for Permit<M> {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            pool.release(None);
        }
    }
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
        let expired: Vec<_> = {
            let mut state = lock(&pool.state);
            let mut keep = state.idle.len();
            let (gone, kept) = std::mem::take(&mut state.idle).into_iter().partition(|e| {
                let expired = e.created.elapsed() >= opts.max_lifetime
                    || (e.last_used.elapsed() >= opts.idle_timeout && keep > opts.min_idle);
                keep -= usize::from(expired);
                expired
            });
            state.idle = kept;
            gone
        };
        // Closed outside the lock.
        drop(expired);
        while lock(&pool.state).idle.len() < opts.min_idle {
            if !lock(&pool.state).try_take() {
                break;
            }
            let permit = Permit(Some(pool.clone()));
            match pool.manager.connect().await {
                Ok(conn) => permit.give_back(Box::new(conn), Instant::now()),
                Err(_) => break,
            }
        }
    }
}
