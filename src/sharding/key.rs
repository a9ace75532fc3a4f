//! Key values and their bytes: parsing literals in text or binary format by the declared type.

use std::fmt;
use std::ops::Deref;

use super::{slot_of_bytes, KeyType, ShardingError};

/// A shard key value, already checked against its declared type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// `bigint`, `integer` and `smallint` keys: all hash as a 64-bit integer.
    Int(i64),
    /// `text` and `varchar` keys, exactly as given.
    Text(String),
    /// `uuid` keys, in canonical (RFC 4122) byte order.
    Uuid([u8; 16]),
}

/// The bytes a key hashes as, without allocating for integers or copying strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBytes<'a> {
    Int([u8; 8]),
    Borrowed(&'a [u8]),
}

impl Deref for KeyBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Int(bytes) => bytes,
            KeyBytes::Borrowed(bytes) => bytes,
        }
    }
}

impl KeyValue {
    /// The bytes the key hashes as (SHARDING.md): integers as 8 bytes little-endian, text as
    /// its UTF-8 bytes, a UUID as its 16 bytes.
    pub fn key_bytes(&self) -> KeyBytes<'_> {
        match self {
            KeyValue::Int(v) => KeyBytes::Int(v.to_le_bytes()),
            KeyValue::Text(s) => KeyBytes::Borrowed(s.as_bytes()),
            KeyValue::Uuid(u) => KeyBytes::Borrowed(u),
        }
    }

    /// The slot this key lives in.
    pub fn slot(&self) -> u16 {
        slot_of_bytes(&self.key_bytes())
    }
}

/// Shows the key as a SQL literal would: `42`, `'alice'`, `'550e8400-...'`.
impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            KeyValue::Uuid(u) => {
                f.write_str("'")?;
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                f.write_str("'")
            }
        }
    }
}

/// Parses a key given as text (a SQL literal's contents, or a text-format parameter).
///
/// Integers take an optional sign and surrounding whitespace, as PostgreSQL does; text is taken
/// as is; a UUID may be hyphenated, bare hex, or in braces, in either case.
pub fn key_from_text(key_type: KeyType, text: &str) -> Result<KeyValue, ShardingError> {
    match key_type {
        KeyType::Bigint | KeyType::Integer | KeyType::Smallint => {
            parse_int(key_type, text).map(KeyValue::Int)
        }
        KeyType::Text | KeyType::Varchar => Ok(KeyValue::Text(text.to_string())),
        KeyType::Uuid => parse_uuid(text)
            .map(KeyValue::Uuid)
            .ok_or_else(|| invalid(key_type, text)),
    }
}

/// Parses a key given in PostgreSQL's binary wire format.
///
/// Integers are big-endian of 2, 4 or 8 bytes whatever the declared integer type (a client may
/// bind an `int4` to a `bigint` column), range-checked against it; text is raw UTF-8; a UUID
/// is its 16 bytes.
pub fn key_from_binary(key_type: KeyType, bytes: &[u8]) -> Result<KeyValue, ShardingError> {
    match key_type {
        KeyType::Bigint | KeyType::Integer | KeyType::Smallint => {
            let value = match *bytes {
                [a, b] => i64::from(i16::from_be_bytes([a, b])),
                [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                _ => {
                    return Err(ShardingError::BadBinaryKey {
                        key_type,
                        len: bytes.len(),
                        expected: "2, 4 or 8",
                    })
                }
            };
            check_range(key_type, value, || value.to_string()).map(KeyValue::Int)
        }
        KeyType::Text | KeyType::Varchar => std::str::from_utf8(bytes)
            .map(|s| KeyValue::Text(s.to_string()))
            .map_err(|_| ShardingError::KeyNotUtf8 { key_type }),
        KeyType::Uuid => <[u8; 16]>::try_from(bytes)
            .map(KeyValue::Uuid)
            .map_err(|_| ShardingError::BadBinaryKey {
                key_type,
                len: bytes.len(),
                expected: "16",
            }),
    }
}

fn invalid(key_type: KeyType, text: &str) -> ShardingError {
    ShardingError::InvalidKey {
        key_type,
        value: text.to_string(),
    }
}

/// PostgreSQL's whitespace for numeric input (C `isspace`).
fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Decimal integer with optional sign and surrounding whitespace, range-checked.
fn parse_int(key_type: KeyType, text: &str) -> Result<i64, ShardingError> {
    let trimmed = text.trim_matches(is_pg_space);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(key_type, text));
    }
    // Accumulate negatively so i64::MIN parses; overflow means out of range, not bad syntax.
    let mut value: i64 = 0;
    for d in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .ok_or_else(|| out_of_range(key_type, text))?;
    }
    let value = if negative {
        value
    } else {
        value
            .checked_neg()
            .ok_or_else(|| out_of_range(key_type, text))?
    };
    check_range(key_type, value, || text.to_string())
}

fn out_of_range(key_type: KeyType, text: &str) -> ShardingError {
    ShardingError::KeyOutOfRange {
        key_type,
        value: text.trim_matches(is_pg_space).to_string(),
    }
}

fn check_range(
    key_type: KeyType,
    value: i64,
    shown: impl FnOnce() -> String,
) -> Result<i64, ShardingError> {
    let fits = match key_type {
        KeyType::Smallint => i16::try_from(value).is_ok(),
        KeyType::Integer => i32::try_from(value).is_ok(),
        _ => true,
    };
    if fits {
        Ok(value)
    } else {
        Err(ShardingError::KeyOutOfRange {
            key_type,
            value: shown().trim_matches(is_pg_space).to_string(),
        })
    }
}

/// PostgreSQL's `uuid_in`: optional braces around 32 hex digits, with an optional hyphen after
/// any group of four digits (so the canonical 8-4-4-4-12 form and bare hex both parse).
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut src = inner.as_bytes();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, rest @ ..] = src else {
            return None;
        };
        *byte = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
        src = rest;
        if i % 2 == 1 && i < 15 {
            if let [b'-', rest @ ..] = src {
                src = rest;
            }
        }
    }
    src.is_empty().then_some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
