//! Tokenize, refuse pathologically long operator chains, then parse with sqlparser.
//!
//! sqlparser builds `a + b + c ...` and `... UNION ... UNION ...` as left-deep trees in a loop
//! (its recursion limit does not apply), and dropping such a tree recurses once per link: a
//! client could send a few hundred kilobytes of `1+1+...` and overflow a 2 MiB task stack.
//! Statements whose chains exceed the limits here are not parsed (they route as unparsable
//! ones do). The check reuses the tokens the parser needs anyway. Never does I/O.
//!
//! sqlparser (0.59, PostgreSQL dialect) also takes time exponential in how deeply function calls
//! nest: it parses each call argument twice (once looking for a `name => value` argument), and
//! keyword forms such as `CAST(`, `CASE (` or `POSITION(` are parsed again as plain calls when
//! their own form fails. A few hundred bytes of nested calls took minutes (found by the `sql`
//! fuzz target), so statements nesting calls deeper than [`MAX_CALL_NESTING`] are not parsed
//! either.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Most operators in one chain (between commas, inside one pair of parentheses).
pub(crate) const MAX_OPERATOR_CHAIN: usize = 5_000;
/// Most set operations (UNION, EXCEPT, INTERSECT) in one statement string.
pub(crate) const MAX_SET_OPERATIONS: usize = 1_000;

/// Most nesting of function calls, counted in units: a `(` after a word (a call, or a keyword
/// such as `IN (`) is 1, a `(` after a keyword form sqlparser may parse twice over (see
/// [`REPARSED_FORMS`]) is 2. At the limit the slowest shapes known parse in about 5 ms (release
/// build): `f(` 12 deep, `CAST(` or `CASE (` 6 deep.
pub(crate) const MAX_CALL_NESTING: usize = 12;

/// Keyword forms whose nesting multiplies sqlparser's work by more than two per level.
const REPARSED_FORMS: &[Keyword] = &[
    Keyword::CAST,
    Keyword::TRY_CAST,
    Keyword::SAFE_CAST,
    Keyword::CONVERT,
    Keyword::TRY_CONVERT,
    Keyword::CASE,
    Keyword::POSITION,
    Keyword::OVERLAY,
];

/// Why a text was not parsed.
#[derive(Debug)]
pub(crate) struct NotParsed;

/// Parses `sql`, or refuses it when sqlparser cannot parse it or its chains are too long.
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, NotParsed> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|_| NotParsed)?;
    if !chains_within_limits(&tokens) || !calls_within_limit(&tokens) {
        return Err(NotParsed);
    }
    Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|_| NotParsed)
}

/// Whether no operator chain and no run of set operations is longer than the limits.
/// Overestimates (every operator between two commas counts), never underestimates.
fn chains_within_limits(tokens: &[TokenWithSpan]) -> bool {
    // One counter per open parenthesis or bracket; commas restart the innermost.
    let mut chain: Vec<usize> = vec![0];
    let mut set_operations = 0usize;
    for t in tokens {
        match &t.token {
            Token::Comma => {
                if let Some(c) = chain.last_mut() {
                    *c = 0;
                }
            }
            Token::LParen => chain.push(0),
            Token::LBracket => {
                bump(&mut chain);
                chain.push(0);
            }
            Token::RParen | Token::RBracket => {
                if chain.len() > 1 {
                    chain.pop();
                }
            }
            Token::Word(w) => match w.keyword {
                Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT => set_operations += 1,
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS => bump(&mut chain),
                _ => {}
            },
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SemiColon
            | Token::Period
            | Token::Placeholder(_)
            | Token::EOF => {}
            // Operators, casts, and anything else that might extend a chain.
            _ => bump(&mut chain),
        }
        if chain.last().is_some_and(|&c| c > MAX_OPERATOR_CHAIN)
            || set_operations > MAX_SET_OPERATIONS
        {
            return false;
        }
    }
    true
}

