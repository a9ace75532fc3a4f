//! The registry of connected clients for SHOW CLIENTS, KILL_CLIENT and a graceful shutdown: one
//! entry per client, its fixed facts and its state in atomics the session stores into (no
//! locks) and the console reads. Registering and leaving take a lock (once per connection, never
//! per statement); nothing here touches a connection, it only wakes the session that owns one.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use crate::cancel::{CancelSent, CancelSlot, ServerKey};

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Holds no server connection.
    Idle,
    /// Waits for a server connection.
    Waiting,
    /// Holds a server connection.
    Active,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    /// The client's id (its cancel key's process id, unique among connected clients), as
    /// KILL_CLIENT takes it.
    pub id: i32,
    /// Its cancel key's secret.
    secret: i32,
    /// The server connections a CancelRequest with its key reaches now.
    pub cancel: CancelSlot,
    pub user: Arc<str>,
    pub database: Arc<str>,
    /// The client's address (`None` for a connection that is not TCP).
    pub addr: Option<SocketAddr>,
    /// The `application_name` the client gave at startup.
    pub application_name: String,
    pub connect_time: SystemTime,
    /// A console client (database `pgshard` or `pgbouncer`).
    pub console: bool,
    state: AtomicU8,
    /// Start of the latest request, microseconds after counting started (0: none yet).
    request_micros: AtomicU64,
    /// Start of the checkout the client waits for (valid while its state is waiting).
    wait_micros: AtomicU64,
    /// The held server connection: its pool's id (`PoolCounters::id`) and its backend pid.
    server_pool: AtomicU32,
    server_pid: AtomicI32,
    killed: AtomicBool,
    /// Whether the session waits between transactions (a graceful shutdown may close it).
    pub presence: Presence,
    /// The session task's waker, kept from the first poll of [`ClientEntry::until_stopped`]
    /// for the session's life (a task's waker wakes that task whichever poll it came from).
    waker: OnceLock<Waker>,
}

impl ClientEntry {
    /// The cancel key sent to the client in BackendKeyData.
    pub fn key(&self) -> (i32, i32) {
        (self.id, self.secret)
    }

    /// Lists these connections (one per shard of a cross-shard statement) for the client's
    /// CancelRequest until the returned guard drops; drop it before the connections go back
    /// to the pool.
    pub fn reach_all<'a>(
        self: &Arc<Self>,
        keys: impl IntoIterator<Item = &'a Arc<ServerKey>>,
    ) -> SlotInUse {
        self.cancel.set_all(keys);
        SlotInUse(self.clone())
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Waits for a server connection since `micros` (after counting started).
    pub fn start_waiting(&self, micros: u64) {
        self.wait_micros.store(micros, Ordering::Relaxed);
        self.set_state(ClientState::Waiting);
    }

    /// Since when the client waits for a server connection, if it does.
    pub fn waiting_since(&self) -> Option<u64> {
        (self.state() == ClientState::Waiting).then(|| self.wait_micros.load(Ordering::Relaxed))
    }

    /// Now holds a connection of pool `pool` to the server process `pid`.
    pub fn hold_server(&self, pool: u32, pid: i32) {
        self.server_pool.store(pool, Ordering::Relaxed);
        self.server_pid.store(pid, Ordering::Relaxed);
        self.set_state(ClientState::Active);
    }

    /// Holds no server connection any more.
    pub fn release_server(&self) {
        self.server_pid.store(0, Ordering::Relaxed);
        self.set_state(ClientState::Idle);
    }

    /// The pool id and backend pid of the held server connection, if any.
    pub fn server(&self) -> Option<(u32, i32)> {
        let pid = self.server_pid.load(Ordering::Relaxed);
        (pid != 0).then(|| (self.server_pool.load(Ordering::Relaxed), pid))
    }

    pub fn set_request_micros(&self, micros: u64) {
        self.request_micros.store(micros.max(1), Ordering::Relaxed);
    }

    /// Start of the latest request (microseconds after counting started), if any.
    pub fn request_micros(&self) -> Option<u64> {
        Some(self.request_micros.load(Ordering::Relaxed)).filter(|&m| m != 0)
    }

    /// Whether KILL_CLIENT asked the client's session to end.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Asks the client's session to end (KILL_CLIENT); it ends at its next wake-up, which this
    /// causes.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Why the session must end now, if it must: KILL_CLIENT, or a graceful shutdown that
    /// claimed it while it waited between transactions.
    pub fn stopped(&self) -> Option<Stopped> {
        if self.is_killed() {
            Some(Stopped::Killed)
        } else if self.presence.is_closing() {
            Some(Stopped::Closed)
        } else {
            None
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.get() {
            waker.wake_by_ref();
        }
    }

    /// Runs `work` until it ends or the client is told to stop (KILL_CLIENT, or a shutdown that
    /// closes it). The task's waker is kept from the first poll of the session's first call.
    pub fn until_stopped<F: Future>(&self, work: F) -> UntilStopped<'_, F> {
        UntilStopped {
            work: Box::pin(work),
            entry: self,
        }
    }
}

