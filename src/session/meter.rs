//! What a session counts for SHOW STATS, SHOW CLIENTS and SHOW HOT_SLOTS: plain numbers kept in
//! the session and added to its pool's atomic counters when it lets go of the server connection
//! (or, holding none, to the unpooled ones when a request ends). One clock reading per wake-up
//! of the session (what it does until it next waits is timed by it, as PgBouncer's cached time),
//! a few integer adds per statement and a handful of Relaxed atomic adds per transaction. Never
//! blocks.

use std::time::Instant;

use super::Session;
use crate::backend::BackendManager;
use crate::config::PoolMode;
use crate::pool::Pooled;
use crate::stats::{ClientHandle, ClientState, Totals};
use crate::transport::Stream;
use crate::wire::client_tag as tag;

/// A session's counts not yet added to the shared counters.
pub(super) struct Meter {
    /// The client's entry in the registry (SHOW CLIENTS, KILL_CLIENT).
    pub(super) client: ClientHandle,
    pending: Totals,
    /// When the server connection held now was taken (µs since counting started, as
    /// `now_us`).
    held_since: Option<u64>,
    /// When the request in progress began (its first message; µs as `now_us`).
    request_since: Option<u64>,
    /// The slot of the request's latest keyed statement.
    slot: Option<u16>,
    /// Bytes to and from the client so far, and before the request in progress.
    bytes: u64,
    bytes_at_request: u64,
    /// The slot of the last request that ended and the bytes before it: its answer is still
    /// being written, so its bytes are given to the slot when the next request starts (or the
    /// session ends).
    finished: Option<(u16, u64)>,
    /// The clock read when the session last woke up ([`Meter::wake`]).
    now: Instant,
    /// The same reading in microseconds since counting started (`Stats::micros`): what the
    /// counters take, so that timing a request or a transaction is a subtraction.
    now_us: u64,
}

impl Meter {
    pub(super) fn new(client: ClientHandle, stats: &crate::stats::Stats) -> Meter {
        let now = Instant::now();
        Meter {
            client,
            pending: Totals::default(),
            held_since: None,
            request_since: None,
            slot: None,
            bytes: 0,
            bytes_at_request: 0,
            finished: None,
            now,
            now_us: stats.micros(now),
        }
    }

    /// Reads the clock once for this wake-up of the session: what it does until it waits again
    /// (a request starting, a checkout that finds a connection at once, a request ending, a
    /// transaction ending) is timed by this reading.
    pub(super) fn wake(&mut self, stats: &crate::stats::Stats) {
        self.now = Instant::now();
        self.now_us = stats.micros(self.now);
    }

    /// The clock as read at the session's latest wake-up (or after its latest wait in a
    /// checkout).
    pub(super) fn now(&self) -> Instant {
        self.now
    }

    /// Bytes read from the client.
    pub(super) fn received(&mut self, n: usize) {
        self.pending.received += n as u64;
        self.bytes += n as u64;
    }

    /// Adds what is still pending when the session ends.
    pub(super) fn flush_at_end(
        &mut self,
        conn: Option<&Pooled<BackendManager>>,
        stats: &crate::stats::Stats,
    ) {
        if let Some((slot, before)) = self.finished.take() {
            let now = stats.micros(Instant::now());
            stats.slots.bytes(slot, now, self.bytes - before);
        }
        let pending = std::mem::take(&mut self.pending);
        if pending.is_zero() {
            return;
        }
        match conn {
            Some(conn) => conn.manager().stats.add(&pending),
            None => stats.unpooled.add(&pending),
        }
    }

    /// Bytes written to the client.
    pub(super) fn sent(&mut self, n: usize) {
        self.pending.sent += n as u64;
        self.bytes += n as u64;
    }
}

/// When a checkout began, and whether it ended then too (it found a connection without
/// awaiting: its wait is not worth a clock reading).
#[derive(Debug, Clone, Copy)]
pub(super) enum Checkout {
    /// µs since counting started, as `Meter::now_us`.
    Now(u64),
    Since(u64),
}

