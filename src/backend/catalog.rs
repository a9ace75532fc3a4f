//! Everything pgshard asks a server's catalog, in one place and one way: pgshard's own simple
//! queries on a [`ServerConnection`], values quoted here, rows read as text. Never runs a
//! client's statement and never writes anything.

pub use super::connection::quote_literal;
use super::connection::{parse_error_fields, ServerConnection};
use super::BackendError;
use crate::wire::{build, rows, server_tag};
use bytes::BytesMut;

/// What a server says about itself at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `default_transaction_isolation` for the connected role and database.
    pub default_isolation: String,
    /// Every function's name and `provolatile` (`i`, `s` or `v`).
    pub functions: Vec<(String, u8)>,
}

/// A server's answer to a catalog query: its rows (text), or the server's error.
pub type Rows = Vec<Vec<Option<String>>>;

/// Reads the default isolation and function volatility.
pub async fn server_facts(conn: &mut ServerConnection) -> Result<ServerFacts, BackendError> {
    let settings = query(
        conn,
        "SELECT current_setting('default_transaction_isolation')",
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
        default_isolation: text(0),
        functions,
    })
}

/// A collation as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollationRow {
    /// Its name, schema-qualified and quoted by the server (`"pg_catalog"."de_DE"`); empty for
    /// the database's own collation.
    pub qualified: String,
    /// `c` (libc), `i` (ICU) or `d` (the database default).
    pub provider: String,
    /// The libc locale (`collcollate`, `datcollate`).
    pub collate: String,
    /// The ICU locale (PostgreSQL 15-16 `colliculocale`/`daticulocale`, 17 `colllocale`).
    pub icu_locale: String,
    pub deterministic: bool,
    /// The database encoding (`UTF8`, ...).
    pub encoding: String,
}

/// The database's own collation (`pg_database`), read through `to_jsonb` so that columns
/// PostgreSQL renamed between versions read the same.
pub async fn database_collation(conn: &mut ServerConnection) -> Result<CollationRow, BackendError> {
    let rows = query(
        conn,
        "SELECT coalesce(j->>'datlocprovider', 'c'), j->>'datcollate', \
         coalesce(j->>'daticulocale', j->>'datlocale', ''), \
         pg_catalog.pg_encoding_to_char((j->>'encoding')::int) \
         FROM (SELECT pg_catalog.to_jsonb(d) AS j FROM pg_catalog.pg_database d \
         WHERE d.datname = pg_catalog.current_database()) AS db",
    )
    .await?;
    let row = rows.into_iter().next().unwrap_or_default();
    let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(CollationRow {
        qualified: String::new(),
        provider: text(0),
        collate: text(1),
        icu_locale: text(2),
        deterministic: true,
        encoding: text(3),
    })
}

/// The collation `name` (SQL, as a statement writes it after COLLATE: `"de_DE"`,
/// `pg_catalog."C"`), resolved by the server; `None` when it has none of that name.
pub async fn named_collation(
    conn: &mut ServerConnection,
    name: &str,
) -> Result<Option<CollationRow>, BackendError> {
    let sql = format!(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.collname), \
         coalesce(j->>'collprovider', 'c'), coalesce(j->>'collcollate', ''), \
         coalesce(j->>'colliculocale', j->>'colllocale', ''), \
         coalesce(j->>'collisdeterministic', 'true'), \
         pg_catalog.pg_encoding_to_char(d.encoding) \
         FROM pg_catalog.pg_collation c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace \
         JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database(), \
         LATERAL pg_catalog.to_jsonb(c) AS j \
         WHERE c.oid = pg_catalog.to_regcollation({})",
        quote_literal(name)
    );
    let rows = query(conn, &sql).await?;
    Ok(rows.into_iter().next().map(|row| {
        let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        CollationRow {
            qualified: text(0),
            provider: text(1),
            collate: text(2),
            icu_locale: text(3),
            deterministic: text(4) == "true",
            encoding: text(5),
        }
    }))
}

/// Columns (of tables, views, ...) and domains outside the system schemas whose collation is
/// not the database default: (relation OID, column number, collation name as SQL); domains
/// have relation OID 0.
pub async fn collated_columns(
    conn: &mut ServerConnection,
) -> Result<Vec<(u32, i16, String)>, BackendError> {
    let rows = query(
        conn,
        "SELECT a.attrelid::oid::text, a.attnum::text, \
         pg_catalog.format('%I.%I', cn.nspname, c.collname) \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class r ON r.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
         JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
         JOIN pg_catalog.pg_namespace cn ON cn.oid = c.collnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attcollation NOT IN (0, 100) \
         AND rn.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND rn.nspname NOT LIKE 'pg\\_toast%' \
         UNION ALL \
         SELECT '0', '0', pg_catalog.format('%I.%I', cn.nspname, c.collname) \
         FROM pg_catalog.pg_type t \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
         JOIN pg_catalog.pg_collation c ON c.oid = t.typcollation \
         JOIN pg_catalog.pg_namespace cn ON cn.oid = c.collnamespace \
         WHERE t.typtype = 'd' AND t.typcollation NOT IN (0, 100) \
         AND tn.nspname NOT IN ('pg_catalog', 'information_schema')",
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let text = |i: usize| row.get(i).cloned().flatten();
            Some((text(0)?.parse().ok()?, text(1)?.parse().ok()?, text(2)?))
        })
        .collect())
}

