//! What the router reads from the raw statement text rather than from sqlparser's tree:
//! leading `/* pgshard: ... */` hints (sqlparser drops comments), the first keywords of
//! statements sqlparser cannot parse, and small rewrites that let it parse PostgreSQL syntax it
//! does not know. Reads SQL only through the SQL lexer, so nothing inside a string, quoted name
//! or comment is taken for a keyword or rewritten. Never allocates per call on the hot path,
//! never does I/O.

use std::borrow::Cow;
use std::ops::Range;

use super::plan::{Hint, SettingPlan, StatementKind, TransactionControl};
use crate::sql::lexer::{lex, spans, tokens, Lexeme, Token};

/// The text from its first token on, and the hint the comments before it carry. A block
/// comment left open is where the text starts (sqlparser will refuse it).
pub(crate) fn leading_comments(sql: &str) -> (&str, Option<Hint>) {
    let mut hint: Option<Hint> = None;
    let mut lexer = lex(sql);
    while let Some((range, lexeme)) = lexer.next() {
        let Lexeme::Comment(comment) = lexeme else {
            return (&sql[range.start..], hint);
        };
        if lexer.unclosed() {
            return (&sql[range.start..], hint);
        }
        if let Some(found) = parse_hint(comment_body(comment)) {
            let h = hint.get_or_insert_with(Hint::default);
            h.shard_key = found.shard_key.or(h.shard_key.take());
            h.shard = found.shard.or(h.shard.take());
        }
    }
    ("", hint)
}

/// A closed comment without its delimiters.
fn comment_body(comment: &str) -> &str {
    match comment.strip_prefix("/*") {
        Some(inner) => inner.strip_suffix("*/").unwrap_or(inner),
        None => comment.strip_prefix("--").unwrap_or(comment),
    }
}

/// `pgshard: shard_key=42, shard='s1'` → the hint (unknown names are ignored).
fn parse_hint(body: &str) -> Option<Hint> {
    let body = body.trim();
    let prefix = body.get(..8)?;
    if !prefix.eq_ignore_ascii_case("pgshard:") {
        return None;
    }
    let mut hint = Hint::default();
    let mut rest = &body[8..];
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            break;
        }
        let name = &rest[..name_len];
        let Some(after_eq) = rest[name_len..].trim_start().strip_prefix('=') else {
            break;
        };
        let (value, after) = hint_value(after_eq.trim_start());
        match name.to_ascii_lowercase().as_str() {
            "shard_key" => hint.shard_key = Some(value),
            "shard" => hint.shard = Some(value),
            _ => {}
        }
        rest = after;
    }
    (hint.shard_key.is_some() || hint.shard.is_some()).then_some(hint)
}

/// A hint value: `'quoted'` (with `''` for a quote) or bare up to whitespace or a comma.
fn hint_value(text: &str) -> (String, &str) {
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                return (value, &quoted[i + 1..]);
            }
            value.push(c);
        }
        return (value, "");
    }
    let end = text
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(text.len());
    (text[..end].to_string(), &text[end..])
}

/// What the first keywords say about a statement sqlparser could not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fallback {
    pub kind: StatementKind,
    pub writes: bool,
    /// `COPY <table> FROM ...`: the table (lowercase, unqualified), to refuse sharded ones.
    pub copy_from: Option<String>,
}

/// Classifies an unparsable statement by its first keywords (comments already skipped).
pub(crate) fn fallback(body: &str) -> Fallback {
    let mut words = leading_words(body);
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let control = |t| StatementKind::Transaction(t);
    let mut out = Fallback {
        kind: StatementKind::Other,
        writes: false,
        copy_from: None,
    };
    out.kind = match (first.as_str(), second.as_str()) {
        ("COMMIT" | "ROLLBACK", "PREPARED") => StatementKind::Other,
        ("BEGIN" | "START", _) => control(TransactionControl::Begin {
            read_only: mentions_read_only(body),
        }),
        ("COMMIT" | "END", _) => control(TransactionControl::Commit),
        ("ROLLBACK" | "ABORT", "TO") => control(TransactionControl::RollbackTo),
        ("ROLLBACK" | "ABORT", _) => control(TransactionControl::Rollback),
        ("SAVEPOINT", _) => control(TransactionControl::Savepoint),
        ("RELEASE", _) => control(TransactionControl::Release),
        ("RESET", "ALL") => StatementKind::Setting(SettingPlan::ResetAll),
        ("RESET", "PGSHARD.SHARD_KEY") => StatementKind::Setting(SettingPlan::ResetShardKey),
        ("RESET", "PGSHARD.SHARD") => StatementKind::Setting(SettingPlan::ResetShard),
        ("RESET", name) if name.starts_with("PGSHARD.") => {
            StatementKind::Setting(SettingPlan::Unknown(name.to_ascii_lowercase()))
        }
        ("SELECT" | "WITH" | "VALUES" | "TABLE", _) => StatementKind::Read,
        ("INSERT" | "UPDATE" | "DELETE" | "MERGE", _) => {
            out.writes = true;
            StatementKind::Write
        }
        ("COPY", table) if !table.is_empty() && is_copy_from(body) => {
            out.writes = true;
            out.copy_from = Some(unqualified(table));
            StatementKind::Write
        }
        _ => StatementKind::Other,
    };
    out
}

