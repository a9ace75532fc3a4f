//! Cancelling a server process's running statement: its key (address and BackendKeyData), the
//! CancelRequest sent for it, and which of those requests are still on their way. PostgreSQL's
//! postmaster signals the process twice (the process, then its group), so the second signal can
//! land after the cancelled statement ended and cancel the next one on that connection: a
//! connection a cancel was sent for is not used again (by pgshard or, through the pool, by any
//! client) until the server has closed the request's socket, which it does after both signals.
//! Never reads or writes a server connection's own socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::wire::build;

/// How long a CancelRequest may take before pgshard stops waiting for the server to confirm it.
const CANCEL_BOUND: Duration = Duration::from_secs(1);

/// Where a server process's running statement can be cancelled, and the cancels sent for it.
#[derive(Debug)]
pub struct CancelKey {
    pub addr: String,
    pub process_id: i32,
    pub secret_key: i32,
    /// Cancels sent whose socket the server has not closed yet.
    pending: AtomicUsize,
    /// A cancel went unconfirmed: its signals may still come, at any time.
    unconfirmed: AtomicBool,
    /// Woken when the last pending cancel ends.
    settled: Notify,
}

impl CancelKey {
    pub fn new(addr: String, process_id: i32, secret_key: i32) -> CancelKey {
        CancelKey {
            addr,
            process_id,
            secret_key,
            pending: AtomicUsize::new(0),
            unconfirmed: AtomicBool::new(false),
            settled: Notify::new(),
        }
    }

    /// Counts a cancel as pending from now on (call it while the connection is still reachable
    /// by cancels, so that it is counted before the connection can be given back); send it with
    /// [`CancelSent::send`].
    pub fn start(self: &Arc<Self>) -> CancelSent {
        self.pending.fetch_add(1, Ordering::AcqRel);
        CancelSent(self.clone())
    }

    /// A cancel for this process is still on its way: a statement sent now could be cancelled.
    pub fn in_flight(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// A cancel went unconfirmed (the server did not close its socket in time): its signal may
    /// still come, so the connection must not serve anyone else.
    pub fn unconfirmed(&self) -> bool {
        self.unconfirmed.load(Ordering::Acquire)
    }

    /// Waits until no cancel for this process is on its way (at most about [`CANCEL_BOUND`]
    /// after the last one was sent).
    pub async fn settled(&self) {
        while self.in_flight() {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel ending in between still wakes it.
            notified.as_mut().enable();
            if !self.in_flight() {
                return;
            }
            notified.await;
        }
    }
}

/// A cancel counted as pending on its key until this is dropped.
#[derive(Debug)]
#[must_use = "the cancel counts as pending until this is sent or dropped"]
pub struct CancelSent(Arc<CancelKey>);

impl CancelSent {
    pub fn key(&self) -> &CancelKey {
        &self.0
    }

    /// Sends the CancelRequest and waits for the server to close the socket (both its signals
    /// are sent by then), bounded by [`CANCEL_BOUND`]; best effort. Not confirmed in time: the
    /// key is marked unconfirmed.
    pub async fn send(self) {
        let key = &self.0;
        let confirmed = send_cancel(&key.addr, key.process_id, key.secret_key).await;
        if !confirmed {
            key.unconfirmed.store(true, Ordering::Release);
        }
    }
}

impl Drop for CancelSent {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// Sends a CancelRequest for a server process; `true` once the server has closed the socket.
async fn send_cancel(addr: &str, process_id: i32, secret_key: i32) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut out = BytesMut::new();
        build::cancel_request(&mut out, process_id, secret_key);
        stream.write_all(&out).await?;
        // The server sends nothing and closes the socket once it has acted on the request.
        let mut byte = [0u8; 1];
        while stream.read(&mut byte).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    matches!(
        tokio::time::timeout(CANCEL_BOUND, attempt).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A listener that reads one CancelRequest per connection and closes it when `close` is
    /// notified.
    async fn server(close: Arc<Notify>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let close = close.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 16];
                    let _ = socket.read_exact(&mut request).await;
                    close.notified().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_cancel_is_pending_until_the_server_closes_its_socket() {
        let close = Arc::new(Notify::new());
        let key = Arc::new(CancelKey::new(server(close.clone()).await, 7, 9));
        assert!(!key.in_flight());
        let sent = key.start();
        assert!(key.in_flight(), "pending from the moment it is counted");
        let sending = tokio::spawn(sent.send());
        let waiting = tokio::spawn({
            let key = key.clone();
            async move { key.settled().await }
        });
        // The server holds the socket: the cancel stays pending, whoever waits keeps waiting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(key.in_flight());
        assert!(
            !waiting.is_finished(),
            "waits while the server holds the socket"
        );
        close.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends once the server closed the socket")
            .unwrap();
        sending.await.unwrap();
        assert!(!key.in_flight());
        assert!(!key.unconfirmed(), "the server confirmed it");
    }

    #[tokio::test]
    async fn a_cancel_the_server_never_confirms_marks_the_key() {
        // The server never closes the socket.
        let key = Arc::new(CancelKey::new(server(Arc::new(Notify::new())).await, 7, 9));
        key.start().send().await;
        assert!(!key.in_flight(), "no longer pending after the bound");
        assert!(key.unconfirmed(), "its signals may still come");
        // Nothing pending: waiting returns at once.
        key.settled().await;
    }
}
