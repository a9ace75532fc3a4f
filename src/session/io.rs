//! Waiting on the client and the held server connection at once: one poll writes queued output
//! and reads whichever side has bytes, over any [`Stream`]. Never decodes anything.

use std::future::poll_fn;
use std::task::Poll;

use super::error::SessionError;
use super::Session;
use crate::error::ClientError;
use crate::stats::{ClientEntry, Stopped};
use crate::transport::{Conn, Stream};

/// Stop reading one side while this much is queued for the other (back-pressure).
const HIGH_WATER: usize = 1 << 20;

/// What woke the session up.
pub(super) enum Event {
    /// Not a socket: a frame that waited for the held server connection can be routed now.
    Resume,
    /// The client sent bytes (now in `client.input`).
    ClientData,
    /// The client closed its connection.
    ClientClosed,
    /// The server sent bytes (now in its connection's input).
    ServerData,
    /// The server connection failed (read or write).
    ServerFailed(SessionError),
    /// Queued output was written; nothing was read.
    Wrote,
}

impl<S: Stream> Session<S> {
    /// Writes what is queued and waits until either side has sent something.
    pub(super) async fn next_event(&mut self) -> Result<Event, SessionError> {
        let mut server = self.server.as_deref_mut();
        let server_queued = server.as_ref().map_or(0, |c| c.queued());
        // While a frame waits for a route, the client's later frames wait behind it.
        let read_client = server_queued < HIGH_WATER && self.proto.stalled.is_none();
        let read_server = self.client.output.len() < HIGH_WATER;
        let client = &mut self.client;
        let meter = &mut self.meter;
        poll_fn(|cx| {
            let mut wrote = false;
            if client.has_pending_output() {
                let queued = client.output.len();
                match client.poll_drain(cx) {
                    Poll::Ready(Ok(())) => {
                        meter.sent(queued);
                        wrote = true
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ClientIo(e))),
                    Poll::Pending => {}
                }
            }
            if let Some(conn) = server.as_deref_mut() {
                if conn.io().has_pending_output() {
                    match conn.io().poll_drain(cx) {
                        Poll::Ready(Ok(())) => wrote = true,
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Ok(Event::ServerFailed(conn.lost(e).into())))
                        }
                        Poll::Pending => {}
                    }
                }
                // Server first: answers flow out before more requests come in.
                if read_server {
                    match conn.io().poll_fill(cx) {
                        Poll::Ready(Ok(0)) => {
                            let eof = std::io::ErrorKind::UnexpectedEof.into();
                            return Poll::Ready(Ok(Event::ServerFailed(conn.lost(eof).into())));
                        }
                        Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Event::ServerData)),
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Ok(Event::ServerFailed(conn.lost(e).into())))
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if read_client {
                match client.poll_fill(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Event::ClientClosed)),
                    Poll::Ready(Ok(n)) => {
                        meter.received(n);
                        return Poll::Ready(Ok(Event::ClientData));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::ClientIo(e))),
                    Poll::Pending => {}
                }
            }
            if wrote {
                Poll::Ready(Ok(Event::Wrote))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether the session may stop serving until the client sends more: it holds no server
    /// connection, and everything for the client is written.
    pub(super) fn may_park(&self) -> bool {
        self.server.is_none() && !self.client.has_pending_output()
    }

    /// Gives back what the requests so far left allocated and empty.
    pub(super) fn park(&mut self) {
        self.proto.release_if_empty();
        self.unnamed.release_if_empty();
        self.client.shrink_idle();
    }

    /// Waits, parked, for the client's next bytes (into `client.input`): `true` when some came,
    /// `false` when the client closed its connection.
    pub(super) async fn parked(&mut self, entry: &ClientEntry) -> Result<bool, SessionError> {
        let client = &mut self.client;
        let read = poll_fn(|cx| {
            // KILL_CLIENT and a graceful shutdown wake the task through the waker
            // `until_stopped` registered.
            match entry.stopped() {
                Some(Stopped::Killed) => return Poll::Ready(Err(SessionError::Killed)),
                Some(Stopped::Closed) => return Poll::Ready(Err(SessionError::ShuttingDown)),
                None => {}
            }
            client.poll_fill(cx).map_err(SessionError::ClientIo)
        })
        .await?;
        self.meter.received(read);
        self.woken()?;
        Ok(read > 0)
    }

    /// Writes as much queued client output as the client takes now.
    pub(super) fn write_client(&mut self) -> Result<(), SessionError> {
        let queued = self.client.output.len();
        let drained = self.client.try_drain().map_err(SessionError::ClientIo);
        self.meter.sent(queued - self.client.output.len());
        drained
    }

    /// Writes as much queued server output as the server takes now.
    pub(super) fn write_server(&mut self) -> Result<(), SessionError> {
        let Some(conn) = self.server.as_deref_mut() else {
            return Ok(());
        };
        conn.io().try_drain().map_err(|e| conn.lost(e).into())
    }
}

/// Sends a FATAL ErrorResponse to a client that never got a session.
pub(super) async fn send_fatal<S: Stream>(client: &mut Conn<S>, e: &SessionError) {
    if !e.reaches_client() {
        return;
    }
    ClientError::from(e).fatal().encode(&mut client.output);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.drain()).await;
}