/// Why a session was told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// KILL_CLIENT from the admin console.
    Killed,
    /// A graceful shutdown closed it between transactions.
    Closed,
}

/// See [`ClientEntry::until_stopped`].
pub struct UntilStopped<'a, F> {
    work: Pin<Box<F>>,
    entry: &'a ClientEntry,
}

impl<F: Future> Future for UntilStopped<'_, F> {
    type Output = Result<F::Output, Stopped>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.entry.waker.get().is_none() {
            // Once per session: later calls are polled by the same task.
            let _ = self.entry.waker.set(cx.waker().clone());
        }
        if let Some(stopped) = self.entry.stopped() {
            return Poll::Ready(Err(stopped));
        }
        self.work.as_mut().poll(cx).map(Ok)
    }
}

/// Every connected client.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<HashMap<i32, Arc<ClientEntry>>>,
    /// Logins so far (console clients aside).
    logins: AtomicU64,
}

/// Clears a client's [`CancelSlot`] on drop, so a cancel never reaches connections given back.
#[derive(Debug)]
#[must_use = "the connections stop being reachable by a cancel when this guard drops"]
pub struct SlotInUse(Arc<ClientEntry>);

impl Drop for SlotInUse {
    fn drop(&mut self) {
        self.0.cancel.set(None);
    }
}

/// Who a new client is.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub addr: Option<SocketAddr>,
    pub application_name: String,
    pub console: bool,
}

impl ClientRegistry {
    /// Adds a client under a fresh cancel key whose process id no connected client has (its
    /// id); removed when the handle drops.
    pub fn register(self: &Arc<Self>, client: NewClient) -> ClientHandle {
        let mut clients = self.lock();
        let (id, secret) = loop {
            let key = crate::cancel::random_key();
            if !clients.contains_key(&key.0) {
                break key;
            }
        };
        let entry = Arc::new(ClientEntry {
            id,
            secret,
            cancel: CancelSlot::default(),
            user: client.user,
            database: client.database,
            addr: client.addr,
            application_name: client.application_name,
            connect_time: SystemTime::now(),
            console: client.console,
            state: AtomicU8::new(ClientState::Idle as u8),
            request_micros: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            server_pool: AtomicU32::new(0),
            server_pid: AtomicI32::new(0),
            killed: AtomicBool::new(false),
            presence: Presence::default(),
            waker: OnceLock::new(),
        });
        if !client.console {
            self.logins.fetch_add(1, Ordering::Relaxed);
        }
        clients.insert(id, entry.clone());
        drop(clients);
        ClientHandle {
            entry,
            registry: self.clone(),
        }
    }

