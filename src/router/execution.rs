//! The one execution decision: a statement's plan, its route and a small view of the session
//! (pool mode, protocol, held server connection, transaction state and the isolation level in
//! force) become one [`Execution`] the session carries out without deciding again. Refusals are
//! values here, with their message and SQLSTATE. Pure and synchronous: never does I/O and never
//! looks at session internals beyond [`SessionView`].

use super::plan::Isolation;
use super::{CopyIn, CopyPlan};
use super::{Params, Plan, Route, RouteError, Router, Scatter, SplitPart, StatementKind, Target};
use crate::config::PoolMode;

/// What the session is doing, as far as the decision needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    pub pool_mode: PoolMode,
    /// The statement came as a simple Query (else over the extended protocol).
    pub simple: bool,
    /// The server connection the session holds now, if any.
    pub held: Option<HeldServer>,
    pub transaction: TransactionView,
    /// Frames other than Parse wait for this statement's route (an extended batch).
    pub frames_waiting: bool,
    /// Transaction mode, but the client keeps its server connection for session state it holds
    /// there (temporary objects, cursors WITH HOLD, PREPARE, LISTEN, advisory locks).
    pub pinned: bool,
}

/// A held server connection: its shard, and whether it is the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldServer {
    pub shard: usize,
    pub primary: bool,
}

/// The client's transaction as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionView {
    Outside,
    /// BEGIN was answered by pgshard and not sent anywhere yet; `isolation` is the level it
    /// will run at (its own, or the session's default).
    HeldBack {
        isolation: Isolation,
    },
    /// The transaction runs on the held server connection.
    OnServer,
}

/// How the session carries out a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// On the server connection held now.
    Held,
    /// On a connection of this shard (taking one if none of it is held).
    Shard { shard: usize, target: Target },
    /// The held connection must be released first (it is outside the client's transaction and
    /// owes earlier answers); then decide again.
    ReleaseFirst,
    /// A read on each of these shards, merged as `how` says.
    Scatter {
        shards: Vec<usize>,
        target: Target,
        how: Scatter,
    },
    /// A write on several shards' primaries.
    FanOut(FanOutPlan),
    /// `COPY <sharded table> FROM STDIN`, rows split by key.
    CopyIn(CopyIn),
    /// `COPY ... TO STDOUT` gathered from these shards.
    CopyOut {
        shards: Vec<usize>,
        target: Target,
        header: bool,
    },
    /// Answered by pgshard (`SET pgshard.*`).
    Local(super::OverrideChange),
    /// Refused before anything is sent.
    Refuse(RouteError),
}

/// A statement refused before anything is sent (SQLSTATE 0A000): what cannot run, and what to
/// do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("SET pgshard.* must be sent as a simple query")]
    SetOverExtended,
    #[error(
        "this statement needs several shards, but this client keeps session state (temporary \
         objects, cursors WITH HOLD, PREPARE, LISTEN or advisory locks) on one server connection, \
         which holds it there: release that state first (DROP, CLOSE, DEALLOCATE, UNLISTEN, \
         pg_advisory_unlock_all() or DISCARD ALL), or run this statement on another connection"
    )]
    Pinned,
    /// A keyless read pgshard cannot answer from several shards, and why.
    #[error(
        "this read needs every shard ({tables}), and {why}: add WHERE <shard key> = ... or pick a \
         shard with SET pgshard.shard"
    )]
    ScatterRead { tables: String, why: String },
    #[error(
        "this write goes to every shard (it writes a reference table) but also reads or writes a \
         sharded table, whose rows differ from shard to shard, so it would not do the same on \
         each: write the reference table in its own statement with literal values (read the \
         sharded rows first)"
    )]
    EverywhereWithSharded,
    #[error(
        "this write goes to every shard (it writes a reference table), but a transaction runs on \
         one shard: run writes to reference tables outside BEGIN ... COMMIT (each shard then \
         commits its own copy)"
    )]
    EverywhereInTransaction,
    #[error(
        "this write runs on several shards, and pool_mode = \"session\" holds one server \
         connection: use pool_mode = \"transaction\", or write each shard's part with a leading \
         /* pgshard: shard=<name> */ comment"
    )]
    FanOutInSessionMode,
    /// A COPY out of several shards whose query concatenation cannot answer (`why` names it).
    #[error(
        "this COPY reads every shard ({tables}), and pgshard cannot merge {why} by concatenating \
         the shards' output: remove it, or add WHERE <shard key> = ... to read one shard"
    )]
    CopyOutNotMergeable { tables: String, why: String },
    /// `what`: the COPY, as "COPY into sharded table t" or "COPY out of several shards".
    #[error(
        "{what} runs only outside an explicit transaction (pgshard runs it in a transaction on \
         every shard and commits them together): COMMIT or ROLLBACK first"
    )]
    CopyInTransaction { what: String },
    #[error(
        "{what} needs a connection to every shard, and pool_mode = \"session\" holds one: use \
         pool_mode = \"transaction\""
    )]
    CopyInSessionMode { what: String },
}

