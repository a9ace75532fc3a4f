//! PostgreSQL's binary COPY format: tuples cut off a stream of chunks, and tuples written back.
//!
//! Pure: no I/O. Never reserves memory for a length the stream merely claims beyond the bytes
//! that arrived; a malformed stream is an error, never a guess.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The 11-byte signature that starts every binary COPY stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One tuple as it came: its bytes (field count, then each field's length and data) and where
/// each field's data lies in them (`None` for NULL).
#[derive(Debug, Clone, Default)]
pub(crate) struct RawTuple {
    pub bytes: Bytes,
    fields: Vec<Option<Range<usize>>>,
}

impl RawTuple {
    /// Field `i`'s bytes, `None` for NULL or a field beyond the tuple.
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        self.fields.get(i)?.clone().map(|r| &self.bytes[r])
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.fields.len()
    }
}

/// Cuts tuples off the chunks of a `COPY ... TO STDOUT (FORMAT binary)`.
#[derive(Debug, Default)]
pub(crate) struct TupleReader {
    buf: BytesMut,
    header_read: bool,
    finished: bool,
}

impl TupleReader {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the trailer (field count -1) was read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next whole tuple, or `None` when more bytes are needed (or the trailer was read).
    #[cfg(test)]
    pub fn next_tuple(&mut self) -> Result<Option<RawTuple>, String> {
        let mut tuple = RawTuple::default();
        Ok(self.next_into(&mut tuple)?.then_some(tuple))
    }

    /// Cuts the next whole tuple into `tuple` (reusing its field list: no allocation per
    /// tuple); false when more bytes are needed (or the trailer was read).
    pub fn next_into(&mut self, tuple: &mut RawTuple) -> Result<bool, String> {
        if self.finished || !self.read_header()? {
            return Ok(false);
        }
        let Some(count) = peek_i16(&self.buf, 0) else {
            return Ok(false);
        };
        if count == -1 {
            self.finished = true;
            self.buf.advance(2);
            return Ok(false);
        }
        let count = usize::try_from(count).map_err(|_| format!("field count {count}"))?;
        let fields = &mut tuple.fields;
        fields.clear();
        fields.reserve(count.min(1600));
        let mut at = 2usize;
        for _ in 0..count {
            let Some(len) = peek_i32(&self.buf, at) else {
                return Ok(false);
            };
            at += 4;
            if len == -1 {
                fields.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| format!("field length {len}"))?;
            if self.buf.len() < at + len {
                return Ok(false);
            }
            fields.push(Some(at..at + len));
            at += len;
        }
        tuple.bytes = self.buf.split_to(at).freeze();
        Ok(true)
    }

    /// Reads the signature, flags and header extension once; false while incomplete.
    fn read_header(&mut self) -> Result<bool, String> {
        if self.header_read {
            return Ok(true);
        }
        if self.buf.len() < SIGNATURE.len() + 8 {
            return Ok(false);
        }
        if &self.buf[..SIGNATURE.len()] != SIGNATURE {
            return Err("no binary COPY signature".to_string());
        }
        let ext = peek_i32(&self.buf, SIGNATURE.len() + 4).unwrap_or(0);
        let ext = usize::try_from(ext).map_err(|_| format!("header extension {ext}"))?;
        let total = SIGNATURE.len() + 8 + ext;
        if self.buf.len() < total {
            return Ok(false);
        }
        self.buf.advance(total);
        self.header_read = true;
        Ok(true)
    }
}

