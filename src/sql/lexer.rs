//! A small SQL lexer over statement text: words, quoted identifiers, literals and punctuation,
//! with comments (nested `/* */`, `--`), strings (`'..'`, `E'..'` with backslashes) and dollar
//! quotes (`$tag$..$tag$`) skipped whole. Pure; never allocates and never fails: text it does
//! not understand comes out as punctuation, one byte at a time.

/// One token of SQL text, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted identifier or keyword, as written (compare with `eq_ignore_ascii_case`).
    Word(&'a str),
    /// A `"quoted identifier"`, quotes included.
    QuotedIdent(&'a str),
    /// A string or dollar-quoted literal, quotes included.
    String(&'a str),
    /// A numeric literal.
    Number(&'a str),
    /// A `$n` parameter.
    Param(&'a str),
    /// Any other single byte (`(`, `,`, `;`, `.`, operators).
    Punct(u8),
}

/// The tokens of `sql`, comments and whitespace left out.
pub fn tokens(sql: &str) -> Lexer<'_> {
    Lexer { sql, at: 0 }
}

/// Iterator over the tokens of one SQL text.
pub struct Lexer<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.sql.as_bytes();
        loop {
            let start = self.at;
            let c = *bytes.get(start)?;
            let next = bytes.get(start + 1).copied();
            let (end, token) = match c {
                c if c.is_ascii_whitespace() => (start + 1, None),
                b'-' if next == Some(b'-') => (line_end(bytes, start), None),
                b'/' if next == Some(b'*') => (block_comment_end(bytes, start), None),
                b'\'' => {
                    let end = quoted_end(bytes, start, b'\'', false);
                    (end, Some(Token::String(&self.sql[start..end])))
                }
                b'e' | b'E' if next == Some(b'\'') => {
                    let end = quoted_end(bytes, start + 1, b'\'', true);
                    (end, Some(Token::String(&self.sql[start..end])))
                }
                b'"' => {
                    let end = quoted_end(bytes, start, b'"', false);
                    (end, Some(Token::QuotedIdent(&self.sql[start..end])))
                }
                b'$' => self.dollar(start),
                c if c.is_ascii_digit() => {
                    let end = run_end(bytes, start, |b| b.is_ascii_alphanumeric() || b == b'.');
                    (end, Some(Token::Number(&self.sql[start..end])))
                }
                c if is_word_start(c) => {
                    let end = run_end(bytes, start, is_word_byte);
                    (end, Some(Token::Word(&self.sql[start..end])))
                }
                c => (start + 1, Some(Token::Punct(c))),
            };
            self.at = end.max(start + 1).min(bytes.len());
            // Keep slicing on character boundaries (a multi-byte character is one punctuation).
            while !self.sql.is_char_boundary(self.at) {
                self.at += 1;
            }
            if token.is_some() {
                return token;
            }
        }
    }
}

impl<'a> Lexer<'a> {
    /// `$1` (a parameter), `$tag$...$tag$` or `$$...$$` (a string), or a lone `$`.
    fn dollar(&self, start: usize) -> (usize, Option<Token<'a>>) {
        let bytes = self.sql.as_bytes();
        if bytes.get(start + 1).is_some_and(u8::is_ascii_digit) {
            let end = run_end(bytes, start + 1, |b| b.is_ascii_digit());
            return (end, Some(Token::Param(&self.sql[start..end])));
        }
        let tag_end = run_end(bytes, start + 1, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
        });
        if bytes.get(tag_end) != Some(&b'$') {
            return (start + 1, Some(Token::Punct(b'$')));
        }
        let tag = &self.sql[start..=tag_end];
        let body = tag_end + 1;
        let end = self.sql[body..]
            .find(tag)
            .map_or(bytes.len(), |n| body + n + tag.len());
        (end, Some(Token::String(&self.sql[start..end])))
    }
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn run_end(bytes: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| !keep(b))
        .map_or(bytes.len(), |n| from + n)
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| from + n + 1)
}

/// End of a nested `/* ... */` comment starting at `from` (the end of text if unclosed).
fn block_comment_end(bytes: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    let mut i = from;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// End of a quoted run opening at `from` with `quote` (doubled quotes stay inside; with
/// `backslashes`, a backslash escapes the next byte).
fn quoted_end(bytes: &[u8], from: usize, quote: u8, backslashes: bool) -> usize {
    let mut i = from + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslashes => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        tokens(sql)
            .map(|t| match t {
                Token::Word(w) => w.to_string(),
                Token::QuotedIdent(q) | Token::String(q) | Token::Number(q) | Token::Param(q) => {
                    q.to_string()
                }
                Token::Punct(p) => (p as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn comments_are_skipped_and_strings_kept_whole() {
        assert_eq!(
            words("SELECT /* a /* nested */ b */ 'it''s', E'a\\'b' -- tail\n FROM t"),
            ["SELECT", "'it''s'", ",", "E'a\\'b'", "FROM", "t"]
        );
    }

    #[test]
    fn dollar_quotes_parameters_and_identifiers() {
        assert_eq!(
            words("DO $x$ SET ROLE a; $x$; SELECT $1, \"Odd \"\"name\", 1.5e3, a.b(2)"),
            [
                "DO",
                "$x$ SET ROLE a; $x$",
                ";",
                "SELECT",
                "$1",
                ",",
                "\"Odd \"\"name\"",
                ",",
                "1.5e3",
                ",",
                "a",
                ".",
                "b",
                "(",
                "2",
                ")"
            ]
        );
    }

    #[test]
    fn unterminated_and_multibyte_text_ends_cleanly() {
        assert_eq!(words("'open"), ["'open"]);
        assert_eq!(words("/* open"), Vec::<String>::new());
        assert_eq!(words("é = ü"), ["é", "=", "ü"]);
        assert_eq!(words("$$ open"), ["$$ open"]);
    }
}
