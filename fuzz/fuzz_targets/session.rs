//! Fuzzes a whole client session after login: `pgshard::session::run` over an in-memory duplex,
//! its pools pointing at a minimal fake PostgreSQL server ([`fake_pg`]) on 127.0.0.1.
//!
//! Input: `[variant, client bytes...]`. The variant's low bit picks the config: one shard (pgshard
//! forwards without parsing) or two shards with table `users` sharded by `user_id` (routing,
//! held-back BEGIN, scatter-gather, split COPY). The client writes a StartupMessage (user `app`,
//! database `app`, trust) followed by the input bytes, closes its write side and reads to EOF.
//! It closes once the session has sent nothing for 5 ms (it has answered what it will), or, when
//! the variant's bit 1 is set, right after the input (a client gone mid-request). pgshard ends a
//! session at the client's end of file, answers owed or not, so closing at once would cut most
//! inputs short.
//!
//! Checked: no panic (in the session, the pools or the fake server); the session ends, within
//! 2 s, once the client's input has ended and it closed (a timeout is reported as a hang); every
//! byte sent to the client is a sequence of well-formed backend messages (known tag, length,
//! complete body), the first being AuthenticationOk; every ErrorResponse carries a SQLSTATE (a
//! `C` field of 5 characters) and a severity; every ReadyForQuery says I, T or E; and every frame
//! pgshard sends the fake server has a valid length.
//!
//! `SHOW_SESSION=1` prints what the client received (to read an artifact's session).
//!
//! One runtime (a single 2 MiB-stack worker, as a session runs in `pgshard serve`), one fake
//! server and one `Shared` per config live for the whole process, so pooled server connections
//! carry over from one input to the next, as they do between clients. LeakSanitizer is off (see
//! `__asan_default_options`): it takes those pooled connections for leaks.

#![no_main]

mod fake_pg;

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pgshard::config::Config;
use pgshard::shared::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::time::Instant;

/// How long a session may take to end once the client has sent everything and closed.
const HANG: Duration = Duration::from_secs(2);

/// A session that sent nothing for this long has answered everything it will.
const QUIET: Duration = Duration::from_millis(5);

/// Backend message tags a client may receive.
const BACKEND_TAGS: &[u8] = b"RSKZTDCEN123ntsIGHWdcAVv";

struct Fuzz {
    rt: Runtime,
    /// One shard; two shards.
    shared: [Arc<Shared>; 2],
}

fn config(server: &str, shards: usize) -> String {
    let mut text = String::from(
        r#"[server]
listen = "127.0.0.1:0"
database = "app"
auth_method = "trust"
startup_timeout_ms = 500

[pool]
size = 2
checkout_timeout_ms = 500
connect_timeout_ms = 500
health_check_interval_ms = 3600000
idle_timeout_ms = 3600000

[[users]]
name = "app"
password = "app"

[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "users"
"#,
    );
    // Without `slots`, the shards split the slots evenly.
    for i in 0..shards {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nprimary = \"{server}\"\n"
        ));
    }
    text
}

/// LeakSanitizer off, for each input and at exit: pooled server connections outlive inputs, and
/// one whose output was all written holds a `BytesMut` pointing one past its allocation, which
/// LeakSanitizer takes for a leak.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=0".as_ptr()
}

fn fuzz() -> &'static Fuzz {
    static FUZZ: OnceLock<Fuzz> = OnceLock::new();
    FUZZ.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let shared = rt.block_on(async {
            let server = fake_pg::start().await;
            [1, 2].map(|shards| {
                let config = Config::from_toml_str(&config(&server, shards)).expect("config");
                Arc::new(Shared::new(config))
            })
        });
        Fuzz { rt, shared }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, input)) = data.split_first() else {
        return;
    };
    let fuzz = fuzz();
    let shared = fuzz.shared[usize::from(variant & 1)].clone();
    let close_at_once = variant & 2 != 0;
    let output = fuzz.rt.block_on(session(shared, input, close_at_once));
    if std::env::var_os("SHOW_SESSION").is_some() {
        eprintln!("{}", render(&output));
    }
    check(&output);
});

