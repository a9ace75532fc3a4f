//! One client's session: startup and authentication, then a loop that forwards the client's frames
//! to a pooled server connection and the server's frames back, holding the server connection for a
//! transaction (or the whole session) and no longer. Must never hand a server connection back
//! while a response is outstanding or a transaction is open.

mod admission;
mod aggregate;
mod bound;
mod client_msg;
mod columns;
mod copy_split;
pub mod error;
mod fanout;
mod groups;
mod io;
mod isolation;
mod lazy;
mod meter;
mod own_writes;
pub mod prepared;
mod replay;
mod route;
mod scatter;
mod scatter_extended;
mod server_msg;
pub mod settings;
mod settle;
mod shards;
mod startup;
pub mod state;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::error::SessionError;
use self::meter::Checkout;
use self::prepared::{ClientStatements, Expect};
use self::settings::Settings;
use self::state::SessionState;
use self::transaction::ClientTransaction;
use crate::auth::AuthError;
use crate::backend::{BackendManager, ServerPool};
use crate::config::{PoolMode, ReadFrom};
use crate::error::ClientError;
use crate::pool::{PoolError, Pooled};
use crate::router::{HeldServer, Plan, RouteContext, Target};
use crate::shared::Shared;
use crate::stats::{NewClient, Stopped};
use crate::tls::MaybeTls;
use crate::transport::{Conn, Stream};
use crate::wire::build;
use crate::wire::Frame;
use crate::wire::TransactionStatus;

/// Serves one client connection (TCP, TLS, or an in-memory stream in tests) until it ends.
/// Errors go to the client as FATAL ErrorResponses.
/// A graceful shutdown closes it while it waits between transactions (through its entry in the
/// client registry).
pub async fn run<S: Stream>(stream: S, shared: Arc<Shared>) {
    let _count = ClientCount::new(&shared.clients);
    // Boxed, as everything below that is large and short-lived or cold: the task's own future
    // then holds a few pointers while the client is idle (see `tests/footprint.rs`).
    let Some(mut session) = Box::pin(log_in(stream, shared)).await else {
        return;
    };
    let entry = session.meter.client.entry.clone();
    let mut starting = true;
    let e = loop {
        let starts = std::mem::take(&mut starting);
        match entry.until_stopped(session.serve(starts)).await {
            Ok(Ok(Served::Parked)) => {}
            Ok(Ok(Served::Ended)) => return,
            Ok(Err(e)) => break e,
            Err(Stopped::Killed) => break SessionError::Killed,
            Err(Stopped::Closed) => break SessionError::ShuttingDown,
        }
        // Parked: no server connection held and nothing to write. The wait for the client's
        // next bytes holds neither `serve` nor a buffer.
        match session.parked(&entry).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => break e,
        }
    };
    Box::pin(end_with(session, e)).await;
}

/// Ends the session with `e`: the client gets it as a FATAL ErrorResponse.
async fn end_with<S: Stream>(mut session: Box<Session<S>>, e: SessionError) {
    tracing::debug!("session ended: {e}");
    session.send_fatal(e).await;
}

/// Startup and authentication: the client's session, or `None` when the connection ended
/// here (a CancelRequest, a failed login, an admin console session served to its end).
async fn log_in<S: Stream>(stream: S, shared: Arc<Shared>) -> Option<Box<Session<MaybeTls<S>>>> {
    let addr = crate::transport::peer_addr(&stream);
    let mut stream = MaybeTls::Plain(stream);
    let mut buf = BytesMut::new();
    let limit = Duration::from_millis(shared.config.server.startup_timeout_ms);
    let login = Box::pin(tokio::time::timeout(
        limit,
        handshake(&mut stream, &mut buf, &shared),
    ))
    .await
    .unwrap_or(Err(SessionError::StartupTimeout));
    let (user, settings, admission) = match login {
        Ok(Some(Login::Client(user, settings, admission))) => (user, settings, admission),
        Ok(Some(Login::Console(login))) => {
            let login = crate::admin::Login { addr, ..login };
            Box::pin(crate::admin::serve(Conn::new(stream, buf), shared, login)).await;
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            if e.reaches_client() {
                shared.metrics.error(ClientError::from(&e).code.as_str());
            }
            let mut client = Conn::new(stream, buf);
            io::send_fatal(&mut client, &e).await;
            return None;
        }
    };
    let mut session = Box::new(Session::new(
        Conn::new(stream, buf),
        shared,
        user,
        settings,
        addr,
    ));
    session.admission = admission;
    Some(session)
}

