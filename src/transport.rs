//! A framed connection over any byte stream (`AsyncRead + AsyncWrite`: TCP, TLS, an in-memory
//! duplex): an input buffer cut into protocol frames and an output queue written as one batch.
//! Both sides use it, clients ([`crate::session`]) and servers ([`crate::backend`]). It moves
//! bytes and cuts frames; it never interprets a frame.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::{frame_len, split_frame, Frame, WireError};

/// Free room kept in the input buffer before each read.
const READ_CHUNK: usize = 8192;

/// The first read of an idle connection goes to the stack, at most this much.
const IDLE_READ: usize = 2048;

/// Buffers larger than this are given back once empty, so an idle connection holds none.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

/// A byte stream a connection can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A byte stream with its input and output buffers.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    /// Bytes read and not yet cut into frames.
    pub input: BytesMut,
    /// Bytes queued for the peer, written by [`Conn::poll_drain`].
    pub output: BytesMut,
    /// Written to the stream but not yet flushed through it: the last flush was pending (a TLS
    /// stream or a `BufWriter` holds bytes until flushed).
    unflushed: bool,
    /// The input buffer is kept between exchanges (a pooled server connection: one buffer,
    /// reused, no allocation per read) instead of given back whenever empty (a client).
    keep_input: bool,
}

impl<S: Stream> Conn<S> {
    /// Wraps `stream`; `input` holds bytes already read from it (after a handshake).
    pub fn new(stream: S, input: BytesMut) -> Conn<S> {
        Conn {
            stream,
            input,
            output: BytesMut::new(),
            unflushed: false,
            keep_input: false,
        }
    }

    /// Like [`Conn::new`], for a peer that is rarely idle for long and of which there are few
    /// (a pooled server connection): its input buffer stays allocated between exchanges, so a
    /// read allocates nothing.
    pub fn keeping_input(stream: S, input: BytesMut) -> Conn<S> {
        Conn {
            keep_input: true,
            ..Conn::new(stream, input)
        }
    }

