//! The errors pgshard itself sends to clients: [`ClientError`] (severity, SQLSTATE, message,
//! optional detail and hint) and the named SQLSTATEs it uses ([`SqlState`]). Every layer's error
//! converts into a `ClientError`, and [`ClientError::encode`] is the only place in the crate that
//! writes an ErrorResponse. Never used for a server's ErrorResponse to a client's statement,
//! which is forwarded as it came, and never carries internal details (socket errors of other
//! clients, addresses).

use std::fmt;

use bytes::BytesMut;

pub use crate::wire::build::Severity;
use crate::wire::{build, WireError};

/// A five-character SQLSTATE. pgshard's own codes are the associated constants; a server's
/// code is read with [`SqlState::from_server`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// `08P01` protocol_violation: a malformed, oversize or unexpected message; startup timeout.
    pub const PROTOCOL_VIOLATION: SqlState = SqlState::new("08P01");
    /// `08006` connection_failure: a server unreachable, refusing login, lost, or down.
    pub const CONNECTION_FAILURE: SqlState = SqlState::new("08006");
    /// `0A000` feature_not_supported: a statement or option pgshard refuses.
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState::new("0A000");
    /// `22003` numeric_value_out_of_range: a shard key that does not fit its type.
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState::new("22003");
    /// `22004` null_value_not_allowed: a NULL shard key.
    pub const NULL_VALUE_NOT_ALLOWED: SqlState = SqlState::new("22004");
    /// `22021` character_not_in_repertoire: a shard key that is not valid UTF-8.
    pub const CHARACTER_NOT_IN_REPERTOIRE: SqlState = SqlState::new("22021");
    /// `22P02` invalid_text_representation: a shard key that does not parse as its type.
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState::new("22P02");
    /// `22P03` invalid_binary_representation: a malformed binary shard key.
    pub const INVALID_BINARY_REPRESENTATION: SqlState = SqlState::new("22P03");
    /// `22P04` bad_copy_file_format: COPY data pgshard cannot split into rows.
    pub const BAD_COPY_FILE_FORMAT: SqlState = SqlState::new("22P04");
    /// `23502` not_null_violation: a COPY row with a NULL shard key.
    pub const NOT_NULL_VIOLATION: SqlState = SqlState::new("23502");
    /// `25P02` in_failed_sql_transaction: a statement after pgshard refused one in a transaction.
    pub const IN_FAILED_SQL_TRANSACTION: SqlState = SqlState::new("25P02");
    /// `28000` invalid_authorization_specification: an unsupported SASL mechanism.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: SqlState = SqlState::new("28000");
    /// `28P01` invalid_password: wrong password or unknown user.
    pub const INVALID_PASSWORD: SqlState = SqlState::new("28P01");
    /// `3D000` invalid_catalog_name: a database name pgshard does not serve.
    pub const INVALID_CATALOG_NAME: SqlState = SqlState::new("3D000");
    /// `42704` undefined_object: an unknown shard, `pgshard.*` setting or setting name.
    pub const UNDEFINED_OBJECT: SqlState = SqlState::new("42704");
    /// `42804` datatype_mismatch: a binary key parameter of a type pgshard cannot read.
    pub const DATATYPE_MISMATCH: SqlState = SqlState::new("42804");
    /// `42601` syntax_error: read from a server (an INSERT with more values than columns).
    pub const SYNTAX_ERROR: SqlState = SqlState::new("42601");
    /// `42703` undefined_column: read from a server (a table whose columns changed).
    pub const UNDEFINED_COLUMN: SqlState = SqlState::new("42703");
    /// `42P01` undefined_table: read from a server (a table dropped or renamed).
    pub const UNDEFINED_TABLE: SqlState = SqlState::new("42P01");
    /// `53200` out_of_memory: a cross-shard merge above `sharding.max_merge_memory_mb`.
    pub const OUT_OF_MEMORY: SqlState = SqlState::new("53200");
    /// `53300` too_many_connections: no server connection in time; too many clients.
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState::new("53300");
    /// `53400` configuration_limit_exceeded: a statement over its user's rate limit.
    pub const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState::new("53400");
    /// `57P01` admin_shutdown: pgshard is shutting down (a client closed between transactions),
    /// or a client closed with KILL_CLIENT from the admin console.
    pub const ADMIN_SHUTDOWN: SqlState = SqlState::new("57P01");
    /// `40001` serialization_failure: the slot a transaction's statement routes to moved to
    /// another shard while the transaction was open (roll back and retry).
    pub const SERIALIZATION_FAILURE: SqlState = SqlState::new("40001");
    /// `55P03` lock_not_available: a statement waited longer than `catalog.hold_wait_ms` for a
    /// slot move's cutover.
    pub const LOCK_NOT_AVAILABLE: SqlState = SqlState::new("55P03");
    /// `57P03` cannot_connect_now: a login while the admin console's DISABLE is in effect.
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState::new("57P03");
    /// `42501` insufficient_privilege: a stats user's control command in the admin console.
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState::new("42501");
    /// `57014` query_canceled: the client's CopyFail.
    pub const QUERY_CANCELED: SqlState = SqlState::new("57014");
    /// `F0000` config_file_error: a sharding configuration that cannot work.
    pub const CONFIG_FILE_ERROR: SqlState = SqlState::new("F0000");
    /// `XX000` internal_error: shards that disagree, or a server that broke the protocol.
    pub const INTERNAL_ERROR: SqlState = SqlState::new("XX000");

    /// A constant; fails to compile unless `code` is five ASCII digits or capital letters.
    const fn new(code: &str) -> SqlState {
        let b = code.as_bytes();
        assert!(b.len() == 5, "a SQLSTATE has five characters");
        let mut i = 0;
        while i < 5 {
            assert!(b[i].is_ascii_digit() || b[i].is_ascii_uppercase());
            i += 1;
        }
        SqlState([b[0], b[1], b[2], b[3], b[4]])
    }

    /// `code` if it is a well-formed SQLSTATE (five ASCII digits or capital letters).
    pub fn parse(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(bytes))
    }

    /// A server's SQLSTATE (`C` field); a malformed one reads as [`SqlState::INTERNAL_ERROR`].
    pub fn from_server(code: &str) -> SqlState {
        SqlState::parse(code).unwrap_or(SqlState::INTERNAL_ERROR)
    }

    pub fn as_str(&self) -> &str {
        // Infallible: the bytes are ASCII, checked when the value was made.
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<str> for SqlState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SqlState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error pgshard reports to a client itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub severity: Severity,
    pub code: SqlState,
    /// The primary message (`M`), as the client shows it.
    pub message: String,
    /// Secondary detail (`D`), sent only when set.
    pub detail: Option<String>,
    /// What to do about it (`H`), sent only when set.
    pub hint: Option<String>,
}

