//! The extended-protocol messages pgshard looks inside: Parse, Bind, Describe and Close carry
//! statement names that pgshard renames per server connection. Only names are decoded; the rest of
//! each message is kept as bytes.

use bytes::{BufMut, BytesMut};

use super::{WireError, HEADER_LEN};

/// Splits a NUL-terminated name off the front of `body`: (name, rest after the NUL).
fn split_name<'a>(body: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::Malformed { what })?;
    Ok((&body[..end], &body[end + 1..]))
}

/// A Parse message: statement name, and everything after it (query, parameter types) as bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    /// Query text (NUL-terminated) followed by the parameter type count and OIDs.
    pub rest: &'a [u8],
}

impl<'a> Parse<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Parse<'a>, WireError> {
        let (name, rest) = split_name(body, "Parse")?;
        let (_query, types) = split_name(rest, "Parse")?;
        if types.len() < 2 {
            return Err(WireError::Malformed { what: "Parse" });
        }
        Ok(Parse { name, rest })
    }

    /// The query text, without its NUL.
    pub fn query(&self) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.rest.len());
        &self.rest[..end]
    }

    /// The parameter type OIDs the Parse declares (0 = left to the server).
    pub fn param_types(&self) -> Vec<u32> {
        let after_query = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .map_or(&[][..], |end| &self.rest[end + 1..]);
        let Some((count, oids)) = after_query.split_first_chunk::<2>() else {
            return Vec::new();
        };
        let count = usize::try_from(i16::from_be_bytes(*count)).unwrap_or(0);
        oids.chunks_exact(4)
            .take(count)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Encodes this Parse under another statement name.
    pub fn encode_renamed(&self, name: &str) -> BytesMut {
        frame_with_name(b'P', &[], name.as_bytes(), self.rest)
    }
}

/// A Bind message: portal and statement names, and the rest (formats, values) as bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Bind<'a>, WireError> {
        let (portal, rest) = split_name(body, "Bind")?;
        let (statement, rest) = split_name(rest, "Bind")?;
        Ok(Bind {
            portal,
            statement,
            rest,
        })
    }

    /// Appends this Bind, naming another statement, to `out` (the server's output: no buffer
    /// of its own).
    pub fn encode_renamed_into(&self, statement: &str, out: &mut BytesMut) {
        let name = statement.as_bytes();
        put_frame(out, b'B', &[self.portal, b"\0", name, b"\0", self.rest]);
    }
}

/// The parameter formats and values of a Bind, borrowed from the message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BindParams<'a> {
    /// Format codes as sent: none (all text), one (for all), or one per parameter.
    pub formats: Vec<i16>,
    /// Each value; `None` is SQL NULL.
    pub values: Vec<Option<&'a [u8]>>,
}

impl<'a> Bind<'a> {
    /// Decodes the parameter formats and values (result formats are left alone).
    pub fn params(&self) -> Result<BindParams<'a>, WireError> {
        let malformed = WireError::Malformed { what: "Bind" };
        let mut rest = self.rest;
        let mut take = |n: usize| -> Result<&'a [u8], WireError> {
            if rest.len() < n {
                return Err(malformed.clone());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let count = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
        let n_formats = usize::try_from(count(take(2)?)).map_err(|_| malformed.clone())?;
        let mut formats = Vec::with_capacity(n_formats);
        for _ in 0..n_formats {
            formats.push(count(take(2)?));
        }
        let n_values = usize::try_from(count(take(2)?)).map_err(|_| malformed.clone())?;
        let mut values = Vec::with_capacity(n_values);
        for _ in 0..n_values {
            let len = take(4)?;
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            values.push(match usize::try_from(len) {
                Ok(len) => Some(take(len)?),
                Err(_) => None, // -1: NULL
            });
        }
        Ok(BindParams { formats, values })
    }
}

impl<'a> Bind<'a> {
    /// The result-column format codes (none: all text; one: for every column; else per column).
    pub fn result_formats(&self) -> Result<Vec<i16>, WireError> {
        let tail = &self.rest[self.params_len()?..];
        let malformed = WireError::Malformed { what: "Bind" };
        let (count, mut rest) = tail.split_first_chunk::<2>().ok_or(malformed.clone())?;
        let count = usize::try_from(i16::from_be_bytes(*count)).map_err(|_| malformed.clone())?;
        let mut formats = Vec::with_capacity(count);
        for _ in 0..count {
            let (code, after) = rest.split_first_chunk::<2>().ok_or(malformed.clone())?;
            formats.push(i16::from_be_bytes(*code));
            rest = after;
        }
        Ok(formats)
    }

    /// Bytes of `rest` taken by the parameter formats and values.
    fn params_len(&self) -> Result<usize, WireError> {
        let params = self.params()?;
        let values: usize = params
            .values
            .iter()
            .map(|v| 4 + v.map_or(0, <[u8]>::len))
            .sum();
        Ok(2 + 2 * params.formats.len() + 2 + values)
    }

    /// This Bind for the unnamed portal and statement, with all results in text when `text`.
    pub fn encode_unnamed(&self, text: bool) -> Result<BytesMut, WireError> {
        let rest = if text {
            let mut rest = self.rest[..self.params_len()?].to_vec();
            rest.extend_from_slice(&0i16.to_be_bytes());
            rest
        } else {
            self.rest.to_vec()
        };
        Ok(frame_with_name(b'B', &[0], &[], &rest))
    }
}

