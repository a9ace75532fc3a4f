//! The PostgreSQL protocol 3.0 codec: framing, startup packets, and the few messages pgshard
//! routes on or writes itself. Imports nothing else from the crate; does no I/O.
//!
//! On the hot path frames are forwarded as bytes: [`frame::split_frame`] cuts a complete frame off
//! a buffer without copying, and only the tag (and, for a few messages, a name) is ever decoded.

pub mod binary;
pub mod build;
pub mod datetime;
pub mod extended;
pub mod frame;
pub mod rows;
pub mod startup;

pub use frame::{frame_len, run_of, split_frame, Frame};

/// Text a client sent (a statement) as UTF-8: borrowed when valid (checked a word at a time),
/// else with replacement characters.
pub fn text_of(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The 5-byte header of every message after startup: a tag byte and a big-endian length.
pub const HEADER_LEN: usize = 5;

/// A malformed message from a peer. Everything here is a protocol violation (SQLSTATE 08P01,
/// given by `crate::error`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {0} is invalid")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("startup packet of {0} bytes is not allowed (limit 10000)")]
    StartupTooLarge(usize),
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
}

/// Transaction status as reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Option<TransactionStatus> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// Message tags sent by clients (frontend messages).
pub mod client_tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
}

/// Message tags sent by servers (backend messages).
pub mod server_tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const DATA_ROW: u8 = b'D';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    #[test]
    fn text_is_borrowed_when_valid_and_replaced_when_not() {
        assert!(matches!(
            super::text_of(b"SELECT 1"),
            Cow::Borrowed("SELECT 1")
        ));
        assert_eq!(super::text_of(b"SELECT '\xff'"), "SELECT '\u{fffd}'");
    }
}
