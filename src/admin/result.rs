//! Result sets the admin console sends: typed columns (the types PgBouncer uses, so tools that
//! read them get the same types) and rows of values, encoded as RowDescription, DataRows and
//! CommandComplete in text format. Builds bytes only; never reads anything.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use crate::wire::build;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int4,
    Int8,
    Numeric,
    Timestamptz,
}

impl Type {
    fn oid_and_size(self) -> (u32, i16) {
        match self {
            Type::Text => (25, -1),
            Type::Int4 => (23, 4),
            Type::Int8 => (20, 8),
            Type::Numeric => (1700, -1),
            Type::Timestamptz => (1184, 8),
        }
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    /// A non-negative count or sum (numeric and int8 columns).
    Count(u64),
    Float(f64),
    Time(SystemTime),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Count(n)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Count(n as u64)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Int(i64::from(n))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Int(i64::from(b))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    fn text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Text(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            Value::Count(n) => Some(n.to_string()),
            Value::Float(x) => Some(format!("{x:.3}")),
            Value::Time(t) => Some(timestamp(*t)),
        }
    }
}

/// A result set being built.
#[derive(Debug, Clone)]
pub struct ResultSet {
    pub columns: Vec<(&'static str, Type)>,
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    pub fn new(columns: &[(&'static str, Type)]) -> ResultSet {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one value per column.
    pub fn row(&mut self, values: Vec<Value>) {
        debug_assert_eq!(values.len(), self.columns.len(), "one value per column");
        self.rows.push(values);
    }

    /// Appends RowDescription, the DataRows and CommandComplete (`SHOW`).
    pub fn encode(&self, out: &mut BytesMut) {
        let fields: Vec<BytesMut> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let (oid, size) = ty.oid_and_size();
                let mut field = BytesMut::new();
                field.put_slice(name.as_bytes());
                field.put_u8(0);
                field.put_u32(0); // table oid
                field.put_i16(0); // column number
                field.put_u32(oid);
                field.put_i16(size);
                field.put_i32(-1); // type modifier
                field.put_i16(0); // text format
                field
            })
            .collect();
        build::row_description(out, &fields);
        for row in &self.rows {
            let texts: Vec<Option<String>> = row.iter().map(Value::text).collect();
            let refs: Vec<Option<&[u8]>> = texts
                .iter()
                .map(|t| t.as_deref().map(str::as_bytes))
                .collect();
            build::data_row(out, &refs);
        }
        build::command_complete(out, "SHOW");
    }
}

/// `YYYY-MM-DD HH:MM:SS+00` (UTC), as PostgreSQL writes a timestamptz with `TimeZone = UTC`.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_text() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00+00");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_398_968); // 2026-12-04 15:42:48 UTC
        assert_eq!(timestamp(t), "2026-12-04 15:42:48+00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00+00");
    }

    #[test]
    fn a_result_set_encodes_its_columns_and_rows() {
        let mut set = ResultSet::new(&[("name", Type::Text), ("n", Type::Int4)]);
        set.row(vec!["a".into(), Value::Int(1)]);
        set.row(vec![Value::Null, 2i32.into()]);
        let mut out = BytesMut::new();
        set.encode(&mut out);
        assert_eq!(out[0], b'T');
        let rows = out.iter().filter(|&&b| b == b'D').count();
        assert!(rows >= 2);
        assert!(out.ends_with(b"SHOW\0"));
    }
}