impl ClientError {
    /// An ERROR (the session goes on) with this SQLSTATE and message.
    pub fn new(code: SqlState, message: impl Into<String>) -> ClientError {
        ClientError {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// The same error as FATAL (the session ends).
    pub fn fatal(mut self) -> ClientError {
        self.severity = Severity::Fatal;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> ClientError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ClientError {
        self.hint = Some(hint.into());
        self
    }

    /// Appends the ErrorResponse. The one caller of `wire::build::error_response`.
    pub fn encode(&self, out: &mut BytesMut) {
        build::error_response(
            out,
            self.severity,
            self.code.as_str(),
            &self.message,
            self.detail.as_deref(),
            self.hint.as_deref(),
        );
    }
}

/// Every malformed message is a protocol violation.
impl From<&WireError> for ClientError {
    fn from(e: &WireError) -> ClientError {
        ClientError::new(
            SqlState::PROTOCOL_VIOLATION,
            format!("pgshard: protocol violation: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(error: &ClientError) -> BytesMut {
        let mut out = BytesMut::new();
        error.encode(&mut out);
        out
    }

    /// The fields of an ErrorResponse, as (type byte, value) pairs, after checking its frame.
    fn fields(frame: &[u8]) -> Vec<(u8, String)> {
        assert_eq!(frame[0], b'E');
        let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len + 1, frame.len(), "length field");
        let body = &frame[5..];
        assert_eq!(body.last(), Some(&0), "terminator");
        body[..body.len() - 1]
            .split(|&b| b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| (f[0], String::from_utf8(f[1..].to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn encodes_severity_code_and_message_only_when_nothing_else_is_set() {
        let error = ClientError::new(SqlState::INVALID_PASSWORD, "password authentication failed");
        let got = fields(&encoded(&error));
        let want = [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "28P01"),
            (b'M', "password authentication failed"),
        ];
        let want: Vec<(u8, String)> = want.iter().map(|(t, v)| (*t, v.to_string())).collect();
        assert_eq!(got, want);
        // Byte for byte what clients have always received.
        let frame = b"E\0\0\0\x3aSERROR\0VERROR\0C28P01\0Mpassword authentication failed\0\0";
        assert_eq!(&encoded(&error)[..], &frame[..]);
    }

    #[test]
    fn encodes_detail_and_hint_when_set() {
        let error = ClientError::new(SqlState::FEATURE_NOT_SUPPORTED, "no")
            .with_detail("why")
            .with_hint("do this")
            .fatal();
        let got = fields(&encoded(&error));
        assert_eq!(got[0], (b'S', "FATAL".to_string()));
        assert_eq!(got[1], (b'V', "FATAL".to_string()));
        assert_eq!(got[2], (b'C', "0A000".to_string()));
        assert_eq!(got[3], (b'M', "no".to_string()));
        assert_eq!(got[4], (b'D', "why".to_string()));
        assert_eq!(got[5], (b'H', "do this".to_string()));
        assert_eq!(got.len(), 6);

        let hint_only = fields(&encoded(
            &ClientError::new(SqlState::OUT_OF_MEMORY, "m").with_hint("h"),
        ));
        assert!(hint_only.iter().all(|(t, _)| *t != b'D'));
        assert_eq!(hint_only.last(), Some(&(b'H', "h".to_string())));
    }

    #[test]
    fn encoding_appends_to_what_is_queued() {
        let mut out = BytesMut::from(&b"Z\0\0\0\x05I"[..]);
        ClientError::new(SqlState::INTERNAL_ERROR, "x").encode(&mut out);
        assert_eq!(&out[..6], b"Z\0\0\0\x05I");
        fields(&out[6..]);
    }

    #[test]
    fn sqlstates_parse_and_compare_as_text() {
        assert_eq!(
            SqlState::parse("23505").map(|s| s.to_string()),
            Some("23505".into())
        );
        assert_eq!(SqlState::parse("2350"), None);
        assert_eq!(SqlState::parse("2350x"), None);
        assert_eq!(SqlState::from_server("bogus!"), SqlState::INTERNAL_ERROR);
        assert_eq!(SqlState::FEATURE_NOT_SUPPORTED, "0A000");
        assert_eq!(format!("{:?}", SqlState::QUERY_CANCELED), "\"57014\"");
    }

    #[test]
    fn wire_errors_are_protocol_violations() {
        let error = ClientError::from(&WireError::Malformed { what: "Bind" });
        assert_eq!(error.code, SqlState::PROTOCOL_VIOLATION);
        assert_eq!(
            error.message,
            "pgshard: protocol violation: malformed Bind message"
        );
    }
}
