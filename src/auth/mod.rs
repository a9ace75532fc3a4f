//! Client authentication, as pure state machines: SCRAM-SHA-256 (RFC 5802/7677) and md5.
//! No I/O here: the session feeds client messages in and writes what comes out.

pub mod scram;

pub use scram::{ScramServer, ScramVerifier};

use crate::error::{ClientError, SqlState};

/// Why a client could not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or unknown user; the message never says which (like PostgreSQL).
    #[error("password authentication failed for user \"{0}\"")]
    PasswordFailed(String),
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    #[error("SASL mechanism {0:?} is not supported; use SCRAM-SHA-256")]
    UnsupportedMechanism(String),
}

impl AuthError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            AuthError::PasswordFailed(_) => SqlState::INVALID_PASSWORD,
            AuthError::Protocol(_) => SqlState::PROTOCOL_VIOLATION,
            AuthError::UnsupportedMechanism(_) => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        }
    }
}

impl From<&AuthError> for ClientError {
    fn from(e: &AuthError) -> ClientError {
        ClientError::new(e.sqlstate(), format!("pgshard: {e}"))
    }
}

/// Checks an md5 PasswordMessage (`md5` + hex) against the configured password.
pub fn md5_matches(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
    constant_time_eq(expected.as_bytes(), response)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_accepts_right_password_and_refuses_wrong_one() {
        let salt = [1, 2, 3, 4];
        let good = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        assert!(md5_matches("app", "secret", salt, good.as_bytes()));
        assert!(!md5_matches("app", "other", salt, good.as_bytes()));
    }

    #[test]
    fn wrong_password_is_28p01() {
        assert_eq!(AuthError::PasswordFailed("app".into()).sqlstate(), "28P01");
    }
}
