//! Swapping a slice in ahead of its hold: on a second connection to the target, the slice's
//! staging rows go into the real tables in a transaction left open (its rows invisible to
//! everyone), and at the swap only the rows whose keys the catch-up noted since are redone
//! before it commits. So the hold carries the rows changed lately instead of the slice's
//! thousands. Only when the target is another server than the source. Never commits outside
//! [`Mover::finish_pre_swap`]; any doubt (keys not followed, another slice) rolls back and the
//! caller swaps the whole slice as before.

use super::copy::{delete_keyed, insert_from_staging};
use super::objects::SLOT_COLUMN;
use super::verify::insert_touched;
use super::{MoveError, Mover, Shard, SlotSet, Touched};

/// The open transaction of a slice swapped in ahead: its slice, and the keys noted since.
pub(crate) struct PreSwap {
    pub slice: SlotSet,
    pub keys: Vec<Touched>,
}

impl Mover {
    /// Gives the mover a second connection to the target, on which slices are swapped in ahead
    /// of their holds ([`Mover::pre_swap`]); without one, the swap happens under the hold.
    pub fn with_swap_connection(mut self, shard: Shard) -> Mover {
        self.swap_conn = Some(shard);
        self
    }

    /// Inserts `slice`'s staging rows into the real tables in a transaction left open on the
    /// swap connection. Does nothing without that connection or without every change's key
    /// noted since this process's copy (the swap then moves the whole slice under the hold).
    pub async fn pre_swap(&mut self, slice: &SlotSet) -> Result<(), MoveError> {
        self.drop_pre_swap().await;
        if self.touched.is_none() || !self.swap_on_another_server().await? {
            return Ok(());
        }
        let Some(conn) = &self.swap_conn else {
            return Ok(());
        };
        let what = "moving a slice's staging rows ahead of its hold";
        conn.client
            .batch_execute("BEGIN")
            .await
            .map_err(MoveError::pg(what))?;
        self.pre_swap = Some(PreSwap {
            slice: slice.clone(),
            keys: vec![Touched::new(); self.tables.len()],
        });
        for t in &self.tables {
            let sql =
                insert_from_staging(t, &format!("{SLOT_COLUMN} = ANY({})", slice.sql_array()));
            if let Err(e) = conn.client.execute(&sql, &[]).await {
                self.drop_pre_swap().await;
                return Err(MoveError::pg(what)(e));
            }
        }
        Ok(())
    }

    /// Under the hold: if `slice` was swapped in ahead and every key changed since is known,
    /// redoes those rows from staging and commits; returns `None` (after rolling back what was
    /// open) when the caller must swap the whole slice instead.
    pub(crate) async fn finish_pre_swap(
        &mut self,
        slice: &SlotSet,
    ) -> Result<Option<u64>, MoveError> {
        let (Some(pre), Some(conn)) = (self.pre_swap.take(), &self.swap_conn) else {
            return Ok(None);
        };
        if pre.slice != *slice || self.touched.is_none() {
            self.pre_swap = Some(pre);
            self.drop_pre_swap().await;
            return Ok(None);
        }
        let client = &conn.client;
        match redo_changed(client, &self.tables, &pre).await {
            Ok(rows) => Ok(Some(rows)),
            Err(e) => {
                if let Err(e) = client.batch_execute("ROLLBACK").await {
                    tracing::debug!("rolling back a swap ahead of its hold: {e}");
                }
                Err(e)
            }
        }
    }

    /// Whether the swap connection may be used: only when the target is another server than
    /// the source. On one server, the open transaction would hold the source's decoding back
    /// (its restart point cannot pass an open transaction, nor can the slot made to move it
    /// be built while one is open): the catch-up under the hold would decode the swap's WAL
    /// again, costing what the swap ahead saves. Decided once; the connection is dropped then.
    async fn swap_on_another_server(&mut self) -> Result<bool, MoveError> {
        let Some(conn) = &self.swap_conn else {
            return Ok(false);
        };
        let what = "telling whether the source and the target are one server";
        let sql = "SELECT system_identifier FROM pg_control_system()";
        let source = self.source.client.query_one(sql, &[]).await;
        let target = conn.client.query_one(sql, &[]).await;
        let (source, target) = (
            source.map_err(MoveError::pg(what))?.get::<_, i64>(0),
            target.map_err(MoveError::pg(what))?.get::<_, i64>(0),
        );
        if source == target {
            self.swap_conn = None;
        }
        Ok(source != target)
    }

    /// Rolls back a slice swapped in ahead, if any (its connection is dropped if that fails).
    pub async fn drop_pre_swap(&mut self) {
        if self.pre_swap.take().is_none() {
            return;
        }
        if let Some(conn) = &self.swap_conn {
            if let Err(e) = conn.client.batch_execute("ROLLBACK").await {
                tracing::debug!("rolling back a swap ahead of its hold: {e}");
                self.swap_conn = None;
            }
        }
    }
}

/// Redoes, in the open transaction, the real tables' rows whose keys changed since the swap
/// ahead (deleted, then inserted again from staging if in the slice), and commits; returns the
/// rows inserted again.
async fn redo_changed(
    client: &tokio_postgres::Client,
    tables: &[super::objects::Table],
    pre: &PreSwap,
) -> Result<u64, MoveError> {
    let what = "moving the rows changed since into the real tables";
    client
        .batch_execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
             SET LOCAL enable_mergejoin = off",
        )
        .await
        .map_err(MoveError::pg(what))?;
    let mut rows = 0;
    for (n, t) in tables.iter().enumerate() {
        let keys = format!("pgshard_reswap_{n}");
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE {keys} ON COMMIT DROP AS SELECT {pk} FROM {real} WITH NO DATA",
                pk = t.primary_key_list(),
                real = t.target_sql
            ))
            .await
            .map_err(MoveError::pg(what))?;
        // Every slot: a row may have left the slice (its shard key outside the primary key).
        insert_touched(client, t, &keys, &pre.keys[n], &SlotSet::all()).await?;
        client
            .batch_execute(&format!("ANALYZE {keys}"))
            .await
            .map_err(MoveError::pg(what))?;
        delete_keyed(client, t, &t.target_sql, &keys, what).await?;
        let filter = format!(
            "{SLOT_COLUMN} = ANY({}) AND ({pk}) IN (SELECT {pk} FROM {keys})",
            pre.slice.sql_array(),
            pk = t.primary_key_list()
        );
        rows += client
            .execute(&insert_from_staging(t, &filter), &[])
            .await
            .map_err(MoveError::pg(what))?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(MoveError::pg(what))?;
    Ok(rows)
}
