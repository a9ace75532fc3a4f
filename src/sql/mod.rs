//! SQL text and syntax trees, knowing nothing of tables, shards or routes: the one hand-written
//! SQL lexer ([`lexer`]), the guarded way into sqlparser (`parse`), and small helpers over
//! sqlparser's tree (`syntax`). Shared by `router` and `multishard`.
//!
//! Pure and synchronous: never does I/O, holds no state, and never imports anything of the crate.

pub mod lexer;
pub(crate) mod parse;
pub(crate) mod syntax;
