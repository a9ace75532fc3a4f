//! One server connection: startup and authentication as the server asks (SCRAM-SHA-256, md5,
//! cleartext), its reported parameters, the settings applied for clients, the prepared statements it
//! holds, and its transaction status. Never forwards anything to a client itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::net::TcpStream;

pub use super::cancel::CancelKey;
use super::{BackendError, MAX_SERVER_MESSAGE};
use crate::tls::{BackendTls, MaybeTls, NetStream};
use crate::transport::Conn;
use crate::wire::{build, server_tag, Frame, TransactionStatus};

/// Who to log in as, and where.
#[derive(Debug, Clone)]
pub struct LoginParams {
    pub addr: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    /// TLS to the server (`[backend_tls]`); `None` for plain.
    pub tls: Option<Arc<BackendTls>>,
}

/// The same login: equal fields, and the very same TLS setup (a reload keeps it while
/// `[backend_tls]` is unchanged).
impl PartialEq for LoginParams {
    fn eq(&self, other: &LoginParams) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_tls
            && self.addr == other.addr
            && self.database == other.database
            && self.user == other.user
            && self.password == other.password
            && self.connect_timeout == other.connect_timeout
    }
}

/// An open, authenticated server connection.
#[derive(Debug)]
pub struct ServerConnection {
    /// The socket with its buffers: `io.input` holds what the server sent and was not handled
    /// yet, `io.output` what is queued for the server.
    pub(super) io: Conn<NetStream>,
    pub(super) addr: String,
    pub(super) process_id: i32,
    pub(super) secret_key: i32,
    /// This connection's cancel key, shared with the cancel registry while a client uses it.
    pub(super) cancel_key: Arc<CancelKey>,
    /// Values the server reported with ParameterStatus.
    pub(super) params: HashMap<String, String>,
    /// Settings applied with SET for the current client (name → value as the client gave it).
    /// Shared with the client whose settings were brought over (`apply_settings`), so that
    /// the next client with the same settings (`Arc`) is recognized without comparing maps.
    pub(super) applied: Arc<BTreeMap<String, String>>,
    /// Server-side names of the prepared statements this connection holds.
    /// (foldhash: looked up for every Bind and Parse of a named statement.)
    pub(super) prepared: HashSet<String, foldhash::fast::RandomState>,
    pub(super) status: TransactionStatus,
    /// Requests were sent whose responses have not all arrived.
    pub(super) in_flight: bool,
    /// The connection failed or its state is unknown.
    pub(super) broken: bool,
    /// Session mode: the client's session state must be wiped (DISCARD ALL) before reuse.
    pub(super) needs_discard: bool,
    /// A client changed settings itself (SET, RESET, DISCARD ALL): `applied` no longer describes
    /// the server, so the next [`ServerConnection::apply_settings`] starts from RESET ALL.
    pub(super) settings_unknown: bool,
    /// Who it logged in as.
    pub(super) user: String,
}