/// A write on several shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanOutPlan {
    /// The statement unchanged on every shard (a reference table).
    Everywhere,
    /// One INSERT per shard, cut from a simple query.
    Split(Vec<SplitPart>),
    /// An extended-protocol INSERT, cut per shard at its Bind with the parameters.
    SplitAtBind,
}

impl Router {
    /// The one decision for a planned statement whose route was computed with the session's
    /// parameters and overrides.
    pub fn execution(
        &self,
        plan: &Plan,
        route: Result<Route, RouteError>,
        view: &SessionView,
    ) -> Execution {
        let execution = self.decide(plan, route, view);
        let needs_other_connections = matches!(
            execution,
            Execution::Scatter { .. }
                | Execution::FanOut(_)
                | Execution::CopyIn(_)
                | Execution::CopyOut { .. }
                | Execution::ReleaseFirst
        );
        if view.pinned && needs_other_connections {
            return refuse(Refusal::Pinned);
        }
        execution
    }

    fn decide(
        &self,
        plan: &Plan,
        route: Result<Route, RouteError>,
        view: &SessionView,
    ) -> Execution {
        if let Some(copy) = self.copy_execution(plan, &route, view) {
            return copy;
        }
        if let (Some(held), Ok(Route::Shard { target, .. })) = (view.held, &route) {
            // A statement that needs no particular shard stays on the held connection, unless
            // it needs a primary and the held connection is a replica.
            if follows_held(plan) && (held.primary || *target == Target::Replica) {
                return Execution::Held;
            }
        }
        match route {
            Err(e) => Execution::Refuse(e),
            Ok(Route::Shard { shard, target }) => Execution::Shard { shard, target },
            Ok(Route::Shards { shards, target }) if shards.len() == 1 => Execution::Shard {
                shard: shards[0],
                target,
            },
            Ok(Route::All) if self.map.len() == 1 => Execution::Shard {
                shard: 0,
                target: Target::Primary,
            },
            Ok(Route::Shards { shards, target }) if !plan.is_write() => {
                self.scatter_execution(plan, shards, target, view)
            }
            Ok(route @ (Route::SplitInsert { .. } | Route::All)) if plan.is_write() => self
                .fan_out_execution(plan, &route, view)
                .unwrap_or_else(|| Execution::Refuse(self.multi_shard_error(plan, &route))),
            Ok(multi @ (Route::Shards { .. } | Route::SplitInsert { .. } | Route::All)) => {
                Execution::Refuse(self.multi_shard_error(plan, &multi))
            }
            Ok(Route::Local(change)) if view.simple => Execution::Local(change),
            Ok(Route::Local(_)) => refuse(Refusal::SetOverExtended),
        }
    }

    /// A COPY that needs several shards (`None`: not such a COPY, route it as any statement).
    fn copy_execution(
        &self,
        plan: &Plan,
        route: &Result<Route, RouteError>,
        view: &SessionView,
    ) -> Option<Execution> {
        let (execution, what) = match (plan.copy(), route) {
            (Some(CopyPlan::In(copy)), Ok(_)) => (
                Execution::CopyIn(copy.clone()),
                format!("COPY into sharded table {}", copy.table.name),
            ),
            (Some(CopyPlan::Out(gather)), Ok(Route::Shards { shards, target }))
                if shards.len() > 1 =>
            {
                let out = match gather {
                    Ok(out) => out,
                    Err(why) => {
                        return Some(refuse(Refusal::CopyOutNotMergeable {
                            tables: plan.sharded_tables().join(", "),
                            why: why.clone(),
                        }))
                    }
                };
                let execution = Execution::CopyOut {
                    shards: shards.clone(),
                    target: *target,
                    header: out.header,
                };
                (execution, "COPY out of several shards".to_string())
            }
            _ => return None,
        };
        if view.transaction != TransactionView::Outside {
            return Some(refuse(Refusal::CopyInTransaction { what }));
        }
        if view.pool_mode == PoolMode::Session {
            return Some(refuse(Refusal::CopyInSessionMode { what }));
        }
        Some(execution)
    }

