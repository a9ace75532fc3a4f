//! Prepared statements in transaction mode. A client's named statement is stored with its Parse
//! message renamed to a content-derived server name (`pgshard_<hash>`), so any server connection
//! can be given it on demand and two clients never clash. [`Expect`] records, in order, which
//! responses the server owes for what was sent, so that responses to Parses pgshard added are
//! dropped and responses for Parses it skipped are made up, each in its place.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::state::Effects;
use crate::router::Plan;
use crate::wire::extended::Parse;

/// A client's named prepared statement.
#[derive(Debug)]
pub struct Statement {
    /// Name on every server connection: the same text and parameter types give the same name.
    pub server_name: String,
    /// The client's Parse, renamed to `server_name`.
    pub parse: Bytes,
    /// How the statement routes (`None` when routing is off).
    pub plan: Option<Arc<Plan>>,
    /// Parameter type OIDs the Parse declared, to read a binary key by its own type.
    pub param_types: Vec<u32>,
    /// What running it may do to the server session.
    pub effects: Effects,
}

impl Statement {
    pub fn new(parse: &Parse<'_>, plan: Option<Arc<Plan>>, effects: Effects) -> Statement {
        let hash = xxhash_rust::xxh3::xxh3_128(parse.rest);
        let server_name = format!("pgshard_{hash:032x}");
        Statement {
            parse: parse.encode_renamed(&server_name).freeze(),
            param_types: parse.param_types(),
            server_name,
            plan,
            effects,
        }
    }
}

/// Statements by the client's names; foldhash, since it is looked up at every Bind (a
/// client's own names only ever reach its own map).
type ByName = HashMap<Vec<u8>, Arc<Statement>, foldhash::fast::RandomState>;

/// A client's named statements, by the client's names (boxed, and absent until the first one:
/// most clients of a transaction pooler never name one, and an idle client keeps a pointer).
#[derive(Debug, Default)]
pub struct ClientStatements {
    // The box is the point: an empty map is 48 bytes inline, the box 8.
    #[allow(clippy::box_collection)]
    by_name: Option<Box<ByName>>,
}

impl ClientStatements {
    pub fn insert(&mut self, name: &[u8], statement: Arc<Statement>) {
        self.by_name
            .get_or_insert_default()
            .insert(name.to_vec(), statement);
    }
    pub fn get(&self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.as_ref()?.get(name).cloned()
    }
    pub fn remove(&mut self, name: &[u8]) {
        if let Some(by_name) = self.by_name.as_mut() {
            by_name.remove(name);
        }
    }
}

/// A response the server owes (or pgshard must make up), in the order they will reach the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete for a Parse sent to the server; `forward` is false for Parses pgshard added.
    /// `server_name` is set for named statements, so a failed Parse is forgotten.
    Parse {
        forward: bool,
        server_name: Option<String>,
    },
    Bind,
    /// RowDescription or NoData ends it (after ParameterDescription for statements).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended ends it.
    Execute,
    Close,
    /// Sync, Query or FunctionCall: ReadyForQuery ends it.
    Ready,
    /// The same, for a request sent before a BEGIN pgshard then held back: its ReadyForQuery
    /// reaches the client with the server's status (the transaction began after it).
    ReadyBeforeBegin,
    /// ParseComplete pgshard sends itself: the server already had the statement.
    MadeUpParseComplete,
    /// CloseComplete pgshard sends itself: the client closed a statement the servers keep.
    MadeUpCloseComplete,
    /// Bytes pgshard answers itself (an error, a ReadyForQuery, a `SET` it handled), due once the
    /// server has sent everything owed before them.
    Answer(Bytes),
    /// A Sync pgshard sent itself to end a batch on one server before the rest of it goes to
    /// another: its ReadyForQuery is not for the client.
    InternalReady,
    /// A held-back BEGIN sent ahead of the statement that picked the shard: its responses, up to
    /// and including ReadyForQuery, are not for the client (it was answered already).
    Hidden,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_give_the_same_server_name() {
        let a = Statement::new(
            &Parse::decode(b"a\0SELECT 1\0\0\0").unwrap(),
            None,
            Effects::NONE,
        );
        let b = Statement::new(
            &Parse::decode(b"zz\0SELECT 1\0\0\0").unwrap(),
            None,
            Effects::NONE,
        );
        let c = Statement::new(
            &Parse::decode(b"a\0SELECT 2\0\0\0").unwrap(),
            None,
            Effects::NONE,
        );
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert!(a.server_name.len() < 64, "fits PostgreSQL's NAMEDATALEN");
    }
}