    /// The connected clients, ordered by id.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<Arc<ClientEntry>> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Client logins so far (console clients aside).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    pub fn get(&self, id: i32) -> Option<Arc<ClientEntry>> {
        self.lock().get(&id).cloned()
    }

    /// A cancel for each server connection a CancelRequest with this key reaches: those its
    /// client is using now (none for a key no connected client has), each counted as pending
    /// until sent (see [`CancelSlot::start_cancels`]).
    pub fn start_cancels(&self, process_id: i32, secret_key: i32) -> Vec<CancelSent> {
        let entry = self
            .lock()
            .get(&process_id)
            .filter(|entry| entry.secret == secret_key)
            .cloned();
        entry.map(|e| e.cancel.start_cancels()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A graceful shutdown closes every session that waits between transactions: each is
    /// claimed and woken, and ends with an ErrorResponse saying so.
    pub fn close_waiting(&self) {
        for entry in self.lock().values() {
            if entry.presence.claim_if_waiting() {
                entry.wake();
            }
        }
    }

    /// Tells every client's session to close now (the shutdown's end): each leaves at its
    /// next wake-up, which this causes, in a transaction or not.
    pub fn close_all(&self) {
        for entry in self.lock().values() {
            entry.presence.close();
            entry.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<ClientEntry>>> {
        // A panic while holding the lock leaves a valid map behind.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a session stands, for a graceful shutdown: waiting between transactions (it may be
/// closed), busy, or being closed. Claimed with compare-and-swap on both sides, so a session
/// that just received a request is never closed under it.
#[derive(Debug, Default)]
pub struct Presence(AtomicU8);

const BUSY: u8 = 0;
const WAITING: u8 = 1;
const CLOSING: u8 = 2;

impl Presence {
    /// The session waits for its client between transactions, holding nothing it owes.
    pub fn waiting(&self) {
        let _ = self
            .0
            .compare_exchange(BUSY, WAITING, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The session has work; `false` when the shutdown claimed it first (it must leave).
    pub fn busy(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now != CLOSING,
        }
    }

    /// The shutdown closes the session whatever it is doing.
    pub fn close(&self) {
        self.0.store(CLOSING, Ordering::Release);
    }

    /// A graceful shutdown claimed the session: it must end instead of serving on.
    pub fn is_closing(&self) -> bool {
        self.0.load(Ordering::Acquire) == CLOSING
    }

    /// The shutdown claims a waiting session; `true` when it may be closed now.
    pub fn claim_if_waiting(&self) -> bool {
        self.0
            .compare_exchange(WAITING, CLOSING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// A client's place in the registry; leaves it on drop.
#[derive(Debug)]
pub struct ClientHandle {
    pub entry: Arc<ClientEntry>,
    registry: Arc<ClientRegistry>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let mut clients = self.registry.lock();
        if clients
            .get(&self.entry.id)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
        {
            clients.remove(&self.entry.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> NewClient {
        NewClient {
            user: "app".into(),
            database: "app".into(),
            addr: None,
            application_name: String::new(),
            console: false,
        }
    }

    #[test]
    fn clients_leave_the_registry_when_their_handle_drops() {
        let registry = Arc::new(ClientRegistry::default());
        let a = registry.register(client());
        let b = registry.register(client());
        let (a_id, b_id) = (a.entry.id, b.entry.id);
        assert_ne!(a_id, b_id, "each client has its own key");
        let mut ids = [a_id, b_id];
        ids.sort();
        assert_eq!(
            registry.list().iter().map(|c| c.id).collect::<Vec<_>>(),
            ids
        );
        a.entry.hold_server(2, 1234);
        assert_eq!(registry.get(a_id).unwrap().server(), Some((2, 1234)));
        assert_eq!(registry.get(a_id).unwrap().state(), ClientState::Active);
        drop(a);
        assert!(registry.get(a_id).is_none());
        drop(b);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_cancel_key_reaches_the_connections_its_client_uses_now() {
        let registry = Arc::new(ClientRegistry::default());
        let handle = registry.register(client());
        let (pid, secret) = handle.entry.key();
        assert!(pid > 0, "a process id is positive");
        assert!(registry.start_cancels(pid, secret).is_empty());
        let key = Arc::new(ServerKey::new("127.0.0.1:5432".into(), 7, 9));
        handle.entry.cancel.set(Some(&key));
        let pids = |sent: Vec<CancelSent>| -> Vec<i32> {
            sent.iter().map(|s| s.key().process_id).collect()
        };
        assert_eq!(pids(registry.start_cancels(pid, secret)), [7]);
        assert!(
            registry
                .start_cancels(pid, secret.wrapping_add(1))
                .is_empty(),
            "a wrong secret reaches nothing"
        );
        let other = Arc::new(ServerKey::new("127.0.0.1:5432".into(), 8, 9));
        let in_use = handle.entry.reach_all([&key, &other]);
        assert_eq!(pids(registry.start_cancels(pid, secret)), [7, 8]);
        drop(in_use);
        assert!(registry.start_cancels(pid, secret).is_empty());
        handle.entry.cancel.set(Some(&key));
        drop(handle);
        assert!(
            registry.start_cancels(pid, secret).is_empty(),
            "a departed client's key reaches nothing"
        );
    }

    #[tokio::test]
    async fn a_killed_client_stops_waiting() {
        let registry = Arc::new(ClientRegistry::default());
        let handle = registry.register(client());
        let entry = handle.entry.clone();
        let task = tokio::spawn(async move {
            handle
                .entry
                .until_stopped(std::future::pending::<()>())
                .await
        });
        tokio::task::yield_now().await;
        entry.kill();
        assert_eq!(task.await.unwrap(), Err(Stopped::Killed));
    }

    #[tokio::test]
    async fn a_shutdown_closes_waiting_clients_only() {
        let registry = Arc::new(ClientRegistry::default());
        let waiting = registry.register(client());
        let busy = registry.register(client());
        waiting.entry.presence.waiting();
        let entry = waiting.entry.clone();
        let task =
            tokio::spawn(async move { entry.until_stopped(std::future::pending::<()>()).await });
        tokio::task::yield_now().await;
        registry.close_waiting();
        assert_eq!(task.await.unwrap(), Err(Stopped::Closed));
        assert_eq!(busy.entry.stopped(), None);
        assert!(busy.entry.presence.busy(), "a busy client is not claimed");
    }

    #[test]
    fn a_waiting_session_is_claimed_once_and_then_must_leave() {
        let p = Presence::default();
        assert!(!p.claim_if_waiting(), "a busy session is never claimed");
        p.waiting();
        assert!(p.busy());
        p.waiting();
        assert!(p.claim_if_waiting());
        assert!(!p.busy(), "claimed: the session leaves instead of serving");
        assert!(!p.claim_if_waiting());
    }
}
