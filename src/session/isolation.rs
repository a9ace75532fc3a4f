//! The transaction isolation level in force for a client, as far as cross-shard reads care:
//! the server's default, the client's startup option, its `SET`s of the session default, and the
//! level of the transaction it is in. Errs towards REPEATABLE READ: a level it cannot tell makes
//! a cross-shard read refused, never answered from several snapshots.

use crate::router::{Isolation, IsolationChange};

/// What decides the isolation level of the client's transactions.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IsolationInForce {
    /// The servers' default.
    server: Isolation,
    /// The level a new session starts with (server default, then startup options).
    startup: Isolation,
    /// The session default now (`SET default_transaction_isolation`, `SET SESSION
    /// CHARACTERISTICS`); once raised it stays raised for this decision's purposes.
    default: Isolation,
    /// The current transaction's own level (`BEGIN ISOLATION LEVEL`, `SET TRANSACTION`).
    transaction: Option<Isolation>,
}

impl IsolationInForce {
    /// Starts from the server's default and the client's startup value of
    /// `default_transaction_isolation`, if it gave one.
    pub fn new(server_default: Isolation, startup_value: Option<&str>) -> Self {
        let startup = match startup_value {
            Some(value) => Isolation::parse(value).unwrap_or(Isolation::Snapshot),
            None => server_default,
        };
        IsolationInForce {
            server: server_default,
            startup,
            default: startup,
            transaction: None,
        }
    }

    /// Follows a statement the client runs.
    pub fn note(&mut self, change: Option<IsolationChange>) {
        match change {
            Some(IsolationChange::Transaction(level)) => self.transaction = Some(level),
            Some(IsolationChange::SessionDefault(level)) => {
                self.default = stricter(self.default, level)
            }
            Some(IsolationChange::ResetSessionDefault) => self.reset_default(),
            None => {}
        }
    }

    /// `RESET ALL` / `SET default_transaction_isolation TO DEFAULT`.
    pub fn reset_default(&mut self) {
        self.default = self.startup;
    }

    /// The session default as read back from the server (`None`: not set in the session, so
    /// the servers' default): exact, unlike what statements suggest.
    pub fn learn_default(&mut self, value: Option<&str>) {
        self.default = match value {
            Some(value) => Isolation::parse(value).unwrap_or(Isolation::Snapshot),
            None => self.server,
        };
    }

    /// The transaction ended.
    pub fn end_transaction(&mut self) {
        self.transaction = None;
    }

    /// The level of the client's transaction.
    pub fn in_force(&self) -> Isolation {
        self.transaction.unwrap_or(self.default)
    }
}

/// Until the session is read back from the server, a SET's effect is not known for sure (it may
/// fail, or be rolled back with its transaction): the decision keeps the stricter of the two.
fn stricter(a: Isolation, b: Isolation) -> Isolation {
    if a == Isolation::Snapshot || b == Isolation::Snapshot {
        Isolation::Snapshot
    } else {
        Isolation::ReadCommitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transaction_level_wins_then_the_session_default() {
        let mut iso = IsolationInForce::new(Isolation::ReadCommitted, None);
        assert_eq!(iso.in_force(), Isolation::ReadCommitted);
        iso.note(Some(IsolationChange::Transaction(Isolation::Snapshot)));
        assert_eq!(iso.in_force(), Isolation::Snapshot);
        iso.end_transaction();
        assert_eq!(iso.in_force(), Isolation::ReadCommitted);
        iso.note(Some(IsolationChange::SessionDefault(Isolation::Snapshot)));
        assert_eq!(iso.in_force(), Isolation::Snapshot);
        iso.note(Some(IsolationChange::Transaction(Isolation::ReadCommitted)));
        assert_eq!(
            iso.in_force(),
            Isolation::ReadCommitted,
            "BEGIN ISOLATION LEVEL wins"
        );
        iso.end_transaction();
        iso.note(Some(IsolationChange::ResetSessionDefault));
        assert_eq!(iso.in_force(), Isolation::ReadCommitted);
    }

    #[test]
    fn the_default_read_back_from_the_server_is_exact() {
        let mut iso = IsolationInForce::new(Isolation::ReadCommitted, None);
        iso.note(Some(IsolationChange::SessionDefault(Isolation::Snapshot)));
        iso.learn_default(Some("read committed"));
        assert_eq!(
            iso.in_force(),
            Isolation::ReadCommitted,
            "the SET was rolled back"
        );
        iso.learn_default(Some("serializable"));
        assert_eq!(iso.in_force(), Isolation::Snapshot);
        iso.learn_default(None);
        assert_eq!(iso.in_force(), Isolation::ReadCommitted);
    }

    #[test]
    fn startup_options_and_server_defaults_count() {
        let iso = IsolationInForce::new(Isolation::ReadCommitted, Some("serializable"));
        assert_eq!(iso.in_force(), Isolation::Snapshot);
        let iso = IsolationInForce::new(Isolation::Snapshot, None);
        assert_eq!(iso.in_force(), Isolation::Snapshot);
        let iso = IsolationInForce::new(Isolation::ReadCommitted, Some("nonsense"));
        assert_eq!(
            iso.in_force(),
            Isolation::Snapshot,
            "what it cannot read counts as strict"
        );
    }
}
