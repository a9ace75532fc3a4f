//! What an idle client costs: the sizes of the session task's future (which holds the parked
//! session's wait for its client), of the [`Session`] itself, and of the `serve` future a
//! session with work runs in, bounded so that a change that inlines a large state into them
//! fails here (sizes, not timings).

use std::sync::Arc;

use bytes::BytesMut;

use crate::config::Config;
use crate::session::settings::Settings;
use crate::session::Session;
use crate::shared::Shared;
use crate::transport::Conn;

fn shared() -> Arc<Shared> {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"app\"\n\n\
                [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
                [[shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:1\"\n";
    Arc::new(Shared::new(
        Config::from_toml_str(text).expect("a valid config"),
    ))
}

async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// Bounds with some room above today's sizes (a debug build's; a release build's are smaller):
/// the task's future holds the session task's locals, a pointer to the boxed session and, while
/// the client is idle, the parked wait (login, errors and `serve` are boxed while they run);
/// `serve` holds only its loop and the wait for the next event (the work a burst of client data
/// starts is boxed for its duration, as are cross-shard work, COPY, server connects, settle
/// queries and recovery).
const TASK_MAX: usize = 200;
const SERVE_MAX: usize = 320;
const SESSION_MAX: usize = 800;
/// The work a burst of client data starts is allocated per burst (per transaction, when the
/// client parks between them): glibc serves up to 1,032 bytes from its per-thread cache
/// (`tcache`) in a few dozen instructions, and larger blocks from its bins in several hundred
/// (malloc and free, measured with callgrind). A single shard's checkout therefore completes
/// without an await when an idle connection is ready, and every other wait is boxed.
const REQUEST_MAX: usize = 1024;

#[tokio::test]
async fn an_idle_session_holds_small_futures() {
    let shared = shared();
    let (_peer, stream) = tcp_pair().await;
    let task = crate::session::run(stream, shared.clone());
    let task_size = std::mem::size_of_val(&task);
    drop(task);
    let (_peer, stream) = tcp_pair().await;
    let mut session = Session::new(
        Conn::new(crate::tls::MaybeTls::Plain(stream), BytesMut::new()),
        shared,
        "app".into(),
        Arc::new(Settings::new()),
        None,
    );
    let session_size = std::mem::size_of_val(&session);
    let serve_size = std::mem::size_of_val(&session.serve(false));
    let request_size = std::mem::size_of_val(&session.on_client_data());
    eprintln!(
        "session task future {task_size} B, Session {session_size} B, serve future {serve_size} B, \
         request future {request_size} B"
    );
    assert!(
        task_size <= TASK_MAX,
        "the session task's future is {task_size} B"
    );
    assert!(
        serve_size <= SERVE_MAX,
        "the serve future is {serve_size} B"
    );
    assert!(session_size <= SESSION_MAX, "a Session is {session_size} B");
    assert!(
        request_size <= REQUEST_MAX,
        "the request future is {request_size} B: box what is cold in it"
    );
}

/// A parked session keeps no protocol state and no unnamed statement allocated, unless they
/// hold something (an unnamed statement lasts until the client replaces it).
#[tokio::test]
async fn a_parked_session_gives_back_what_holds_nothing() {
    let (_peer, stream) = tcp_pair().await;
    let mut session = Session::new(
        Conn::new(crate::tls::MaybeTls::Plain(stream), BytesMut::new()),
        shared(),
        "app".into(),
        Arc::new(Settings::new()),
        None,
    );
    assert!(!session.proto.is_allocated() && !session.unnamed.is_allocated());
    session
        .proto
        .expect
        .push_back(crate::session::prepared::Expect::Execute);
    session.unnamed.types = vec![23];
    session.park();
    assert!(session.proto.is_allocated() && session.unnamed.is_allocated());
    session.proto.expect.pop_front();
    session.park();
    assert!(
        !session.proto.is_allocated(),
        "an empty protocol state is given back"
    );
    assert!(
        session.unnamed.is_allocated(),
        "the unnamed statement's types are kept"
    );
    session.unnamed.types.clear();
    session.park();
    assert!(!session.unnamed.is_allocated());
}
