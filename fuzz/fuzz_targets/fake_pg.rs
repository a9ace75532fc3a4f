//! A minimal PostgreSQL server for the `session` fuzz target (a module of it, not a target).
//!
//! Listens on 127.0.0.1:0. A CancelRequest is read and its socket closed. A StartupMessage gets a
//! trust login: AuthenticationOk, a few ParameterStatus, BackendKeyData, ReadyForQuery. Then every
//! frame is answered at once, with the least a real server would say:
//!
//! - Query: CommandComplete (`BEGIN`, `COMMIT`, `ROLLBACK`, `SET`, `RESET`, else `SELECT 0`) and
//!   ReadyForQuery; `COPY ... FROM STDIN` gets a CopyInResponse instead (then CopyData is taken,
//!   CopyDone answers `COPY 0`, CopyFail a 57014 error, and ReadyForQuery follows unless the
//!   COPY came from an Execute: then the Sync does), `COPY ... TO STDOUT` an empty copy-out.
//! - Parse → ParseComplete, Bind → BindComplete, Describe → (ParameterDescription and) NoData,
//!   Execute → as the bound statement's Query would, without ReadyForQuery; Close →
//!   CloseComplete; Sync → ReadyForQuery; Flush and stray CopyData/CopyDone/CopyFail → nothing;
//!   FunctionCall → an error (42883); Terminate → close; any other tag → FATAL 08P01 and close,
//!   as PostgreSQL does.
//! - A statement whose text holds `fuzz_error` fails (42601), as does anything but the end of a
//!   transaction in a failed one (25P02); after an error in an extended batch everything up to
//!   Sync is skipped. The transaction status (I, T, E) follows BEGIN, COMMIT and ROLLBACK.
//!
//! That is enough for every response pgshard waits for to come (its own queries included): a
//! session that hangs against this server would hang against PostgreSQL too.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CANCEL_REQUEST: i32 = 80_877_102;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// Binds 127.0.0.1:0, serves connections on the current runtime, and returns `host:port`.
pub async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address").to_string();
    tokio::spawn(async move {
        let mut next_pid: i32 = 1000;
        while let Ok((stream, _)) = listener.accept().await {
            next_pid = next_pid.wrapping_add(1);
            tokio::spawn(serve(stream, next_pid));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, pid: i32) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(packet) = read_startup(&mut stream, &mut buf).await else {
            return;
        };
        match packet
            .get(..4)
            .map(|c| i32::from_be_bytes(c.try_into().unwrap()))
        {
            Some(CANCEL_REQUEST) | None => return,
            Some(SSL_REQUEST | GSSENC_REQUEST) => {
                if stream.write_all(b"N").await.is_err() {
                    return;
                }
            }
            Some(_) => break,
        }
    }
    let mut out = Vec::new();
    msg(&mut out, b'R', &0i32.to_be_bytes());
    for (name, value) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        msg(
            &mut out,
            b'S',
            &[name.as_bytes(), b"\0", value.as_bytes(), b"\0"].concat(),
        );
    }
    msg(
        &mut out,
        b'K',
        &[pid.to_be_bytes(), pid.wrapping_mul(7).to_be_bytes()].concat(),
    );
    let mut conn = Conn::default();
    conn.ready(&mut out);
    loop {
        if !out.is_empty() && stream.write_all(&std::mem::take(&mut out)).await.is_err() {
            return;
        }
        while let Some((tag, body)) = next_frame(&mut buf) {
            if conn.on_frame(tag, &body, &mut out) == Next::Close {
                let _ = stream.write_all(&out).await;
                return;
            }
        }
        if !out.is_empty() {
            continue;
        }
        match stream.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Reads one untagged startup packet (length, then body), returning its body.
async fn read_startup(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if buf.len() >= 4 {
            let len = usize::try_from(i32::from_be_bytes(buf[..4].try_into().unwrap())).ok()?;
            if !(8..=10_000).contains(&len) {
                return None;
            }
            if buf.len() >= len {
                let packet = buf[4..len].to_vec();
                buf.drain(..len);
                return Some(packet);
            }
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Cuts one complete tagged frame off `buf`. pgshard must only send well-formed frames.
fn next_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let header = buf.get(..5)?;
    let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
    assert!(
        len >= 4,
        "pgshard sent a server a frame of length {len}: {header:?}"
    );
    let len = len as usize;
    if buf.len() < len + 1 {
        return None;
    }
    let frame: Vec<u8> = buf.drain(..len + 1).collect();
    Some((frame[0], frame[5..].to_vec()))
}

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn error(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    msg(out, b'E', &body);
}

/// The C string at the start of `body`, and what follows it.
fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|&b| b == 0) {
        Some(nul) => (&body[..nul], &body[nul + 1..]),
        None => (body, &[]),
    }
}

#[derive(PartialEq, Eq)]
enum Next {
    Go,
    Close,
}

