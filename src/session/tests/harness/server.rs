//! A scripted PostgreSQL server for session tests. It listens on 127.0.0.1:0 (pgshard's pools dial
//! servers over TCP), logs every connection in with trust (AuthenticationOk, ParameterStatus,
//! BackendKeyData, ReadyForQuery), then follows its [`super::script`]: anything off script is
//! recorded as a failure and that connection is closed.
//!
//! Everything received is logged per connection, with every CancelRequest on the listener, so
//! tests assert on exactly what pgshard sent; waits are on a `watch` channel, never on sleeps.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::reply::Msgs;
use super::script::{Action, ConnLog, Key, State, Step};
use super::HANG;
use crate::wire::split_frame;

/// A running scripted server; stops accepting when dropped.
pub struct ScriptedServer {
    pub addr: String,
    state: Arc<watch::Sender<State>>,
    accept: JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ScriptedServer {
    pub async fn start() -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        let state = Arc::new(watch::Sender::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        ScriptedServer {
            addr,
            state,
            accept,
        }
    }

    /// Appends steps to the script.
    pub fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.state.send_modify(|s| s.script.extend(steps));
    }

    /// Reads the state.
    pub fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.borrow())
    }

    /// Every frame connection `id` received, pgshard's own queries included.
    pub fn frames(&self, id: usize) -> Vec<String> {
        self.with(|s| s.frames(id))
    }

    /// The frames connection `id` received from the script's point of view (no internal queries).
    pub fn scripted_frames(&self, id: usize) -> Vec<String> {
        self.with(|s| {
            s.conns.get(id).map_or_else(Vec::new, |c| {
                let frames = c.frames.iter().filter(|f| !f.internal);
                frames.map(|f| f.text.clone()).collect()
            })
        })
    }

    pub fn conn_count(&self) -> usize {
        self.with(|s| s.conns.len())
    }

    pub fn key(&self, id: usize) -> Key {
        self.with(|s| s.conns[id].key)
    }

    pub fn cancels(&self) -> Vec<Key> {
        self.with(|s| s.cancels.clone())
    }

    /// Holds CancelRequest sockets open (the requests are logged at once, their answers wait)
    /// while `hold` is set: PostgreSQL closes the socket only after it has signalled.
    pub fn hold_cancels(&self, hold: bool) {
        self.state.send_modify(|s| s.hold_cancels = hold);
    }

    /// Waits until `done` holds (or a failure is recorded: the test then fails with it).
    pub async fn wait_until(&self, what: &str, mut done: impl FnMut(&State) -> bool) {
        let mut rx = self.state.subscribe();
        let waited = tokio::time::timeout(HANG, rx.wait_for(|s| !s.failures.is_empty() || done(s)));
        if waited.await.is_err() {
            panic!(
                "timed out waiting for {what}; server: {:#?}",
                *self.state.borrow()
            );
        }
        self.assert_no_failures();
    }

    /// Waits until connection `id` received `frame`.
    pub async fn wait_received(&self, id: usize, frame: &str) {
        let what = format!("connection {id} to receive {frame}");
        self.wait_until(&what, |s| s.frames(id).iter().any(|f| f == frame))
            .await;
    }

    /// Waits until connection `id` was closed by its peer.
    pub async fn wait_closed(&self, id: usize) {
        let what = format!("connection {id} to close");
        self.wait_until(&what, |s| s.conns.get(id).is_some_and(|c| c.closed))
            .await;
    }

    pub fn assert_no_failures(&self) {
        let failures = self.with(|s| s.failures.clone());
        assert!(failures.is_empty(), "scripted server: {failures:#?}");
    }

    /// No failures, the whole script was used, and no connection is in the middle of a step.
    pub fn assert_done(&self) {
        self.assert_no_failures();
        self.with(|s| {
            assert!(s.script.is_empty(), "steps never reached: {:#?}", s.script);
            for (id, conn) in s.conns.iter().enumerate() {
                assert!(
                    conn.step.is_none(),
                    "connection {id} stopped mid-step: {conn:#?}"
                );
            }
        });
    }
}

/// Serves one accepted connection: a CancelRequest is logged and the socket closed; a
/// StartupMessage is answered with trust and the connection follows the script.
async fn serve(mut stream: TcpStream, state: Arc<watch::Sender<State>>) {
    let mut buf = BytesMut::new();
    let Some((code, mut packet)) = read_startup(&mut stream, &mut buf).await else {
        return;
    };
    if code == 80_877_102 && packet.len() == 8 {
        let key = (packet.get_i32(), packet.get_i32());
        state.send_modify(|s| s.cancels.push(key));
        let _ = state.subscribe().wait_for(|s| !s.hold_cancels).await;
        return;
    }
    let mut id = 0;
    let mut key = (0, 0);
    state.send_modify(|s| {
        id = s.conns.len();
        key = (1000 + id as i32, 0x5eed_0000 + id as i32);
        s.conns.push(ConnLog {
            key,
            frames: Vec::new(),
            closed: false,
            step: None,
        });
    });
    let greeting = greeting(key);
    if stream.write_all(&greeting.0).await.is_ok() {
        follow_script(&mut stream, &mut buf, &state, id, key).await;
    }
    state.send_modify(|s| s.conns[id].closed = true);
}

/// Reads frames and answers them until the peer closes or the script is broken.
async fn follow_script(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    state: &watch::Sender<State>,
    id: usize,
    key: Key,
) {
    let mut rx = state.subscribe();
    // An answer held until the connection's query is cancelled: (answer, cancels seen before).
    let mut on_cancel: Option<(Msgs, usize)> = None;
    loop {
        while let Ok(Some(frame)) = split_frame(buf, 1 << 30) {
            let mut action = Action::Wait;
            state.send_modify(|s| action = s.on_frame(id, &frame));
            match action {
                Action::Wait => {}
                Action::Write(msgs) => {
                    if stream.write_all(&msgs.0).await.is_err() || msgs.1 {
                        return;
                    }
                }
                Action::WriteOnCancel(msgs) => {
                    on_cancel = Some((msgs, state.borrow().cancels_of(key)));
                }
                Action::Close => return,
            }
        }
        let armed = on_cancel.as_ref().map(|(_, seen)| *seen);
        tokio::select! {
            read = stream.read_buf(buf) => if !matches!(read, Ok(n) if n > 0) {
                return;
            },
            _ = async { rx.wait_for(|s| s.cancels_of(key) > armed.unwrap_or(0)).await.map(drop) },
                if armed.is_some() => {
                let (msgs, _) = on_cancel.take().expect("armed");
                if stream.write_all(&msgs.0).await.is_err() || msgs.1 {
                    return;
                }
            }
        }
    }
}

/// What a trust login answers: AuthenticationOk, the usual ParameterStatus, BackendKeyData,
/// ReadyForQuery.
fn greeting(key: Key) -> Msgs {
    let mut out = Msgs::new();
    crate::wire::build::authentication_ok(&mut out.0);
    let params = [
        ("server_version", "16.0 (scripted)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ];
    for (name, value) in params {
        out = out.parameter(name, value);
    }
    crate::wire::build::backend_key_data(&mut out.0, key.0, key.1);
    out.ready(b'I')
}

/// Reads one untagged startup packet: its code and the rest of its body.
async fn read_startup(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<(i32, BytesMut)> {
    while buf.len() < 4 || buf.len() < u32::from_be_bytes(buf[..4].try_into().ok()?) as usize {
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
    let len = u32::from_be_bytes(buf[..4].try_into().ok()?) as usize;
    if len < 8 {
        return None;
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    Some((code, packet))
}