/// Who logged in: a client of the served database, or of the admin console.
enum Login {
    Client(String, Arc<Settings>, admission::UserAdmission),
    Console(crate::admin::Login),
}

/// Startup, client limit, authentication, settings: `None` for a CancelRequest.
async fn handshake<S: Stream>(
    stream: &mut MaybeTls<S>,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Option<Login>, SessionError> {
    let Some(startup) = startup::read_startup(stream, buf, shared).await? else {
        return Ok(None);
    };
    let limit = shared.config.server.max_client_connections;
    if shared.clients.load(Ordering::Relaxed) > limit {
        return Err(SessionError::TooManyClients(limit));
    }
    let settings = settings::from_startup(&startup.params)?;
    let login = startup::authenticate(stream, buf, shared, &startup).await?;
    if let Some(full) = login.console {
        let database = startup.param("database").unwrap_or_default().to_string();
        return Ok(Some(Login::Console(crate::admin::Login {
            user: login.user,
            full,
            database,
            addr: None,
        })));
    }
    if shared.control.is_disabled() {
        return Err(SessionError::LoginsDisabled);
    }
    let admission = admission::admit(shared, &login.user)?;
    let settings = shared.startup_sets.share(settings);
    Ok(Some(Login::Client(login.user, settings, admission)))
}

/// Counts this client among the open ones while it lives (in every generation's count).
struct ClientCount(Arc<AtomicUsize>);

impl ClientCount {
    fn new(clients: &Arc<AtomicUsize>) -> Self {
        clients.fetch_add(1, Ordering::Relaxed);
        ClientCount(clients.clone())
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why [`Session::serve`] returned.
enum Served {
    /// The client left.
    Ended,
    /// The client is between requests with no server connection held and nothing to write.
    Parked,
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
    /// The server connection held now (for the client's transaction or the current request),
    /// which shard and kind it is, and the frames to run again if a replica read loses it.
    server: Option<Pooled<BackendManager>>,
    held: Option<HeldServer>,
    replay: Option<replay::Replay>,
    /// What the server owes for what was sent, and where the client's extended batch stands.
    proto: lazy::Lazy<Protocol>,
    /// The client's transaction: outside, held back, or on the server; failed; isolation.
    tx: ClientTransaction,
    /// The client's prepared statements, and its unnamed one.
    statements: ClientStatements,
    unnamed: lazy::Lazy<Unnamed>,
    /// What the statement being run may do to the server session: connections it reaches are
    /// read back or reset before anyone else uses them.
    effects: state::Effects,
    /// Shards this client wrote on, whose replicas serve its reads only once they replayed it.
    own_writes: own_writes::OwnWrites,
    /// Who the client is and what it asked for: its server-session state (settings, role,
    /// what pins it to a server connection), `SET pgshard.*` overrides.
    shared: Arc<Shared>,
    state: SessionState,
    ctx: RouteContext,
    mode: PoolMode,
    max_message: usize,
    /// Schema changes seen, for the column order of INSERTs without a column list.
    schema: columns::SchemaWatch,
    /// The client's place among its user's clients, and the user's statement rate limit.
    admission: admission::UserAdmission,
    /// It told its registry entry that it waits between transactions (a graceful shutdown may
    /// close it then).
    marked_waiting: bool,
    /// When the request the held server connection answers now was sent (metrics on).
    request_started: Option<std::time::Instant>,
    /// A statement ran on the held server connection since its last transaction ended.
    statement_on_server: bool,
    /// Counts for SHOW STATS and SHOW CLIENTS, and this client's registry entry.
    meter: meter::Meter,
    /// The transaction's era and the routed slot, for a slot move's cutover hold.
    cutover: admission::Cutover,
}

/// Where the client's protocol stands with the held server connection.
#[derive(Default)]
struct Protocol {
    /// Responses owed (or to make up), in the order they reach the client.
    expect: VecDeque<Expect>,
    /// Extended-protocol messages were sent since the last Sync.
    awaiting_sync: bool,
    /// An error was reported for an extended-protocol batch: drop frames up to its Sync.
    skipping_until_sync: bool,
    /// The server is in copy-in mode: it ignores Sync and Flush until CopyDone or CopyFail.
    copy_in: bool,
    /// Frames (Parses) waiting for the frame that decides their route.
    pending: Vec<Frame>,
    /// A frame waiting until the server connection held now is released.
    stalled: Option<Frame>,
    /// A portal pgshard bound itself (a cross-shard read, a held-back BEGIN), until its Execute.
    bound: Option<Box<bound::Bound>>,
}

static NO_PROTOCOL: Protocol = Protocol {
    expect: VecDeque::new(),
    awaiting_sync: false,
    skipping_until_sync: false,
    copy_in: false,
    pending: Vec::new(),
    stalled: None,
    bound: None,
};

impl lazy::Empty for Protocol {
    fn empty() -> &'static Self {
        &NO_PROTOCOL
    }

    fn is_empty(&self) -> bool {
        let Protocol {
            expect,
            awaiting_sync,
            skipping_until_sync,
            copy_in,
            pending,
            stalled,
            bound,
        } = self;
        expect.is_empty()
            && !awaiting_sync
            && !skipping_until_sync
            && !copy_in
            && pending.is_empty()
            && stalled.is_none()
            && bound.is_none()
    }
}

/// The client's unnamed statement of the current batch.
#[derive(Default)]
struct Unnamed {
    /// Its plan and declared parameter types.
    plan: Option<Arc<Plan>>,
    types: Vec<u32>,
    /// What it may do to the server session.
    effects: state::Effects,
    /// Its Parse, and whether the server connection held now got it: a batch that moves to
    /// another connection sends it there before binding it.
    parse: Option<Bytes>,
    held: bool,
}

static NO_UNNAMED: Unnamed = Unnamed {
    plan: None,
    types: Vec::new(),
    effects: state::Effects::NONE,
    parse: None,
    held: false,
};

impl lazy::Empty for Unnamed {
    fn empty() -> &'static Self {
        &NO_UNNAMED
    }

    fn is_empty(&self) -> bool {
        let Unnamed {
            plan,
            types,
            effects,
            parse,
            held,
        } = self;
        plan.is_none()
            && types.is_empty()
            && *effects == state::Effects::NONE
            && parse.is_none()
            && !held
    }
}

impl<S: Stream> Session<S> {
    /// The user the client logged in as (kept in its registry entry).
    fn user(&self) -> &str {
        &self.meter.client.entry.user
    }

    fn new(
        client: Conn<S>,
        shared: Arc<Shared>,
        user: String,
        settings: Arc<Settings>,
        addr: Option<std::net::SocketAddr>,
    ) -> Self {
        let application_name = settings
            .get("application_name")
            .cloned()
            .unwrap_or_default();
        let registered = shared.stats.clients.register(NewClient {
            user: shared.user_name(&user),
            database: shared.database.clone(),
            addr,
            application_name,
            console: false,
        });
        let meter = meter::Meter::new(registered, &shared.stats);
        let startup_isolation = settings
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("default_transaction_isolation"))
            .map(|(_, value)| value.as_str());
        Session {
            client,
            server: None,
            held: None,
            replay: None,
            proto: lazy::Lazy::default(),
            tx: ClientTransaction::new(shared.server_default_isolation(), startup_isolation),
            statements: ClientStatements::default(),
            unnamed: lazy::Lazy::default(),
            effects: state::Effects::NONE,
            own_writes: own_writes::OwnWrites::default(),
            mode: shared.config.server.pool_mode,
            max_message: shared.config.server.max_message_bytes,
            shared,
            state: SessionState::new(settings),
            ctx: RouteContext::default(),
            schema: columns::SchemaWatch::default(),
            admission: admission::UserAdmission {
                _slot: None,
                rate: None,
            },
            marked_waiting: false,
            request_started: None,
            statement_on_server: false,
            meter,
            cutover: admission::Cutover::default(),
        }
    }

    /// Completes the login: the first server checkout, ParameterStatus, BackendKeyData.
    async fn start(&mut self) -> Result<(), SessionError> {
        let default_shard = self.shared.router.load().default_shard();
        let pool = self.shared.shards[default_shard]
            .primary
            .pools
            .get(self.user())
            .cloned();
        let pool = pool.ok_or_else(|| {
            SessionError::Auth(AuthError::PasswordFailed(self.user().to_string()))
        })?;
        let since = self.meter_checkout_starts();
        let conn = Box::pin(self.connection_from(&pool, default_shard)).await;
        self.hold_server(conn, default_shard, true, Checkout::Since(since))?;
        if let Some(conn) = self.server.as_deref() {
            for (name, value) in conn.params() {
                build::parameter_status(&mut self.client.output, name, value);
            }
        }
        let (process_id, secret_key) = self.meter.client.entry.key();
        build::backend_key_data(&mut self.client.output, process_id, secret_key);
        build::ready_for_query(&mut self.client.output, TransactionStatus::Idle);
        // Written now, so that a client idle from its login on keeps no output buffer.
        self.write_client()?;
        Ok(())
    }

    /// Serves the client (after completing its login when `starting`) until it leaves
    /// (`Ended`) or waits with nothing held and nothing to write (`Parked`: see
    /// [`Session::parked`]). What is in `client.input` (requests the client wrote with its
    /// StartupMessage, or what a parked session read) is handled first: no read announces it.
    async fn serve(&mut self, starting: bool) -> Result<Served, SessionError> {
        if starting {
            Box::pin(self.start()).await?;
        }
        let mut read_with_startup = !self.client.input.is_empty();
        loop {
            self.at_quiet_point().await?;
            let event = if self.proto.stalled.is_some()
                && (self.server.is_none() || self.held_in_transaction())
            {
                // The frame that waited for a route can go now (or be refused).
                io::Event::Resume
            } else if std::mem::take(&mut read_with_startup) {
                io::Event::ClientData
            } else if self.may_park() {
                self.park();
                return Ok(Served::Parked);
            } else {
                let event = self.next_event().await?;
                self.woken()?;
                event
            };
            let flow = match event {
                io::Event::ClientClosed => Flow::Exit,
                io::Event::ClientData if self.proto.stalled.is_some() => Flow::Continue,
                // Boxed: an idle client's parked `serve` then holds no room for the work a
                // request does (one allocation per burst of client data, freed when done).
                io::Event::ClientData | io::Event::Resume => {
                    Box::pin(self.on_client_data()).await?
                }
                io::Event::ServerData => {
                    if let Err(e) = self.on_server_data() {
                        Box::pin(self.recover_server(e)).await?;
                    }
                    Flow::Continue
                }
                io::Event::ServerFailed(e) => {
                    Box::pin(self.recover_server(e)).await?;
                    Flow::Continue
                }
                io::Event::Wrote => Flow::Continue,
            };
            if flow == Flow::Exit {
                return Ok(Served::Ended);
            }
            if let Err(e) = self.write_server() {
                Box::pin(self.recover_server(e)).await?;
            }
            self.write_client()?;
        }
    }

    /// Checks out a connection to a healthy replica of `shard` for a plain read (round-robin, the
    /// next one if a replica cannot be reached), else to its primary. A checkout that finds an
    /// idle connection ready for this client completes without awaiting; the rest (a wait, a
    /// connect, a settings round trip, a pause) is boxed, so that a request's future stays
    /// small (it is allocated per burst of client data).
    pub(super) async fn checkout_route(
        &mut self,
        shard: usize,
        target: Target,
    ) -> Result<(), SessionError> {
        let since = self.meter_checkout_starts();
        let turn = self.replica_turn(shard, target);
        // A checkout without an await ends when it began: one clock reading less.
        let (got, since) = match self.connection_now(shard, turn) {
            Some(got) => (got, Checkout::Now(since)),
            None => (
                Box::pin(self.connection_for(shard, turn)).await,
                Checkout::Since(since),
            ),
        };
        match got {
            Ok((conn, primary)) => self.hold_server(Ok(conn), shard, primary, since),
            Err(e) => self.hold_server(Err(e), shard, false, since),
        }
    }

    /// Holds the connection a checkout got (of `shard`, its primary or not), or counts the
    /// failed checkout and passes its error on.
    fn hold_server(
        &mut self,
        taken: Result<Pooled<BackendManager>, SessionError>,
        shard: usize,
        primary: bool,
        since: Checkout,
    ) -> Result<(), SessionError> {
        let conn = taken.inspect_err(|_| self.meter_checkout_ends(since))?;
        self.meter.client.entry.cancel.set(Some(conn.cancel_key()));
        self.server = Some(conn);
        if let Some(unnamed) = self.unnamed.existing_mut() {
            unnamed.held = false;
        }
        self.held = Some(HeldServer { shard, primary });
        self.meter_checkout_ends(since);
        Ok(())
    }

    /// Where a checkout for `shard` starts among its replicas (round-robin), or `None` when it
    /// does not spread over them: not a plain read, reads on the primary, no replicas, or a
    /// client whose transactions default to serializable.
    pub(super) fn replica_turn(&self, shard: usize, target: Target) -> Option<usize> {
        let pools = &self.shared.shards[shard];
        let spread = target == Target::Replica
            && self.shared.config.shards[shard].read_from == ReadFrom::Replicas
            && !self.state.serializable_by_default()
            && !pools.replicas.is_empty();
        spread.then(|| {
            pools
                .next_replica
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// The pools a checkout for `shard` tries, in order, each with whether it is the primary:
    /// with a replica `turn`, its healthy replicas that have replayed this client's writes
    /// (from that turn on), then the primary, or the error that it is down.
    fn checkout_order(
        &self,
        shard: usize,
        turn: Option<usize>,
    ) -> impl Iterator<Item = Result<(&ServerPool, bool), SessionError>> + '_ {
        let pools = &self.shared.shards[shard];
        let n = if turn.is_some() {
            pools.replicas.len()
        } else {
            0
        };
        let start = turn.unwrap_or(0);
        let replicas = (0..n).filter_map(move |i| {
            let index = (start + i) % n;
            let replica = &pools.replicas[index];
            let pool = replica.pools.get(self.user())?;
            // A replica that has not replayed this client's write yet does not serve it
            // (unless the primary is down: a read there would fail).
            let replayed = self.own_writes.allows(&self.shared.shards, shard, index)
                || !pools.primary.health.is_up();
            (replica.health.is_up() && replayed).then_some(Ok((pool, false)))
        });
        let primary = std::iter::once_with(move || {
            let down = || SessionError::ShardDown {
                shard: pools.name.clone(),
                addr: pools.primary.addr.clone(),
            };
            if !pools.primary.health.is_up() {
                return Err(down());
            }
            let pool = pools.primary.pools.get(self.user()).ok_or_else(down)?;
            Ok((pool, true))
        });
        replicas.chain(primary)
    }

    /// The checkout of [`Session::connection_for`] when it needs no waiting: an idle connection
    /// of the first pool in order, already at this client's settings. `None`: it must wait (or
    /// connect, or bring the settings over), and an idle connection taken is given back.
    fn connection_now(
        &self,
        shard: usize,
        turn: Option<usize>,
    ) -> Option<Result<(Pooled<BackendManager>, bool), SessionError>> {
        if self.shared.control.any_paused() {
            return None;
        }
        let (pool, primary) = match self.checkout_order(shard, turn).next()? {
            Ok(first) => first,
            Err(e) => return Some(Err(e)),
        };
        let conn = pool.get_idle_now(self.meter.now())?;
        if !conn.has_settings(self.state.wanted()) {
            return None;
        }
        self.shared.metrics.checkout_at_once(shard);
        Some(Ok((self.marked(conn), primary)))
    }

    /// Checks out a connection for `shard` (from its replicas first with a `turn`: see
    /// [`Session::replica_turn`] and [`Session::checkout_route`]).
    pub(super) async fn connection_for(
        &self,
        shard: usize,
        turn: Option<usize>,
    ) -> Result<(Pooled<BackendManager>, bool), SessionError> {
        for candidate in self.checkout_order(shard, turn) {
            let (pool, primary) = candidate?;
            match self.connection_from(pool, shard).await {
                Ok(conn) => return Ok((conn, primary)),
                // A replica that cannot serve (unreachable, shutting down: 57P01/57P03, broken):
                // try the next one, then the primary. Reads never fail for a replica's sake.
                Err(SessionError::Backend(e)) if !primary => {
                    tracing::debug!("replica of shard {shard} unavailable for a read: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the checkout order ends with the primary")
    }

    /// A connection from `pool` (of `shard`), brought to this client's settings (not held by
    /// the session).
    async fn connection_from(
        &self,
        pool: &ServerPool,
        shard: usize,
    ) -> Result<Pooled<BackendManager>, SessionError> {
        tracing::trace!(key = self.meter.client.entry.id, status = ?pool.status(), "checkout");
        if self.shared.control.any_paused() {
            // PAUSE from the admin console: hold until RESUME.
            let name = &self.shared.shards[shard].name;
            self.shared.control.wait_unpaused(name).await;
        }
        let started = self.shared.metrics.now();
        let got = match pool.get_idle_now(std::time::Instant::now()) {
            Some(conn) => Ok(conn),
            // Not boxed again: this future is already boxed where only a checkout that waits
            // or connects pays for it (`checkout_route`, `start`), and the pool's is small.
            None => pool.get().await,
        };
        self.shared.metrics.checkout_waited(shard, started);
        let mut conn = got.map_err(|e| match e {
            PoolError::Timeout(waited) => SessionError::CheckoutTimeout {
                pool: format!(
                    "{}/{}",
                    pool.manager().login.addr,
                    pool.manager().login.user
                ),
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            },
            PoolError::Connect(e) => SessionError::Backend(e),
        })?;
        if !conn.has_settings(self.state.wanted()) {
            // Boxed: only a connection left with other settings pays for the round trip's future.
            Box::pin(conn.apply_settings(self.state.wanted())).await?;
        }
        Ok(self.marked(conn))
    }

    /// A connection checked out for this client: if the client's statements may change the
    /// session beyond what pgshard tracks, its settings count as unknown from now on.
    fn marked(&self, mut conn: Pooled<BackendManager>) -> Pooled<BackendManager> {
        if self.effects.changes {
            conn.mark_settings_unknown();
        }
        conn
    }

    /// In transaction mode, gives the server connection back once it is idle with nothing owed
    /// (unless the client holds session state on it).
    fn release_if_done(&mut self) {
        if self.mode != PoolMode::Transaction
            || !self.proto.expect.is_empty()
            || self.proto.awaiting_sync
            || self.state.pinned().is_some()
        {
            return;
        }
        let Some(conn) = self.server.as_deref_mut() else {
            return;
        };
        if conn.status() != TransactionStatus::Idle || !conn.is_quiet() {
            return;
        }
        conn.set_in_flight(false);
        tracing::trace!(key = self.meter.client.entry.id, "release");
        if let Some(conn) = self.let_go_of_server() {
            // Back to the pool at this wake-up's clock reading (no reading of its own).
            conn.put_back(self.meter.now());
        }
        // An idle client keeps no buffers.
        self.client.shrink_idle();
    }

    /// The held server connection owes nothing yet stays held, a transaction being open on it
    /// that began unseen (`SELECT 1; BEGIN` is no BEGIN to pgshard): the client's transaction is
    /// there now, and a frame waiting for that connection's release would wait forever.
    fn held_in_transaction(&mut self) -> bool {
        let owed = !self.proto.expect.is_empty() || self.proto.awaiting_sync;
        let Some(conn) = self.server.as_deref() else {
            return false;
        };
        let status = conn.status();
        if owed || !conn.is_quiet() || status == TransactionStatus::Idle || self.tx.is_held_back() {
            return false;
        }
        self.tx.on_server_ready(status);
        true
    }

    /// Stops holding the server connection (back to the pool, or closed if it is marked
    /// broken or in flight): the one place a session lets go of it.
    fn let_go_of_server(&mut self) -> Option<Pooled<BackendManager>> {
        self.meter.client.entry.cancel.set(None);
        self.held = None;
        self.replay = None;
        self.request_started = None;
        // A write on it has committed: start looking for the replicas that replay it.
        self.own_writes.refresh(&self.shared.shards, None);
        let conn = self.server.take();
        if let Some(conn) = &conn {
            self.meter_release(conn);
        }
        conn
    }

    /// Queues bytes pgshard answers itself, behind whatever the server still owes the client.
    pub(super) fn answer(&mut self, write: impl FnOnce(&mut BytesMut)) {
        if self.proto.expect.is_empty() {
            write(&mut self.client.output);
        } else {
            let mut bytes = BytesMut::new();
            write(&mut bytes);
            self.proto.expect.push_back(Expect::Answer(bytes.freeze()));
        }
    }

    /// Queues an ERROR for the client (the session goes on).
    fn report_error(&mut self, e: &SessionError) {
        let error = ClientError::from(e);
        self.shared.metrics.error(error.code.as_str());
        self.answer(|out| error.encode(out));
    }

    /// Sends a FATAL error and whatever is still queued for the client; best effort.
    async fn send_fatal(&mut self, e: SessionError) {
        if e.reaches_client() {
            let error = ClientError::from(&e).fatal();
            self.shared.metrics.error(error.code.as_str());
            error.encode(&mut self.client.output);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.drain()).await;
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        if let Some(conn) = self.server.as_deref_mut() {
            let owed =
                !self.proto.expect.is_empty() || self.proto.awaiting_sync || conn.queued() > 0;
            conn.set_in_flight(conn.in_flight() || owed);
            // Session mode, or state kept on this connection (or maybe kept: not read back yet):
            // DISCARD ALL before anyone else gets it.
            if self.mode == PoolMode::Session
                || self.state.pinned().is_some()
                || self.state.is_dirty()
            {
                conn.mark_needs_discard();
            }
        }
        if self.state.pinned().is_some() {
            self.shared.pinned_clients.fetch_sub(1, Ordering::Relaxed);
        }
        self.meter.client.entry.cancel.set(None);
        self.meter
            .flush_at_end(self.server.as_ref(), &self.shared.stats);
    }
}
