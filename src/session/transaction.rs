//! The client's transaction as pgshard sees it: one state (outside, BEGIN held back, on a server)
//! plus whether it failed and whether pgshard itself refused a statement in it, the access mode
//! the router reads, and the isolation level in force. The only place these change; never
//! touches a socket.

use bytes::Bytes;

use super::isolation::IsolationInForce;
use crate::router::{
    Isolation, IsolationChange, TransactionControl, TransactionMode, TransactionView,
};
use crate::wire::TransactionStatus;

/// Where the client's transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Outside,
    /// BEGIN was answered by pgshard and waits (these bytes) for the first statement that picks
    /// a shard.
    HeldBack {
        begin: Bytes,
    },
    /// It runs on the held server connection.
    OnServer,
}

/// The client's transaction.
#[derive(Debug)]
pub(super) struct ClientTransaction {
    state: State,
    /// It failed (a server's error, or pgshard's refusal): the client sees `E`.
    failed: bool,
    /// pgshard refused a statement in it: only its end (or a rollback to a savepoint) may run.
    aborted: bool,
    /// Read-only or read-write, for the router's choice of replica or primary.
    mode: TransactionMode,
    isolation: IsolationInForce,
}

impl ClientTransaction {
    pub fn new(server_default: Isolation, startup_isolation: Option<&str>) -> Self {
        ClientTransaction {
            state: State::Outside,
            failed: false,
            aborted: false,
            mode: TransactionMode::Outside,
            isolation: IsolationInForce::new(server_default, startup_isolation),
        }
    }