impl<S: Stream> Session<S> {
    /// A client frame (`len` bytes, counted when read) is handled: it starts a request unless
    /// one is in progress, and counts as a query when it runs a statement.
    pub(super) fn meter_frame(&mut self, t: u8, len: usize) {
        let meter = &mut self.meter;
        if meter.request_since.is_none() {
            let now = meter.now_us;
            meter.request_since = Some(now);
            meter.bytes_at_request = meter.bytes.saturating_sub(len as u64);
            if let Some((slot, before)) = meter.finished.take() {
                let bytes = meter.bytes_at_request.saturating_sub(before);
                self.shared.stats.slots.bytes(slot, now, bytes);
            }
            meter.client.entry.set_request_micros(now);
        }
        if matches!(t, tag::QUERY | tag::EXECUTE | tag::FUNCTION_CALL) {
            meter.pending.query_count += 1;
        }
    }

    /// The statement being routed names a key in `slot`.
    pub(super) fn meter_slot(&mut self, slot: u16) {
        let at = self.meter.request_since.unwrap_or(self.meter.now_us);
        self.shared.stats.slots.statement(slot, at);
        self.meter.slot = Some(slot);
        self.cutover.slot = Some(slot);
    }

    /// The request in progress got its last answer (ReadyForQuery, or pgshard's own).
    pub(super) fn meter_request_done(&mut self) {
        let Some(since) = self.meter.request_since.take() else {
            return;
        };
        self.meter.pending.query_time += self.meter.now_us.saturating_sub(since);
        if let Some(slot) = self.meter.slot.take() {
            self.meter.finished = Some((slot, self.meter.bytes_at_request));
        }
        if self.server.is_none() {
            self.meter_flush(None);
        } else if self.mode == PoolMode::Session {
            // A session-mode client holds its connection for good: count as it goes.
            let pending = std::mem::take(&mut self.meter.pending);
            if let Some(conn) = self.server.as_ref() {
                conn.manager().stats.add(&pending);
            }
        }
    }

    /// A checkout begins (µs since counting started): the client waits for a server connection.
    pub(super) fn meter_checkout_starts(&self) -> u64 {
        let now = self.meter.now_us;
        self.meter.client.entry.start_waiting(now);
        now
    }

    /// The checkout `since` ended: with the connection now held, or without one.
    pub(super) fn meter_checkout_ends(&mut self, since: Checkout) {
        let Some(conn) = self.server.as_deref() else {
            self.meter.client.entry.set_state(ClientState::Idle);
            return;
        };
        let pid = conn.cancel_key().process_id;
        let (since, now) = match since {
            Checkout::Now(at) => (at, at),
            Checkout::Since(at) => {
                // The checkout waited: the clock moved on since the wake-up.
                self.meter.wake(&self.shared.stats);
                (at, self.meter.now_us)
            }
        };
        let meter = &mut self.meter;
        meter.pending.wait_time += now.saturating_sub(since);
        meter.pending.server_assignment_count += 1;
        meter.held_since = Some(now);
        let pool = self.server.as_ref().map_or(0, |c| c.manager().stats.id);
        meter.client.entry.hold_server(pool, pid);
    }

    /// The session lets go of `conn`: one transaction ends; the counts go to its pool.
    pub(super) fn meter_release(&mut self, conn: &Pooled<BackendManager>) {
        if let Some(since) = self.meter.held_since.take() {
            self.meter.pending.xact_count += 1;
            self.meter.pending.xact_time += self.meter.now_us.saturating_sub(since);
        }
        self.meter_flush(Some(conn));
        self.meter.client.entry.release_server();
    }

    /// Adds the pending counts to `conn`'s pool, or to the unpooled counters.
    fn meter_flush(&mut self, conn: Option<&Pooled<BackendManager>>) {
        if self.meter.pending.is_zero() {
            return;
        }
        let pending = std::mem::take(&mut self.meter.pending);
        match conn {
            Some(conn) => conn.manager().stats.add(&pending),
            None => self.shared.stats.unpooled.add(&pending),
        }
    }
}
