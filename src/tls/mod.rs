//! TLS on both sides: the rustls configs built from `[server] tls_*` (clients) and
//! `[backend_tls]` (servers), the SSLRequest exchange with a server, and the stream type both
//! sides run on ([`MaybeTls`]). Builds configs and streams; never reads or writes a protocol
//! message beyond the SSLRequest and its one-byte answer.

pub mod settings;
mod stream;
mod verify;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use stream::MaybeTls;

use self::settings::{BackendTlsConfig, BackendTlsMode, ClientTlsMode};

/// A socket to a server or from a client: plain or TLS.
pub type NetStream = MaybeTls<TcpStream>;

/// ALPN name of the PostgreSQL protocol (what PostgreSQL 17 servers and clients announce).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A TLS file or setting that cannot be used, naming the config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct TlsError {
    pub key: &'static str,
    pub problem: String,
}

fn tls_error(key: &'static str, problem: impl Into<String>) -> TlsError {
    TlsError {
        key,
        problem: problem.into(),
    }
}

/// The rustls config for client connections: `None` when `server.tls_mode` is `disable`.
/// Reads the PEM files again each call (a reload calls it to pick up new files).
pub fn server_config(
    mode: ClientTlsMode,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    if mode == ClientTlsMode::Disable {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(tls_error(
            "server.tls_cert",
            "is needed for server.tls_mode allow or require: set server.tls_cert and \
             server.tls_key to PEM files",
        ));
    };
    let certs = load_certs("server.tls_cert", cert)?;
    let key = load_key("server.tls_key", key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("server.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_error(
                "server.tls_key",
                format!("does not go with server.tls_cert: {e}"),
            )
        })?;
    tls.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// How pgshard opens TLS to servers (`[backend_tls]`).
#[derive(Debug)]
pub struct BackendTls {
    mode: BackendTlsMode,
    config: Arc<rustls::ClientConfig>,
}

/// The `[backend_tls]` settings made usable: `None` when `mode` is `disable`.
pub fn backend_tls(section: &BackendTlsConfig) -> Result<Option<Arc<BackendTls>>, TlsError> {
    if section.mode == BackendTlsMode::Disable {
        return Ok(None);
    }
    let roots = match &section.ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs("backend_tls.ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error("backend_tls.ca", format!("{}: {e}", path.display())))?;
            }
            Some(roots)
        }
        None => None,
    };
    let verifier = verify::for_mode(section.mode, roots, provider())
        .map_err(|e| tls_error("backend_tls.ca", e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("backend_tls.mode", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match (&section.cert, &section.key) {
        (Some(cert), Some(key)) => {
            let certs = load_certs("backend_tls.cert", cert)?;
            let key = load_key("backend_tls.key", key)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                tls_error(
                    "backend_tls.key",
                    format!("does not go with backend_tls.cert: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(BackendTls {
        mode: section.mode,
        config: Arc::new(tls),
    })))
}

/// How pgshard's own tokio-postgres connections (the catalog's) follow `[backend_tls]`: the
/// `sslmode` to set and the connector (plain when `tls` is `None`).
pub fn for_tokio_postgres(
    tls: Option<&BackendTls>,
) -> (
    tokio_postgres::config::SslMode,
    tokio_postgres_rustls::MakeRustlsConnect,
) {
    use tokio_postgres::config::SslMode;
    match tls {
        Some(tls) => {
            let mode = match tls.mode {
                BackendTlsMode::Disable => SslMode::Disable,
                BackendTlsMode::Prefer => SslMode::Prefer,
                // The certificate checks of verify-ca and verify-full are in the config's verifier.
                _ => SslMode::Require,
            };
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone());
            (mode, connector)
        }
        None => {
            // Never used (sslmode disable), but the connection's type is the same either way.
            let unused = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            // Infallible: ring supports the default protocol versions.
            let config = unused.expect("ring supports the default protocol versions");
            (
                SslMode::Disable,
                tokio_postgres_rustls::MakeRustlsConnect::new(config),
            )
        }
    }
}

/// Why TLS to a server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    #[error(
        "the server does not accept TLS, and backend_tls.mode = \"{0}\" requires it: turn ssl \
         on in the server's postgresql.conf, or set backend_tls.mode = \"prefer\""
    )]
    Refused(&'static str),
    #[error("the server answered the SSLRequest with {0:?} instead of 'S' or 'N'")]
    BadAnswer(char),
    #[error("{0:?} is not a host name or IP address a certificate can be checked against")]
    BadName(String),
    #[error("TLS handshake failed: {0} (check backend_tls.ca and backend_tls.mode)")]
    Handshake(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl BackendTls {
    /// Asks the server at `addr` (`host:port`) for TLS on `stream` and sets it up: a plain
    /// stream back only in mode `prefer` when the server says no.
    pub async fn negotiate(
        &self,
        mut stream: TcpStream,
        addr: &str,
    ) -> Result<NetStream, BackendTlsError> {
        stream.write_all(&SSL_REQUEST).await?;
        match stream.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == BackendTlsMode::Prefer => return Ok(MaybeTls::Plain(stream)),
            b'N' => return Err(BackendTlsError::Refused(self.mode.as_str())),
            other => return Err(BackendTlsError::BadAnswer(char::from(other))),
        }
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| BackendTlsError::BadName(host.to_string()))?;
        let mut stream = MaybeTls::Plain(stream);
        stream
            .connect(self.config.clone(), name)
            .await
            .map_err(BackendTlsError::Handshake)?;
        Ok(stream)
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(key, format!("cannot read certificates from {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(
            key,
            format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        tls_error(
            key,
            format!("cannot read a PEM private key from {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("db.example:5432"), "db.example");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }
}
