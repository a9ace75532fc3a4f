//! The one hand-written SQL lexer: the words, quoted identifiers, literals, parameters and
//! punctuation of statement text with their byte ranges, comments (nested `/* */`, `--`),
//! strings (`'..'`, `E'..'` with backslashes) and dollar quotes (`$tag$..$tag$`) read whole.
//! Whatever reads SQL text without sqlparser reads it through [`tokens`], [`spans`] (with byte
//! ranges) or [`lex`] (with comments too), never with a scanner of its own.
//!
//! Pure; never allocates and never fails: text it does not understand comes out as
//! punctuation, one byte at a time, and a quote or comment left open runs to the end of the text
//! ([`Lexer::unclosed`]).

use std::ops::Range;

/// One token of SQL text, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted identifier or keyword, as written (compare with `eq_ignore_ascii_case`).
    Word(&'a str),
    /// A `"quoted identifier"`, quotes included.
    QuotedIdent(&'a str),
    /// A string or dollar-quoted literal, quotes included.
    String(&'a str),
    /// A numeric literal: digits, then `.digits` and an exponent (`e-3`) when written so.
    Number(&'a str),
    /// A `$n` parameter.
    Param(&'a str),
    /// Any other single byte (`(`, `,`, `;`, `.`, operators).
    Punct(u8),
}

/// What [`lex`] reads at one place of the text: a token, or a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lexeme<'a> {
    Token(Token<'a>),
    /// A `--` comment (with its line end) or a `/* */` comment, delimiters included.
    Comment(&'a str),
}

/// The tokens of `sql`, comments and whitespace left out.
pub fn tokens(sql: &str) -> impl Iterator<Item = Token<'_>> {
    spans(sql).map(|(_, token)| token)
}

/// The tokens of `sql` with their byte ranges, comments and whitespace left out.
pub fn spans(sql: &str) -> impl Iterator<Item = (Range<usize>, Token<'_>)> {
    lex(sql).filter_map(|(range, lexeme)| match lexeme {
        Lexeme::Token(token) => Some((range, token)),
        Lexeme::Comment(_) => None,
    })
}

/// The tokens and comments of `sql` with their byte ranges, whitespace left out.
pub fn lex(sql: &str) -> Lexer<'_> {
    Lexer {
        sql,
        at: 0,
        unclosed: false,
    }
}

/// Iterator over the tokens and comments of one SQL text.
pub struct Lexer<'a> {
    sql: &'a str,
    at: usize,
    unclosed: bool,
}

impl Lexer<'_> {
    /// Whether the item read last is a string, quoted identifier, dollar quote or block comment
    /// the text ends inside of (text PostgreSQL refuses).
    pub fn unclosed(&self) -> bool {
        self.unclosed
    }
}

/// What a run of text is, before it is cut out.
#[derive(Clone, Copy)]
enum Kind {
    Word,
    QuotedIdent,
    String,
    Number,
    Param,
    Punct,
    Comment,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = (Range<usize>, Lexeme<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.sql.as_bytes();
        loop {
            let start = self.at;
            let c = *bytes.get(start)?;
            let next = bytes.get(start + 1).copied();
            // `None` as the end: open to the end of the text.
            let (end, kind) = match c {
                c if c.is_ascii_whitespace() => {
                    self.at = start + 1;
                    continue;
                }
                b'-' if next == Some(b'-') => (Some(line_end(bytes, start)), Kind::Comment),
                b'/' if next == Some(b'*') => (block_comment_end(bytes, start), Kind::Comment),
                b'\'' => (quoted_end(bytes, start, b'\'', false), Kind::String),
                b'e' | b'E' if next == Some(b'\'') => {
                    (quoted_end(bytes, start + 1, b'\'', true), Kind::String)
                }
                b'"' => (quoted_end(bytes, start, b'"', false), Kind::QuotedIdent),
                b'$' => dollar(self.sql, start),
                c if c.is_ascii_digit() => (Some(number_end(bytes, start)), Kind::Number),
                c if is_word_start(c) => (Some(run_end(bytes, start, is_word_byte)), Kind::Word),
                _ => (Some(start + 1), Kind::Punct),
            };
            self.unclosed = end.is_none();
            let mut end = end.unwrap_or(bytes.len()).clamp(start + 1, bytes.len());
            // Keep slicing on character boundaries.
            while !self.sql.is_char_boundary(end) {
                end += 1;
            }
            self.at = end;
            let text = &self.sql[start..end];
            let lexeme = match kind {
                Kind::Comment => Lexeme::Comment(text),
                Kind::Word => Lexeme::Token(Token::Word(text)),
                Kind::QuotedIdent => Lexeme::Token(Token::QuotedIdent(text)),
                Kind::String => Lexeme::Token(Token::String(text)),
                Kind::Number => Lexeme::Token(Token::Number(text)),
                Kind::Param => Lexeme::Token(Token::Param(text)),
                Kind::Punct => Lexeme::Token(Token::Punct(c)),
            };
            return Some((start..end, lexeme));
        }
    }
}

/// At a `$`: `$1` (a parameter), `$tag$...$tag$` or `$$...$$` (a string), or a lone `$`.
fn dollar(sql: &str, start: usize) -> (Option<usize>, Kind) {
    let bytes = sql.as_bytes();
    if bytes.get(start + 1).is_some_and(u8::is_ascii_digit) {
        let end = run_end(bytes, start + 1, |b| b.is_ascii_digit());
        return (Some(end), Kind::Param);
    }
    let tag_end = run_end(bytes, start + 1, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
    });
    if bytes.get(tag_end) != Some(&b'$') {
        return (Some(start + 1), Kind::Punct);
    }
    let tag = &sql[start..=tag_end];
    let body = tag_end + 1;
    let end = sql[body..].find(tag).map(|n| body + n + tag.len());
    (end, Kind::String)
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

/// End of `digits[.digits][e[+-]digits]` starting at `from` (a dot or an `e` joins the number
/// only when digits follow it).
fn number_end(bytes: &[u8], from: usize) -> usize {
    let digits = |i: usize| run_end(bytes, i, |b| b.is_ascii_digit());
    let mut i = digits(from);
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(i + 1);
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        if bytes.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1 + sign);
        }
    }
    i
}

