//! One client's session: startup and authentication, then a loop that forwards the client's frames
//! to a pooled server connection and the server's frames back, holding the server connection for a
//! transaction (or the whole session) and no longer. Must never hand a server connection back
//! while a response is outstanding or a transaction is open.

mod aggregate;
mod bound;
pub mod cancel;
mod client_msg;
mod copy_split;
pub mod error;
mod fanout;
mod groups;
mod io;
mod isolation;
pub mod prepared;
mod route;
mod scatter;
mod scatter_extended;
mod server_msg;
pub mod settings;
mod startup;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::cancel::CancelGuard;
use self::error::SessionError;
use self::isolation::IsolationInForce;
use self::prepared::{ClientStatements, Expect};
use self::settings::Settings;
use crate::auth::AuthError;
use crate::backend::{BackendError, BackendManager, ServerPool};
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::{PoolError, Pooled};
use crate::router::{HeldServer, Plan, RouteContext};
use crate::shared::Shared;
use crate::transport::{Conn, Stream};
use crate::wire::build;
use crate::wire::Frame;
use crate::wire::TransactionStatus;

/// Serves one client connection (TCP, TLS, or an in-memory stream in tests) until it ends.
/// Errors go to the client as FATAL ErrorResponses.
pub async fn run<S: Stream>(mut stream: S, shared: Arc<Shared>) {
    let _count = ClientCount::new(&shared);
    let mut buf = BytesMut::new();
    let limit = Duration::from_millis(shared.config.server.startup_timeout_ms);
    let login = tokio::time::timeout(limit, handshake(&mut stream, &mut buf, &shared))
        .await
        .unwrap_or(Err(SessionError::StartupTimeout));
    let (user, settings) = match login {
        Ok(Some(login)) => login,
        Ok(None) => return,
        Err(e) => {
            let mut client = Conn::new(stream, buf);
            io::send_fatal(&mut client, &e).await;
            return;
        }
    };
    let mut session = Session::new(Conn::new(stream, buf), shared, user, settings);
    if let Err(e) = session.serve().await {
        tracing::debug!("session ended: {e}");
        session.send_fatal(&e).await;
    }
}