/// One server connection's state.
struct Conn {
    /// ReadyForQuery status: `I`, `T` or `E`.
    status: u8,
    /// In copy-in mode: entered by a Query (false) or an Execute (true, then the Sync after
    /// CopyDone or CopyFail brings ReadyForQuery).
    copy_in: Option<bool>,
    /// An extended-protocol message failed: skip to Sync.
    skipping: bool,
    statements: HashMap<Vec<u8>, String>,
    portals: HashMap<Vec<u8>, String>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn {
            status: b'I',
            copy_in: None,
            skipping: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }
}

impl Conn {
    fn ready(&self, out: &mut Vec<u8>) {
        msg(out, b'Z', &[self.status]);
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str, extended: bool) {
        error(out, "ERROR", code, message);
        if self.status == b'T' {
            self.status = b'E';
        }
        self.skipping = extended;
    }

    fn on_frame(&mut self, tag: u8, body: &[u8], out: &mut Vec<u8>) -> Next {
        if tag == b'X' {
            return Next::Close;
        }
        if let Some(extended) = self.copy_in {
            match tag {
                b'd' | b'S' | b'H' => return Next::Go,
                b'c' => msg(out, b'C', b"COPY 0\0"),
                b'f' => self.fail(out, "57014", "COPY from stdin failed", extended),
                _ => self.fail(
                    out,
                    "08P01",
                    "unexpected message type during COPY",
                    extended,
                ),
            }
            self.copy_in = None;
            if !extended {
                self.ready(out);
            }
            return Next::Go;
        }
        if tag == b'S' {
            self.skipping = false;
            self.ready(out);
            return Next::Go;
        }
        if self.skipping {
            return Next::Go;
        }
        match tag {
            b'Q' => {
                let (sql, _) = cstr(body);
                self.run(&String::from_utf8_lossy(sql), out, false);
                if self.copy_in.is_none() {
                    self.ready(out);
                }
            }
            b'P' => {
                let (name, rest) = cstr(body);
                let (sql, _) = cstr(rest);
                let sql = String::from_utf8_lossy(sql).into_owned();
                if sql.contains("fuzz_error") {
                    self.fail(out, "42601", "syntax error (fuzz_error)", true);
                } else {
                    self.statements.insert(name.to_vec(), sql);
                    msg(out, b'1', &[]);
                }
            }
            b'B' => {
                let (portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                match self.statements.get(statement) {
                    Some(sql) => {
                        self.portals.insert(portal.to_vec(), sql.clone());
                        msg(out, b'2', &[]);
                    }
                    None => self.fail(out, "26000", "prepared statement does not exist", true),
                }
            }
            b'D' => {
                if body.first() == Some(&b'S') {
                    msg(out, b't', &0i16.to_be_bytes());
                }
                msg(out, b'n', &[]);
            }
            b'E' => {
                let (portal, _) = cstr(body);
                match self.portals.get(portal).cloned() {
                    Some(sql) => self.run(&sql, out, true),
                    None => self.fail(out, "34000", "portal does not exist", true),
                }
            }
            b'C' => {
                let (name, _) = cstr(body.get(1..).unwrap_or_default());
                match body.first() {
                    Some(b'S') => self.statements.remove(name),
                    _ => self.portals.remove(name),
                };
                msg(out, b'3', &[]);
            }
            b'H' | b'd' | b'c' | b'f' => {}
            b'F' => {
                self.fail(out, "42883", "function does not exist", false);
                self.ready(out);
            }
            _ => {
                error(out, "FATAL", "08P01", "invalid frontend message type");
                return Next::Close;
            }
        }
        Next::Go
    }

    /// Runs a statement (a Query's text, or an Execute's portal): its answer, without
    /// ReadyForQuery.
    fn run(&mut self, sql: &str, out: &mut Vec<u8>, extended: bool) {
        let lower = sql.trim_start().to_ascii_lowercase();
        let first = lower
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or_default();
        let ends = matches!(first, "commit" | "end" | "rollback" | "abort");
        if sql.contains("fuzz_error") {
            return self.fail(out, "42601", "syntax error (fuzz_error)", extended);
        }
        if self.status == b'E' && !ends {
            let text =
                "current transaction is aborted, commands ignored until end of transaction block";
            return self.fail(out, "25P02", text, extended);
        }
        let tag = match first {
            "begin" | "start" => {
                self.status = b'T';
                "BEGIN"
            }
            "commit" | "end" if self.status == b'E' => {
                self.status = b'I';
                "ROLLBACK"
            }
            "commit" | "end" => {
                self.status = b'I';
                "COMMIT"
            }
            "rollback" | "abort" if lower.contains(" to ") => {
                if self.status == b'E' {
                    self.status = b'T';
                }
                "ROLLBACK"
            }
            "rollback" | "abort" => {
                self.status = b'I';
                "ROLLBACK"
            }
            "set" => "SET",
            "reset" => "RESET",
            "copy" if lower.contains("from stdin") => {
                // Text format, no columns.
                msg(out, b'G', &[0, 0, 0]);
                self.copy_in = Some(extended);
                return;
            }
            "copy" if lower.contains("to stdout") => {
                msg(out, b'H', &[0, 0, 0]);
                msg(out, b'c', &[]);
                "COPY 0"
            }
            _ => "SELECT 0",
        };
        msg(out, b'C', &[tag.as_bytes(), b"\0"].concat());
    }
}
