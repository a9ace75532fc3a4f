//! COPY data (text and CSV formats) cut into rows, and the shard-key field read from each row:
//! an incremental, sans-I/O splitter. Feed it the payloads of CopyData messages as they come
//! (their boundaries are not row boundaries), take complete rows out; a partial row waits for
//! more bytes. Knows PostgreSQL's text format (backslash escapes, `\N`, a backslash-escaped
//! newline inside a field, the `\.` end marker) and CSV (quotes, escapes, newlines inside quoted
//! fields), LF and CRLF line ends. Assumes an ASCII-compatible client encoding whose multi-byte
//! characters never contain ASCII bytes (UTF-8, LATIN*, EUC-*), as PostgreSQL's own fast path does.
//!
//! Pure: never does I/O, never hashes keys or knows shards, and holds one partial row at most
//! (never the whole input).

use bytes::{Bytes, BytesMut};

use crate::error::{ClientError, SqlState};

/// How the rows of one COPY are written (from its options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: u8,
    /// The NULL string, as written in the data (`\N` in text, empty in CSV by default).
    pub null: Box<[u8]>,
    /// The first row is a header (sent to every shard, never routed).
    pub header: bool,
    /// Position of the shard-key field in each row.
    pub key_index: usize,
    /// CSV `FORCE_NOT_NULL` names the key column: an unquoted NULL string is a value.
    pub force_not_null: bool,
    /// CSV `FORCE_NULL` names the key column: a quoted NULL string is NULL too.
    pub force_null: bool,
}

impl CopyFormat {
    /// PostgreSQL's defaults for the text (`csv = false`) or CSV format.
    pub fn new(csv: bool, key_index: usize) -> CopyFormat {
        CopyFormat {
            csv,
            delimiter: if csv { b',' } else { b'\t' },
            quote: b'"',
            escape: b'"',
            null: if csv {
                Box::from(&b""[..])
            } else {
                Box::from(&b"\\N"[..])
            },
            header: false,
            key_index,
            force_not_null: false,
            force_null: false,
        }
    }
}

/// One complete row out of the splitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyRow {
    /// The header row, with its line end.
    Header(Bytes),
    /// A data row, with its line end, and its shard-key field (`None`: NULL).
    Data { bytes: Bytes, key: Option<String> },
    /// The `\.` end-of-data marker: later data is ignored, as PostgreSQL ignores it.
    End,
}

/// A row the splitter cannot read; PostgreSQL's `bad_copy_file_format` (22P04).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyRowError {
    #[error(
        "COPY data line {line} has {fields} field(s), but the shard key is field {wanted}: every \
         row must have a value for the shard key column"
    )]
    MissingKey {
        line: u64,
        fields: usize,
        wanted: usize,
    },
    #[error("COPY data line {line}: unterminated CSV quoted field at the end of the data; close the quote")]
    UnterminatedQuote { line: u64 },
    #[error("COPY data line {line}: the shard key field is not valid UTF-8")]
    KeyNotUtf8 { line: u64 },
    #[error(
        "COPY data line {line} is longer than {limit} bytes without a line end; check the \
         FORMAT, DELIMITER and QUOTE options"
    )]
    RowTooLong { line: u64, limit: usize },
}

impl CopyRowError {
    pub fn sqlstate(&self) -> SqlState {
        SqlState::BAD_COPY_FILE_FORMAT
    }
}

impl From<&CopyRowError> for ClientError {
    fn from(e: &CopyRowError) -> ClientError {
        ClientError::new(e.sqlstate(), format!("pgshard: {e}"))
    }
}

/// Cuts COPY data into rows incrementally.
#[derive(Debug)]
pub struct RowSplitter {
    format: CopyFormat,
    /// Bytes of the row being read (and of rows after it).
    buf: BytesMut,
    /// How far `buf` has been scanned for the current row's end.
    scanned: usize,
    /// CSV: inside a quoted section at `scanned`.
    in_quote: bool,
    /// The byte at `scanned` follows an escape character.
    escaped: bool,
    /// Rows read so far (the current one is `line + 1`).
    line: u64,
    /// The `\.` marker was seen: everything after it is dropped.
    ended: bool,
    max_row: usize,
}

impl RowSplitter {
    /// A splitter for `format`; a row longer than `max_row` bytes is an error.
    pub fn new(format: CopyFormat, max_row: usize) -> RowSplitter {
        RowSplitter {
            format,
            buf: BytesMut::new(),
            scanned: 0,
            in_quote: false,
            escaped: false,
            line: 0,
            ended: false,
            max_row,
        }
    }

