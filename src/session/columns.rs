//! Keeps the column order the router reads INSERTs without a column list by in step with the
//! shards: notices a schema change passing through (a DDL CommandComplete, or such an INSERT
//! failing on a column or a type) and has the order learned again before the client's next
//! statement; makes a prepared statement's plan again when it was made with another order.
//! Never reads the catalog itself (`Shared` does) and never decides a route.

use std::sync::Arc;

use super::prepared::Statement;
use super::Session;
use crate::error::SqlState;
use crate::router::{Plan, Route, RouteError};
use crate::transport::Stream;
use crate::wire::extended::{Bind, Parse};
use crate::wire::server_tag as tag;
use crate::wire::{Frame, HEADER_LEN};

/// What a session noticed about the shards' schema.
#[derive(Debug, Default)]
pub(super) struct SchemaWatch {
    /// The schema may have changed: learn the column order again before the next statement
    /// that runs outside a transaction (once a DDL in a transaction has committed).
    changed: bool,
    /// A statement holding an INSERT without a column list was sent since the last
    /// ReadyForQuery: a column or type error may mean its table changed.
    positional_sent: bool,
    /// The statement routed now already waited for learning: refuse it rather than wait again.
    waited: bool,
}

/// CommandComplete tags of statements that may change a table's columns or which table a
/// name resolves to.
const SCHEMA_TAGS: [&[u8]; 6] = [
    b"CREATE TABLE",
    b"ALTER TABLE",
    b"DROP TABLE",
    b"CREATE SCHEMA",
    b"ALTER SCHEMA",
    b"DROP SCHEMA",
];

/// Errors of an INSERT without a column list that may mean its table's columns changed.
const COLUMN_ERRORS: [SqlState; 5] = [
    SqlState::UNDEFINED_COLUMN,
    SqlState::DATATYPE_MISMATCH,
    SqlState::INVALID_TEXT_REPRESENTATION,
    SqlState::SYNTAX_ERROR,
    SqlState::UNDEFINED_TABLE,
];

impl<S: Stream> Session<S> {
    /// Hook for every frame of the held server connection.
    pub(super) fn watch_schema(&mut self, frame: &Frame) {
        match frame.tag() {
            tag::COMMAND_COMPLETE => {
                let body = frame.body();
                let text = body.strip_suffix(b"\0").unwrap_or(body);
                if SCHEMA_TAGS.contains(&text) {
                    self.schema.changed = true;
                }
            }
            tag::ERROR_RESPONSE => self.watch_error(frame.body()),
            tag::READY_FOR_QUERY => self.schema.positional_sent = false,
            _ => {}
        }
    }

    /// Hook for a server's ErrorResponse to a client's statement (also from split INSERTs).
    pub(super) fn watch_error(&mut self, body: &[u8]) {
        if self.schema.positional_sent && COLUMN_ERRORS.contains(&error_code(body)) {
            self.schema.changed = true;
        }
    }

    /// Notes a statement about to run: one with an INSERT without a column list makes its
    /// column and type errors a sign of a schema change.
    pub(super) fn note_planned(&mut self, plan: &Plan) {
        self.schema.positional_sent |= plan.has_positional_insert();
    }

    /// Before routing a client's frame: after a schema change, and outside a transaction,
    /// learns the column order again (or waits for a round another session started since).
    pub(super) async fn follow_schema(&mut self) {
        if self.schema.changed && self.tx.is_outside() {
            self.schema.changed = false;
            let seen = self.shared.column_rounds();
            Box::pin(self.shared.relearn_columns_after(seen)).await;
        }
    }

    /// Whether to learn the column order and route again: an INSERT without a column list
    /// failed to route (the order is unknown, or may be stale: the rows stop before the key, or
    /// what stands at the key's place is no key). Once per statement; learning itself runs at
    /// most once a second for this reason.
    pub(super) fn should_learn_columns(
        &self,
        plan: &Plan,
        route: &Result<Route, RouteError>,
    ) -> bool {
        route.is_err() && plan.has_positional_insert() && !self.schema.waited
    }

    /// Learns the column order for a statement that lacks it; the frame is then routed again.
    pub(super) async fn learn_columns_for_statement(&mut self) {
        Box::pin(self.shared.relearn_columns_unless_recent()).await;
        self.schema.waited = true;
    }

    /// The statement routed now is decided: the next one may wait for learning again.
    pub(super) fn statement_routed(&mut self) {
        self.schema.waited = false;
    }

    /// The plan of the statement a Bind names, made again from its text if the router's column
    /// order changed since it was made (and stored with the statement for later Binds).
    pub(super) fn current_plan(&mut self, bind: &Bind<'_>, plan: Arc<Plan>) -> Arc<Plan> {
        if self.shared.router.load().plan_is_current(&plan) {
            return plan;
        }
        if bind.statement.is_empty() {
            let Some(parse) = self.unnamed.parse.clone() else {
                return plan;
            };
            let Some(fresh) = replan(self, parse.get(HEADER_LEN..).unwrap_or_default()) else {
                return plan;
            };
            self.unnamed.plan = Some(fresh.clone());
            return fresh;
        }
        let Some(statement) = self.statements.get(bind.statement) else {
            return plan;
        };
        let Some(fresh) = replan(self, statement.parse.get(HEADER_LEN..).unwrap_or_default())
        else {
            return plan;
        };
        let updated = Statement {
            server_name: statement.server_name.clone(),
            parse: statement.parse.clone(),
            plan: Some(fresh.clone()),
            param_types: statement.param_types.clone(),
            effects: statement.effects,
        };
        self.statements.insert(bind.statement, Arc::new(updated));
        fresh
    }
}

/// The plan of a Parse body's query text, made now.
fn replan<S: Stream>(session: &Session<S>, parse_body: &[u8]) -> Option<Arc<Plan>> {
    let parse = Parse::decode(parse_body).ok()?;
    session.plan_text(parse.query())
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> SqlState {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map_or(SqlState::INTERNAL_ERROR, |code| {
            SqlState::from_server(&String::from_utf8_lossy(code))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_error_is_told_from_others_by_its_sqlstate() {
        let body = b"SERROR\0VERROR\0C42703\0Mcolumn \"x\" does not exist\0\0";
        assert!(COLUMN_ERRORS.contains(&error_code(body)));
        let unique = b"SERROR\0C23505\0Mduplicate key\0\0";
        assert!(!COLUMN_ERRORS.contains(&error_code(unique)));
        assert_eq!(error_code(b"SERROR\0\0"), SqlState::INTERNAL_ERROR);
    }
}
