//! Literal normalization for simple queries: `... WHERE aid = 12345` becomes `... WHERE aid = $1`
//! with the parameter `12345` (text format), so statements that differ only in their literals
//! share one cached plan and are routed from the parameter, instead of being parsed each time.
//! Pure and conservative: anything it does not fully understand (dollar quotes, `$n` already in
//! the text, prefixed strings such as E'..', B'..', X'..', backslashes in strings, a quote or
//! comment left open) returns `None`, and the caller plans the original text. Reads the text with
//! the SQL lexer; comments and quoted identifiers are kept as they are.

use crate::sql::lexer::{lex, Lexeme, Token};

/// The text with every plain numeric and string literal replaced by `$1`, `$2`, ..., and the
/// literals' values in order; `None` when there is nothing to replace or the text is not safe to
/// rewrite.
pub fn normalize_literals(sql: &str) -> Option<(String, Vec<String>)> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut params: Vec<String> = Vec::new();
    // `sql[..copied]` is in `out` already.
    let mut copied = 0;
    let mut lexer = lex(sql);
    while let Some((range, lexeme)) = lexer.next() {
        if lexer.unclosed() {
            return None;
        }
        let value = match lexeme {
            Lexeme::Token(Token::String(s)) => {
                if bytes.get(range.end).is_some_and(|&b| is_identifier_byte(b)) {
                    return None; // `'a'me`: `$1me` would be one placeholder token
                }
                string_value(s, bytes, range.start)?
            }
            Lexeme::Token(Token::Number(n)) => {
                if bytes.get(range.end).is_some_and(|&b| is_identifier_byte(b)) {
                    return None; // `1e`, `0x1F`, `12abc`: not a plain number
                }
                if bytes.get(range.end) == Some(&b'.')
                    || (range.start > 0 && bytes[range.start - 1] == b'.')
                {
                    return None; // `5.` and `.5` are numbers, `$1.` and `.$1` are not
                }
                n.to_string()
            }
            Lexeme::Token(Token::Param(_) | Token::Punct(b'$')) => return None,
            Lexeme::Token(Token::Word(w)) if w.contains('$') => return None,
            _ => continue,
        };
        out.push_str(&sql[copied..range.start]);
        params.push(value);
        push_placeholder(&mut out, params.len());
        copied = range.end;
    }
    out.push_str(&sql[copied..]);
    (!params.is_empty()).then_some((out, params))
}

/// The value of the string literal `s` found at byte `start`: `None` unless it is a plain
/// `'...'` string (not E'..', B'..', X'..' or dollar-quoted) without a backslash.
fn string_value(s: &str, bytes: &[u8], start: usize) -> Option<String> {
    let prefixed = start > 0 && is_identifier_byte(bytes[start - 1]);
    let body = s.strip_prefix('\'')?.strip_suffix('\'')?;
    // A backslash escapes under standard_conforming_strings = off: not ours to read.
    if prefixed || body.contains('\\') {
        return None;
    }
    Some(body.replace("''", "'"))
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn push_placeholder(out: &mut String, n: usize) {
    out.push('$');
    out.push_str(&n.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(sql: &str) -> Option<(String, Vec<String>)> {
        normalize_literals(sql)
    }

    #[test]
    fn numbers_and_strings_become_parameters() {
        let (text, params) =
            norm("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").unwrap();
        assert_eq!(
            text,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
        );
        assert_eq!(params, vec!["12345"]);
        let (text, params) = norm("INSERT INTO t (a, b, c) VALUES (1, 'it''s', 2.5e3)").unwrap();
        assert_eq!(text, "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)");
        assert_eq!(params, vec!["1", "it's", "2.5e3"]);
    }

    #[test]
    fn identifiers_comments_and_quoted_names_are_kept() {
        let sql =
            "/* pgshard: shard_key=7 */ SELECT \"col 1\", t2.x FROM t2 -- note 5\nWHERE x = 3";
        let (text, params) = norm(sql).unwrap();
        assert_eq!(
            text,
            "/* pgshard: shard_key=7 */ SELECT \"col 1\", t2.x FROM t2 -- note 5\nWHERE x = $1"
        );
        assert_eq!(params, vec!["3"]);
    }

    #[test]
    fn texts_it_cannot_rewrite_safely_are_left_alone() {
        assert_eq!(norm("SELECT $1"), None);
        assert_eq!(norm("SELECT $$ 5 $$"), None);
        assert_eq!(norm("SELECT E'\\x41'"), None);
        assert_eq!(norm("SELECT 0x1F"), None);
        assert_eq!(norm("SELECT 'unterminated"), None);
        assert_eq!(norm("SELECT 'a\\'"), None);
        assert_eq!(norm("SELECT 'a'me = 'y'"), None);
        assert_eq!(norm("SELECT 5. AS x"), None);
        assert_eq!(norm("SELECT .5"), None);
        assert_eq!(norm("SELECT now()"), None, "nothing to replace");
    }

    #[test]
    fn non_ascii_text_survives() {
        let (text, params) = norm("SELECT * FROM t WHERE name = 'ünïcødé' AND ä = 1").unwrap();
        assert_eq!(text, "SELECT * FROM t WHERE name = $1 AND ä = $2");
        assert_eq!(params, vec!["ünïcødé", "1"]);
    }

    #[test]
    fn quotes_and_comments_left_open_are_left_alone_and_dollars_inside_them_are_kept() {
        assert_eq!(norm("SELECT 1 /* open"), None);
        assert_eq!(norm("SELECT \"open, 1"), None);
        let (text, params) = norm("SELECT \"a$\" FROM t /* $1 */ WHERE x = 1 -- $$").unwrap();
        assert_eq!(text, "SELECT \"a$\" FROM t /* $1 */ WHERE x = $1 -- $$");
        assert_eq!(params, vec!["1"]);
    }
}
