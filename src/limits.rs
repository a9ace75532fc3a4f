//! Per-user limits, shared by every session of the user and kept across reloads: how many
//! clients the user has (against `max_client_connections`), and a statement rate limit as a
//! token bucket (the generic cell rate algorithm: one atomic "theoretical arrival time", no
//! lock). Decides and counts; never sleeps or talks to a socket itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::UserConfig;

/// One user's limits and counts.
#[derive(Debug)]
pub struct UserLimits {
    /// The user's clients now (kept across reloads).
    pub clients: Arc<AtomicUsize>,
    pub max_clients: Option<usize>,
    pub rate: Option<Arc<RateLimit>>,
}

impl UserLimits {
    /// The limits `user` sets, keeping the client count (and the bucket, if its rate and burst
    /// did not change) of `previous`.
    pub fn new(user: &UserConfig, previous: Option<&UserLimits>) -> UserLimits {
        let rate = user.statements_per_second.map(|per_second| {
            let burst = user
                .statement_burst
                .unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
            let wait = Duration::from_millis(user.rate_limit_wait_ms);
            match previous.and_then(|p| p.rate.as_ref()) {
                Some(old) if old.same_as(per_second, burst, wait) => old.clone(),
                _ => Arc::new(RateLimit::new(per_second, burst, wait)),
            }
        });
        UserLimits {
            clients: previous.map_or_else(Default::default, |p| p.clients.clone()),
            max_clients: user.max_client_connections,
            rate,
        }
    }

    /// Counts a new client, or says the user is at its limit (`Err(limit)`).
    pub fn admit(&self) -> Result<ClientSlot, usize> {
        let count = self.clients.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ClientSlot(self.clients.clone());
        match self.max_clients {
            Some(max) if count > max => Err(max),
            _ => Ok(slot),
        }
    }
}

/// A counted client; uncounted when dropped.
#[derive(Debug)]
pub struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket of `burst` statements refilled at `per_second`, as one atomic time.
#[derive(Debug)]
pub struct RateLimit {
    /// Nanoseconds between two statements at the limit rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run: the burst.
    tolerance: u64,
    /// Longest a statement may wait.
    max_wait: Duration,
    per_second: f64,
    burst: u32,
    /// Nanoseconds since `epoch` at which the bucket is full again.
    tat: AtomicU64,
    epoch: Instant,
}

/// What the bucket says about one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run it after waiting this long (zero: now). Its token is taken.
    After(Duration),
    /// Over the limit for longer than the wait allowed: refuse it (no token taken).
    Refused,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32, max_wait: Duration) -> RateLimit {
        let interval = (1e9 / per_second).max(1.0) as u64;
        RateLimit {
            interval,
            tolerance: interval * u64::from(burst.max(1)),
            max_wait,
            per_second,
            burst,
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn same_as(&self, per_second: f64, burst: u32, max_wait: Duration) -> bool {
        self.per_second == per_second && self.burst == burst && self.max_wait == max_wait
    }

    /// Longest a statement may wait.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Takes a token for a statement arriving at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let max_wait = self.max_wait.as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.interval;
            let wait = next.saturating_sub(now + self.tolerance);
            if wait > max_wait {
                return Admission::Refused;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Admission::After(Duration::from_nanos(wait)),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_statements_wait_then_are_refused() {
        let limit = RateLimit::new(10.0, 3, Duration::from_millis(250));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.admit(t0), Admission::After(Duration::ZERO));
        }
        // The 4th waits one interval (100 ms), the 5th two, the 6th would wait 300 ms > 250.
        assert_eq!(
            limit.admit(t0),
            Admission::After(Duration::from_millis(100))
        );
        assert_eq!(
            limit.admit(t0),
            Admission::After(Duration::from_millis(200))
        );
        assert_eq!(limit.admit(t0), Admission::Refused);
        // A refused statement took no token; a second later the bucket has refilled.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(limit.admit(later), Admission::After(Duration::ZERO));
    }

    #[test]
    fn the_client_count_follows_its_slots_and_the_limit() {
        let user: UserConfig =
            toml::from_str("name = \"u\"\npassword = \"p\"\nmax_client_connections = 2\n").unwrap();
        let limits = UserLimits::new(&user, None);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert_eq!(limits.admit().unwrap_err(), 2);
        assert_eq!(limits.clients.load(Ordering::Relaxed), 2);
        drop(a);
        let reloaded = UserLimits::new(&user, Some(&limits));
        assert_eq!(reloaded.clients.load(Ordering::Relaxed), 1);
        assert!(reloaded.admit().is_ok());
    }
}
