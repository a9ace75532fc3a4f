//! What the scripted server answers: backend messages built in order with
//! `Msgs::new().parse_complete().bind_complete().row(&["1"]).command("SELECT 1").ready(b'I')`.
//! Uses [`crate::wire::build`] where it has the message; writes the few it lacks.

use bytes::{BufMut, BytesMut};

use crate::wire::build;
use crate::wire::TransactionStatus;

/// Backend messages, in the order they are sent; the second field: the server closes the
/// connection after them (a FATAL was among them, as PostgreSQL closes after one).
#[derive(Debug, Default, Clone)]
pub struct Msgs(pub BytesMut, pub bool);

impl Msgs {
    pub fn new() -> Msgs {
        Msgs::default()
    }

    pub fn parse_complete(mut self) -> Msgs {
        build::parse_complete(&mut self.0);
        self
    }

    pub fn bind_complete(mut self) -> Msgs {
        build::bind_complete(&mut self.0);
        self
    }

    pub fn no_data(mut self) -> Msgs {
        build::no_data(&mut self.0);
        self
    }

    /// ParameterDescription with these type OIDs.
    pub fn params(mut self, oids: &[u32]) -> Msgs {
        self.0.put_u8(b't');
        self.0.put_i32(4 + 2 + 4 * oids.len() as i32);
        self.0.put_i16(oids.len() as i16);
        for oid in oids {
            self.0.put_u32(*oid);
        }
        self
    }

    /// RowDescription of text-format columns `(name, type oid)`.
    pub fn columns(mut self, columns: &[(&str, u32)]) -> Msgs {
        let fields: Vec<BytesMut> = columns
            .iter()
            .map(|(name, oid)| {
                let mut field = BytesMut::new();
                field.put_slice(name.as_bytes());
                field.put_u8(0);
                field.put_i32(0); // table oid
                field.put_i16(0); // column number
                field.put_u32(*oid);
                field.put_i16(-1); // type size
                field.put_i32(-1); // type modifier
                field.put_i16(0); // text format
                field
            })
            .collect();
        build::row_description(&mut self.0, &fields);
        self
    }

    /// DataRow of text values.
    pub fn row(mut self, values: &[&str]) -> Msgs {
        let fields: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_bytes())).collect();
        build::data_row(&mut self.0, &fields);
        self
    }

    /// CommandComplete with this tag (`SELECT 1`, `INSERT 0 1`, `SET`, ...).
    pub fn command(mut self, tag: &str) -> Msgs {
        build::command_complete(&mut self.0, tag);
        self
    }

    /// ReadyForQuery with status `b'I'`, `b'T'` or `b'E'`.
    pub fn ready(mut self, status: u8) -> Msgs {
        let status = TransactionStatus::from_byte(status).expect("status is I, T or E");
        build::ready_for_query(&mut self.0, status);
        self
    }

    /// ErrorResponse (severity ERROR), as the scripted server sends it (written here, not by
    /// pgshard's encoder: this is the server's message, not one of pgshard's own).
    pub fn error(self, sqlstate: &str, message: &str) -> Msgs {
        self.error_of("ERROR", sqlstate, message)
    }

    /// ErrorResponse of severity FATAL: the server ends the connection (e.g. 57P01 when it
    /// shuts down).
    pub fn fatal(self, sqlstate: &str, message: &str) -> Msgs {
        let mut msgs = self.error_of("FATAL", sqlstate, message);
        msgs.1 = true;
        msgs
    }

    fn error_of(mut self, severity: &str, sqlstate: &str, message: &str) -> Msgs {
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', sqlstate),
            (b'M', message),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        self.0.put_u8(b'E');
        self.0
            .put_i32(i32::try_from(body.len() + 4).expect("a small message"));
        self.0.extend_from_slice(&body);
        self
    }

    /// ParameterStatus, as the server reports a changed setting.
    pub fn parameter(mut self, name: &str, value: &str) -> Msgs {
        build::parameter_status(&mut self.0, name, value);
        self
    }

    /// CopyInResponse for `columns` text-format columns.
    pub fn copy_in(mut self, columns: i16) -> Msgs {
        self.0.put_u8(b'G');
        self.0.put_i32(4 + 1 + 2 + 2 * i32::from(columns));
        self.0.put_u8(0);
        self.0.put_i16(columns);
        for _ in 0..columns {
            self.0.put_i16(0);
        }
        self
    }
}