fn peek_i16(buf: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn peek_i32(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Writes a `COPY ... FROM STDIN (FORMAT binary)` stream.
#[derive(Debug, Default)]
pub(crate) struct TupleWriter {
    buf: BytesMut,
}

impl TupleWriter {
    /// A writer holding the stream's header.
    pub fn new() -> TupleWriter {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_slice(SIGNATURE);
        buf.put_i32(0);
        buf.put_i32(0);
        TupleWriter { buf }
    }

    /// A tuple exactly as it was read.
    #[cfg(test)]
    pub fn raw(&mut self, tuple: &RawTuple) {
        self.buf.put_slice(&tuple.bytes);
    }

    /// A tuple exactly as it was read, with one more field after its own: a `smallint`.
    pub fn raw_with_int2(&mut self, tuple: &RawTuple, extra: i16) {
        self.buf.put_i16(tuple.fields.len() as i16 + 1);
        self.buf.put_slice(&tuple.bytes[2..]);
        self.buf.put_i32(2);
        self.buf.put_i16(extra);
    }

    /// A tuple already encoded (its field count, then each field's length and data).
    pub fn encoded(&mut self, tuple: &[u8]) {
        self.buf.put_slice(tuple);
    }

    /// A tuple of these fields (`None` is NULL).
    pub fn fields<'a>(&mut self, fields: impl ExactSizeIterator<Item = Option<&'a [u8]>>) {
        self.buf.put_i16(fields.len() as i16);
        for field in fields {
            match field {
                None => self.buf.put_i32(-1),
                Some(data) => {
                    self.buf.put_i32(data.len() as i32);
                    self.buf.put_slice(data);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes written so far, leaving the writer empty (for the next chunk).
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Moves what was written so far to `chunks` once it holds `limit` bytes or more.
    pub fn spill(&mut self, chunks: &mut Vec<Bytes>, limit: usize) {
        if self.buf.len() >= limit {
            chunks.push(self.take());
        }
    }

    /// Ends the stream and moves the rest to `chunks`.
    pub fn finish_into(&mut self, chunks: &mut Vec<Bytes>) {
        self.finish();
        chunks.push(self.take());
    }

    /// The trailer, ending the stream.
    pub fn finish(&mut self) {
        self.buf.put_i16(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(rows: &[Vec<Option<&[u8]>>]) -> Bytes {
        let mut w = TupleWriter::new();
        for row in rows {
            w.fields(row.iter().copied());
        }
        w.finish();
        w.take()
    }

    #[test]
    fn tuples_come_out_whole_whatever_the_chunking() {
        let rows = vec![
            vec![Some(&b"\0\0\0\0\0\0\0\x2a"[..]), None, Some(&b"hello"[..])],
            vec![Some(&b"\0\0\0\0\0\0\0\x01"[..]), Some(&b""[..]), None],
        ];
        let bytes = stream_of(&rows);
        for chunk in 1..bytes.len() {
            let mut reader = TupleReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                reader.push(piece);
                while let Some(t) = reader.next_tuple().unwrap() {
                    got.push(t);
                }
            }
            assert!(reader.finished(), "chunk {chunk}");
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].field(2), Some(&b"hello"[..]));
            assert_eq!(got[0].field(1), None);
            assert_eq!(got[1].field(1), Some(&b""[..]));
            assert_eq!(got[1].len(), 3);
        }
    }

    #[test]
    fn a_raw_tuple_is_written_back_byte_for_byte() {
        let bytes = stream_of(&[vec![Some(&b"abc"[..]), None]]);
        let mut reader = TupleReader::default();
        reader.push(&bytes);
        let tuple = reader.next_tuple().unwrap().unwrap();
        let mut w = TupleWriter::new();
        w.raw(&tuple);
        w.finish();
        assert_eq!(w.take(), bytes);
    }

    #[test]
    fn a_tuple_with_an_extra_smallint_reads_back_with_it() {
        let bytes = stream_of(&[vec![Some(&b"abc"[..]), None]]);
        let mut reader = TupleReader::default();
        reader.push(&bytes);
        let tuple = reader.next_tuple().unwrap().unwrap();
        let mut w = TupleWriter::new();
        w.raw_with_int2(&tuple, 4095);
        w.finish();
        let mut reader = TupleReader::default();
        reader.push(&w.take());
        let back = reader.next_tuple().unwrap().unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.field(0), Some(&b"abc"[..]));
        assert_eq!(back.field(1), None);
        assert_eq!(back.field(2), Some(&4095i16.to_be_bytes()[..]));
        assert!(reader.next_tuple().unwrap().is_none() && reader.finished());
    }

    #[test]
    fn a_stream_without_the_signature_is_refused() {
        let mut reader = TupleReader::default();
        reader.push(b"COPY nonsense here!!");
        assert!(reader.next_tuple().is_err());
    }

    #[test]
    fn a_negative_field_length_other_than_null_is_refused() {
        let mut w = TupleWriter::new();
        w.buf.put_i16(1);
        w.buf.put_i32(-7);
        let mut reader = TupleReader::default();
        reader.push(&w.take());
        assert!(reader.next_tuple().is_err());
    }
}
