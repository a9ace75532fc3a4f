//! What the router reads from the raw statement text rather than from sqlparser's tree:
//! leading `/* pgshard: ... */` hints (sqlparser drops comments), the first keywords of
//! statements sqlparser cannot parse, and small rewrites that let it parse PostgreSQL syntax it
//! does not know. Pure string work: never allocates per call on the hot path, never does I/O.

use super::plan::{Hint, SettingPlan, StatementKind, TransactionControl};

/// The text after any leading whitespace and comments, and the hint those comments carry.
/// Block comments nest, as in PostgreSQL.
pub(crate) fn leading_comments(sql: &str) -> (&str, Option<Hint>) {
    let mut rest = sql;
    let mut hint: Option<Hint> = None;
    loop {
        rest = rest.trim_start();
        let (body, after) = if let Some(inner) = rest.strip_prefix("/*") {
            match block_comment_end(inner) {
                Some(end) => (&inner[..end], &inner[end + 2..]),
                None => return (rest, hint),
            }
        } else if let Some(inner) = rest.strip_prefix("--") {
            let end = inner.find('\n').unwrap_or(inner.len());
            (&inner[..end], &inner[end..])
        } else {
            return (rest, hint);
        };
        if let Some(found) = parse_hint(body) {
            let h = hint.get_or_insert_with(Hint::default);
            h.shard_key = found.shard_key.or(h.shard_key.take());
            h.shard = found.shard.or(h.shard.take());
        }
        rest = after;
    }
}

/// Offset of the `*/` closing a block comment whose `/*` was just consumed.
fn block_comment_end(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
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
    let mut words = body
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("").to_ascii_uppercase();
    let second = words.next().unwrap_or("").to_ascii_uppercase();
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

/// `BEGIN ... READ ONLY` (the words, in any case and spacing).
fn mentions_read_only(body: &str) -> bool {
    let words: Vec<String> = body
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    words.windows(2).any(|w| w[0] == "READ" && w[1] == "ONLY")
}

fn is_copy_from(body: &str) -> bool {
    body.split_whitespace()
        .any(|w| w.eq_ignore_ascii_case("from"))
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
    let words: Vec<(usize, &str)> = word_spans(sql);
    let locks = rewrite_lock_clauses(sql, &words);
    let text = locks.as_deref().unwrap_or(sql);
    match words.first() {
        Some(&(at, w)) if w.eq_ignore_ascii_case("table") => Some(format!(
            "{}SELECT * FROM{}",
            &text[..at],
            &text[at + w.len()..]
        )),
        _ => locks,
    }
}

fn rewrite_lock_clauses(sql: &str, words: &[(usize, &str)]) -> Option<String> {
    let mut bytes = sql.as_bytes().to_vec();
    let mut changed = false;
    for w in words.windows(4) {
        let up = |i: usize| w[i].1.to_ascii_uppercase();
        if up(0) == "FOR" && up(1) == "NO" && up(2) == "KEY" && up(3) == "UPDATE" {
            blank(&mut bytes, w[1].0, w[2].0 + w[2].1.len());
            changed = true;
        } else if up(0) == "FOR" && up(1) == "KEY" && up(2) == "SHARE" {
            blank(&mut bytes, w[1].0, w[1].0 + w[1].1.len());
            changed = true;
        }
    }
    // Only ASCII letters were replaced by ASCII spaces, so the bytes are still UTF-8.
    changed.then(|| String::from_utf8(bytes).ok()).flatten()
}

fn blank(bytes: &mut [u8], start: usize, end: usize) {
    bytes[start..end].fill(b' ');
}

/// Whitespace-separated words with their byte offsets.
fn word_spans(sql: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in sql.char_indices() {
        match (c.is_whitespace() || c == ';', start) {
            (true, Some(s)) => {
                out.push((s, &sql[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &sql[s..]));
    }
    out
}

/// `sql` with the `;` sqlparser needs after `COPY ... FROM STDIN`, when it is a COPY without one.
pub(crate) fn terminated(sql: &str) -> Option<String> {
    let body = sql.trim_end();
    let copy = body
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    (copy && !body.ends_with(';')).then(|| format!("{body};"))
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
}
