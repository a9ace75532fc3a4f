//! SCRAM-SHA-256 server side: verifies a client's proof against a stored verifier. The verifier
//! (salt, StoredKey, ServerKey) is derived once per configured user with postgres-protocol's
//! `scram_sha_256`, the same function PostgreSQL's clients use; this file adds only the exchange.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthError};

/// What the server keeps of a password: iterations, salt, StoredKey and ServerKey.
#[derive(Clone)]
pub struct ScramVerifier {
    iterations: u32,
    salt_b64: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// Derives a verifier (random salt, 4096 iterations) from a cleartext password.
    pub fn from_password(password: &str) -> ScramVerifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // Infallible: postgres-protocol always emits "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>".
        Self::parse(&text).expect("postgres-protocol emits a well-formed SCRAM verifier")
    }

    /// Parses PostgreSQL's verifier text `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<ScramVerifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt_b64) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramVerifier {
            iterations: iterations.parse().ok()?,
            salt_b64: salt_b64.to_string(),
            stored_key: BASE64.decode(stored).ok()?,
            server_key: BASE64.decode(server).ok()?,
        })
    }
}

/// Where the exchange stands.
enum State {
    WaitingClientFirst,
    WaitingClientFinal {
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// One SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    user: String,
    verifier: ScramVerifier,
    server_nonce: String,
    state: State,
}

impl ScramServer {
    /// `server_nonce` must be fresh randomness (printable, no commas).
    pub fn new(user: &str, verifier: ScramVerifier, server_nonce: String) -> ScramServer {
        ScramServer {
            user: user.to_string(),
            verifier,
            server_nonce,
            state: State::WaitingClientFirst,
        }
    }

    /// Handles SASLInitialResponse; returns the server-first-message for AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if mechanism != "SCRAM-SHA-256" {
            return Err(AuthError::UnsupportedMechanism(mechanism.to_string()));
        }
        let text = std::str::from_utf8(data)
            .map_err(|_| AuthError::Protocol("client-first is not UTF-8"))?;
        // gs2-header: "n,," (no channel binding) or "y,," (client supports it, server does not offer it).
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or(AuthError::Protocol("channel binding is not supported"))?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(AuthError::Protocol("client-first has no nonce"))?;
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            self.verifier.salt_b64, self.verifier.iterations
        );
        self.state = State::WaitingClientFinal {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Handles SASLResponse; returns the server-final-message for AuthenticationSASLFinal.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::WaitingClientFinal {
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::Protocol("unexpected SASLResponse"));
        };
        let text = std::str::from_utf8(data)
            .map_err(|_| AuthError::Protocol("client-final is not UTF-8"))?;
        let (without_proof, proof_b64) = text
            .rsplit_once(",p=")
            .ok_or(AuthError::Protocol("client-final has no proof"))?;
        let got_nonce = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(AuthError::Protocol("client-final has no nonce"))?;
        if got_nonce != nonce {
            return Err(AuthError::Protocol("nonce mismatch"));
        }
        let proof = BASE64
            .decode(proof_b64)
            .map_err(|_| AuthError::Protocol("proof is not base64"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(AuthError::PasswordFailed(self.user.clone()));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = Sha256::digest(&client_key);
        if !constant_time_eq(stored_key.as_slice(), &self.verifier.stored_key) {
            return Err(AuthError::PasswordFailed(self.user.clone()));
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // Infallible: HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use super::*;

    /// Runs a full exchange with postgres-protocol's client; returns the server's verdict.
    fn exchange(stored: &str, typed: &str) -> Result<(), AuthError> {
        let mut server = ScramServer::new(
            "app",
            ScramVerifier::from_password(stored),
            "srvnonce".into(),
        );
        let mut client = ScramSha256::new(typed.as_bytes(), ChannelBinding::unsupported());
        let server_first = server.client_first("SCRAM-SHA-256", client.message())?;
        client.update(&server_first).unwrap();
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client accepts the server signature");
        Ok(())
    }

    #[test]
    fn right_password_authenticates_both_ways() {
        exchange("s3cret", "s3cret").unwrap();
    }

    #[test]
    fn wrong_password_fails_with_28p01() {
        let err = exchange("s3cret", "guess").unwrap_err();
        assert_eq!(err.sqlstate(), "28P01");
    }

    #[test]
    fn other_mechanisms_are_refused() {
        let mut server = ScramServer::new("app", ScramVerifier::from_password("x"), "n".into());
        assert!(server
            .client_first("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=a")
            .is_err());
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let mut server = ScramServer::new("app", ScramVerifier::from_password("x"), "srv".into());
        server
            .client_first("SCRAM-SHA-256", b"n,,n=,r=abc")
            .unwrap();
        let err = server.client_final(b"c=biws,r=zzz,p=AAAA").unwrap_err();
        assert_eq!(err.sqlstate(), "08P01");
    }
}
