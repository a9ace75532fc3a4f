//! Framing of tagged messages: cut one complete frame off a read buffer, or say "need more bytes".
//! Never allocates according to a peer's claimed length.

use bytes::BytesMut;

use super::{WireError, HEADER_LEN};

/// One complete tagged message, header included, split off the read buffer without copying.
#[derive(Debug)]
pub struct Frame {
    pub bytes: BytesMut,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Length (header included) of the frame at the start of `buf`, once its header is there.
///
/// `Ok(None)` means fewer than 5 bytes are buffered. A claimed length under 4 or over `max`
/// is an error; nothing is reserved for it.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(WireError::BadLength(i64::from(len)));
    }
    // Infallible: len is a non-negative i32.
    let len = len as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(Some(len + 1))
}

/// Length of the longest run of whole frames tagged `tag` at the start of `buf` (0 when the
/// first is not one, or not whole). A frame with a length `frame_len` refuses ends the run
/// without an error: [`split_frame`] reports it when it comes first.
pub fn run_of(buf: &[u8], tag: u8, max: usize) -> usize {
    let mut run = 0;
    while buf.get(run) == Some(&tag) {
        match frame_len(&buf[run..], max) {
            Ok(Some(len)) if buf.len() - run >= len => run += len,
            _ => break,
        }
    }
    run
}

/// Splits the first complete frame off `buf`; `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, WireError> {
    match frame_len(buf, max)? {
        Some(total) if buf.len() >= total => Ok(Some(Frame {
            bytes: buf.split_to(total),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_run_of_one_tag_ends_at_another_tag_an_incomplete_frame_or_a_bad_length() {
        let row = frame(b'D', b"\0\x01\0\0\0\x011");
        let mut bytes = [row.clone(), row.clone()].concat();
        assert_eq!(run_of(&bytes, b'D', 1024), 2 * row.len());
        bytes.extend(frame(b'C', b"SELECT 2\0"));
        bytes.extend(row.clone());
        assert_eq!(
            run_of(&bytes, b'D', 1024),
            2 * row.len(),
            "stops at CommandComplete"
        );
        assert_eq!(run_of(&bytes, b'C', 1024), 0, "not at the start");
        let partial = [row.clone(), row[..row.len() - 1].to_vec()].concat();
        assert_eq!(
            run_of(&partial, b'D', 1024),
            row.len(),
            "stops before a partial frame"
        );
        let mut bad = row.clone();
        bad.extend([b'D', 0, 0, 0, 2]);
        assert_eq!(
            run_of(&bad, b'D', 1024),
            row.len(),
            "stops before a bad length"
        );
        assert_eq!(run_of(&row, b'D', 4), 0, "over max: left for split_frame");
        assert_eq!(run_of(&[], b'D', 1024), 0);
    }

    #[test]
    fn incomplete_header_needs_more_bytes() {
        let mut buf = BytesMut::from(&b"Q\0\0"[..]);
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn incomplete_body_needs_more_bytes() {
        let full = frame(b'Q', b"SELECT 1\0");
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
    }

    #[test]
    fn splits_two_pipelined_frames() {
        let mut bytes = frame(b'Q', b"SELECT 1\0");
        bytes.extend(frame(b'S', b""));
        let mut buf = BytesMut::from(&bytes[..]);
        let a = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(a.tag(), b'Q');
        assert_eq!(a.body(), b"SELECT 1\0");
        let b = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(b.tag(), b'S');
        assert!(b.body().is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn negative_length_is_an_error() {
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            split_frame(&mut buf, 1024).unwrap_err(),
            WireError::BadLength(-1)
        );
    }

    #[test]
    fn oversize_claim_is_refused_before_any_body_arrives() {
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        let err = split_frame(&mut buf, 1 << 20).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { .. }));
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for the claimed length"
        );
    }
}
