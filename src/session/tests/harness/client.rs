//! The client side of session tests, over `tokio::io::duplex` straight into
//! [`crate::session::run`]: tokio-postgres for what real drivers do, and a raw client that writes
//! exact frames ([`Batch`]) and reads the answers as rendered lines, for byte-level corners.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use super::render::server_frame;
use super::HANG;
use crate::shared::Shared;
use crate::wire::split_frame;

/// Bytes a duplex holds in each direction before a writer waits.
const DUPLEX: usize = 64 * 1024;

/// Awaits `future`, failing the test if it takes longer than [`HANG`].
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Starts a session on one end of a fresh duplex and returns the other end.
pub fn open_session(shared: &Arc<Shared>) -> (DuplexStream, JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(DUPLEX);
    let session = tokio::spawn(crate::session::run(theirs, shared.clone()));
    (ours, session)
}

/// A tokio-postgres client logged in as `app` through a session.
pub struct PgClient {
    pub client: tokio_postgres::Client,
}

impl PgClient {
    pub async fn connect(shared: &Arc<Shared>) -> PgClient {
        let (stream, _session) = open_session(shared);
        let mut config = tokio_postgres::Config::new();
        config.user("app").dbname("app").ssl_mode(SslMode::Disable);
        let (client, connection) =
            within("tokio-postgres login", config.connect_raw(stream, NoTls))
                .await
                .expect("login through the session");
        tokio::spawn(connection);
        PgClient { client }
    }

    /// Sends a CancelRequest for this client's key through a second session, as a driver does
    /// on a second connection, and waits until that session has forwarded it.
    pub async fn cancel(&self, shared: &Arc<Shared>) {
        let (stream, session) = open_session(shared);
        let token = self.client.cancel_token();
        within("the cancel request", token.cancel_query_raw(stream, NoTls))
            .await
            .expect("cancel request sent");
        within("the cancel session to end", session)
            .await
            .expect("cancel session");
    }
}

/// Frontend messages written in one go.
#[derive(Debug, Default)]
pub struct Batch(pub BytesMut);

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn query(mut self, sql: &str) -> Batch {
        frontend::query(sql, &mut self.0).expect("query");
        self
    }

    pub fn parse(mut self, name: &str, sql: &str, types: &[u32]) -> Batch {
        frontend::parse(name, sql, types.iter().copied(), &mut self.0).expect("parse");
        self
    }

    /// Bind of text-format parameters.
    pub fn bind(mut self, portal: &str, statement: &str, params: &[&str]) -> Batch {
        let values = params.iter().map(|p| p.as_bytes());
        let serialize = |v: &[u8], buf: &mut BytesMut| {
            buf.extend_from_slice(v);
            Ok(postgres_protocol::IsNull::No)
        };
        frontend::bind(portal, statement, [], values, serialize, [], &mut self.0)
            .map_err(|_| "bind")
            .expect("bind");
        self
    }

    pub fn describe_statement(mut self, name: &str) -> Batch {
        frontend::describe(b'S', name, &mut self.0).expect("describe");
        self
    }

    /// Execute of the unnamed portal, all rows.
    pub fn execute(mut self) -> Batch {
        frontend::execute("", 0, &mut self.0).expect("execute");
        self
    }

    pub fn sync(mut self) -> Batch {
        frontend::sync(&mut self.0);
        self
    }

    pub fn copy_data(mut self, data: &str) -> Batch {
        self.0.extend_from_slice(b"d");
        self.0
            .extend_from_slice(&(4 + data.len() as i32).to_be_bytes());
        self.0.extend_from_slice(data.as_bytes());
        self
    }

    pub fn copy_done(mut self) -> Batch {
        frontend::copy_done(&mut self.0);
        self
    }

    /// Bytes as they are, well-formed or not.
    pub fn raw(mut self, bytes: &[u8]) -> Batch {
        self.0.extend_from_slice(bytes);
        self
    }
}

/// A client writing exact frames into a session and reading its answers as rendered lines.
pub struct RawClient {
    io: DuplexStream,
    buf: BytesMut,
    pub session: JoinHandle<()>,
}

impl RawClient {
    /// Logs in as `app` (database `app`, no other parameters) and reads to the first
    /// ReadyForQuery.
    pub async fn connect(shared: &Arc<Shared>) -> RawClient {
        RawClient::connect_pipelined(shared, Batch::new()).await
    }

    /// Logs in as [`RawClient::connect`] does, writing `batch` in the same write as the
    /// StartupMessage (a client that does not wait for the login before its first request).
    pub async fn connect_pipelined(shared: &Arc<Shared>, batch: Batch) -> RawClient {
        let (io, session) = open_session(shared);
        let mut client = RawClient {
            io,
            buf: BytesMut::new(),
            session,
        };
        let mut startup = BytesMut::new();
        crate::wire::build::startup_message(&mut startup, &[("user", "app"), ("database", "app")]);
        startup.extend_from_slice(&batch.0);
        client.send_bytes(&startup).await;
        let login = client.until_ready().await;
        assert_eq!(login.first().map(String::as_str), Some("R 0"), "{login:?}");
        assert!(login.iter().any(|m| m == "K"), "{login:?}");
        client
    }

    pub async fn send(&mut self, batch: Batch) {
        self.send_bytes(&batch.0).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        within("writing to the session", self.io.write_all(bytes))
            .await
            .expect("the session reads");
    }

    /// The next message, rendered; `None` once the session closed the connection.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf, 1 << 30).expect("a valid frame") {
                return Some(server_frame(&frame));
            }
            let read = within(
                "an answer from the session",
                self.io.read_buf(&mut self.buf),
            );
            if read.await.expect("reading from the session") == 0 {
                assert!(self.buf.is_empty(), "the session closed mid-frame");
                return None;
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let Some(message) = self.recv().await else {
                panic!("the session closed before ReadyForQuery; got {got:?}");
            };
            let ready = message.starts_with("Z ");
            got.push(message);
            if ready {
                return got;
            }
        }
    }

    /// Messages until the session closes the connection.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(message) = self.recv().await {
            got.push(message);
        }
        got
    }

    /// Closes the client's end without a Terminate, as a client that crashed; returns the session.
    pub fn disconnect(self) -> JoinHandle<()> {
        self.session
    }

    /// Sends `batch` and reads to the next ReadyForQuery.
    pub async fn request(&mut self, batch: Batch) -> Vec<String> {
        self.send(batch).await;
        self.until_ready().await
    }
}