/// Runs one session: writes the startup and `input`, closes (at once, or once the session went
/// quiet), and returns all it answered.
async fn session(shared: Arc<Shared>, input: &[u8], close_at_once: bool) -> Vec<u8> {
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(pgshard::session::run(server_end, shared));
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut startup = Vec::new();
    let params = b"user\0app\0database\0app\0\0";
    startup.extend_from_slice(&(8 + params.len() as i32).to_be_bytes());
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(params);
    // When the client closed; and when the session last sent something.
    let closed_at: Cell<Option<Instant>> = Cell::new(None);
    let last_output = Cell::new(Instant::now());
    let write = async {
        // The session may end (and close) before it has read everything: not an error.
        let _ = writer.write_all(&startup).await;
        let _ = writer.write_all(input).await;
        if !close_at_once {
            // As a client waiting for its answers: close once the session has been quiet a while.
            let start = Instant::now();
            loop {
                let quiet_since = last_output.get() + QUIET;
                if Instant::now() >= quiet_since || start.elapsed() >= HANG {
                    break;
                }
                tokio::time::sleep_until(quiet_since).await;
            }
        }
        let _ = writer.shutdown().await;
        closed_at.set(Some(Instant::now()));
    };
    let mut output = Vec::new();
    let read = async {
        loop {
            let step = tokio::time::timeout(QUIET, reader.read_buf(&mut output));
            match step.await {
                Ok(Ok(0)) => return true,
                Ok(Ok(_)) => last_output.set(Instant::now()),
                Ok(Err(e)) => panic!("reading from the session: {e}"),
                Err(_) if closed_at.get().is_some_and(|t| t.elapsed() >= HANG) => return false,
                Err(_) => {}
            }
        }
    };
    let ((), ended) = tokio::join!(write, read);
    if !ended {
        panic!(
            "hang: the session did not close the client connection within {HANG:?} of the \
             client closing; it sent {}",
            render(&output)
        );
    }
    match tokio::time::timeout(HANG, session).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the session task failed: {e}"),
        Err(_) => panic!("hang: the session task did not end after closing the connection"),
    }
    output
}

/// Checks that `output` is a sequence of well-formed backend messages.
fn check(output: &[u8]) {
    let mut rest = output;
    let mut first = true;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5,
            "a truncated message header at the end: {rest:?}; all: {}",
            render(output)
        );
        let tag = rest[0];
        let len = i32::from_be_bytes(rest[1..5].try_into().unwrap());
        assert!(
            len >= 4 && rest.len() > len as usize,
            "message {:?} claims length {len}, {} bytes left; all: {}",
            char::from(tag),
            rest.len() - 1,
            render(output)
        );
        let (frame, next) = rest.split_at(len as usize + 1);
        let body = &frame[5..];
        assert!(
            BACKEND_TAGS.contains(&tag),
            "unknown backend message {:?}: {}",
            char::from(tag),
            render(output)
        );
        if first {
            assert_eq!(
                frame,
                b"R\0\0\0\x08\0\0\0\0",
                "the session did not begin with AuthenticationOk: {}",
                render(output)
            );
            first = false;
        }
        match tag {
            b'E' => check_error(body, output),
            b'Z' => assert!(
                matches!(body, [b'I' | b'T' | b'E']),
                "ReadyForQuery {body:?}: {}",
                render(output)
            ),
            _ => {}
        }
        rest = next;
    }
}

/// An ErrorResponse body: NUL-terminated fields ending with an empty one, a severity and a
/// five-character SQLSTATE among them.
fn check_error(body: &[u8], output: &[u8]) {
    assert_eq!(
        body.last(),
        Some(&0),
        "an unterminated ErrorResponse {body:?}: {}",
        render(output)
    );
    let fields: Vec<&[u8]> = body[..body.len() - 1].split(|&b| b == 0).collect();
    let field = |t: u8| {
        fields
            .iter()
            .find(|f| f.first() == Some(&t))
            .map(|f| &f[1..])
    };
    let code = field(b'C');
    assert!(
        code.is_some_and(|c| c.len() == 5),
        "an ErrorResponse without a SQLSTATE: {:?}; all: {}",
        String::from_utf8_lossy(body),
        render(output)
    );
    assert!(
        field(b'S').is_some(),
        "an ErrorResponse without a severity: {:?}",
        String::from_utf8_lossy(body)
    );
}

/// The messages in `output`, briefly, for a failure's report.
fn render(output: &[u8]) -> String {
    let mut text = Vec::new();
    let mut rest = output;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes(rest[1..5].try_into().unwrap());
        let Some(end) = usize::try_from(len)
            .ok()
            .map(|l| l + 1)
            .filter(|&e| e <= rest.len() && e >= 5)
        else {
            break;
        };
        let body = &rest[5..end];
        let shown = match rest[0] {
            b'E' | b'N' | b'C' | b'S' => String::from_utf8_lossy(body).replace('\0', " "),
            b'Z' => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        };
        text.push(format!(
            "{}{}{}",
            char::from(rest[0]),
            if shown.is_empty() { "" } else { " " },
            shown.trim_end()
        ));
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        text.push(format!(
            "+ {} bytes {:?}",
            rest.len(),
            &rest[..rest.len().min(16)]
        ));
    }
    format!("[{}]", text.join(", "))
}
