//! Socket readiness and non-blocking reads and writes for a session. Waits on readiness instead
//! of holding buffers, so an idle client costs no read buffer; never decodes anything.

use std::future::pending;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::TcpStream;

use super::error::SessionError;
use super::Session;
use crate::backend::BackendError;
use crate::error::ClientError;

/// Stop reading one side while this much is queued for the other (back-pressure).
const HIGH_WATER: usize = 1 << 20;
/// Free room kept in a read buffer before each read.
const READ_CHUNK: usize = 8192;

/// What woke the session up.
pub(super) enum Event {
    /// Not a socket: a frame that waited for the held server connection can be routed now.
    Resume,
    ClientReadable,
    ServerReadable,
    ClientWritable,
    ServerWritable,
}

impl Session {
    /// Waits until a socket can make progress on what is queued.
    pub(super) async fn next_event(&mut self) -> Result<Event, SessionError> {
        // While a frame waits for a route, the client's later frames wait behind it.
        let read_client = self.server_out.len() < HIGH_WATER && self.stalled.is_none();
        let read_server = self.client_out.len() < HIGH_WATER;
        let write_client = !self.client_out.is_empty();
        let write_server = !self.server_out.is_empty();
        let client = &self.client;
        let server = self.server.as_deref().map(|c| &c.stream);
        let event = tokio::select! {
            r = ready(Some(client), Interest::READABLE, read_client) => r.map(|_| Event::ClientReadable),
            r = ready(server, Interest::READABLE, read_server) => r.map(|_| Event::ServerReadable),
            r = ready(Some(client), Interest::WRITABLE, write_client) => r.map(|_| Event::ClientWritable),
            r = ready(server, Interest::WRITABLE, write_server) => r.map(|_| Event::ServerWritable),
        };
        Ok(event?)
    }

    /// Reads what the client sent; `false` when the client closed its connection.
    pub(super) fn read_client(&mut self) -> Result<bool, SessionError> {
        match read_into(&self.client, &mut self.client_in) {
            Ok(Some(0)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(SessionError::ClientIo(e)),
        }
    }

    /// Reads what the server sent into its connection's buffer.
    pub(super) fn read_server(&mut self) -> Result<(), SessionError> {
        let Some(conn) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let lost = |conn: &mut crate::backend::ServerConnection, source: std::io::Error| {
            conn.broken = true;
            SessionError::Backend(BackendError::Io {
                addr: conn.addr.clone(),
                source,
            })
        };
        match read_into(&conn.stream, &mut conn.read_buf) {
            Ok(Some(0)) => Err(lost(conn, std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) => Err(lost(conn, e)),
        }
    }

    /// Writes as much queued client output as the socket takes now.
    pub(super) fn write_client(&mut self) -> Result<(), SessionError> {
        write_from(&self.client, &mut self.client_out).map_err(SessionError::ClientIo)
    }

    /// Writes as much queued server output as the socket takes now.
    pub(super) fn write_server(&mut self) -> Result<(), SessionError> {
        let Some(conn) = self.server.as_deref_mut() else {
            return Ok(());
        };
        write_from(&conn.stream, &mut self.server_out).map_err(|source| {
            conn.broken = true;
            SessionError::Backend(BackendError::Io {
                addr: conn.addr.clone(),
                source,
            })
        })
    }
}

/// Readiness of `stream` for `interest`, or never when there is no stream or no need.
async fn ready(
    stream: Option<&TcpStream>,
    interest: Interest,
    wanted: bool,
) -> std::io::Result<Ready> {
    match stream {
        Some(s) if wanted => s.ready(interest).await,
        _ => pending().await,
    }
}

/// Non-blocking read; `Ok(None)` when nothing was ready after all.
fn read_into(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    // Readiness is cleared only by the read that fails with WouldBlock. (Clearing it after a
    // short read, as tokio's poll_read does, is only safe with the readiness event captured
    // before the read; capturing it after can erase the wake-up for bytes that arrived in
    // between, and the session would sleep forever.)
    match stream.try_read_buf(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Non-blocking write of as much of `buf` as the socket takes.
fn write_from(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    if buf.capacity() > 4 * READ_CHUNK {
        *buf = BytesMut::new();
    }
    Ok(())
}

pub(super) async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await
}

/// Sends a FATAL ErrorResponse to a client that never got a session.
pub(super) async fn send_fatal(stream: &mut TcpStream, e: &SessionError) {
    if !e.reaches_client() {
        return;
    }
    let mut out = BytesMut::new();
    ClientError::from(e).fatal().encode(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&out)).await;
}