/// The newest relation's OID (relations created later have higher OIDs until the OID counter
/// wraps around).
pub async fn newest_relation(conn: &mut ServerConnection) -> Result<u32, BackendError> {
    let rows = query(conn, "SELECT max(oid)::text FROM pg_catalog.pg_class").await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX))
}

/// `strings` as the server sorts them under collation `qualified` (SQL; empty: the
/// database's own collation).
pub async fn sorted_by_server(
    conn: &mut ServerConnection,
    strings: &[&str],
    qualified: &str,
) -> Result<Vec<String>, BackendError> {
    let values: Vec<String> = strings.iter().map(|s| quote_literal(s)).collect();
    let collate = if qualified.is_empty() {
        String::new()
    } else {
        format!(" COLLATE {qualified}")
    };
    let sql = format!(
        "SELECT s FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS p(s) ORDER BY s{collate}",
        values.join(", ")
    );
    Ok(query(conn, &sql)
        .await?
        .into_iter()
        .map(|row| row.into_iter().next().flatten().unwrap_or_default())
        .collect())
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

/// Runs a client's session settle query (see `session::state`) on the connection serving it:
/// its rows, and the ParameterStatus frames the server sent meanwhile (a restored `DateStyle`),
/// which are the client's to see.
pub async fn session_state(
    conn: &mut ServerConnection,
    sql: &str,
) -> Result<(Rows, Vec<BytesMut>), BackendError> {
    let mut reports = Vec::new();
    let rows = query_noting(conn, sql, &mut reports).await?;
    Ok((rows, reports))
}

/// The column names of `table_sql` (a table name as SQL, resolved by the connection's
/// search_path) in the order an INSERT without a column list fills them: `attnum` order,
/// without dropped columns (generated ones included: such an INSERT must give them DEFAULT).
/// `None` when there is no such table.
pub async fn insert_columns(
    conn: &mut ServerConnection,
    table_sql: &str,
) -> Result<Option<Vec<String>>, BackendError> {
    let sql = format!(
        "SELECT attname::text FROM pg_catalog.pg_attribute \
         WHERE attrelid = pg_catalog.to_regclass({}) AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
        quote_literal(table_sql)
    );
    let columns: Vec<String> = query(conn, &sql)
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    Ok((!columns.is_empty()).then_some(columns))
}

/// Where the primary inserts WAL now (`pg_current_wal_insert_lsn()`: every commit that has
/// returned ends at or before it, asynchronous commits included) and its WAL page size in bytes.
pub async fn wal_insert_position(
    conn: &mut ServerConnection,
) -> Result<Option<(u64, u64)>, BackendError> {
    let rows = query(
        conn,
        "SET LOCAL statement_timeout = 0; \
         SELECT pg_catalog.pg_current_wal_insert_lsn()::text, \
         pg_catalog.current_setting('wal_block_size')",
    )
    .await?;
    let row = rows.into_iter().next().unwrap_or_default();
    let lsn = row.first().cloned().flatten().and_then(|t| parse_lsn(&t));
    let page = row.get(1).cloned().flatten().and_then(|t| t.parse().ok());
    Ok(lsn.zip(page))
}

/// (Both run on pooled connections, which may carry a client's `statement_timeout`: `SET
/// LOCAL` lifts it for the sample's implicit transaction only.)
///
/// How far a replica has replayed the WAL (`pg_last_wal_replay_lsn()`: the end of the last
/// record replayed); `None` on a server that is not in recovery.
pub async fn wal_replay_position(conn: &mut ServerConnection) -> Result<Option<u64>, BackendError> {
    let rows = query(
        conn,
        "SET LOCAL statement_timeout = 0; SELECT pg_catalog.pg_last_wal_replay_lsn()::text",
    )
    .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .and_then(|t| parse_lsn(&t)))
}

/// Where a server is in the WAL, for SHOW SHARDS: a primary's current write position, or a
/// replica's replay position and how far behind its replay is in seconds (0 when it has
/// replayed everything it received; `None` when it never replayed a transaction).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WalState {
    pub in_recovery: bool,
    pub lsn: Option<u64>,
    pub replay_delay_secs: Option<f64>,
}

/// The server's [`WalState`].
pub async fn wal_state(conn: &mut ServerConnection) -> Result<WalState, BackendError> {
    let rows = query(
        conn,
        "SELECT pg_catalog.pg_is_in_recovery()::text, \
         CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
         ELSE pg_catalog.pg_current_wal_lsn() END::text, \
         CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN NULL \
         WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0 \
         ELSE extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()) END::text",
    )
    .await?;
    let row = rows.into_iter().next().unwrap_or_default();
    let field = |i: usize| row.get(i).cloned().flatten();
    Ok(WalState {
        in_recovery: field(0).as_deref() == Some("true"),
        lsn: field(1).and_then(|t| parse_lsn(&t)),
        replay_delay_secs: field(2).and_then(|t| t.parse().ok()),
    })
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
    query_noting(conn, sql, &mut Vec::new()).await
}

/// Runs a query of pgshard's own; ParameterStatus frames go to `reports`.
async fn query_noting(
    conn: &mut ServerConnection,
    sql: &str,
    reports: &mut Vec<BytesMut>,
) -> Result<Rows, BackendError> {
    // A cancel still on its way could cancel this query instead.
    conn.cancel_key.settled().await;
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
            server_tag::PARAMETER_STATUS => {
                conn.note_parameter_status(frame.body());
                reports.push(frame.bytes);
            }
            _ => {}
        }
    }
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
