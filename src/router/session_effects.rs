//! Whether a statement text may change its server session's role, authorization, settings or
//! session state in a way its CommandComplete tag does not show: a `set_config` call, an advisory
//! lock, `DO`, `CALL`, SQL `EXECUTE`, `TEMP` objects made by `SELECT INTO` or `CREATE TABLE AS`,
//! or any function that is not a known built-in (a user function may `SET ROLE` inside). The
//! session then reads that state back from the server before the connection can serve anyone
//! else. Also: the placeholder settings (`myapp.tenant`) a statement names, and, for
//! `session_state = "refuse"`, the statements that leave state no other connection can have.
//! Pure, text only; errs towards "yes": a false yes costs one round trip, a false no could hand
//! one client's role or temporary table to the next.

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
const STATEFUL_BUILTINS: &[&str] = &[
    "set_config",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
];

/// Session-level advisory lock functions: what they take outlives the transaction.
const SESSION_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Words that make an object live in the session (`CREATE TEMP TABLE`, `SELECT ... INTO TEMP`,
/// `pg_temp.f()`).
const TEMPORARY: &[&str] = &["temp", "temporary", "pg_temp"];

/// Statements whose first word alone says they may run arbitrary code.
const RUNS_CODE: &[&str] = &["do", "call", "execute"];

/// See the module doc. `volatility` names the built-in functions known to be harmless.
pub fn may_change_session(sql: &str, volatility: &Volatility) -> bool {
    if let Some(first) = lone_statement_without_calls(sql) {
        // The common case, checked without lexing: one statement, no parenthesis and no `temp`
        // anywhere.
        return is_one_of(first, RUNS_CODE);
    }
    let mut previous: Option<Token<'_>> = None;
    let mut statement_start = true;
    let mut lexer = tokens(sql).peekable();
    while let Some(token) = lexer.next() {
        match token {
            Token::Word(word) if statement_start && is_one_of(word, RUNS_CODE) => return true,
            Token::Word(word) if is_one_of(word, TEMPORARY) => return true,
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

/// What a statement text may do to its server session, as the session needs to know it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextEffects {
    /// It may change the role, settings or session state unseen ([`may_change_session`]).
    pub changes: bool,
    /// Among those changes, settings themselves (`set_config`, `DO`, `CALL`), not only the
    /// role or state that pins.
    pub settings: bool,
    /// It starts with `SET` or `RESET`.
    pub sets: bool,
    /// It is a lone `SET LOCAL` / `SET TRANSACTION`: nothing it does outlives the transaction.
    pub local: bool,
}

/// See [`TextEffects`].
pub fn text_effects(sql: &str, volatility: &Volatility) -> TextEffects {
    if let Some(first) = lone_statement_without_calls(sql) {
        // The common case (a plain SELECT, INSERT, ...): its first word says all.
        if !is_one_of(first, &["set", "reset"]) && !is_one_of(first, RUNS_CODE) {
            return TextEffects::default();
        }
    }
    let changes = may_change_session(sql, volatility);
    let mut lexer = tokens(sql);
    let first = match lexer.next() {
        Some(Token::Word(word)) => word,
        _ => "",
    };
    let sets = is_one_of(first, &["set", "reset"]);
    let local = sets
        && matches!(lexer.next(), Some(Token::Word(w)) if is_one_of(w, &["local", "transaction"]))
        && lone_statement(lexer);
    TextEffects {
        changes,
        settings: changes
            && (is_one_of(first, &["do", "call"])
                || contains_ignore_case(sql.as_bytes(), b"set_config")),
        sets,
        local,
    }
}

/// Whether the rest of a statement's tokens hold no `;` but a last one.
fn lone_statement<'a>(rest: impl Iterator<Item = Token<'a>>) -> bool {
    let mut rest = rest.peekable();
    while let Some(token) = rest.next() {
        if token == Token::Punct(b';') && rest.peek().is_some() {
            return false;
        }
    }
    true
}

/// Bytes that may open a call (`(`), a comment (`-`, `/`), quoted text (`"`, `$`, `'`) or a
/// next statement (`;`), and the first letter of `temp`.
static STOPS: [bool; 256] = {
    let mut table = [false; 256];
    let stops = b"(;-/\"$'tT";
    let mut i = 0;
    while i < stops.len() {
        table[stops[i] as usize] = true;
        i += 1;
    }
    table
};

/// The first word of `sql` when it is one statement (at most a trailing `;`) with no `(`, no
/// comment, no quoted text and no `temp` anywhere: nothing in it can call a function or make a
/// temporary object. `None` otherwise. One pass over the bytes with a table, not a lexer.
fn lone_statement_without_calls(sql: &str) -> Option<&str> {
    let body = sql.trim_end().trim_end_matches(';');
    let bytes = body.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !STOPS[usize::from(b)] {
            continue;
        }
        let temp = bytes
            .get(i + 1..i + 4)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(b"emp"));
        // `t` or `T` is a stop only as the start of `temp`; the rest always are.
        if temp || !b.eq_ignore_ascii_case(&b't') {
            return None;
        }
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
        Some(Token::Word(w)) if is_one_of(w, &["into", "table", "references", "on", "index", "view", "function", "procedure", "type", "only", "copy"])
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

/// The placeholder settings (names with a dot, such as `myapp.tenant`) that `SET`, `RESET`
/// or `set_config('...')` name in `sql`: the server lists their values nowhere, so the session
/// asks for them by name.
pub fn placeholder_settings(sql: &str) -> Vec<String> {
    if !sql.as_bytes().contains(&b'.') {
        return Vec::new();
    }
    let tokens: Vec<Token<'_>> = tokens(sql).collect();
    let mut names = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let name = match token {
            Token::Word(w) if is_one_of(w, &["set", "reset"]) => {
                let mut j = i + 1;
                while matches!(tokens.get(j), Some(Token::Word(w)) if is_one_of(w, &["session", "local"]))
                {
                    j += 1;
                }
                dotted_name(&tokens[j.min(tokens.len())..])
            }
            Token::Word(w) if w.eq_ignore_ascii_case("set_config") => {
                match (tokens.get(i + 1), tokens.get(i + 2)) {
                    (Some(Token::Punct(b'(')), Some(Token::String(lit))) => {
                        string_value(lit).filter(|n| n.contains('.'))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        names.extend(name.map(|n| n.to_ascii_lowercase()));
    }
    names
}

/// `a.b` (words or quoted identifiers) at the start of `tokens`.
fn dotted_name(tokens: &[Token<'_>]) -> Option<String> {
    let part = |t: Option<&Token<'_>>| match t {
        Some(Token::Word(w)) => Some(w.to_string()),
        Some(Token::QuotedIdent(q)) => Some(q.trim_matches('"').replace("\"\"", "\"")),
        _ => None,
    };
    let first = part(tokens.first())?;
    if tokens.get(1) != Some(&Token::Punct(b'.')) {
        return None;
    }
    Some(format!("{first}.{}", part(tokens.get(2))?))
}

/// The text of a plain `'...'` literal.
fn string_value(lit: &str) -> Option<String> {
    let inner = lit.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// What in `sql` leaves state in the server session that no other server connection can have,
/// named for a refusal (`session_state = "refuse"`): temporary objects, `DECLARE ... WITH HOLD`,
/// SQL `PREPARE`, `LISTEN`, session advisory locks. `None` when nothing does.
pub fn session_state_statement(sql: &str) -> Option<&'static str> {
    let found = session_state_word(sql);
    if found == Some(TEMP_OBJECT) && ends_with_its_transaction(sql) {
        // `CREATE TEMP TABLE ... ON COMMIT DROP` lives and dies in its transaction.
        return None;
    }
    found
}

const TEMP_OBJECT: &str = "a temporary object (TEMP)";

/// `ON COMMIT DROP` in `sql`: a temporary table that goes with its transaction.
fn ends_with_its_transaction(sql: &str) -> bool {
    let words: Vec<Token<'_>> = tokens(sql).collect();
    words.windows(3).any(|w| {
        matches!(w, [Token::Word(a), Token::Word(b), Token::Word(c)]
            if a.eq_ignore_ascii_case("on") && b.eq_ignore_ascii_case("commit")
                && c.eq_ignore_ascii_case("drop"))
    })
}

fn session_state_word(sql: &str) -> Option<&'static str> {
    let mut statement_start = true;
    let mut first: Option<&str> = None;
    let mut previous: Option<Token<'_>> = None;
    let mut lexer = tokens(sql).peekable();
    while let Some(token) = lexer.next() {
        if let Token::Word(word) = token {
            if statement_start {
                first = Some(word);
                if is_one_of(word, &["prepare"]) {
                    return Some("PREPARE");
                }
                if is_one_of(word, &["listen"]) {
                    return Some("LISTEN");
                }
            }
            if is_one_of(word, TEMPORARY) {
                return Some(TEMP_OBJECT);
            }
            let hold = matches!(previous, Some(Token::Word(w)) if w.eq_ignore_ascii_case("with"))
                && word.eq_ignore_ascii_case("hold");
            if hold && first.is_some_and(|f| f.eq_ignore_ascii_case("declare")) {
                return Some("DECLARE ... WITH HOLD");
            }
            if lexer.peek() == Some(&Token::Punct(b'(')) && is_one_of(word, SESSION_LOCKS) {
                return Some("a session-level advisory lock (use pg_advisory_xact_lock)");
            }
        }
        statement_start = token == Token::Punct(b';');
        previous = Some(token);
    }
    None
}

/// Whether `hay` contains `needle` (ASCII, any case).
/// Whether `hay` contains `needle` (ASCII letters compared without case). Looks for the
/// first byte alone before comparing a window: a few instructions per byte of a statement.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let last_start = match hay.len().checked_sub(needle.len()) {
        Some(last) => last,
        None => return false,
    };
    hay[..=last_start]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == lower || b == upper)
        .any(|(i, _)| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest))
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
    fn finds_a_word_in_any_case_anywhere() {
        assert!(contains_ignore_case(b"CREATE TEMP TABLE t ()", b"temp"));
        assert!(contains_ignore_case(b"select 1 into tEmP", b"temp"));
        assert!(contains_ignore_case(b"temp", b"temp"));
        assert!(!contains_ignore_case(b"tem", b"temp"));
        assert!(!contains_ignore_case(b"SELECT t, te, tem FROM x", b"temp"));
        assert!(contains_ignore_case(b"x", b""));
        assert!(changes("SELECT 1 INTO TEMPORARY t"));
        assert!(!changes(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
        ));
    }

    #[test]
    fn the_fast_path_takes_only_lone_statements_without_calls_quotes_or_temp() {
        let first = lone_statement_without_calls;
        assert_eq!(
            first("SELECT abalance FROM t WHERE aid = 1;"),
            Some("SELECT")
        );
        assert_eq!(first("  update x set a = 1 ;  "), Some("update"));
        assert_eq!(first("SELECT t, te, tem FROM x"), Some("SELECT"));
        assert_eq!(
            first("SELECT 1 FROM te"),
            Some("SELECT"),
            "a `t` near the end"
        );
        for sql in [
            "SELECT f(1)",
            "SELECT 1; SET ROLE x",
            "SELECT 1 -- c",
            "SELECT 1 /* c */",
            "SELECT \"x\"",
            "SELECT $$x$$",
            "SELECT 'x'",
            "CREATE TEMP TABLE x",
            "create temporary table x",
            "SELECT * FROM contempt",
            "SELECT 1 INTO tEmP",
        ] {
            assert_eq!(first(sql), None, "{sql}");
        }
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
            "COPY users (user_id, name) FROM STDIN",
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
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_advisory_unlock_all()",
            "CREATE TEMP TABLE t AS SELECT 1",
            "select * into temporary t from x",
            "CREATE TABLE pg_temp.t (a int)",
        ] {
            assert!(changes(sql), "{sql}");
        }
    }

    #[test]
    fn transaction_level_locks_and_plain_words_do_not() {
        for sql in [
            "SELECT pg_advisory_xact_lock(42)",
            "SELECT * FROM temperatures",
            "UPDATE templates SET x = 1 WHERE id = 2",
        ] {
            assert!(!changes(sql), "{sql}");
        }
    }

    #[test]
    fn only_a_lone_set_local_is_transaction_local() {
        let effects = |sql| text_effects(sql, &Volatility::builtin());
        assert!(effects("SET LOCAL work_mem = '1MB';").local);
        assert!(effects("  set transaction isolation level serializable").local);
        assert!(effects("/* local */ SET LOCAL a = 1").local);
        assert!(!effects("SET work_mem = '1MB'").local);
        assert!(!effects("SET LOCAL a = 1; SET b = 2").local);
        assert!(!effects("SET /* local */ b = 2").local);
        assert!(effects("\n reset all").sets);
        assert!(effects("select set_config('a', 'b', false)").settings);
        assert!(effects("DO $$ begin end $$").settings);
        assert!(!effects("SELECT my_function()").settings);
        assert!(effects("SELECT my_function()").changes);
    }

    #[test]
    fn placeholder_settings_are_named() {
        assert_eq!(
            placeholder_settings("SET myapp.tenant = 42; SET LOCAL a.\"B\" TO 1; reset x.y"),
            vec!["myapp.tenant", "a.b", "x.y"]
        );
        assert_eq!(
            placeholder_settings("SELECT set_config('App.User', '7', false)"),
            vec!["app.user"]
        );
        assert!(placeholder_settings("SET search_path = a.b").is_empty());
        assert!(placeholder_settings("SET work_mem = '8MB'").is_empty());
        assert!(placeholder_settings("SELECT t.a FROM t").is_empty());
    }

    #[test]
    fn statements_that_leave_session_state_are_named() {
        for (sql, what) in [
            ("CREATE TEMP TABLE t (a int)", "a temporary object (TEMP)"),
            (
                "create temporary view v as select 1",
                "a temporary object (TEMP)",
            ),
            ("SELECT 1 INTO TEMP t", "a temporary object (TEMP)"),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "DECLARE ... WITH HOLD",
            ),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("LISTEN ch", "LISTEN"),
            ("SELECT 1; listen ch", "LISTEN"),
            (
                "SELECT pg_try_advisory_lock(1)",
                "a session-level advisory lock (use pg_advisory_xact_lock)",
            ),
        ] {
            assert_eq!(session_state_statement(sql), Some(what), "{sql}");
        }
        for sql in [
            "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
            "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
            "DECLARE c CURSOR FOR SELECT 1",
            "SELECT pg_advisory_xact_lock(1)",
            "NOTIFY ch",
            "SELECT 'listen'",
            "EXECUTE p",
        ] {
            assert_eq!(session_state_statement(sql), None, "{sql}");
        }
    }
}