/// Startup, client limit, authentication, settings: `None` for a CancelRequest.
async fn handshake<S: Stream>(
    stream: &mut S,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Option<(String, Settings)>, SessionError> {
    let Some(startup) = startup::read_startup(stream, buf, shared).await? else {
        return Ok(None);
    };
    let limit = shared.config.server.max_client_connections;
    if shared.clients.load(Ordering::Relaxed) > limit {
        return Err(SessionError::TooManyClients(limit));
    }
    let settings = settings::from_startup(&startup.params)?;
    let user = startup::authenticate(stream, buf, shared, &startup).await?;
    Ok(Some((user, settings)))
}

/// Counts this client among the open ones while it lives.
struct ClientCount(Arc<Shared>);

impl ClientCount {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.clients.fetch_add(1, Ordering::Relaxed);
        ClientCount(shared.clone())
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do after handling a batch of client frames.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// An authenticated client and the server connection it holds, if any.
pub(crate) struct Session<S> {
    /// The client's connection: what it sent (`client.input`), what goes to it (`client.output`).
    client: Conn<S>,
    server: Option<Pooled<BackendManager>>,
    /// Which shard and server kind `server` belongs to.
    held: Option<HeldServer>,
    /// The isolation level the client's transactions run at (for cross-shard reads).
    isolation: IsolationInForce,
    shared: Arc<Shared>,
    user: String,
    settings: Settings,
    /// The session's `SET pgshard.*` overrides and transaction mode, for the router.
    ctx: RouteContext,
    /// Frames (Parses) waiting for the frame that decides their route.
    pending: Vec<Frame>,
    /// A frame waiting until the server connection held now is released.
    stalled: Option<Frame>,
    /// A BEGIN answered by pgshard, to be sent with the first statement that picks the shard.
    begin: Option<Bytes>,
    /// Plan and declared parameter types of the unnamed statement of the current batch.
    unnamed_plan: Option<Arc<Plan>>,
    unnamed_types: Vec<u32>,
    /// The unnamed statement may change the server session's role or settings unseen.
    unnamed_changes_session: bool,
    /// The client's last unnamed Parse, and whether the server connection held now got it: a
    /// batch that moves to another connection sends it there before binding it.
    unnamed_parse: Option<Bytes>,
    unnamed_held: bool,
    /// The statement being run may: connections it reaches are reset before the next client.
    changes_session: bool,
    /// pgshard refused a statement inside the client's transaction: only its end may run.
    aborted: bool,
    /// Client frames of the current plain replica read, kept so it can run elsewhere if its
    /// server goes away before the client has seen any of the answer.
    replay: Option<Vec<BytesMut>>,
    statements: ClientStatements,
    expect: VecDeque<Expect>,
    /// Extended-protocol messages were sent since the last Sync.
    awaiting_sync: bool,
    /// An error was reported for an extended-protocol batch: drop frames up to its Sync.
    skipping_until_sync: bool,
    /// The server is in copy-in mode: it ignores Sync and Flush until CopyDone or CopyFail.
    copy_in: bool,
    /// A portal pgshard bound itself (a cross-shard read, a held-back BEGIN), until its Execute.
    bound: Option<Box<bound::Bound>>,
    /// Transaction status as the client last saw it.
    status: TransactionStatus,
    cancel: CancelGuard,
    mode: PoolMode,
    max_message: usize,
}

impl<S: Stream> Session<S> {
    fn new(client: Conn<S>, shared: Arc<Shared>, user: String, settings: Settings) -> Self {
        let cancel = shared.cancel.register();
        Session {
            client,
            server: None,
            held: None,
            isolation: IsolationInForce::new(
                shared.server_default_isolation(),
                settings
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("default_transaction_isolation"))
                    .map(|(_, value)| value.as_str()),
            ),
            mode: shared.config.server.pool_mode,
            max_message: shared.config.server.max_message_bytes,
            shared,
            user,
            settings,
            ctx: RouteContext::default(),
            pending: Vec::new(),
            stalled: None,
            begin: None,
            unnamed_plan: None,
            unnamed_types: Vec::new(),
            unnamed_changes_session: false,
            unnamed_parse: None,
            unnamed_held: false,
            changes_session: false,
            aborted: false,
            replay: None,
            statements: ClientStatements::default(),
            expect: VecDeque::new(),
            awaiting_sync: false,
            skipping_until_sync: false,
            copy_in: false,
            bound: None,
            status: TransactionStatus::Idle,
            cancel,
        }
    }

    /// Completes the login (first server checkout, ParameterStatus, BackendKeyData), then loops.
    async fn serve(&mut self) -> Result<(), SessionError> {
        let default_shard = self.shared.router.load().default_shard();
        let pool = self.shared.shards[default_shard]
            .primary
            .pools
            .get(&self.user)
            .cloned();
        let pool =
            pool.ok_or_else(|| SessionError::Auth(AuthError::PasswordFailed(self.user.clone())))?;
        self.checkout(pool).await?;
        self.held = Some(HeldServer {
            shard: default_shard,
            primary: true,
        });
        if let Some(conn) = self.server.as_deref() {
            for (name, value) in &conn.params {
                build::parameter_status(&mut self.client.output, name, value);
            }
        }
        let (process_id, secret_key) = self.cancel.key;
        build::backend_key_data(&mut self.client.output, process_id, secret_key);
        build::ready_for_query(&mut self.client.output, TransactionStatus::Idle);
        loop {
            self.release_if_done();
            let event = if self.stalled.is_some() && self.server.is_none() {
                // The frame that waited for a route can go now.
                io::Event::Resume
            } else {
                self.next_event().await?
            };
            let flow = match event {
                io::Event::ClientClosed => Flow::Exit,
                io::Event::ClientData if self.stalled.is_some() => Flow::Continue,
                io::Event::ClientData | io::Event::Resume => self.on_client_data().await?,
                io::Event::ServerData => {
                    if let Err(e) = self.on_server_data() {
                        self.recover_server(e).await?;
                    }
                    Flow::Continue
                }
                io::Event::ServerFailed(e) => {
                    self.recover_server(e).await?;
                    Flow::Continue
                }
                io::Event::Wrote => Flow::Continue,
            };
            if flow == Flow::Exit {
                return Ok(());
            }
            if let Err(e) = self.write_server() {
                self.recover_server(e).await?;
            }
            self.write_client()?;
        }
    }

    /// Takes a server connection from the pool and brings it to this client's settings.
    async fn checkout(&mut self, pool: ServerPool) -> Result<(), SessionError> {
        let conn = self.connection_from(&pool).await?;
        self.cancel.slot.set(Some(conn.cancel_key.clone()));
        self.server = Some(conn);
        self.unnamed_held = false;
        Ok(())
    }

    /// A connection from `pool`, brought to this client's settings (not held by the session).
    async fn connection_from(
        &self,
        pool: &ServerPool,
    ) -> Result<Pooled<BackendManager>, SessionError> {
        tracing::trace!(key = self.cancel.key.0, status = ?pool.status(), "checkout");
        let mut conn = pool.get().await.map_err(|e| match e {
            PoolError::Timeout(waited) => SessionError::CheckoutTimeout {
                pool: format!(
                    "{}/{}",
                    pool.manager().login.addr,
                    pool.manager().login.user
                ),
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            },
            PoolError::Connect(e) => SessionError::Backend(e),
            PoolError::Closed => {
                SessionError::Backend(BackendError::Protocol("pool closed".into()))
            }
        })?;
        conn.apply_settings(&self.settings).await?;
        conn.settings_unknown |= self.changes_session;
        Ok(conn)
    }

    /// In transaction mode, gives the server connection back once it is idle with nothing owed.
    fn release_if_done(&mut self) {
        if self.mode != PoolMode::Transaction || !self.expect.is_empty() || self.awaiting_sync {
            return;
        }
        let Some(conn) = self.server.as_deref_mut() else {
            return;
        };
        if conn.status != TransactionStatus::Idle
            || !conn.io.input.is_empty()
            || !conn.io.output.is_empty()
        {
            return;
        }
        conn.in_flight = false;
        tracing::trace!(key = self.cancel.key.0, "release");
        self.cancel.slot.set(None);
        self.server = None;
        self.held = None;
        self.replay = None;
        // An idle client keeps no buffers.
        self.client.shrink_idle();
    }

    /// Queues bytes pgshard answers itself, behind whatever the server still owes the client.
    pub(super) fn answer(&mut self, write: impl FnOnce(&mut BytesMut)) {
        if self.expect.is_empty() {
            write(&mut self.client.output);
        } else {
            let mut bytes = BytesMut::new();
            write(&mut bytes);
            self.expect.push_back(Expect::Answer(bytes.freeze()));
        }
    }

    /// Queues an ERROR for the client (the session goes on).
    fn report_error(&mut self, e: &SessionError) {
        let error = ClientError::from(e);
        self.answer(|out| error.encode(out));
    }

    /// Sends a FATAL error and whatever is still queued for the client; best effort.
    async fn send_fatal(&mut self, e: &SessionError) {
        if e.reaches_client() {
            ClientError::from(e).fatal().encode(&mut self.client.output);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.drain()).await;
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        if let Some(conn) = self.server.as_deref_mut() {
            conn.in_flight |=
                !self.expect.is_empty() || self.awaiting_sync || !conn.io.output.is_empty();
            if self.mode == PoolMode::Session {
                conn.needs_discard = true;
            }
        }
        self.cancel.slot.set(None);
    }
}