impl ServerConnection {
    /// Opens and authenticates a connection, waiting for its first ReadyForQuery.
    pub async fn connect(login: &LoginParams) -> Result<ServerConnection, BackendError> {
        let stream = tokio::time::timeout(login.connect_timeout, TcpStream::connect(&login.addr))
            .await
            .map_err(|_| BackendError::ConnectTimeout(login.addr.clone()))?
            .map_err(|source| BackendError::Connect {
                addr: login.addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let stream = match &login.tls {
            None => MaybeTls::Plain(stream),
            Some(tls) => {
                tokio::time::timeout(login.connect_timeout, tls.negotiate(stream, &login.addr))
                    .await
                    .map_err(|_| BackendError::ConnectTimeout(login.addr.clone()))?
                    .map_err(|source| BackendError::Tls {
                        addr: login.addr.clone(),
                        source,
                    })?
            }
        };
        let mut conn = ServerConnection {
            io: Conn::keeping_input(stream, BytesMut::with_capacity(8192)),
            addr: login.addr.clone(),
            process_id: 0,
            secret_key: 0,
            cancel_key: Arc::new(CancelKey::new(login.addr.clone(), 0, 0)),
            params: HashMap::new(),
            applied: Arc::default(),
            prepared: HashSet::default(),
            status: TransactionStatus::Idle,
            in_flight: false,
            broken: false,
            needs_discard: false,
            settings_unknown: false,
            user: login.user.clone(),
        };
        tokio::time::timeout(login.connect_timeout, conn.startup(login))
            .await
            .map_err(|_| BackendError::ConnectTimeout(login.addr.clone()))??;
        conn.cancel_key = Arc::new(CancelKey::new(
            login.addr.clone(),
            conn.process_id,
            conn.secret_key,
        ));
        Ok(conn)
    }

    async fn startup(&mut self, login: &LoginParams) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        build::startup_message(
            &mut out,
            &[
                ("user", &login.user),
                ("database", &login.database),
                ("application_name", "pgshard"),
            ],
        );
        self.write(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame().await?;
            let mut body = frame.body();
            match frame.tag() {
                server_tag::AUTHENTICATION => {
                    if body.len() < 4 {
                        return Err(BackendError::Protocol(self.addr.clone()));
                    }
                    let code = body.get_i32();
                    self.authenticate(login, code, body, &mut scram).await?;
                }
                server_tag::PARAMETER_STATUS => self.note_parameter_status(frame.body()),
                server_tag::BACKEND_KEY_DATA if body.len() >= 8 => {
                    self.process_id = body.get_i32();
                    self.secret_key = body.get_i32();
                }
                server_tag::READY_FOR_QUERY => return Ok(()),
                server_tag::ERROR_RESPONSE => {
                    let (_, message) = parse_error_fields(frame.body());
                    return Err(BackendError::Login {
                        addr: self.addr.clone(),
                        user: login.user.clone(),
                        message,
                    });
                }
                _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            }
        }
    }

    async fn authenticate(
        &mut self,
        login: &LoginParams,
        code: i32,
        data: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        let protocol = || BackendError::Protocol(login.addr.clone());
        match code {
            0 => return Ok(()),
            3 => build::password_message(&mut out, login.password.as_bytes()),
            5 => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(protocol)?;
                let hash = postgres_protocol::authentication::md5_hash(
                    login.user.as_bytes(),
                    login.password.as_bytes(),
                    salt,
                );
                build::password_message(&mut out, hash.as_bytes());
            }
            10 => {
                let client =
                    ScramSha256::new(login.password.as_bytes(), ChannelBinding::unsupported());
                build::sasl_initial_response(&mut out, "SCRAM-SHA-256", client.message());
                *scram = Some(client);
            }
            11 => {
                let client = scram.as_mut().ok_or_else(protocol)?;
                client.update(data).map_err(|_| protocol())?;
                build::sasl_response(&mut out, client.message());
            }
            12 => {
                let client = scram.as_mut().ok_or_else(protocol)?;
                client.finish(data).map_err(|e| BackendError::Login {
                    addr: login.addr.clone(),
                    user: login.user.clone(),
                    message: format!("server signature did not verify: {e}"),
                })?;
                return Ok(());
            }
            other => {
                return Err(BackendError::UnsupportedAuth {
                    addr: login.addr.clone(),
                    code: other,
                })
            }
        }
        self.write(&out).await
    }

    /// The socket and its buffers.
    pub fn io(&mut self) -> &mut Conn<NetStream> {
        &mut self.io
    }

    /// Bytes queued for the server and not written yet.
    pub fn queued(&self) -> usize {
        self.io.output.len()
    }

    /// Nothing read and unhandled, nothing queued: the connection owes and is owed nothing.
    pub fn is_quiet(&self) -> bool {
        self.io.input.is_empty() && !self.io.has_pending_output()
    }

    /// The server's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Where a CancelRequest for this connection's running statement goes.
    pub fn cancel_key(&self) -> &Arc<CancelKey> {
        &self.cancel_key
    }

    /// Values the server reported with ParameterStatus.
    pub fn params(&self) -> &HashMap<String, String> {
        &self.params
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    pub fn set_status(&mut self, status: TransactionStatus) {
        self.status = status;
    }

    /// Requests were sent whose responses have not all arrived.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn set_in_flight(&mut self, in_flight: bool) {
        self.in_flight = in_flight;
    }

    /// The connection failed or its state is unknown: it is closed, never reused.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Session mode: the client's session state is wiped (DISCARD ALL) before reuse.
    pub fn mark_needs_discard(&mut self) {
        self.needs_discard = true;
    }

    /// A client may have changed settings, role or authorization: the next checkout resets them.
    pub fn mark_settings_unknown(&mut self) {
        self.settings_unknown = true;
    }

    /// Whether the server holds the prepared statement `name`.
    pub fn has_prepared(&self, name: &str) -> bool {
        self.prepared.contains(name)
    }

