//! Everything pgshard asks a server's catalog, in one place and one way: pgshard's own simple
//! queries on a [`ServerConnection`], values quoted here, rows read as text. Never runs a
//! client's statement and never writes anything.

use super::connection::{parse_error_fields, ServerConnection};
use super::BackendError;
use crate::wire::{build, rows, server_tag};

/// What a server says about itself at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `pg_database.datcollate` of the connection's database.
    pub collation: String,
    /// `default_transaction_isolation` for the connected role and database.
    pub default_isolation: String,
    /// Every function's name and `provolatile` (`i`, `s` or `v`).
    pub functions: Vec<(String, u8)>,
}

/// A server's answer to a catalog query: its rows (text), or the server's error.
pub type Rows = Vec<Vec<Option<String>>>;

/// Reads the collation, default isolation and function volatility.
pub async fn server_facts(conn: &mut ServerConnection) -> Result<ServerFacts, BackendError> {
    let settings = query(
        conn,
        "SELECT datcollate::text, current_setting('default_transaction_isolation') \
         FROM pg_catalog.pg_database WHERE datname = current_database()",
    )
    .await?;
    let first = settings.into_iter().next().unwrap_or_default();
    let text = |i: usize| first.get(i).cloned().flatten().unwrap_or_default();
    let functions = query(
        conn,
        "SELECT proname::text, provolatile FROM pg_catalog.pg_proc",
    )
    .await?
    .into_iter()
    .filter_map(|row| {
        let name = row.first()?.clone()?;
        let kind = row.get(1)?.as_deref()?.bytes().next()?;
        Some((name, kind))
    })
    .collect();
    Ok(ServerFacts {
        collation: text(0),
        default_isolation: text(1),
        functions,
    })
}

/// The column names of `table_sql` (a table name as SQL, e.g. `public."Users"`) in COPY's
/// default order, without dropped or generated columns. A server error (no such table) comes
/// back as `BackendError::Server` with its SQLSTATE.
pub async fn table_columns(
    conn: &mut ServerConnection,
    table_sql: &str,
) -> Result<Vec<String>, BackendError> {
    let sql = format!(
        "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = {}::regclass \
         AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        quote_literal(table_sql)
    );
    Ok(query(conn, &sql)
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// Where the primary inserts WAL now (`pg_current_wal_insert_lsn()`: every commit that has
/// returned ends at or before it, asynchronous commits included) and its WAL page size in bytes.
pub async fn wal_insert_position(
    conn: &mut ServerConnection,
) -> Result<Option<(u64, u64)>, BackendError> {
    let rows = query(
        conn,
        "SELECT pg_catalog.pg_current_wal_insert_lsn()::text, \
         pg_catalog.current_setting('wal_block_size')",
    )
    .await?;
    let row = rows.into_iter().next().unwrap_or_default();
    let lsn = row.first().cloned().flatten().and_then(|t| parse_lsn(&t));
    let page = row.get(1).cloned().flatten().and_then(|t| t.parse().ok());
    Ok(lsn.zip(page))
}

/// How far a replica has replayed the WAL (`pg_last_wal_replay_lsn()`: the end of the last
/// record replayed); `None` on a server that is not in recovery.
pub async fn wal_replay_position(conn: &mut ServerConnection) -> Result<Option<u64>, BackendError> {
    let rows = query(conn, "SELECT pg_catalog.pg_last_wal_replay_lsn()::text").await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .and_then(|t| parse_lsn(&t)))
}

/// A `pg_lsn` in its text form (`16/B374D848`: two hexadecimal halves) as a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// Runs one of pgshard's own queries and returns its rows as text.
async fn query(conn: &mut ServerConnection, sql: &str) -> Result<Rows, BackendError> {
    let mut out = bytes::BytesMut::new();
    build::query(&mut out, sql);
    conn.in_flight = true;
    conn.write(&out).await?;
    let mut found = Vec::new();
    let mut failure = None;
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag() {
            server_tag::DATA_ROW => {
                let fields = rows::data_row_fields(frame.body()).unwrap_or_default();
                found.push(
                    fields
                        .into_iter()
                        .map(|f| f.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                );
            }
            server_tag::ERROR_RESPONSE if failure.is_none() => {
                let (sqlstate, message) = parse_error_fields(frame.body());
                failure = Some(BackendError::Server { sqlstate, message });
            }
            server_tag::READY_FOR_QUERY => {
                conn.note_ready_for_query(frame.body());
                return failure.map_or(Ok(found), Err);
            }
            _ => {}
        }
    }
}

/// Quotes a value as an SQL string literal that reads the same whatever
/// `standard_conforming_strings` is (an `E''` string with quotes and backslashes doubled).
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("16"), None);
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("it's"), "E'it''s'");
        assert_eq!(quote_literal(r"a\'b"), r"E'a\\''b'");
    }
}
