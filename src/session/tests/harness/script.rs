//! The script a [`super::server::ScriptedServer`] follows, and what it saw: each [`Step`] is a
//! sequence of frames (as rendered by [`super::render::client_frame`]) that must arrive in order
//! and the answer sent once the last one did. pgshard's own queries (settings, resets, health
//! checks) are answered without a step. Pure bookkeeping under the server's `watch` channel.

use std::collections::VecDeque;

use super::render::client_frame;
use super::reply::Msgs;
use crate::wire::Frame;

/// A server process's BackendKeyData: (process id, secret key).
pub type Key = (i32, i32);

/// Frames the server must receive next, and what it answers after the last of them.
#[derive(Debug)]
pub struct Step {
    pub(super) expect: Vec<String>,
    pub(super) reply: Reply,
}

#[derive(Debug)]
pub(super) enum Reply {
    Now(Msgs),
    /// Once a CancelRequest with this connection's key has arrived (a running query).
    OnCancel(Msgs),
}

/// Starts a step: the frames, as rendered, that must arrive in this order. A pattern ending in
/// `*` matches any frame starting with the rest.
pub fn on(frames: &[&str]) -> Expecting {
    assert!(!frames.is_empty(), "a step expects at least one frame");
    Expecting(frames.iter().map(|f| f.to_string()).collect())
}

/// A step waiting for its answer.
pub struct Expecting(Vec<String>);

impl Expecting {
    /// Answer as soon as the last frame arrived.
    pub fn reply(self, msgs: Msgs) -> Step {
        Step {
            expect: self.0,
            reply: Reply::Now(msgs),
        }
    }

    /// Answer only once this connection's query is cancelled (a CancelRequest with its key).
    pub fn reply_on_cancel(self, msgs: Msgs) -> Step {
        Step {
            expect: self.0,
            reply: Reply::OnCancel(msgs),
        }
    }
}

fn matches(pattern: &str, frame: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => frame.starts_with(prefix),
        None => pattern == frame,
    }
}

/// One frame a connection received; `internal` for pgshard's own queries answered automatically.
#[derive(Debug, Clone)]
pub struct Received {
    pub text: String,
    pub internal: bool,
}

/// One server connection, in the order they logged in.
#[derive(Debug)]
pub struct ConnLog {
    pub key: Key,
    pub frames: Vec<Received>,
    pub closed: bool,
    /// The step this connection is in the middle of, and how many of its frames arrived.
    pub(super) step: Option<(Step, usize)>,
}

/// Everything the server saw, and what is left of its script.
#[derive(Debug, Default)]
pub struct State {
    pub conns: Vec<ConnLog>,
    /// Keys of the CancelRequests received, in order.
    pub cancels: Vec<Key>,
    /// CancelRequest sockets are held open (the request unconfirmed) while this is set.
    pub hold_cancels: bool,
    pub failures: Vec<String>,
    pub(super) script: VecDeque<Step>,
}

/// What a connection does after a frame.
pub(super) enum Action {
    Wait,
    Write(Msgs),
    WriteOnCancel(Msgs),
    Close,
}

impl State {
    /// Matches a received frame against the connection's step, the script's next step, or
    /// pgshard's internal queries, and logs it.
    pub(super) fn on_frame(&mut self, id: usize, frame: &Frame) -> Action {
        let text = client_frame(frame);
        if self.conns[id].step.is_none() {
            if self
                .script
                .front()
                .is_some_and(|s| matches(&s.expect[0], &text))
            {
                let step = self.script.pop_front().expect("checked above");
                self.conns[id].step = Some((step, 0));
            } else if let Some(reply) = internal_reply(frame) {
                self.conns[id].frames.push(Received {
                    text,
                    internal: true,
                });
                return Action::Write(reply);
            } else {
                let next = self.script.front().map(|s| &s.expect);
                return self.fail(id, format!("unexpected {text}; next step: {next:?}"));
            }
        }
        let conn = &mut self.conns[id];
        let (step, seen) = conn.step.as_mut().expect("a step is in progress");
        if !matches(&step.expect[*seen], &text) {
            let want = step.expect[*seen].clone();
            return self.fail(id, format!("expected {want}, got {text}"));
        }
        conn.frames.push(Received {
            text,
            internal: false,
        });
        *seen += 1;
        if *seen < step.expect.len() {
            return Action::Wait;
        }
        match conn.step.take().map(|(step, _)| step.reply) {
            Some(Reply::Now(msgs)) => Action::Write(msgs),
            Some(Reply::OnCancel(msgs)) => Action::WriteOnCancel(msgs),
            None => Action::Wait,
        }
    }

    fn fail(&mut self, id: usize, problem: String) -> Action {
        let failure = format!("server connection {id}: {problem}");
        // Shown with the test's output: the client usually fails first, on the closed connection.
        eprintln!("scripted server: {failure}");
        self.failures.push(failure);
        self.conns[id].closed = true;
        Action::Close
    }

    /// How many CancelRequests carried `key`.
    pub fn cancels_of(&self, key: Key) -> usize {
        self.cancels.iter().filter(|k| **k == key).count()
    }

    /// Every frame connection `id` received, as rendered.
    pub fn frames(&self, id: usize) -> Vec<String> {
        self.conns
            .get(id)
            .map(|c| c.frames.iter().map(|f| f.text.clone()).collect())
            .unwrap_or_default()
    }
}

/// What a session read-back query contains (`session::state`).
pub const CAPTURE: &str = "WHERE relnamespace = pg_catalog.pg_my_temp_schema()";

/// Answers pgshard's own queries: health checks, settings, resets, session captures.
fn internal_reply(frame: &Frame) -> Option<Msgs> {
    if frame.tag() != b'Q' {
        return None;
    }
    let body = frame.body();
    let sql = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).ok()?;
    if sql.contains(CAPTURE) {
        // A session read back with nothing in it (a test scripts a step to answer otherwise).
        return Some(Msgs::new().row(&["", ""]).command("SELECT 1").ready(b'I'));
    }
    let tag = match sql {
        "SELECT 1" => "SELECT 1",
        "ROLLBACK" => "ROLLBACK",
        "DISCARD ALL" => "DISCARD ALL",
        s if s.starts_with("SET SESSION AUTHORIZATION DEFAULT;") => "SET",
        s if s.starts_with("SELECT pg_catalog.set_config(") => "SELECT 1",
        s if s.starts_with("RESET ") => "RESET",
        _ => return None,
    };
    Some(Msgs::new().command(tag).ready(b'I'))
}
