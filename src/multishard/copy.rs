//! COPY statements → [`CopyPlan`], at plan time: `COPY <sharded table> FROM STDIN` becomes the
//! table, the shard key's position in each row and the data format ([`CopyFormat`]), so the
//! session can split the rows by key; `COPY ... TO STDOUT` reading several shards becomes whether
//! concatenating the shards' output is the right answer (reusing [`super::scatter`](mod@super::scatter)'s judgement
//! on the inner query). Also places one row by its key text ([`CopyIn::shard_of`]).
//!
//! Pure: never does I/O, never sees the data, never keeps state between calls.

use std::sync::Arc;

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, Statement,
};

use super::copy_rows::CopyFormat;
use super::input::{Facts, ShardedTable, Tables};
use super::read_plan::Scatter;
use super::scatter::scatter;
use crate::error::{ClientError, SqlState};
use crate::sharding::{key_from_text, ShardMap, ShardingError};
use crate::sql::lexer::{tokens, Token};
use crate::sql::syntax::fold;

/// What a COPY statement needs beyond an ordinary route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlan {
    /// `COPY <sharded table> FROM STDIN`: each row goes to its key's shard.
    In(CopyIn),
    /// `COPY (query) TO STDOUT` / `COPY <table> TO STDOUT`: when it routes to several shards,
    /// `Ok` says how to gather the shards' output, `Err` names what concatenation cannot answer.
    Out(Result<CopyOut, String>),
}

/// A `COPY <sharded table> FROM STDIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    pub table: Arc<ShardedTable>,
    /// The table as the statement names it (SQL), to look its columns up.
    pub table_sql: String,
    /// Position of the key column in the column list; `None` without a column list (the
    /// session looks the table's column order up).
    pub key_index: Option<usize>,
    /// The data format; its `key_index` is set once the key's position is known.
    pub format: CopyFormat,
}

/// A `COPY ... TO STDOUT` answered by concatenating every shard's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOut {
    /// Each shard sends a header line first: only the first shard's is kept.
    pub header: bool,
}

/// Why a row cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyKeyError {
    #[error(
        "COPY data line {line}: the shard key {column} of {table} is NULL; pgshard places each \
         row by its key: give every row a {column}"
    )]
    Null {
        line: u64,
        table: String,
        column: String,
    },
    #[error("COPY data line {line}: {source}; fix the shard key {column} in that row")]
    Bad {
        line: u64,
        column: String,
        source: ShardingError,
    },
}

impl CopyKeyError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            CopyKeyError::Null { .. } => SqlState::NOT_NULL_VIOLATION,
            CopyKeyError::Bad { source, .. } => source.sqlstate(),
        }
    }
}

impl From<&CopyKeyError> for ClientError {
    fn from(e: &CopyKeyError) -> ClientError {
        ClientError::new(e.sqlstate(), format!("pgshard: {e}"))
    }
}

impl CopyIn {
    /// The shard of a row whose key field reads `key` (`None`: NULL), on data line `line`.
    pub fn shard_of(
        &self,
        map: &ShardMap,
        key: Option<&str>,
        line: u64,
    ) -> Result<usize, CopyKeyError> {
        let Some(text) = key else {
            return Err(CopyKeyError::Null {
                line,
                table: self.table.name.to_string(),
                column: self.table.key_column.to_string(),
            });
        };
        let value =
            key_from_text(self.table.key_type, text).map_err(|source| CopyKeyError::Bad {
                line,
                column: self.table.key_column.to_string(),
                source,
            })?;
        Ok(map.shard_of_key(&value))
    }

    /// Sets the key's position once the table's column order is known (no column list):
    /// `Err` with a message when the table has no such column.
    pub fn with_columns(&self, columns: &[String]) -> Result<CopyIn, String> {
        let index = columns
            .iter()
            .position(|c| *c == *self.table.key_column)
            .ok_or_else(|| {
                format!(
                    "table {} has no column {} (its shard key) among its columns; list the \
                     columns: COPY {} ({}, ...) FROM STDIN",
                    self.table.name, self.table.key_column, self.table_sql, self.table.key_column
                )
            })?;
        let mut resolved = self.clone();
        resolved.key_index = Some(index);
        resolved.format.key_index = index;
        Ok(resolved)
    }
}