    /// The stream itself (socket options, peer address).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Cuts the next complete frame off the input; `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self, max: usize) -> Result<Option<Frame>, WireError> {
        let spare = self.input.capacity() - self.input.len();
        if !self.keep_input
            && spare < READ_CHUNK / 4
            && frame_len(&self.input, max)? == Some(self.input.len())
        {
            // Exactly one frame, in a buffer with no room worth reading into (a request read
            // while idle): handed over whole. Splitting it off would allocate a shared header.
            let bytes = std::mem::take(&mut self.input);
            return Ok(Some(Frame { bytes }));
        }
        split_frame(&mut self.input, max)
    }

    /// Reads what the stream has into the input buffer: `Ready(Ok(0))` is end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.keep_input && self.input.is_empty() && self.input.capacity() < READ_CHUNK / 4 {
            return self.poll_fill_idle(cx);
        }
        if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
            self.input.reserve(READ_CHUNK);
        }
        if self.keep_input && self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            // A large answer grew the kept buffer: keep an ordinary one instead.
            self.input = BytesMut::with_capacity(READ_CHUNK);
        }
        let spare = self.input.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
                unsafe { self.input.advance_mut(n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// An idle peer holds no input buffer: wait and read into the stack, and keep only what
    /// came (a waiting client costs no read buffer).
    fn poll_fill_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); IDLE_READ];
        let mut buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                self.input = BytesMut::from(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Nothing came: give back what an earlier exchange left allocated.
                self.input = BytesMut::new();
                Poll::Pending
            }
        }
    }

    /// Something is still on its way to the peer: queued output, or written bytes the stream
    /// has not flushed yet. While this holds, [`Conn::poll_drain`] must be polled again.
    pub fn has_pending_output(&self) -> bool {
        !self.output.is_empty() || self.unflushed
    }

    /// Writes the queued output (and flushes the stream) until done or the stream is full.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.output.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.output) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.output.advance(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = BytesMut::new();
        }
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        // A pending flush is remembered, so that the next poll (with a real waker, after a
        // `try_drain` whose waker wakes no one) finishes it.
        self.unflushed = flushed.is_pending();
        flushed
    }

    /// Reads once: the number of bytes read, 0 at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes all queued output.
    pub async fn drain(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// Writes as much queued output as the stream takes without waiting. What it could not
    /// write or flush stays pending ([`Conn::has_pending_output`]) for a later `poll_drain`.
    pub fn try_drain(&mut self) -> io::Result<()> {
        match self.poll_drain(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Reads what is there without waiting: `Some(0)` at end of stream, `None` when nothing was.
    pub fn try_fill(&mut self) -> io::Result<Option<usize>> {
        match self.poll_fill(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// Queues `bytes` and writes everything queued.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.output.extend_from_slice(bytes);
        self.drain().await
    }

    /// Releases the buffers' memory when they hold nothing (an idle peer keeps none): the
    /// input, and the output once all of it was written and flushed.
    pub fn shrink_idle(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
        if !self.has_pending_output() && self.output.capacity() > 0 {
            self.output = BytesMut::new();
        }
    }

    /// Gives back the stream, dropping anything buffered.
    pub fn into_stream(self) -> S {
        self.stream
    }
}

/// The peer's address when `stream` is a TCP socket (`None` for other streams).
pub fn peer_addr<S: Stream>(stream: &S) -> Option<std::net::SocketAddr> {
    let any: &dyn std::any::Any = stream;
    any.downcast_ref::<tokio::net::TcpStream>()?
        .peer_addr()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn frames_cross_a_duplex_in_pieces() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut conn = Conn::new(a, BytesMut::new());
        // One Query frame ("SELECT 1"), written in chunks smaller than the frame.
        let frame = b"Q\0\0\0\x0dSELECT 1\0";
        let writer = tokio::spawn(async move {
            for chunk in frame.chunks(3) {
                b.write_all(chunk).await.unwrap();
            }
            b
        });
        let got = loop {
            if let Some(f) = conn.next_frame(1 << 20).unwrap() {
                break f;
            }
            assert!(conn.fill().await.unwrap() > 0, "the peer is still writing");
        };
        assert_eq!(&got.bytes[..], &frame[..]);
        let mut b = writer.await.unwrap();
        conn.write_all(b"Z\0\0\0\x05I").await.unwrap();
        let mut reply = [0u8; 6];
        b.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"Z\0\0\0\x05I");
        drop(b);
        assert_eq!(conn.fill().await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_input_buffer() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Conn::new(a, BytesMut::with_capacity(1024));
        assert_eq!(conn.try_fill().unwrap(), None);
        assert_eq!(conn.input.capacity(), 0, "waiting costs no buffer");
        b.write_all(b"hello").await.unwrap();
        assert_eq!(conn.fill().await.unwrap(), 5);
        assert_eq!(&conn.input[..], b"hello");
    }

    #[tokio::test]
    async fn a_kept_input_buffer_is_reused_by_the_next_exchange() {
        // Room for the large answer below, written before it is read.
        let (a, mut b) = tokio::io::duplex(1 << 18);
        let mut conn = Conn::keeping_input(a, BytesMut::with_capacity(READ_CHUNK));
        let frame = b"Z\0\0\0\x05I";
        let mut first_at = None;
        for _ in 0..200 {
            b.write_all(frame).await.unwrap();
            assert_eq!(conn.fill().await.unwrap(), frame.len());
            let got = conn.next_frame(1 << 20).unwrap().expect("a whole frame");
            assert_eq!(&got.bytes[..], &frame[..]);
            let at = got.bytes.as_ptr() as usize;
            let base = *first_at.get_or_insert(at);
            assert!(
                (base..base + READ_CHUNK).contains(&at),
                "each read lands in the one kept buffer"
            );
            drop(got);
            assert_eq!(conn.try_fill().unwrap(), None);
            assert!(conn.input.capacity() > 0, "an empty kept buffer stays");
        }
        // A large answer grows it; once read, an ordinary buffer takes its place.
        let big = [b'x'; 3 * KEEP_CAPACITY];
        b.write_all(&big).await.unwrap();
        let mut read = 0;
        while read < big.len() {
            read += conn.fill().await.unwrap();
        }
        let whole = conn.input.split();
        drop(whole);
        b.write_all(frame).await.unwrap();
        conn.fill().await.unwrap();
        assert!(
            conn.input.capacity() <= KEEP_CAPACITY,
            "the large buffer went"
        );
    }

    #[tokio::test]
    async fn shrink_idle_gives_back_the_output_buffer_once_written() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut conn = Conn::new(a, BytesMut::new());
        conn.output.reserve(256);
        conn.output.extend_from_slice(b"queued");
        conn.shrink_idle();
        assert_eq!(&conn.output[..], b"queued", "what is not written yet stays");
        conn.drain().await.unwrap();
        assert!(
            conn.output.capacity() > 0,
            "written, the buffer is still there"
        );
        conn.shrink_idle();
        assert_eq!(
            conn.output.capacity(),
            0,
            "an idle connection holds no output buffer"
        );
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"queued");
    }

    #[tokio::test]
    async fn a_flush_left_pending_by_try_drain_stays_pending_until_drained() {
        // A BufWriter over a duplex of 8 bytes: writes land in the BufWriter, its flush waits.
        let (a, mut b) = tokio::io::duplex(8);
        let mut conn = Conn::new(tokio::io::BufWriter::new(a), BytesMut::new());
        conn.output.extend_from_slice(&[7u8; 20]);
        conn.try_drain().unwrap();
        assert!(conn.output.is_empty(), "the BufWriter took everything");
        assert!(conn.has_pending_output(), "but flushed only 8 bytes of it");
        let mut all = [0u8; 20];
        let (drained, read) = tokio::join!(conn.drain(), b.read_exact(&mut all));
        drained.unwrap();
        read.unwrap();
        assert_eq!(all, [7u8; 20]);
        assert!(!conn.has_pending_output());
    }

    #[tokio::test]
    async fn a_full_peer_leaves_output_queued_without_blocking() {
        let (a, mut b) = tokio::io::duplex(8);
        let mut conn = Conn::new(a, BytesMut::new());
        conn.output.extend_from_slice(&[7u8; 20]);
        conn.try_drain().unwrap();
        assert_eq!(conn.output.len(), 12, "the duplex took 8 bytes");
        assert_eq!(conn.try_fill().unwrap(), None, "nothing to read yet");
        let mut all = [0u8; 20];
        let (drained, read) = tokio::join!(conn.drain(), b.read_exact(&mut all));
        drained.unwrap();
        read.unwrap();
        assert_eq!(all, [7u8; 20]);
        assert!(conn.output.is_empty());
    }
}
