//! The messages of PostgreSQL's built-in `pgoutput` plugin, protocol version 1, as returned by
//! `pg_logical_slot_peek_binary_changes`: decoded into owned values.
//!
//! Pure: no I/O. Decodes only; what the changes mean for a move is `catchup`'s business.
//! Lengths are checked against the bytes present before anything is reserved.

use super::MoveError;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Begin {
        final_lsn: u64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the old key ('K') or the whole old row ('O') when the server sent one.
    Update {
        relation: u32,
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Logical {
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
    },
    /// Origin ('O') and type ('Y') messages: nothing a move needs.
    Ignored(u8),
}

/// A table's description, sent before its first change in each decoding call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelationColumn {
    pub name: String,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub type_oid: u32,
}

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    /// A TOASTed value the update did not change: its bytes are not sent.
    Unchanged,
    Text(String),
}

/// A row's values, in the relation's column order.
pub(crate) type Tuple = Vec<Value>;

/// Decodes one message.
pub(crate) fn decode(data: &[u8]) -> Result<Message, MoveError> {
    let mut r = Reader { data, at: 0 };
    let tag = r.u8()?;
    let message = match tag {
        b'B' => {
            let final_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Message::Begin {
                final_lsn,
                xid: r.u32()?,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            Message::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        b'R' => Message::Relation(relation(&mut r)?),
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: tuple(&mut r)?,
            }
        }
        b'U' => update(&mut r)?,
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {}
                other => return Err(bad(format!("delete with tuple kind {other:#x}"))),
            }
            Message::Delete {
                relation,
                old: tuple(&mut r)?,
            }
        }
        b'T' => {
            let count = r.u32()? as usize;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        b'M' => {
            let transactional = r.u8()? & 1 == 1;
            let _lsn = r.u64()?;
            let prefix = r.cstring()?;
            let len = r.u32()? as usize;
            Message::Logical {
                transactional,
                prefix,
                content: r.bytes(len)?.to_vec(),
            }
        }
        b'O' | b'Y' => Message::Ignored(tag),
        other => return Err(bad(format!("unknown message type {:?}", other as char))),
    };
    Ok(message)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, MoveError> {
    let id = r.u32()?;
    let namespace = r.cstring()?;
    let name = r.cstring()?;
    let _replica_identity = r.u8()?;
    let count = r.u16()? as usize;
    let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
    for _ in 0..count {
        let flags = r.u8()?;
        let name = r.cstring()?;
        let type_oid = r.u32()?;
        let _typmod = r.u32()?;
        columns.push(RelationColumn {
            name,
            key: flags & 1 == 1,
            type_oid,
        });
    }
    Ok(Relation {
        id,
        namespace: if namespace.is_empty() {
            "pg_catalog".to_string()
        } else {
            namespace
        },
        name,
        columns,
    })
}

fn update(r: &mut Reader<'_>) -> Result<Message, MoveError> {
    let relation = r.u32()?;
    let (old, new) = match r.u8()? {
        b'K' | b'O' => {
            let old = tuple(r)?;
            r.expect(b'N')?;
            (Some(old), tuple(r)?)
        }
        b'N' => (None, tuple(r)?),
        other => return Err(bad(format!("update with tuple kind {other:#x}"))),
    };
    Ok(Message::Update { relation, old, new })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, MoveError> {
    let count = r.u16()? as usize;
    let mut values = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        values.push(match r.u8()? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            b't' => {
                let len = r.u32()? as usize;
                let text = std::str::from_utf8(r.bytes(len)?)
                    .map_err(|_| bad("a text value that is not UTF-8".to_string()))?;
                Value::Text(text.to_string())
            }
            other => return Err(bad(format!("value kind {other:#x}"))),
        });
    }
    Ok(values)
}

fn bad(detail: String) -> MoveError {
    MoveError::Decode(detail)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], MoveError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| bad(format!("message ends {n} bytes short at {}", self.at)))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, MoveError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, MoveError> {
        Ok(u16::from_be_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, MoveError> {
        Ok(u32::from_be_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, MoveError> {
        Ok(u64::from_be_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn expect(&mut self, tag: u8) -> Result<(), MoveError> {
        match self.u8()? {
            got if got == tag => Ok(()),
            got => Err(bad(format!(
                "expected {:?}, got {:?}",
                tag as char, got as char
            ))),
        }
    }

    fn cstring(&mut self) -> Result<String, MoveError> {
        let rest = &self.data[self.at..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("unterminated string".to_string()))?;
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| bad("a name that is not UTF-8".to_string()))?
            .to_string();
        self.at += len + 1;
        Ok(text)
    }
}

#[cfg(test)]
#[path = "pgoutput_tests.rs"]
mod tests;