    /// Rows read so far (including a header).
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Adds the payload of one CopyData message.
    pub fn push(&mut self, data: &[u8]) {
        if !self.ended {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete row; `Ok(None)` when more bytes are needed.
    pub fn next_row(&mut self) -> Result<Option<CopyRow>, CopyRowError> {
        if self.ended {
            return Ok(None);
        }
        match self.scan() {
            Some(end) => self.take(end).map(Some),
            None if self.buf.len() > self.max_row => Err(CopyRowError::RowTooLong {
                line: self.line + 1,
                limit: self.max_row,
            }),
            None => Ok(None),
        }
    }

    /// At CopyDone: the last row when it has no line end, `Ok(None)` when nothing is left.
    pub fn finish(&mut self) -> Result<Option<CopyRow>, CopyRowError> {
        if let Some(row) = self.next_row()? {
            return Ok(Some(row));
        }
        if self.ended || self.buf.is_empty() {
            return Ok(None);
        }
        if self.in_quote {
            return Err(CopyRowError::UnterminatedQuote {
                line: self.line + 1,
            });
        }
        let end = self.buf.len();
        self.take(end).map(Some)
    }

    /// Index just past the current row's line end, if the buffer holds it.
    fn scan(&mut self) -> Option<usize> {
        let f = &self.format;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            i += 1;
            if self.escaped {
                self.escaped = false;
                if !f.csv || b == f.quote || b == f.escape {
                    continue;
                }
            }
            if !f.csv {
                match b {
                    b'\\' => self.escaped = true,
                    b'\n' => return self.row_end(i),
                    _ => {}
                }
            } else if self.in_quote {
                if b == f.escape && f.escape != f.quote {
                    self.escaped = true;
                } else if b == f.quote {
                    self.in_quote = false;
                }
            } else if b == f.quote {
                self.in_quote = true;
            } else if b == b'\n' {
                return self.row_end(i);
            }
        }
        self.scanned = i;
        None
    }

    fn row_end(&mut self, end: usize) -> Option<usize> {
        self.scanned = 0;
        self.escaped = false;
        self.in_quote = false;
        Some(end)
    }

    /// Takes the row `buf[..end]` off the buffer and reads it.
    fn take(&mut self, end: usize) -> Result<CopyRow, CopyRowError> {
        self.scanned = 0;
        self.escaped = false;
        self.in_quote = false;
        let bytes = self.buf.split_to(end).freeze();
        self.line += 1;
        let content = line_content(&bytes);
        if content == b"\\." {
            self.ended = true;
            self.buf = BytesMut::new();
            return Ok(CopyRow::End);
        }
        if self.format.header && self.line == 1 {
            return Ok(CopyRow::Header(bytes));
        }
        let key = match self.key_field(content)? {
            Field::Null => None,
            Field::Value(v) => Some(
                String::from_utf8(v).map_err(|_| CopyRowError::KeyNotUtf8 { line: self.line })?,
            ),
        };
        Ok(CopyRow::Data { bytes, key })
    }

    fn key_field(&self, content: &[u8]) -> Result<Field, CopyRowError> {
        let f = &self.format;
        let found = if f.csv {
            csv_field(f, content, f.key_index)
        } else {
            text_field(f, content, f.key_index)
        };
        found.map_err(|fields| CopyRowError::MissingKey {
            line: self.line,
            fields,
            wanted: f.key_index + 1,
        })
    }
}

/// A row without its line end (`\n` or `\r\n`).
fn line_content(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// A field's value.
#[derive(Debug, PartialEq, Eq)]
enum Field {
    Null,
    Value(Vec<u8>),
}

/// Field `index` of a text-format line; `Err(fields)` when the line has fewer.
fn text_field(f: &CopyFormat, line: &[u8], index: usize) -> Result<Field, usize> {
    let mut start = 0;
    let mut field = 0;
    let mut i = 0;
    while i <= line.len() {
        let at_end = i == line.len();
        if !at_end && line[i] == b'\\' {
            i = (i + 2).min(line.len());
            continue;
        }
        if at_end || line[i] == f.delimiter {
            if field == index {
                let raw = &line[start..i.min(line.len())];
                if raw == &*f.null {
                    return Ok(Field::Null);
                }
                return Ok(Field::Value(text_unescape(raw)));
            }
            field += 1;
            start = i + 1;
        }
        i += 1;
    }
    Err(field)
}

/// PostgreSQL's text-format de-escaping: `\b \f \n \r \t \v`, octal `\NNN`, hex `\xHH`, and
/// `\c` for any other `c`.
fn text_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        let simple = match c {
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'0'..=b'7' | b'x' => None,
            other => Some(other),
        };
        if let Some(byte) = simple {
            out.push(byte);
            continue;
        }
        let (radix, first, max) = if c == b'x' { (16, i, 2) } else { (8, i - 1, 3) };
        let mut value: u32 = 0;
        let mut j = first;
        while j < raw.len() && j - first < max && (raw[j] as char).is_digit(radix) {
            value = value * radix + (raw[j] as char).to_digit(radix).unwrap_or(0);
            j += 1;
        }
        if j == first {
            // `\x` with no hex digit is a plain `x`.
            out.push(c);
        } else {
            // PostgreSQL keeps the low byte of an octal escape above \377.
            out.push((value & 0xff) as u8);
            i = j;
        }
    }
    out
}

/// Field `index` of a CSV line; `Err(fields)` when the line has fewer.
fn csv_field(f: &CopyFormat, line: &[u8], index: usize) -> Result<Field, usize> {
    let mut field = 0;
    let mut i = 0;
    loop {
        let start = i;
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quote = false;
        while i < line.len() {
            let b = line[i];
            if in_quote {
                let next = line.get(i + 1).copied();
                if b == f.escape && (next == Some(f.quote) || next == Some(f.escape)) {
                    if let Some(n) = next {
                        value.push(n);
                    }
                    i += 2;
                    continue;
                }
                if b == f.quote {
                    in_quote = false;
                } else {
                    value.push(b);
                }
            } else if b == f.delimiter {
                break;
            } else if b == f.quote {
                quoted = true;
                in_quote = true;
            } else {
                value.push(b);
            }
            i += 1;
        }
        if field == index {
            let raw = &line[start..i];
            let is_null_text = if quoted {
                f.force_null && value == *f.null
            } else {
                raw == &*f.null && !f.force_not_null
            };
            return Ok(if is_null_text {
                Field::Null
            } else {
                Field::Value(value)
            });
        }
        field += 1;
        if i >= line.len() {
            return Err(field);
        }
        i += 1;
    }
}

#[cfg(test)]
#[path = "copy_rows_tests.rs"]
mod tests;