    pub fn note_prepared(&mut self, name: String) {
        self.prepared.insert(name);
    }

    pub fn forget_prepared(&mut self, name: &str) {
        self.prepared.remove(name);
    }

    /// DISCARD ALL or DEALLOCATE ALL ran: the server holds no prepared statement any more.
    pub fn forget_all_prepared(&mut self) {
        self.prepared.clear();
    }

    /// A setting the client changed itself that the server reported: this connection now has it
    /// (setting names are case-insensitive: keyed in lower case, as the session keys them).
    pub fn note_applied(&mut self, name: String, value: String) {
        Arc::make_mut(&mut self.applied).insert(name.to_ascii_lowercase(), value.clone());
        self.params.insert(name, value);
    }

    /// Records a ReadyForQuery body: the transaction status, and that nothing is owed anymore.
    pub fn note_ready_for_query(&mut self, body: &[u8]) {
        self.status = body
            .first()
            .and_then(|&b| TransactionStatus::from_byte(b))
            .unwrap_or(TransactionStatus::Idle);
        self.in_flight = false;
    }

    /// Records a ParameterStatus body (`name\0value\0`).
    pub fn note_parameter_status(&mut self, body: &[u8]) {
        if let Some((name, value)) = parse_parameter_status(body) {
            self.params.insert(name, value);
        }
    }

    /// Writes all of `bytes` (after anything already queued); marks the connection broken on
    /// failure.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if let Err(source) = self.io.write_all(bytes).await {
            self.broken = true;
            return Err(BackendError::Io {
                addr: self.addr.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Reads one complete frame; marks the connection broken on failure.
    pub async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        loop {
            match self.io.next_frame(MAX_SERVER_MESSAGE) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(_) => {
                    self.broken = true;
                    return Err(BackendError::Protocol(self.addr.clone()));
                }
            }
            match self.io.fill().await {
                Ok(0) => return Err(self.lost(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(source) => return Err(self.lost(source)),
            }
        }
    }

    /// Marks the connection broken by an I/O failure and describes it.
    pub fn lost(&mut self, source: std::io::Error) -> BackendError {
        self.broken = true;
        BackendError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Runs pgshard's own simple query and reads to ReadyForQuery, keeping the first error.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), BackendError> {
        self.cancel_key.settled().await;
        let mut out = BytesMut::new();
        build::query(&mut out, sql);
        self.write(&out).await?;
        let mut failure = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag() {
                server_tag::READY_FOR_QUERY => {
                    self.note_ready_for_query(frame.body());
                    return failure.map_or(Ok(()), Err);
                }
                server_tag::ERROR_RESPONSE if failure.is_none() => {
                    let (sqlstate, message) = parse_error_fields(frame.body());
                    failure = Some(BackendError::Server { sqlstate, message });
                }
                server_tag::PARAMETER_STATUS => self.note_parameter_status(frame.body()),
                _ => {}
            }
        }
    }

    /// Brings this connection's settings to `wanted` (set what differs, RESET what the last client
    /// set and this one did not; RESET ALL first when a client changed settings unseen). The
    /// role and session authorization are settings here too (`role`, `session_authorization`),
    /// applied first: setting the authorization resets the role. Skips the round trip when
    /// nothing differs.
    ///
    /// Values go through `set_config`, which reads them exactly as PostgreSQL reads a startup
    /// parameter: `SET search_path = 'a,b'` would make one schema named "a,b" of them.
    pub async fn apply_settings(
        &mut self,
        wanted: &Arc<BTreeMap<String, String>>,
    ) -> Result<(), BackendError> {
        if self.has_settings(wanted) {
            return Ok(());
        }
        let nothing = BTreeMap::new();
        let current = if self.settings_unknown {
            &nothing
        } else {
            &*self.applied
        };
        let sql = settings_sql(current, wanted, self.settings_unknown);
        // The statements run as one implicit transaction: if one fails, none of the changes
        // stick and `applied` still describes the server (an emptied map would not, and the next
        // client would inherit the previous one's settings).
        self.run_internal(&sql).await?;
        self.applied = wanted.clone();
        self.settings_unknown = false;
        Ok(())
    }

    /// Whether the connection is known to have exactly `wanted` ([`Self::apply_settings`] then
    /// has nothing to do).
    pub fn has_settings(&self, wanted: &Arc<BTreeMap<String, String>>) -> bool {
        !self.settings_unknown && (Arc::ptr_eq(&self.applied, wanted) || self.applied == *wanted)
    }

    /// What a client's session was read to hold after it changed it: the settings (with role
    /// and authorization) this connection now has.
    pub fn note_session_settings(&mut self, settings: BTreeMap<String, String>) {
        self.applied = Arc::new(settings);
        self.settings_unknown = false;
    }

    /// The user this connection logged in as.
    pub fn login_user(&self) -> &str {
        &self.user
    }
}

/// Settings that say who the session runs as: applied before any other, authorization first.
const IDENTITY: [&str; 2] = ["session_authorization", "role"];

/// The SQL that takes a server session from `current` settings to `wanted` (from nothing after
/// a RESET ALL when `unknown`).
fn settings_sql(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    unknown: bool,
) -> String {
    let mut sql = String::new();
    let identity_differs = IDENTITY
        .iter()
        .any(|name| current.get(*name) != wanted.get(*name));
    if unknown {
        // RESET ALL leaves the role and the session authorization as they are: a client's
        // SET ROLE would reach the next client. Going back to the login user resets both.
        sql.push_str("SET SESSION AUTHORIZATION DEFAULT;RESET ALL;");
    } else if identity_differs {
        sql.push_str("SET SESSION AUTHORIZATION DEFAULT;");
    }
    let set = |sql: &mut String, name: &str, value: &str| {
        sql.push_str(&format!(
            "SELECT pg_catalog.set_config({}, {}, false);",
            quote_literal(name),
            quote_literal(value)
        ))
    };
    // RESETs first: a previous client's tiny statement_timeout goes before anything slow runs.
    for name in current.keys() {
        if !wanted.contains_key(name) && !IDENTITY.contains(&name.as_str()) {
            sql.push_str(&format!("RESET {};", quote_ident(name)));
        }
    }
    let changed: Vec<(&String, &String)> = wanted
        .iter()
        .filter(|(name, value)| {
            !IDENTITY.contains(&name.as_str()) && current.get(*name) != Some(*value)
        })
        .collect();
    if !changed.is_empty() {
        let calls: Vec<String> = changed
            .iter()
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(name),
                    quote_literal(value)
                )
            })
            .collect();
        sql.push_str(&format!("SELECT {};", calls.join(", ")));
    }
    // Who the session runs as comes last: the rest is set as the login user, as it was.
    if unknown || identity_differs {
        for name in IDENTITY {
            if let Some(value) = wanted.get(name) {
                set(&mut sql, name, value);
            }
        }
    }
    sql
}