/// Whether calls nest no deeper than [`MAX_CALL_NESTING`] (see there for how it counts).
fn calls_within_limit(tokens: &[TokenWithSpan]) -> bool {
    // The cost of each open parenthesis or bracket (0 when not after a word), and their sum.
    let mut open: Vec<usize> = Vec::new();
    let mut nesting = 0usize;
    let mut previous: Option<&Token> = None;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) => continue,
            Token::LParen => {
                let cost = match previous {
                    Some(Token::Word(w)) if REPARSED_FORMS.contains(&w.keyword) => 2,
                    Some(Token::Word(_)) => 1,
                    _ => 0,
                };
                open.push(cost);
                nesting += cost;
                if nesting > MAX_CALL_NESTING {
                    return false;
                }
            }
            Token::LBracket => open.push(0),
            Token::RParen | Token::RBracket => nesting -= open.pop().unwrap_or(0),
            _ => {}
        }
        previous = Some(&t.token);
    }
    true
}

fn bump(chain: &mut [usize]) {
    if let Some(c) = chain.last_mut() {
        *c += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_operator_chains_are_not_parsed() {
        let sql = format!("SELECT 1{}", "+1".repeat(MAX_OPERATOR_CHAIN + 1));
        assert!(parse(&sql).is_err());
        let sql = format!("SELECT 1{}", "+1".repeat(100));
        assert!(parse(&sql).is_ok());
    }

    #[test]
    fn deeply_nested_calls_are_not_parsed() {
        let nested = |open: &str, n: usize| format!("SELECT {}a{}", open.repeat(n), ")".repeat(n));
        assert!(parse(&nested("f(", MAX_CALL_NESTING)).is_ok());
        assert!(parse(&nested("f(", MAX_CALL_NESTING + 1)).is_err());
        assert!(parse(&nested("CAST(", MAX_CALL_NESTING / 2 + 1)).is_err());
        assert!(parse(&nested("CASE (", MAX_CALL_NESTING / 2 + 1)).is_err());
        // Plain parentheses and brackets cost nothing; closed calls no longer count.
        assert!(parse(&nested("(", 20)).is_ok());
        let siblings = vec![nested("f(", MAX_CALL_NESTING).replace("SELECT ", ""); 3];
        assert!(parse(&format!("SELECT {}", siblings.join(", "))).is_ok());
    }

    #[test]
    fn fuzz_found_nested_calls_plan_quickly() {
        // 260 bytes that took sqlparser 30 s (release build) to refuse.
        let sql = concat!(
            "SELECT stas, C.A(LESCE(count(note!, us, COAs, C.A(LESCE(count(~ote!, u",
            "s, COAtus, C.A(LESCE(count(note!, us, COA(LES0tus, C.A(LESCE(coun, C.A",
            "(LESCE(count(note!, us, COAs, C.A(LESCE(count(~ote!, us, COAtus, C.A(L",
            "ESCE(count(note!, us, COA(LESt(note!, us, COA(LES0",
        );
        let started = std::time::Instant::now();
        let plan = crate::router::tests::router().plan(sql);
        assert!(!plan.is_parsed());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn long_union_chains_are_not_parsed() {
        let sql = format!(
            "SELECT 1{}",
            " UNION SELECT 1".repeat(MAX_SET_OPERATIONS + 1)
        );
        assert!(parse(&sql).is_err());
    }

    #[test]
    fn bulk_inserts_with_casts_and_signs_are_parsed() {
        let row = "(-1, '2024-01-01'::date, $1::int)";
        let sql = format!("INSERT INTO t VALUES {}", vec![row; 20_000].join(", "));
        assert!(parse(&sql).is_ok());
    }

    #[test]
    fn a_deep_chain_within_the_limit_drops_on_a_small_stack() {
        let sql = format!("SELECT 1{}", "+1".repeat(MAX_OPERATOR_CHAIN));
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&sql).map(|s| s.len()).is_ok())
            .expect("spawn a thread");
        assert!(worker.join().expect("no stack overflow"));
    }

    #[test]
    fn planning_a_deep_chain_fits_a_small_stack_and_errs_to_the_primary() {
        let sql = format!(
            "SELECT * FROM users WHERE user_id = 42 AND x = 1{}",
            " OR x = 1".repeat(MAX_OPERATOR_CHAIN / 3)
        );
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let router = crate::router::tests::router();
                let plan = router.plan(&sql);
                (plan.is_parsed(), plan.is_plain_read())
            })
            .expect("spawn a thread");
        assert_eq!(worker.join().expect("no stack overflow"), (true, false));
    }
}
