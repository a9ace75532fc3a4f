//! Ends, on a move's source, the transactions a router cut off from the catalog may still
//! commit there by its old map: those that began before the mover stopped waiting for that
//! router and wrote, or are running a statement that writes. Routers that answered the hold
//! have ended theirs; this one cannot say. Never touches a transaction that began later, a
//! read-only one, or another database's.

use std::time::Duration;

use super::{MoveError, Mover};

/// A statement running now that will write but may not have yet (no transaction id):
/// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY ... FROM`, also behind a `WITH`.
const WRITE_STATEMENT: &str = r"^\s*(with\M.*\m(insert|update|delete|merge)\M|insert\M|update\M|delete\M|merge\M|copy\M[^;]*\mfrom\M)";

/// How long such transactions get to end by themselves before they are ended.
const GRACE: Duration = Duration::from_secs(1);

/// A transaction on the source that was ended: its server process and what it was running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub pid: i32,
    pub query: String,
}

impl Mover {
    /// Ends the source's transactions that began before `before` (seconds since the Unix
    /// epoch, by the catalog's clock) and wrote or are running a statement that writes: after
    /// [`GRACE`], their clients get an error instead of writing to the old owner. Returns
    /// those it ended.
    pub async fn end_transactions_before(&self, before: f64) -> Result<Vec<Ended>, MoveError> {
        let what = "ending transactions older than a silent router's lease";
        let started = tokio::time::Instant::now();
        loop {
            let rows = self
                .source
                .client
                .query(
                    "SELECT pid, left(query, 200) FROM pg_stat_activity \
                     WHERE datname = current_database() AND backend_type = 'client backend' \
                       AND pid <> pg_backend_pid() AND xact_start < to_timestamp($1) \
                       AND (backend_xid IS NOT NULL \
                            OR (state = 'active' AND query ~* $2))",
                    &[&before, &WRITE_STATEMENT],
                )
                .await
                .map_err(MoveError::pg(what))?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            if started.elapsed() < GRACE {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let mut ended = Vec::new();
            for row in rows {
                let pid: i32 = row.get(0);
                // Waits (up to 5 s) until the process is gone, its transaction rolled back.
                self.source
                    .client
                    .query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid])
                    .await
                    .map_err(MoveError::pg(what))?;
                ended.push(Ended {
                    pid,
                    query: row.get(1),
                });
            }
            return Ok(ended);
        }
    }
}