/// Quotes a value as an SQL string literal that reads the same whatever
/// `standard_conforming_strings` is (an `E''` string with quotes and backslashes doubled).
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Splits a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.split(|&b| b == 0);
    let name = String::from_utf8_lossy(parts.next()?).into_owned();
    let value = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((name, value))
}

/// The SQLSTATE (`C`) and message (`M`) fields of an ErrorResponse body.
pub fn parse_error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::from("XX000"), String::new());
    for field in body.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Quotes a setting name as an SQL identifier (names are checked at client startup to be plain).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_are_extracted() {
        let body = b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        assert_eq!(
            parse_error_fields(body),
            (
                "42P01".to_string(),
                "relation \"x\" does not exist".to_string()
            )
        );
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_ident("DateStyle"), "\"DateStyle\"");
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_change_only_what_differs_and_identity_goes_first() {
        let current = map(&[("datestyle", "ISO"), ("work_mem", "8192")]);
        let wanted = map(&[("datestyle", "ISO"), ("role", "reader")]);
        assert_eq!(
            settings_sql(&current, &wanted, false),
            "SET SESSION AUTHORIZATION DEFAULT;\
             RESET \"work_mem\";\
             SELECT pg_catalog.set_config(E'role', E'reader', false);"
        );
        // Back from a role: the authorization goes back to the login user, nothing else runs.
        assert_eq!(
            settings_sql(&wanted, &map(&[("datestyle", "ISO")]), false),
            "SET SESSION AUTHORIZATION DEFAULT;"
        );
        let both = map(&[
            ("role", "r"),
            ("session_authorization", "s"),
            ("timezone", "UTC"),
        ]);
        assert_eq!(
            settings_sql(&BTreeMap::new(), &both, true),
            "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;\
             SELECT pg_catalog.set_config(E'timezone', E'UTC', false);\
             SELECT pg_catalog.set_config(E'session_authorization', E's', false);\
             SELECT pg_catalog.set_config(E'role', E'r', false);"
        );
    }
}