/// The COPY plan of `statements` (parsed from `sql`), if they are a COPY that needs one; `Err`
/// is the refusal.
pub(crate) fn copy_plan(
    facts: &Facts,
    tables: &dyn Tables,
    statements: &[Statement],
    sql: &str,
) -> Result<Option<CopyPlan>, String> {
    let copies_in = statements.iter().any(|s| into_sharded(tables, s).is_some());
    let [statement] = statements else {
        if copies_in {
            return Err("COPY into a sharded table must be the only statement in its query".into());
        }
        return Ok(None);
    };
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        values,
    } = statement
    else {
        return Ok(None);
    };
    if *to {
        let gather = Options::read(options, legacy_options)
            .and_then(|o| copy_out(facts, tables, source, target, &o));
        return Ok(Some(CopyPlan::Out(gather)));
    }
    let Some(table) = into_sharded(tables, statement) else {
        return Ok(None);
    };
    let options = Options::read(options, legacy_options).map_err(|e| {
        format!(
            "COPY into sharded table {}: {e} is not supported",
            table.name
        )
    })?;
    if !values.is_empty() || text_after_semicolon(sql) {
        return Err(format!(
            "COPY into sharded table {} must be the only statement in its query, with its rows \
             sent as COPY data",
            table.name
        ));
    }
    if *target != CopyTarget::Stdin {
        return Err(format!(
            "COPY into sharded table {} reads {target} on a server; pgshard splits only COPY ... \
             FROM STDIN by key: use COPY FROM STDIN (psql's \\copy)",
            table.name
        ));
    }
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Ok(None);
    };
    if options.binary {
        return Err(format!(
            "COPY into sharded table {} in binary format is not supported; use FORMAT text or csv",
            table.name
        ));
    }
    let key_index = if columns.is_empty() {
        None
    } else {
        Some(
            columns
                .iter()
                .position(|c| fold(c) == *table.key_column)
                .ok_or_else(|| {
                    format!(
                        "COPY into sharded table {} must include its shard key column {} in the \
                         column list, so each row can be placed",
                        table.name, table.key_column
                    )
                })?,
        )
    };
    let format = options
        .format(&table.key_column, key_index.unwrap_or(0))
        .map_err(|e| format!("COPY into sharded table {}: {e}", table.name))?;
    Ok(Some(CopyPlan::In(CopyIn {
        table,
        table_sql: table_name.to_string(),
        key_index,
        format,
    })))
}

/// Whether anything but whitespace and comments follows the first `;` (sqlparser reads what
/// follows `COPY ... FROM STDIN;` as inline data, even another statement).
fn text_after_semicolon(sql: &str) -> bool {
    tokens(sql)
        .skip_while(|t| *t != Token::Punct(b';'))
        .skip(1)
        .any(|t| t != Token::Punct(b';'))
}

/// The sharded table a `COPY ... FROM` writes, if any.
fn into_sharded(tables: &dyn Tables, s: &Statement) -> Option<Arc<ShardedTable>> {
    match s {
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            to: false,
            ..
        } => tables.sharded(table_name),
        _ => None,
    }
}

