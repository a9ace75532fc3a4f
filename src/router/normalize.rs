//! Literal normalization for simple queries: `... WHERE aid = 12345` becomes `... WHERE aid = $1`
//! with the parameter `12345` (text format), so statements that differ only in their literals
//! share one cached plan and are routed from the parameter, instead of being parsed each time.
//! Pure and conservative: anything it does not fully understand (dollar quotes, `$n` already in
//! the text, prefixed strings such as E'..', U&'..', B'..', X'..', backslashes in strings) returns
//! `None`, and the caller plans the original text. Comments and quoted identifiers are kept as they are.

/// The text with every plain numeric and string literal replaced by `$1`, `$2`, ..., and the
/// literals' values in order; `None` when there is nothing to replace or the text is not safe to
/// rewrite.
pub fn normalize_literals(sql: &str) -> Option<(String, Vec<String>)> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut params: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let after_identifier = i > 0 && is_identifier_byte(bytes[i - 1]);
        match c {
            b'$' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = block_comment_end(bytes, i)?;
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'"' => {
                let end = quoted_end(bytes, i, b'"')?;
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'\'' if after_identifier => return None,
            b'\'' => {
                let end = quoted_end(bytes, i, b'\'')?;
                if end < bytes.len() && is_identifier_byte(bytes[end]) {
                    return None; // `'a'me`: `$1me` would be one placeholder token
                }
                let body = &sql[i + 1..end - 1];
                if body.contains('\\') {
                    // A backslash escapes under standard_conforming_strings = off: not ours to read.
                    return None;
                }
                params.push(body.replace("''", "'"));
                push_placeholder(&mut out, params.len());
                i = end;
            }
            b'0'..=b'9' if !after_identifier => {
                let end = number_end(bytes, i);
                if end < bytes.len() && is_identifier_byte(bytes[end]) {
                    return None; // `1e`, `0x1F`, `12abc`: not a plain number
                }
                if bytes.get(end) == Some(&b'.') || (i > 0 && bytes[i - 1] == b'.') {
                    return None; // `5.` and `.5` are numbers, `$1.` and `.$1` are not
                }
                params.push(sql[i..end].to_string());
                push_placeholder(&mut out, params.len());
                i = end;
            }
            _ => {
                // Copy one whole UTF-8 character.
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    (!params.is_empty()).then_some((out, params))
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn push_placeholder(out: &mut String, n: usize) {
    out.push('$');
    out.push_str(&n.to_string());
}

/// End (exclusive) of a quoted token starting at `start`; a doubled quote is an escaped one.
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// End (exclusive) of a block comment starting at `start`; PostgreSQL's comments nest.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = start;
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

/// End (exclusive) of `digits[.digits][e[+-]digits]` starting at `start`.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let digits = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
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
}
