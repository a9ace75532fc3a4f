//! The client's startup phase: SSLRequest (TLS when `server.tls_mode` allows it), GSSENCRequest
//! (refused with 'N'),
//! CancelRequest (forwarded to the server the target client is using), StartupMessage, and
//! authentication (SCRAM-SHA-256, md5 or trust). Ends before any server connection is touched.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::SessionError;
use crate::auth::{md5_matches, AuthError, ScramServer, ScramVerifier};
use crate::config::{AuthMethod, ClientTlsMode};
use crate::shared::Shared;
use crate::tls::MaybeTls;
use crate::transport::Stream;
use crate::wire::startup::{split_startup, take_cstr, StartupMessage, StartupPacket};
use crate::wire::{build, client_tag, split_frame, Frame};

/// Authentication messages are small; anything bigger is an attack or a bug.
const MAX_AUTH_MESSAGE: usize = 8192;

/// Reads startup packets until a StartupMessage; `None` when the connection was a CancelRequest.
/// An SSLRequest turns the stream into TLS when `shared.tls` is set; in `require` mode a
/// StartupMessage on a plain stream is refused (a CancelRequest is served either way).
pub(super) async fn read_startup<S: Stream>(
    stream: &mut MaybeTls<S>,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<Option<StartupMessage>, SessionError> {
    loop {
        match split_startup(buf)? {
            None => read_more(stream, buf).await?,
            Some(StartupPacket::SslRequest) => match &shared.tls {
                Some(tls) if !stream.is_tls() => {
                    if !buf.is_empty() {
                        return Err(SessionError::DataAfterSslRequest);
                    }
                    send(stream, b"S").await?;
                    stream.accept(tls.clone()).await?;
                }
                _ => send(stream, b"N").await?,
            },
            Some(StartupPacket::GssEncRequest) => send(stream, b"N").await?,
            Some(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            }) => {
                // Every server the client is using now, at once (several in a cross-shard read);
                // each connection waits for its cancel before it serves anything else. Tasks of
                // their own: a cancel counted as pending is always carried to its end.
                let sends: Vec<_> = shared
                    .stats
                    .clients
                    .start_cancels(process_id, secret_key)
                    .into_iter()
                    .map(|sent| tokio::spawn(sent.send()))
                    .collect();
                for send in sends {
                    let _ = send.await;
                }
                return Ok(None);
            }
            Some(StartupPacket::Startup(_))
                if !stream.is_tls()
                    && shared.config.server.effective_tls_mode() == ClientTlsMode::Require =>
            {
                return Err(SessionError::TlsRequired);
            }
            Some(StartupPacket::Startup(message)) => return Ok(Some(message)),
        }
    }
}

/// Who logged in: the user, and for the admin console, whether with full access.
pub(super) struct Authenticated {
    pub user: String,
    /// `Some(full)` for the admin console (databases `pgshard` and `pgbouncer`).
    pub console: Option<bool>,
}

/// Checks database and user, negotiates the protocol version, and authenticates the client.
/// Console users authenticate with their `[[users]]` password, else `[admin] password`.
pub(super) async fn authenticate<S: Stream>(
    stream: &mut S,
    buf: &mut BytesMut,
    shared: &Shared,
    startup: &StartupMessage,
) -> Result<Authenticated, SessionError> {
    let user = startup.param("user").unwrap_or_default().to_string();
    let served = &shared.config.server.database;
    let asked = startup.param("database").unwrap_or(&user);
    let console = if crate::admin::is_console_database(asked) {
        let access = shared.config.admin.access(&user);
        Some(access.ok_or_else(|| SessionError::NotConsoleUser(user.clone()))?)
    } else if asked != served {
        return Err(SessionError::UnknownDatabase {
            asked: asked.to_string(),
            served: served.clone(),
        });
    } else {
        None
    };
    let password = match console {
        Some(_) => shared.config.admin_password(&user),
        None => shared.config.user(&user).map(|u| u.password.as_str()),
    };
    let mut out = BytesMut::new();
    let extensions: Vec<String> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if startup.minor_version > 0 || !extensions.is_empty() {
        build::negotiate_protocol_version(&mut out, 0, &extensions);
    }
    match shared.config.server.auth_method {
        AuthMethod::Trust if password.is_some() => {}
        AuthMethod::Trust => return Err(AuthError::PasswordFailed(user).into()),
        AuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            build::authentication_md5(&mut out, salt);
            send(stream, &out).await?;
            out.clear();
            let frame = read_password_message(stream, buf).await?;
            let mut body = frame.body();
            let response = take_cstr(&mut body).unwrap_or_default();
            let ok = password.is_some_and(|p| md5_matches(&user, p, salt, response.as_bytes()));
            if !ok {
                return Err(AuthError::PasswordFailed(user).into());
            }
        }
        AuthMethod::ScramSha256 => {
            // Unknown users get a throw-away verifier, so they fail exactly like a wrong password.
            let known = match console {
                None => shared.verifiers.get(user.as_str()).cloned(),
                // Console logins are rare: the verifier is derived now.
                Some(_) => password.map(ScramVerifier::from_password),
            };
            let verifier = known.unwrap_or_else(|| ScramVerifier::from_password(&random_nonce()));
            scram_exchange(stream, buf, &mut out, &user, verifier).await?;
        }
    }
    build::authentication_ok(&mut out);
    send(stream, &out).await?;
    Ok(Authenticated { user, console })
}

async fn scram_exchange<S: Stream>(
    stream: &mut S,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
    verifier: ScramVerifier,
) -> Result<(), SessionError> {
    let mut scram = ScramServer::new(user, verifier, random_nonce());
    build::authentication_sasl(out);
    send(stream, out).await?;
    out.clear();
    let frame = read_password_message(stream, buf).await?;
    let mut body = frame.body();
    let mechanism = take_cstr(&mut body).ok_or(AuthError::Protocol("SASLInitialResponse"))?;
    if body.len() < 4 {
        return Err(AuthError::Protocol("SASLInitialResponse").into());
    }
    let len = body.get_i32();
    let data = if len < 0 { &[][..] } else { body };
    let server_first = scram.client_first(&mechanism, data)?;
    build::authentication_sasl_continue(out, &server_first);
    send(stream, out).await?;
    out.clear();
    let frame = read_password_message(stream, buf).await?;
    let server_final = scram.client_final(frame.body())?;
    build::authentication_sasl_final(out, &server_final);
    Ok(())
}

/// Reads one PasswordMessage-type frame (`p`).
async fn read_password_message<S: Stream>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Frame, SessionError> {
    loop {
        if let Some(frame) = split_frame(buf, MAX_AUTH_MESSAGE)? {
            if frame.tag() != client_tag::PASSWORD {
                return Err(SessionError::UnexpectedMessage {
                    expected: "a password message",
                    got: char::from(frame.tag()),
                });
            }
            return Ok(frame);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more<S: Stream>(stream: &mut S, buf: &mut BytesMut) -> Result<(), SessionError> {
    buf.reserve(1024);
    if stream.read_buf(buf).await? == 0 {
        return Err(SessionError::ClientIo(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

/// 18 random bytes as base64: printable and comma-free, as SCRAM nonces must be.
fn random_nonce() -> String {
    use base64::Engine;
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes `bytes` and flushes them (a TLS stream holds written bytes until flushed).
async fn send<S: Stream>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
