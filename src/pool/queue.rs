//! The pool's bookkeeping under its one lock: how many connections are out, the idle list, and
//! the FIFO of waiting checkouts, a returned connection handed straight to the oldest waiter, and
//! the sweep that times waiters out. Must never let more than `size` connections be out at once
//! (except those a shrink is still taking back), nor serve a later waiter before an earlier one.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Inner, Manager};

/// An idle connection. Boxed once, when opened: a checkout moves a pointer, and the session
/// holding one (or waiting for one) stays small.
pub(super) struct Idle<C> {
    pub(super) conn: Box<C>,
    pub(super) created: Instant,
    pub(super) last_used: Instant,
}

/// What a checkout is given: a connection handed over by the client that returned it (just
/// used, so not checked again), or only the right to take an idle one or open one.
pub(super) enum Grant<C> {
    Handed(Idle<C>),
    Permit,
}

/// Everything the pool's lock guards.
pub(super) struct State<C> {
    /// `options.size`, kept here so a checkout reads it under the lock it takes anyway.
    pub(super) size: usize,
    /// Permits out: connections checked out, being opened for a checkout, or being reset.
    pub(super) out: usize,
    /// Most recently used last.
    pub(super) idle: Vec<Idle<C>>,
    /// Checkouts waiting, oldest first. Non-empty only while `out >= size`.
    waiters: VecDeque<Arc<Waiter<C>>>,
    /// When the sweep task next wakes, if it is armed (`None`: it sleeps until a waiter comes).
    sweep_at: Option<Instant>,
}

/// What to do once the lock is released: wake waiters, close connections. Doing it under the
/// lock would make every other checkout wait for a socket's close. The single cases allocate
/// nothing (a hand-off happens on every release while clients wait).
#[must_use]
pub(super) enum AfterUnlock<C> {
    Nothing,
    Wake(Waker),
    Close(Idle<C>),
    Many {
        wake: Vec<Waker>,
        close: Vec<Idle<C>>,
    },
}

impl<C> AfterUnlock<C> {
    /// Wakes and closes (the lock must be released by now).
    pub(super) fn run(self) {
        match self {
            AfterUnlock::Nothing => {}
            AfterUnlock::Wake(waker) => waker.wake(),
            AfterUnlock::Close(idle) => drop(idle),
            AfterUnlock::Many { wake, close } => {
                drop(close);
                wake.into_iter().for_each(Waker::wake);
            }
        }
    }
}

impl<C> State<C> {
    pub(super) fn new(size: usize) -> Self {
        State {
            size,
            out: 0,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            sweep_at: None,
        }
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Takes a permit if one is free (nobody waits then).
    pub(super) fn try_take(&mut self) -> bool {
        let free = self.out < self.size;
        self.out += usize::from(free);
        free
    }

    /// Gives a permit back, with the connection it held if that is still fit to keep: to the
    /// oldest waiter, else to the idle list. While a shrink is owed, the connection is closed
    /// and the permit leaves circulation instead.
    pub(super) fn release(&mut self, conn: Option<Idle<C>>) -> AfterUnlock<C> {
        if self.out > self.size {
            self.out -= 1;
            return conn.map_or(AfterUnlock::Nothing, AfterUnlock::Close);
        }
        if let Some(waiter) = self.waiters.pop_front() {
            let grant = conn.map_or(Grant::Permit, Grant::Handed);
            return waiter
                .settle(Slot::Granted(grant))
                .map_or(AfterUnlock::Nothing, AfterUnlock::Wake);
        }
        self.out -= 1;
        self.idle.extend(conn);
        AfterUnlock::Nothing
    }

    /// Applies a new size: grants the permits a larger one frees to waiters, and closes idle
    /// connections (the least recently used) beyond what a smaller one leaves room for.
    pub(super) fn resize(&mut self, size: usize) -> AfterUnlock<C> {
        self.size = size;
        let room = size.saturating_sub(self.out);
        let surplus = self.idle.len().saturating_sub(room);
        let close = self.idle.drain(..surplus).collect();
        let mut wake = Vec::new();
        while self.out < self.size {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            self.out += 1;
            wake.extend(waiter.settle(Slot::Granted(Grant::Permit)));
        }
        AfterUnlock::Many { wake, close }
    }

    /// Queues a checkout that found no free permit; `true`: the sweep must be told of an
    /// earlier deadline than it sleeps until.
    fn enqueue(&mut self, waiter: Arc<Waiter<C>>) -> bool {
        let deadline = waiter.deadline;
        self.waiters.push_back(waiter);
        let earlier = self.sweep_at.is_none_or(|at| deadline < at);
        if earlier {
            self.sweep_at = Some(deadline);
        }
        earlier
    }

    /// Times out the waiters whose deadline passed; sets when the sweep wakes next.
    fn sweep(&mut self, now: Instant) -> AfterUnlock<C> {
        let mut wake = Vec::new();
        self.waiters.retain(|w| {
            let expired = w.deadline <= now;
            if expired {
                wake.extend(w.settle(Slot::TimedOut));
            }
            !expired
        });
        self.sweep_at = self.waiters.iter().map(|w| w.deadline).min();
        AfterUnlock::Many {
            wake,
            close: Vec::new(),
        }
    }
}

/// Where a waiting checkout learns its outcome.
enum Slot<C> {
    Waiting(Option<Waker>),
    Granted(Grant<C>),
    TimedOut,
    /// The outcome was taken (or the checkout gave up).
    Done,
}

/// One waiting checkout, shared by the queue and the checkout's future.
pub(super) struct Waiter<C> {
    deadline: Instant,
    slot: Mutex<Slot<C>>,
}

impl<C> Waiter<C> {
    /// Stores the outcome; the waker to wake once the pool's lock is released. Called only for a
    /// waiter just taken off the queue, so it is still waiting.
    fn settle(&self, outcome: Slot<C>) -> Option<Waker> {
        match std::mem::replace(&mut *lock(&self.slot), outcome) {
            Slot::Waiting(waker) => waker,
            _ => None,
        }
    }
}

/// A wait ended without a connection after this long (the timeout it started with).
pub(super) struct TimedOut(pub(super) Duration);

/// A checkout waiting in line. Dropped early (the client left), it leaves the queue, and a
/// connection handed to it meanwhile goes to the next waiter.
pub(super) struct Wait<'a, M: Manager> {
    inner: &'a Inner<M>,
    waiter: Option<Arc<Waiter<M::Connection>>>,
    timeout: Duration,
}

