//! A byte stream that is plain or TLS, decided during startup: [`MaybeTls`]. One type for both
//! sides (client sockets accepted, server sockets opened), so that sessions and server
//! connections are compiled once; a plain stream pays one `match` per read or write. Moves
//! bytes only: never looks at what they say.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// A stream that is plain, or TLS as the server (to a client) or as the client (to a server).
/// The TLS states are boxed: a plain connection stays as small as its socket.
#[derive(Debug)]
pub enum MaybeTls<S> {
    Plain(S),
    Server(Box<server::TlsStream<S>>),
    Client(Box<client::TlsStream<S>>),
    /// Between taking the plain stream and the handshake's end; a failed handshake leaves it
    /// here, and every read or write then fails.
    Upgrading,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MaybeTls<S> {
    /// Whether the bytes are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Server(_) | MaybeTls::Client(_))
    }

    /// Runs the server side of a TLS handshake on a plain stream (after answering an
    /// SSLRequest with `S`).
    pub async fn accept(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let plain = self.take_plain()?;
        let tls = TlsAcceptor::from(config).accept(plain).await?;
        *self = MaybeTls::Server(Box::new(tls));
        Ok(())
    }

    /// Runs the client side of a TLS handshake on a plain stream (after the server answered
    /// an SSLRequest with `S`).
    pub async fn connect(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let plain = self.take_plain()?;
        let tls = TlsConnector::from(config).connect(name, plain).await?;
        *self = MaybeTls::Client(Box::new(tls));
        Ok(())
    }

    fn take_plain(&mut self) -> io::Result<S> {
        match std::mem::replace(self, MaybeTls::Upgrading) {
            MaybeTls::Plain(s) => Ok(s),
            other => {
                *self = other;
                Err(io::Error::other(
                    "TLS was already negotiated on this connection",
                ))
            }
        }
    }
}

impl MaybeTls<tokio::net::TcpStream> {
    /// Whether a plain socket has nothing to read, as far as the runtime has seen, asked without
    /// registering for a wake-up (an idle pooled connection is checked so at every checkout):
    /// `Some(true)` when quiet; `Some(false)` when bytes or the end of the stream wait, or the
    /// socket failed (the probe takes up to one byte, so a connection found not quiet must be
    /// dropped); `None` for TLS, whose records only a read can tell apart.
    pub fn is_quiet_now(&self) -> Option<bool> {
        let MaybeTls::Plain(socket) = self else {
            return None;
        };
        let mut probe = [0u8; 1];
        Some(matches!(socket.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock))
    }
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the TLS handshake did not finish",
    )
}

/// Calls `$method` on whichever stream is inside.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($s) => $call,
            MaybeTls::Server($s) => $call,
            MaybeTls::Client($s) => $call,
            MaybeTls::Upgrading => Poll::Ready(Err(upgrading())),
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Server(s) => s.is_write_vectored(),
            MaybeTls::Client(s) => s.is_write_vectored(),
            MaybeTls::Upgrading => false,
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the plain stream under test and its peer.
    async fn pair() -> (MaybeTls<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        (MaybeTls::Plain(near.unwrap()), far.unwrap().0)
    }

    /// Waits until the runtime has seen the socket readable.
    async fn readable(stream: &MaybeTls<TcpStream>) {
        let MaybeTls::Plain(socket) = stream else {
            unreachable!("plain")
        };
        socket.readable().await.unwrap();
    }

    #[tokio::test]
    async fn a_plain_socket_is_quiet_until_its_peer_writes() {
        let (stream, mut peer) = pair().await;
        assert_eq!(stream.is_quiet_now(), Some(true));
        peer.write_all(b"E").await.unwrap();
        readable(&stream).await;
        assert_eq!(stream.is_quiet_now(), Some(false), "a byte waits");
    }

    #[tokio::test]
    async fn a_plain_socket_whose_peer_closed_is_not_quiet() {
        let (stream, peer) = pair().await;
        drop(peer);
        readable(&stream).await;
        assert_eq!(stream.is_quiet_now(), Some(false), "end of stream");
    }

    #[test]
    fn only_a_plain_socket_is_checked_without_a_read() {
        assert_eq!(MaybeTls::<TcpStream>::Upgrading.is_quiet_now(), None);
    }
}
