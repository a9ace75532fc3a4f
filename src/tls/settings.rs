//! The TLS settings of the config file (`server.tls_mode`, `[backend_tls]`): plain serde
//! types, re-exported by [`crate::config`]. Data only: never reads a file or opens a socket.

use std::path::PathBuf;

use serde::Deserialize;

/// `server.tls_mode`: TLS between clients and pgshard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`: plain only.
    Disable,
    /// TLS for clients that ask, plain for the others.
    Allow,
    /// Plain clients are refused (28000); CancelRequests are served plain, as PostgreSQL does.
    Require,
}

/// `[backend_tls]`: TLS between pgshard and the servers, as libpq's `sslmode` and friends.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    #[serde(default)]
    pub mode: BackendTlsMode,
    /// PEM file of the CA (or CAs) that signed the servers' certificates.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for servers that ask for one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// `backend_tls.mode`, named as libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    #[default]
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is checked against `ca` only if `ca` is set.
    Require,
    /// TLS, and the certificate must be signed by `ca`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host of the server's address.
    VerifyFull,
}

impl BackendTlsMode {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTlsMode::Disable => "disable",
            BackendTlsMode::Prefer => "prefer",
            BackendTlsMode::Require => "require",
            BackendTlsMode::VerifyCa => "verify-ca",
            BackendTlsMode::VerifyFull => "verify-full",
        }
    }
}