/// Whether the shards' COPY TO output may simply be concatenated.
fn copy_out(
    facts: &Facts,
    tables: &dyn Tables,
    source: &CopySource,
    target: &CopyTarget,
    options: &Options,
) -> Result<CopyOut, String> {
    if *target != CopyTarget::Stdout {
        return Err(format!(
            "COPY TO {target} (only COPY TO STDOUT is gathered)"
        ));
    }
    if options.binary {
        return Err("binary COPY output".into());
    }
    if let CopySource::Query(q) = source {
        let inner = [Statement::Query(q.clone())];
        match scatter(facts, tables, &inner, true) {
            Scatter::Concat { order, limit: None } if order.is_empty() => {}
            Scatter::Concat { order, .. } if !order.is_empty() => {
                return Err("ORDER BY inside COPY".into())
            }
            Scatter::Concat { .. } => return Err("LIMIT inside COPY".into()),
            Scatter::Unsupported(construct) => return Err(construct),
            // Anything the session must merge row by row (aggregates, GROUP BY, DISTINCT,
            // OFFSET): COPY output is passed through, never merged.
            _ => {
                return Err(
                    "a query whose rows must be merged across shards (aggregates, \
                            GROUP BY, DISTINCT, OFFSET) inside COPY"
                        .into(),
                )
            }
        }
    }
    Ok(CopyOut {
        header: options.header,
    })
}

/// The COPY options that matter for splitting rows.
#[derive(Debug, Default)]
struct Options {
    csv: bool,
    binary: bool,
    delimiter: Option<char>,
    null: Option<String>,
    header: bool,
    quote: Option<char>,
    escape: Option<char>,
    force_not_null: Vec<Ident>,
    force_null: Vec<Ident>,
}

impl Options {
    fn read(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Options, String> {
        let mut o = Options::default();
        for option in options {
            match option {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => o.csv = false,
                    "csv" => o.csv = true,
                    "binary" => o.binary = true,
                    other => return Err(format!("COPY format \"{other}\"")),
                },
                CopyOption::Delimiter(c) => o.delimiter = Some(*c),
                CopyOption::Null(s) => o.null = Some(s.clone()),
                CopyOption::Header(h) => o.header = *h,
                CopyOption::Quote(c) => o.quote = Some(*c),
                CopyOption::Escape(c) => o.escape = Some(*c),
                CopyOption::ForceNotNull(cols) => o.force_not_null.extend(cols.iter().cloned()),
                CopyOption::ForceNull(cols) => o.force_null.extend(cols.iter().cloned()),
                CopyOption::Freeze(_) | CopyOption::ForceQuote(_) | CopyOption::Encoding(_) => {}
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => o.binary = true,
                CopyLegacyOption::Delimiter(c) => o.delimiter = Some(*c),
                CopyLegacyOption::Null(s) => o.null = Some(s.clone()),
                CopyLegacyOption::Header => o.header = true,
                CopyLegacyOption::Csv(csv) => {
                    o.csv = true;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => o.header = true,
                            CopyLegacyCsvOption::Quote(q) => o.quote = Some(*q),
                            CopyLegacyCsvOption::Escape(e) => o.escape = Some(*e),
                            CopyLegacyCsvOption::ForceNotNull(cols) => {
                                o.force_not_null.extend(cols.iter().cloned())
                            }
                            CopyLegacyCsvOption::ForceQuote(_) => {}
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "COPY option {other}, which PostgreSQL does not have"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The data format for a key at `key_index` named `key_column`.
    fn format(&self, key_column: &str, key_index: usize) -> Result<CopyFormat, String> {
        let mut f = CopyFormat::new(self.csv, key_index);
        if let Some(d) = self.delimiter {
            f.delimiter = one_byte(d, "DELIMITER")?;
        }
        if let Some(q) = self.quote {
            f.quote = one_byte(q, "QUOTE")?;
            f.escape = f.quote;
        }
        if let Some(e) = self.escape {
            f.escape = one_byte(e, "ESCAPE")?;
        }
        if let Some(n) = &self.null {
            f.null = n.as_bytes().into();
        }
        f.header = self.header;
        f.force_not_null = self.force_not_null.iter().any(|c| fold(c) == key_column);
        f.force_null = self.force_null.iter().any(|c| fold(c) == key_column);
        Ok(f)
    }
}

fn one_byte(c: char, option: &str) -> Result<u8, String> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        format!("COPY {option} '{c}': PostgreSQL requires a single one-byte character")
    })
}