impl Bind<'_> {
    /// An unnamed Bind of the unnamed statement with only the parameters at `order` (the
    /// statement's `$1` gets the value of parameter `order[0]`, ...), their format codes, and
    /// this Bind's result formats.
    pub fn encode_subset(&self, order: &[usize]) -> Result<BytesMut, WireError> {
        let malformed = WireError::Malformed { what: "Bind" };
        let params = self.params()?;
        let results = self.result_formats()?;
        let count = |n: usize| i16::try_from(n).map_err(|_| malformed.clone());
        let mut rest = BytesMut::new();
        match params.formats.as_slice() {
            [] => rest.put_i16(0),
            [all] => {
                rest.put_i16(1);
                rest.put_i16(*all);
            }
            each => {
                rest.put_i16(count(order.len())?);
                for &i in order {
                    rest.put_i16(*each.get(i).ok_or(malformed.clone())?);
                }
            }
        }
        rest.put_i16(count(order.len())?);
        for &i in order {
            match params.values.get(i).ok_or(malformed.clone())? {
                Some(value) => {
                    rest.put_i32(i32::try_from(value.len()).map_err(|_| malformed.clone())?);
                    rest.put_slice(value);
                }
                None => rest.put_i32(-1),
            }
        }
        rest.put_i16(count(results.len())?);
        for code in results {
            rest.put_i16(code);
        }
        Ok(frame_with_name(b'B', &[0], &[], &rest))
    }
}

/// An Execute message: the portal and the most rows to return (0: all).
#[derive(Debug, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a [u8],
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Execute<'a>, WireError> {
        let (portal, rest) = split_name(body, "Execute")?;
        let max_rows = rest
            .first_chunk::<4>()
            .map(|b| i32::from_be_bytes(*b))
            .ok_or(WireError::Malformed { what: "Execute" })?;
        Ok(Execute { portal, max_rows })
    }
}

/// Describe or Close: a kind byte (`S` statement, `P` portal) and a name.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub kind: TargetKind,
    pub name: &'a [u8],
}

/// What a Describe or Close refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Statement,
    Portal,
}

impl<'a> Target<'a> {
    pub fn decode(body: &'a [u8], what: &'static str) -> Result<Target<'a>, WireError> {
        let kind = match body.first() {
            Some(b'S') => TargetKind::Statement,
            Some(b'P') => TargetKind::Portal,
            _ => return Err(WireError::Malformed { what }),
        };
        let (name, _) = split_name(&body[1..], what)?;
        Ok(Target { kind, name })
    }

    /// Encodes a Describe (`tag` = `D`) or Close (`C`) of a statement under another name.
    pub fn encode_statement(tag: u8, name: &str) -> BytesMut {
        frame_with_name(tag, b"S", name.as_bytes(), &[])
    }
}

/// Builds `tag len prefix name\0 rest`.
fn frame_with_name(tag: u8, prefix: &[u8], name: &[u8], rest: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    put_frame(&mut buf, tag, &[prefix, name, b"\0", rest]);
    buf
}

/// Appends `tag len` and a body made of `parts` to `out`.
fn put_frame(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let body_len: usize = parts.iter().map(|part| part.len()).sum();
    out.reserve(HEADER_LEN + body_len);
    out.put_u8(tag);
    // Infallible in practice: the message this was decoded from passed the size cap.
    out.put_i32((body_len + 4) as i32);
    for part in parts {
        out.put_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_renamed_keeping_query_and_types() {
        let body = b"s1\0SELECT $1\0\0\x01\0\0\0\x17";
        let p = Parse::decode(body).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.query(), b"SELECT $1");
        assert_eq!(p.param_types(), vec![23]);
        let out = p.encode_renamed("pgshard_x");
        assert_eq!(out[0], b'P');
        assert_eq!(&out[5..], b"pgshard_x\0SELECT $1\0\0\x01\0\0\0\x17");
        assert_eq!(
            i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            out.len() - 1
        );
    }

    #[test]
    fn bind_is_renamed_keeping_portal_and_values() {
        let body = b"p\0s1\0\0\0\0\x01\0\0\0\x0142\0\0";
        let b = Bind::decode(body).unwrap();
        assert_eq!((b.portal, b.statement), (&b"p"[..], &b"s1"[..]));
        let mut out = BytesMut::from(&b"queued"[..]);
        b.encode_renamed_into("pgshard_x", &mut out);
        let body = b"p\0pgshard_x\0\0\0\0\x01\0\0\0\x0142\0\0";
        assert_eq!(&out[..6], b"queued", "appended after what was there");
        assert_eq!(out[6], b'B');
        assert_eq!(&out[7..11], &((body.len() + 4) as i32).to_be_bytes());
        assert_eq!(&out[11..], body);
    }

    #[test]
    fn bind_parameters_decode_with_nulls_and_formats() {
        // portal "", statement "s", 1 format (binary), 2 values: 4 bytes 42, NULL; 0 result formats.
        let body = b"\0s\0\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x2a\xff\xff\xff\xff\0\0";
        let p = Bind::decode(body).unwrap().params().unwrap();
        assert_eq!(p.formats, vec![1]);
        assert_eq!(p.values, vec![Some(&[0u8, 0, 0, 42][..]), None]);
    }

    #[test]
    fn truncated_bind_values_are_malformed() {
        let body = b"\0s\0\0\0\0\x01\0\0\0\x10abc";
        assert!(Bind::decode(body).unwrap().params().is_err());
    }

    #[test]
    fn describe_and_close_targets_decode() {
        assert_eq!(
            Target::decode(b"Sabc\0", "Describe").unwrap(),
            Target {
                kind: TargetKind::Statement,
                name: b"abc"
            }
        );
        assert!(Target::decode(b"Xabc\0", "Describe").is_err());
        assert!(Target::decode(b"Pabc", "Close").is_err());
    }

    #[test]
    fn truncated_parse_is_malformed() {
        assert!(Parse::decode(b"s1\0SELECT 1").is_err());
        assert!(Parse::decode(b"s1\0SELECT 1\0").is_err());
    }
}