    /// The status the client sees in ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        match (&self.state, self.failed) {
            (State::Outside, _) => TransactionStatus::Idle,
            (_, true) => TransactionStatus::Failed,
            (_, false) => TransactionStatus::InTransaction,
        }
    }

    pub fn is_outside(&self) -> bool {
        self.state == State::Outside
    }

    /// BEGIN is held back (it has reached no server yet).
    pub fn is_held_back(&self) -> bool {
        matches!(self.state, State::HeldBack { .. })
    }

    /// The transaction runs on the held server connection.
    pub fn is_on_server(&self) -> bool {
        self.state == State::OnServer
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// The access mode the router routes by.
    pub fn mode(&self) -> TransactionMode {
        self.mode
    }

    /// What the execution decision needs to know.
    pub fn view(&self) -> TransactionView {
        match self.state {
            State::Outside => TransactionView::Outside,
            State::HeldBack { .. } => TransactionView::HeldBack {
                isolation: self.isolation.in_force(),
            },
            State::OnServer => TransactionView::OnServer,
        }
    }

    /// A BEGIN the client sent (held back or not): its access mode.
    pub fn note_begin(&mut self, read_only: bool) {
        self.mode = if read_only {
            TransactionMode::ReadOnly
        } else {
            TransactionMode::ReadWrite
        };
    }

    /// pgshard answers BEGIN itself and keeps it until a statement picks the shard.
    pub fn hold_begin(&mut self, begin: Bytes, read_only: bool) {
        self.note_begin(read_only);
        self.state = State::HeldBack { begin };
        self.failed = false;
    }

    /// The held-back BEGIN, to send ahead of the statement that picked the shard: from now on
    /// the transaction is on that server.
    pub fn take_begin(&mut self) -> Option<Bytes> {
        match std::mem::replace(&mut self.state, State::OnServer) {
            State::HeldBack { begin } => Some(begin),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Ends a transaction whose BEGIN never reached a server: its CommandComplete tag (ROLLBACK
    /// for a COMMIT of a failed transaction, as PostgreSQL answers).
    pub fn end_held_back(&mut self, control: TransactionControl) -> &'static str {
        let failed = self.failed;
        self.end();
        if control == TransactionControl::Commit && !failed {
            "COMMIT"
        } else {
            "ROLLBACK"
        }
    }

    /// pgshard refused a statement (or a cross-shard read failed): as in PostgreSQL, an error
    /// aborts the transaction. Outside a transaction nothing changes.
    pub fn abort(&mut self) {
        if !self.is_outside() {
            self.aborted = true;
            self.failed = true;
        }
    }

    /// A ROLLBACK (or ROLLBACK TO) goes to the server: the abort pgshard imposed is over.
    pub fn clear_abort(&mut self) {
        self.aborted = false;
    }

    /// A server's ReadyForQuery for the client's transaction. Returns false while BEGIN is held
    /// back (that server answered a statement run outside the transaction; the client keeps
    /// seeing its own status).
    pub fn on_server_ready(&mut self, status: TransactionStatus) -> bool {
        if self.is_held_back() {
            return false;
        }
        match status {
            TransactionStatus::Idle => self.end(),
            TransactionStatus::InTransaction | TransactionStatus::Failed => {
                self.state = State::OnServer;
                self.failed = status == TransactionStatus::Failed;
                if self.mode == TransactionMode::Outside {
                    self.mode = TransactionMode::ReadWrite;
                }
            }
        }
        true
    }

    /// Follows what a statement does to the isolation level.
    pub fn note_isolation(&mut self, change: Option<IsolationChange>) {
        self.isolation.note(change);
    }

    /// The session's `default_transaction_isolation` as read back from the server.
    pub fn learn_isolation_default(&mut self, value: Option<&str>) {
        self.isolation.learn_default(value);
    }

    /// `RESET ALL`: the session default isolation goes back to the startup value.
    pub fn reset_isolation_default(&mut self) {
        self.isolation.reset_default();
    }

    fn end(&mut self) {
        self.state = State::Outside;
        self.failed = false;
        self.aborted = false;
        self.mode = TransactionMode::Outside;
        self.isolation.end_transaction();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> ClientTransaction {
        ClientTransaction::new(Isolation::ReadCommitted, None)
    }

    #[test]
    fn a_held_back_begin_goes_to_the_server_once() {
        let mut t = tx();
        t.hold_begin(Bytes::from_static(b"Q...BEGIN"), false);
        assert_eq!(t.status(), TransactionStatus::InTransaction);
        assert_eq!(t.mode(), TransactionMode::ReadWrite);
        assert!(
            !t.on_server_ready(TransactionStatus::Idle),
            "a preview server's answer"
        );
        assert_eq!(t.status(), TransactionStatus::InTransaction);
        assert_eq!(t.take_begin().as_deref(), Some(&b"Q...BEGIN"[..]));
        assert!(t.is_on_server());
        assert_eq!(t.take_begin(), None);
        assert!(t.on_server_ready(TransactionStatus::Idle));
        assert!(t.is_outside());
        assert_eq!(t.mode(), TransactionMode::Outside);
    }

    #[test]
    fn a_refusal_aborts_only_inside_a_transaction_and_commit_then_rolls_back() {
        let mut t = tx();
        t.abort();
        assert_eq!(t.status(), TransactionStatus::Idle);
        assert!(!t.is_aborted());
        t.hold_begin(Bytes::new(), true);
        t.abort();
        assert!(t.is_aborted());
        assert_eq!(t.status(), TransactionStatus::Failed);
        assert_eq!(t.end_held_back(TransactionControl::Commit), "ROLLBACK");
        assert_eq!(t.status(), TransactionStatus::Idle);
        assert!(!t.is_aborted());
        t.hold_begin(Bytes::new(), false);
        assert_eq!(t.end_held_back(TransactionControl::Commit), "COMMIT");
    }

    #[test]
    fn the_server_reports_failure_and_the_view_follows_the_state() {
        let mut t = tx();
        assert!(t.on_server_ready(TransactionStatus::Failed));
        assert_eq!(t.status(), TransactionStatus::Failed);
        assert!(!t.is_aborted(), "the server enforces its own abort");
        assert_eq!(t.view(), TransactionView::OnServer);
        assert_eq!(t.mode(), TransactionMode::ReadWrite);
        t.on_server_ready(TransactionStatus::Idle);
        assert_eq!(t.view(), TransactionView::Outside);
        t.note_isolation(Some(IsolationChange::Transaction(Isolation::Snapshot)));
        t.hold_begin(Bytes::new(), false);
        assert_eq!(
            t.view(),
            TransactionView::HeldBack {
                isolation: Isolation::Snapshot
            }
        );
    }
}
