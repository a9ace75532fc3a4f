//! Whether a statement text may change its server session's role, authorization or settings in a
//! way its CommandComplete tag does not show: a `set_config` call, `DO`, `CALL`, SQL `EXECUTE`,
//! or any function that is not a known built-in (a user function may `SET ROLE` inside). Such a
//! server connection is reset (`SET SESSION AUTHORIZATION DEFAULT; RESET ALL`) before its next
//! client uses it. Pure, text only; errs towards "yes": a false yes costs one reset round trip, a
//! false no could hand one client's role to the next.

use super::Volatility;
use crate::sql::lexer::{tokens, Token};

/// Words that stand before `(` without being a function call.
const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "cast",
    "check",
    "conflict",
    "constraint",
    "cube",
    "distinct",
    "else",
    "exists",
    "filter",
    "from",
    "group",
    "grouping",
    "having",
    "in",
    "index",
    "into",
    "is",
    "join",
    "key",
    "lateral",
    "like",
    "not",
    "on",
    "or",
    "over",
    "partition",
    "primary",
    "references",
    "returning",
    "rollup",
    "row",
    "rows",
    "select",
    "set",
    "sets",
    "some",
    "table",
    "then",
    "unique",
    "update",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
    "within",
    "include",
    "foreign",
    "exclude",
    "default",
    "limit",
    "offset",
    "union",
    "intersect",
    "except",
    "interval",
    "numeric",
    "decimal",
    "varchar",
    "char",
    "character",
    "bit",
    "timestamp",
    "time",
    "float",
    "double",
    "precision",
    "case",
    "nullif",
    "coalesce",
    "greatest",
    "least",
    "extract",
    "position",
    "substring",
    "trim",
    "overlay",
    "collate",
    "only",
    "returns",
    "function",
    "procedure",
    "view",
    "materialized",
    "domain",
    "type",
    "sequence",
    "inherits",
    "tablesample",
];

/// Functions that change session state although PostgreSQL ships them.
const STATEFUL_BUILTINS: &[&str] = &["set_config", "dblink", "dblink_exec", "dblink_connect"];

/// Statements whose first word alone says they may run arbitrary code.
const RUNS_CODE: &[&str] = &["do", "call", "execute"];

/// See the module doc. `volatility` names the built-in functions known to be harmless.
pub fn may_change_session(sql: &str, volatility: &Volatility) -> bool {
    if let Some(first) = lone_statement_without_calls(sql) {
        // The common case, checked without lexing: one statement, no parenthesis anywhere.
        return is_one_of(first, RUNS_CODE);
    }
    let mut previous: Option<Token<'_>> = None;
    let mut statement_start = true;
    let mut lexer = tokens(sql).peekable();
    while let Some(token) = lexer.next() {
        match token {
            Token::Word(word) if statement_start && is_one_of(word, RUNS_CODE) => return true,
            Token::Word(word) | Token::QuotedIdent(word)
                if lexer.peek() == Some(&Token::Punct(b'('))
                    && is_call(word, previous, volatility) =>
            {
                return true
            }
            _ => {}
        }
        statement_start = token == Token::Punct(b';');
        previous = Some(token);
    }
    false
}

/// The first word of `sql` when it is one statement (at most a trailing `;`) with no `(`, no
/// comment and no quoted text anywhere: nothing in it can call a function. `None` otherwise.
fn lone_statement_without_calls(sql: &str) -> Option<&str> {
    let body = sql.trim_end().trim_end_matches(';');
    let plain = !body
        .bytes()
        .any(|b| matches!(b, b'(' | b';' | b'-' | b'/' | b'"' | b'$' | b'\''));
    if !plain {
        return None;
    }
    let body = body.trim_start();
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    Some(&body[..end])
}

/// Whether `word(` is a call of a function that may change session state.
fn is_call(word: &str, previous: Option<Token<'_>>, volatility: &Volatility) -> bool {
    if matches!(
        previous,
        Some(Token::Word(w)) if is_one_of(w, &["into", "table", "references", "on", "index", "view", "function", "procedure", "type", "only"])
    ) {
        // A table or type name followed by its column list.
        return false;
    }
    if word.starts_with('"') {
        return true;
    }
    if is_one_of(word, STATEFUL_BUILTINS) {
        return true;
    }
    if is_one_of(word, NOT_CALLS) {
        return false;
    }
    !volatility.is_known_builtin(&word.to_ascii_lowercase())
}

fn is_one_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(sql: &str) -> bool {
        may_change_session(sql, &Volatility::builtin())
    }

    #[test]
    fn plain_statements_do_not() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 5",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)",
            "SELECT count(*), max(x), now() FROM t WHERE a IN (1, 2) AND b = ANY($1)",
            "SELECT 'set_config(''role'')' AS not_a_call -- set_config(x)",
            "CREATE TABLE t (id bigint PRIMARY KEY, v numeric(10, 2))",
            "SET ROLE other", // its CommandComplete tag (SET) says so already
            "BEGIN; SELECT 1; COMMIT",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4;",
            "  update t set doing = 1 where id = 2 ;  ",
        ] {
            assert!(!changes(sql), "{sql}");
        }
    }

    #[test]
    fn calls_and_code_that_may_change_the_role_do() {
        for sql in [
            "SELECT set_config('role', 'x', false)",
            "select pg_catalog.SET_CONFIG('role', 'x', false)",
            "SELECT become_tenant(42)",
            "SELECT \"MyFunction\"()",
            "DO $$ BEGIN EXECUTE 'SET ROLE x'; END $$",
            "CALL tenant_setup()",
            "EXECUTE prepared_thing",
            "SELECT 1; do $$ begin end $$",
            "SELECT * FROM t WHERE f(x) > 0",
            "  do $$ begin end $$;",
            "EXECUTE prepared_thing;",
            "call p",
        ] {
            assert!(changes(sql), "{sql}");
        }
    }
}