/// The words a statement starts with, uppercased: a dotted name whole (`PGSHARD.SHARD_KEY`,
/// `PUBLIC."USERS"`), any other token as written; `(` and `;` are skipped.
fn leading_words(body: &str) -> impl Iterator<Item = String> + '_ {
    let mut tokens = tokens(body)
        .filter(|t| !matches!(t, Token::Punct(b'(' | b';')))
        .peekable();
    std::iter::from_fn(move || {
        let first = tokens.next()?;
        let mut word = token_text(first).to_ascii_uppercase();
        if !matches!(first, Token::Word(_) | Token::QuotedIdent(_)) {
            return Some(word);
        }
        while tokens.next_if_eq(&Token::Punct(b'.')).is_some() {
            word.push('.');
            if let Some(part @ (Token::Word(_) | Token::QuotedIdent(_))) = tokens.peek().copied() {
                tokens.next();
                word.push_str(&token_text(part).to_ascii_uppercase());
            }
        }
        Some(word)
    })
}

fn token_text(token: Token<'_>) -> Cow<'_, str> {
    match token {
        Token::Word(t)
        | Token::QuotedIdent(t)
        | Token::String(t)
        | Token::Number(t)
        | Token::Param(t) => t.into(),
        Token::Punct(b) => char::from(b).to_string().into(),
    }
}

/// `BEGIN ... READ ONLY` (the words, in any case and spacing).
fn mentions_read_only(body: &str) -> bool {
    let mut previous = None;
    tokens(body).any(|token| {
        let found = is_word(previous, "read") && is_word(Some(token), "only");
        previous = Some(token);
        found
    })
}

fn is_copy_from(body: &str) -> bool {
    tokens(body).any(|token| is_word(Some(token), "from"))
}

fn is_word(token: Option<Token<'_>>, word: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

/// `PUBLIC."Users"` → `users`.
fn unqualified(name: &str) -> String {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.trim_matches('"').to_ascii_lowercase()
}

/// Rewrites PostgreSQL syntax sqlparser does not know into syntax that routes the same:
/// `TABLE t` → `SELECT * FROM t`, and the row-lock strengths `FOR NO KEY UPDATE` / `FOR KEY
/// SHARE` → `FOR UPDATE` / `FOR SHARE`. `None` when there is nothing to rewrite.
pub(crate) fn rewrite_for_parser(sql: &str) -> Option<String> {
    let tokens: Vec<(Range<usize>, Token)> = spans(sql).collect();
    let locks = rewrite_lock_clauses(sql, &tokens);
    let text = locks.as_deref().unwrap_or(sql);
    match tokens.first() {
        Some((at, token)) if is_word(Some(*token), "table") => Some(format!(
            "{}SELECT * FROM{}",
            &text[..at.start],
            &text[at.end..]
        )),
        _ => locks,
    }
}

/// Blanks `NO KEY` of `FOR NO KEY UPDATE` and `KEY` of `FOR KEY SHARE`, keeping every offset.
fn rewrite_lock_clauses(sql: &str, tokens: &[(Range<usize>, Token)]) -> Option<String> {
    let word = |i: usize, w: &str| is_word(tokens.get(i).map(|(_, t)| *t), w);
    let mut bytes = sql.as_bytes().to_vec();
    let mut changed = false;
    for (i, (_, token)) in tokens.iter().enumerate() {
        if !is_word(Some(*token), "for") {
            continue;
        }
        let blanked = if word(i + 1, "no") && word(i + 2, "key") && word(i + 3, "update") {
            tokens[i + 1].0.start..tokens[i + 2].0.end
        } else if word(i + 1, "key") && word(i + 2, "share") {
            tokens[i + 1].0.clone()
        } else {
            continue;
        };
        bytes[blanked].fill(b' ');
        changed = true;
    }
    // Whole tokens, and what lies between two of them, became spaces: the bytes are still UTF-8.
    changed.then(|| String::from_utf8(bytes).ok()).flatten()
}

/// `sql` with the `;` sqlparser needs after `COPY ... FROM STDIN`, when it is a COPY without one:
/// the text up to its last token, then `;`.
pub(crate) fn terminated(sql: &str) -> Option<String> {
    let mut spans = spans(sql);
    let (first, token) = spans.next()?;
    let copy = is_word(Some(token), "copy");
    let (last, token) = spans.last().unwrap_or((first, token));
    (copy && token != Token::Punct(b';')).then(|| format!("{};", &sql[..last.end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_in_a_leading_block_comment_is_read() {
        let (rest, hint) = leading_comments("/* pgshard: shard_key=42 */ SELECT 1");
        assert_eq!(rest, "SELECT 1");
        assert_eq!(hint.unwrap().shard_key.as_deref(), Some("42"));
    }

    #[test]
    fn hint_values_may_be_quoted_and_combined() {
        let (_, hint) = leading_comments("-- pgshard: shard='s1', shard_key='o''brien'\nSELECT 1");
        let hint = hint.unwrap();
        assert_eq!(hint.shard.as_deref(), Some("s1"));
        assert_eq!(hint.shard_key.as_deref(), Some("o'brien"));
    }

    #[test]
    fn other_comments_carry_no_hint() {
        let (rest, hint) = leading_comments("/* app: checkout /* nested */ */ SELECT 1");
        assert_eq!(rest, "SELECT 1");
        assert!(hint.is_none());
    }

    #[test]
    fn lock_strengths_are_rewritten_keeping_offsets() {
        let sql = "SELECT 1 FROM t FOR NO KEY UPDATE";
        let out = rewrite_for_parser(sql).unwrap();
        assert_eq!(out.len(), sql.len());
        assert!(out.ends_with("FOR        UPDATE"), "{out}");
        assert!(rewrite_for_parser("SELECT 1").is_none());
        assert_eq!(
            rewrite_for_parser("table users").unwrap(),
            "SELECT * FROM users"
        );
    }

    #[test]
    fn fallback_reads_transaction_and_reset_keywords() {
        assert_eq!(
            fallback("ABORT").kind,
            StatementKind::Transaction(TransactionControl::Rollback)
        );
        assert_eq!(
            fallback("reset pgshard.shard_key;").kind,
            StatementKind::Setting(SettingPlan::ResetShardKey)
        );
        assert_eq!(fallback("COMMIT PREPARED 'x'").kind, StatementKind::Other);
        let copy = fallback("COPY public.\"Users\"(a) FROM STDIN");
        assert_eq!(copy.copy_from.as_deref(), Some("users"));
    }

    #[test]
    fn words_inside_strings_and_comments_are_never_rewritten() {
        let sql = "SELECT * FROM accounts WHERE email = 'a for no key update b' FOR NO KEY UPDATE";
        assert_eq!(
            rewrite_for_parser(sql).unwrap(),
            "SELECT * FROM accounts WHERE email = 'a for no key update b' FOR        UPDATE"
        );
        let sql = "SELECT $$ table x $$ /* for key share y */ FROM t FOR KEY SHARE";
        assert_eq!(
            rewrite_for_parser(sql).unwrap(),
            "SELECT $$ table x $$ /* for key share y */ FROM t FOR     SHARE"
        );
    }

    #[test]
    fn fallback_reads_keywords_never_strings_or_comments() {
        let begin = fallback("BEGIN /* READ ONLY */ ISOLATION LEVEL SERIALIZABLE, READ WRITE");
        assert_eq!(
            begin.kind,
            StatementKind::Transaction(TransactionControl::Begin { read_only: false })
        );
        let begin = fallback("START TRANSACTION READ\n  only");
        assert_eq!(
            begin.kind,
            StatementKind::Transaction(TransactionControl::Begin { read_only: true })
        );
        let copy = fallback("COPY users (a) TO STDOUT WITH (DELIMITER 'from')");
        assert_eq!(copy.copy_from, None);
        assert_eq!(fallback("reset \"pgshard\".x").kind, StatementKind::Other);
    }

    #[test]
    fn a_copy_is_terminated_after_its_last_token() {
        assert_eq!(
            terminated("COPY t FROM STDIN -- rows follow\n").as_deref(),
            Some("COPY t FROM STDIN;")
        );
        assert_eq!(
            terminated("/* load */ copy t FROM STDIN \n").as_deref(),
            Some("/* load */ copy t FROM STDIN;")
        );
        assert_eq!(terminated("COPY t FROM STDIN;  "), None);
        assert_eq!(terminated("SELECT 1"), None);
    }

    #[test]
    fn a_block_comment_left_open_is_where_the_text_starts() {
        let (rest, hint) = leading_comments("/* pgshard: shard=s1 */ /* open SELECT 1");
        assert_eq!(rest, "/* open SELECT 1");
        assert_eq!(hint.unwrap().shard.as_deref(), Some("s1"));
        assert_eq!(leading_comments(" -- only a comment").0, "");
    }
}
