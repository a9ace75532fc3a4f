//! Startup packets (the untagged first messages): StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest. Decoded fully, since they are small and capped at 10,000 bytes like PostgreSQL.

use bytes::{Buf, BytesMut};

use super::WireError;

/// PostgreSQL's own cap on a startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST_CODE: i32 = 80877103;
const GSSENC_REQUEST_CODE: i32 = 80877104;
const CANCEL_REQUEST_CODE: i32 = 80877102;

/// A decoded startup packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest { process_id: i32, secret_key: i32 },
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and the parameters, in the order sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits and decodes the startup packet at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(WireError::BadLength(i64::from(len)));
    }
    // Infallible: len is positive.
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(WireError::StartupTooLarge(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    match code {
        SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
        CANCEL_REQUEST_CODE => {
            if packet.len() != 8 {
                return Err(WireError::Malformed {
                    what: "CancelRequest",
                });
            }
            let process_id = packet.get_i32();
            let secret_key = packet.get_i32();
            Ok(Some(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            }))
        }
        _ => {
            // Infallible casts: the version halves of an i32.
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            let params = decode_params(&packet)?;
            Ok(Some(StartupPacket::Startup(StartupMessage {
                minor_version: minor,
                params,
            })))
        }
    }
}

fn decode_params(mut body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let malformed = WireError::Malformed {
        what: "StartupMessage",
    };
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut body).ok_or(malformed.clone())?;
        if key.is_empty() {
            return Ok(params);
        }
        let value = take_cstr(&mut body).ok_or(malformed.clone())?;
        params.push((key, value));
    }
}

/// Takes a NUL-terminated string off the front of `body`.
pub fn take_cstr(body: &mut &[u8]) -> Option<String> {
    let end = body.iter().position(|&b| b == 0)?;
    let s = String::from_utf8_lossy(&body[..end]).into_owned();
    *body = &body[end + 1..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut v = BytesMut::new();
        v.extend_from_slice(&((body.len() + 8) as i32).to_be_bytes());
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_startup_parameters_in_order() {
        let mut buf = packet(196608, b"user\0app\0database\0db\0options\0-c a=b\0\0");
        let StartupPacket::Startup(m) = split_startup(&mut buf).unwrap().unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(m.param("user"), Some("app"));
        assert_eq!(m.param("options"), Some("-c a=b"));
        assert_eq!(m.params.len(), 3);
    }

    #[test]
    fn decodes_ssl_gss_and_cancel_requests() {
        assert_eq!(
            split_startup(&mut packet(80877103, b"")).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            split_startup(&mut packet(80877104, b"")).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        let mut body = Vec::new();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            split_startup(&mut packet(80877102, &body)).unwrap(),
            Some(StartupPacket::CancelRequest {
                process_id: 7,
                secret_key: 9
            })
        );
    }

    #[test]
    fn oversize_startup_packet_is_refused() {
        let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x00, 0, 3, 0, 0][..]);
        assert_eq!(
            split_startup(&mut buf).unwrap_err(),
            WireError::StartupTooLarge(0x100000)
        );
    }

    #[test]
    fn unterminated_parameters_are_malformed() {
        let mut buf = packet(196608, b"user\0app");
        assert!(matches!(
            split_startup(&mut buf),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn protocol_2_is_refused() {
        let mut buf = packet(0x0002_0000, b"\0");
        assert!(matches!(
            split_startup(&mut buf),
            Err(WireError::UnsupportedProtocol { major: 2, .. })
        ));
    }

    #[test]
    fn partial_packet_needs_more_bytes() {
        let full = packet(196608, b"user\0app\0\0");
        let mut buf = BytesMut::from(&full[..full.len() - 2]);
        assert_eq!(split_startup(&mut buf).unwrap(), None);
    }
}
