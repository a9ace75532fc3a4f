//! Builders for the messages pgshard writes itself (to clients and to servers). Each appends one
//! complete frame to a buffer; none of them reads anything.

use bytes::{BufMut, BytesMut};

use super::TransactionStatus;

/// Starts a tagged frame and returns the offset of its length field, to be patched by [`finish`].
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Patches the length field written by [`begin`].
fn finish(buf: &mut BytesMut, at: usize) {
    // Infallible in practice: frames we build are far below 2 GiB.
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    authentication(buf, 0, &[]);
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext(buf: &mut BytesMut) {
    authentication(buf, 3, &[]);
}

/// AuthenticationMD5Password with its salt.
pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    authentication(buf, 5, &salt);
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn authentication_sasl(buf: &mut BytesMut) {
    authentication(buf, 10, b"SCRAM-SHA-256\0\0");
}

/// AuthenticationSASLContinue.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, 11, data);
}

/// AuthenticationSASLFinal.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    authentication(buf, 12, data);
}

fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.put_slice(data);
    finish(buf, at);
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name);
    put_cstr(buf, value);
    finish(buf, at);
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(process_id);
    buf.put_i32(secret_key);
    finish(buf, at);
}

/// ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    let at = begin(buf, b'Z');
    buf.put_u8(status.as_byte());
    finish(buf, at);
}

/// ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    let at = begin(buf, b'1');
    finish(buf, at);
}

/// CommandComplete with its command tag (`BEGIN`, `SET`, `INSERT 0 1`, ...).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag);
    finish(buf, at);
}

/// DataRow with text values (`None` is NULL).
pub fn data_row(buf: &mut BytesMut, fields: &[Option<&[u8]>]) {
    let at = begin(buf, b'D');
    // Infallible in practice: rows pgshard builds have a handful of columns.
    buf.put_i16(fields.len() as i16);
    for field in fields {
        match field {
            Some(value) => {
                buf.put_i32(value.len() as i32);
                buf.put_slice(value);
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

/// RowDescription from fields as sent (see `rows::description_fields`).
pub fn row_description<F: AsRef<[u8]>>(buf: &mut BytesMut, fields: &[F]) {
    let start = begin(buf, b'T');
    buf.put_i16(fields.len() as i16);
    for field in fields {
        buf.put_slice(field.as_ref());
    }
    finish(buf, start);
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    let at = begin(buf, b'3');
    finish(buf, at);
}

/// NegotiateProtocolVersion: newest minor version supported and the options not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognised: &[String]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    // Infallible in practice: startup packets are capped at 10,000 bytes.
    buf.put_i32(unrecognised.len() as i32);
    for name in unrecognised {
        put_cstr(buf, name);
    }
    finish(buf, at);
}

/// Severity of an ErrorResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// ErrorResponse from plain fields: severity, SQLSTATE, message, and detail and hint when given.
/// Only `crate::error::ClientError::encode` calls this; everything else builds a `ClientError`.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let at = begin(buf, b'E');
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_str());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_str());
    buf.put_u8(b'C');
    put_cstr(buf, sqlstate);
    buf.put_u8(b'M');
    put_cstr(buf, message);
    if let Some(detail) = detail {
        buf.put_u8(b'D');
        put_cstr(buf, detail);
    }
    if let Some(hint) = hint {
        buf.put_u8(b'H');
        put_cstr(buf, hint);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// Query (simple protocol).
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql);
    finish(buf, at);
}

/// Parse of `sql` as the unnamed statement, with these parameter type OIDs.
pub fn parse(buf: &mut BytesMut, sql: &str, param_types: &[u32]) {
    let at = begin(buf, b'P');
    put_cstr(buf, "");
    put_cstr(buf, sql);
    buf.put_i16(param_types.len() as i16);
    for oid in param_types {
        buf.put_u32(*oid);
    }
    finish(buf, at);
}

/// Describe of the unnamed portal.
pub fn describe_portal(buf: &mut BytesMut) {
    let at = begin(buf, b'D');
    buf.put_u8(b'P');
    put_cstr(buf, "");
    finish(buf, at);
}

/// Execute of the unnamed portal, all rows.
pub fn execute(buf: &mut BytesMut) {
    let at = begin(buf, b'E');
    put_cstr(buf, "");
    buf.put_i32(0);
    finish(buf, at);
}

/// NoData.
pub fn no_data(buf: &mut BytesMut) {
    let at = begin(buf, b'n');
    finish(buf, at);
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    let at = begin(buf, b'2');
    finish(buf, at);
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    let at = begin(buf, b'S');
    finish(buf, at);
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    let at = begin(buf, b'X');
    finish(buf, at);
}

/// StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(196608);
    for (k, v) in params {
        put_cstr(buf, k);
        put_cstr(buf, v);
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CancelRequest.
pub fn cancel_request(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    buf.put_i32(16);
    buf.put_i32(80877102);
    buf.put_i32(process_id);
    buf.put_i32(secret_key);
}

/// PasswordMessage carrying a cleartext or md5 password (NUL-terminated).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(password);
    buf.put_u8(0);
    finish(buf, at);
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, b'p');
    put_cstr(buf, mechanism);
    // Infallible in practice: SCRAM messages are a few hundred bytes.
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(data);
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_has_status_byte() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, TransactionStatus::InTransaction);
        assert_eq!(&buf[..], b"Z\0\0\0\x05T");
    }
}