impl<'a, M: Manager> Wait<'a, M> {
    /// A permit now if one is free; otherwise a place in line, to be awaited.
    pub(super) fn checkout(inner: &'a Inner<M>) -> Result<Grant<M::Connection>, Wait<'a, M>> {
        let mut state = lock(&inner.state);
        if state.try_take() {
            return Ok(Grant::Permit);
        }
        let timeout = inner.options.load().checkout_timeout;
        let waiter = Arc::new(Waiter {
            deadline: Instant::now() + timeout,
            slot: Mutex::new(Slot::Waiting(None)),
        });
        let tell_sweep = state.enqueue(waiter.clone());
        drop(state);
        if tell_sweep {
            inner.sweep.notify_one();
        }
        Err(Wait {
            inner,
            waiter: Some(waiter),
            timeout,
        })
    }
}

impl<M: Manager> Future for Wait<'_, M> {
    type Output = Result<Grant<M::Connection>, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(waiter) = self.waiter.as_ref() else {
            return Poll::Ready(Err(TimedOut(self.timeout)));
        };
        let mut slot = lock(&waiter.slot);
        let outcome = match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Granted(grant) => Ok(grant),
            Slot::TimedOut | Slot::Done => Err(TimedOut(self.timeout)),
            Slot::Waiting(waker) => {
                let waker = match waker {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *slot = Slot::Waiting(Some(waker));
                return Poll::Pending;
            }
        };
        drop(slot);
        self.waiter = None;
        Poll::Ready(outcome)
    }
}

impl<M: Manager> Drop for Wait<'_, M> {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let mut state = lock(&self.inner.state);
        // Lock order everywhere: the pool's state, then a waiter's slot.
        let outcome = std::mem::replace(&mut *lock(&waiter.slot), Slot::Done);
        let after = match outcome {
            Slot::Waiting(_) => {
                // Still queued (an outcome is only ever set while taking it off the queue).
                state.waiters.retain(|w| !Arc::ptr_eq(w, &waiter));
                AfterUnlock::Nothing
            }
            Slot::Granted(Grant::Handed(idle)) => state.release(Some(idle)),
            Slot::Granted(Grant::Permit) => state.release(None),
            Slot::TimedOut | Slot::Done => AfterUnlock::Nothing,
        };
        drop(state);
        after.run();
    }
}

/// Times out waiting checkouts at their deadlines: one timer per pool, not one per wait. Ends
/// when the pool is dropped.
pub(super) async fn sweep<M: Manager>(pool: Weak<Inner<M>>, told: Arc<Notify>) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut state = lock(&pool.state);
            let after = state.sweep(Instant::now());
            let next = state.sweep_at;
            drop(state);
            after.run();
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = told.notified() => {}
                }
            }
            // Nobody waits: sleep until a waiter comes (or the pool is dropped: see `Inner`).
            None => told.notified().await,
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks panics midway through an update: the data stays valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