    /// A keyless read: answered from every shard when its rows can be merged exactly, outside a
    /// transaction; refused with the construct named otherwise.
    fn scatter_execution(
        &self,
        plan: &Plan,
        shards: Vec<usize>,
        target: Target,
        view: &SessionView,
    ) -> Execution {
        let refuse_because = |why: &str| {
            refuse(Refusal::ScatterRead {
                tables: plan.sharded_tables().join(", "),
                why: why.to_string(),
            })
        };
        let how = plan.scatter();
        if let Scatter::Unsupported(construct) = how {
            return refuse_because(&format!(
                "pgshard cannot merge {construct} across shards yet"
            ));
        }
        if let Some(why) = transaction_refuses_scatter(view.transaction) {
            return refuse_because(why);
        }
        if view.held.is_some() && view.pool_mode == PoolMode::Transaction {
            // The held connection is outside the client's transaction (its BEGIN is held back)
            // and ran earlier parts of this batch (a Describe before the Bind) or still owes
            // answers: it is released first, so the read's answer comes after those.
            return Execution::ReleaseFirst;
        }
        if !view.simple && view.frames_waiting {
            return refuse_because("frames other than Parse wait for a shard in this batch");
        }
        if view.pool_mode == PoolMode::Session {
            return refuse_because("session mode holds one server connection");
        }
        Execution::Scatter {
            shards,
            target,
            how: how.clone(),
        }
    }

    /// A write routed to several shards (`None`: refused as a cross-shard statement).
    fn fan_out_execution(
        &self,
        plan: &Plan,
        route: &Route,
        view: &SessionView,
    ) -> Option<Execution> {
        let in_transaction = view.transaction != TransactionView::Outside;
        let session_mode = view.pool_mode == PoolMode::Session;
        let fan_out = match route {
            // Inside a transaction the transaction's shard decides: refused as cross-shard.
            Route::SplitInsert { .. } if in_transaction => return None,
            Route::SplitInsert { .. } if !view.simple && !session_mode => FanOutPlan::SplitAtBind,
            Route::All if !plan.same_on_every_shard() => {
                return Some(refuse(Refusal::EverywhereWithSharded))
            }
            Route::All if in_transaction => return Some(refuse(Refusal::EverywhereInTransaction)),
            _ if session_mode => return Some(refuse(Refusal::FanOutInSessionMode)),
            Route::All => FanOutPlan::Everywhere,
            Route::SplitInsert { .. } => match self.split_insert(plan, &Params::NONE) {
                Ok(parts) => FanOutPlan::Split(parts),
                Err(e) => return Some(Execution::Refuse(e)),
            },
            _ => return None,
        };
        Some(Execution::FanOut(fan_out))
    }
}

/// Why a cross-shard read cannot run in the client's transaction, if it cannot. It can while
/// the transaction has not reached a shard yet (its BEGIN is held back) at READ COMMITTED:
/// each statement there reads its own snapshot anyway, and nothing is written yet, so the read
/// runs outside it, as a separate statement on each shard.
fn transaction_refuses_scatter(transaction: TransactionView) -> Option<&'static str> {
    match transaction {
        TransactionView::Outside
        | TransactionView::HeldBack {
            isolation: Isolation::ReadCommitted,
        } => None,
        TransactionView::OnServer => Some(
            "cross-shard reads do not run in a transaction that has already used a shard: run \
             the read before the transaction's first statement or outside it",
        ),
        TransactionView::HeldBack {
            isolation: Isolation::Snapshot,
        } => Some(
            "cross-shard reads do not share one snapshot across shards, which REPEATABLE READ \
             and SERIALIZABLE transactions need",
        ),
    }
}

/// Whether a statement that needs no particular shard may stay on the held connection.
fn follows_held(plan: &Plan) -> bool {
    !matches!(plan.kind(), StatementKind::Read | StatementKind::Write)
        || plan.sharded_tables().is_empty()
}

fn refuse(refusal: Refusal) -> Execution {
    Execution::Refuse(RouteError::Refused(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_values_parse_as_postgresql_spells_them() {
        assert_eq!(
            Isolation::parse("repeatable read"),
            Some(Isolation::Snapshot)
        );
        assert_eq!(
            Isolation::parse("'SERIALIZABLE'"),
            Some(Isolation::Snapshot)
        );
        assert_eq!(
            Isolation::parse("read_committed"),
            Some(Isolation::ReadCommitted)
        );
        assert_eq!(Isolation::parse("default"), None);
    }
}