/// End of a nested `/* ... */` comment starting at `from`; `None` when it is never closed.
fn block_comment_end(bytes: &[u8], from: usize) -> Option<usize> {
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
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// End of a quoted run opening at `from` with `quote` (doubled quotes stay inside; with
/// `backslashes`, a backslash escapes the next byte); `None` when it is never closed.
fn quoted_end(bytes: &[u8], from: usize, quote: u8, backslashes: bool) -> Option<usize> {
    let mut i = from + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslashes => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
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

    #[test]
    fn spans_give_each_token_its_byte_range() {
        let sql = "SELECT 'a b' /* c */ FROM\tt";
        let got: Vec<(&str, Token)> = spans(sql).map(|(r, t)| (&sql[r], t)).collect();
        assert_eq!(
            got,
            [
                ("SELECT", Token::Word("SELECT")),
                ("'a b'", Token::String("'a b'")),
                ("FROM", Token::Word("FROM")),
                ("t", Token::Word("t")),
            ]
        );
    }

    #[test]
    fn lex_reads_comments_too_and_says_when_the_text_ends_inside_a_quote() {
        let mut lexer = lex("-- x\nSELECT /* a /* b */ */ 1");
        let items: Vec<Lexeme> = lexer.by_ref().map(|(_, l)| l).collect();
        assert_eq!(
            items,
            [
                Lexeme::Comment("-- x\n"),
                Lexeme::Token(Token::Word("SELECT")),
                Lexeme::Comment("/* a /* b */ */"),
                Lexeme::Token(Token::Number("1")),
            ]
        );
        assert!(!lexer.unclosed());
        for open in [
            "'abc",
            "'abc''",
            "\"name",
            "$$ x",
            "$t$ x $t",
            "/* a /* b */",
            "E'\\'",
        ] {
            let mut lexer = lex(open);
            let last = lexer.by_ref().last();
            assert!(lexer.unclosed(), "{open}: {last:?}");
        }
    }

    #[test]
    fn numbers_take_a_fraction_and_an_exponent_only_when_digits_follow() {
        assert_eq!(
            words("1.5e-3 2. 3e x4 0x1F"),
            ["1.5e-3", "2", ".", "3", "e", "x4", "0", "x1F"]
        );
    }
}
