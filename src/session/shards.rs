//! What every cross-shard executor shares (scatter-gather reads, writes on several shards, split
//! and gathered COPY): one server connection per shard, all checked out before anything is sent,
//! reachable by the client's CancelRequest while held, and given back when dropped (closed if it
//! still owes answers); and how a failed cross-shard statement ends the client's transaction.
//! Never routes and never writes to the client.

use std::ops::{Deref, DerefMut};

use super::error::SessionError;
use super::Session;
use crate::backend::BackendManager;
use crate::pool::Pooled;
use crate::router::Target;
use crate::stats::SlotInUse;
use crate::transport::Stream;

/// One server connection per shard of a cross-shard statement, in the order of the shards asked
/// for. The cancel registration drops first, so a cancel never reaches a connection given back.
pub(super) struct ShardConns {
    cancel: SlotInUse,
    conns: Vec<Pooled<BackendManager>>,
}

impl ShardConns {
    /// Sends `request` to every shard before any answer is read, so they all work at once.
    pub async fn send_all(&mut self, request: &[u8]) -> Result<(), SessionError> {
        for conn in self.conns.iter_mut() {
            conn.set_in_flight(true);
            conn.write(request).await?;
        }
        Ok(())
    }

    /// The connections and their cancel registration, for an executor that keeps per-shard
    /// state beside each connection (drop the registration before the connections).
    pub fn into_parts(self) -> (Vec<Pooled<BackendManager>>, SlotInUse) {
        (self.conns, self.cancel)
    }
}

impl Deref for ShardConns {
    type Target = [Pooled<BackendManager>];
    fn deref(&self) -> &Self::Target {
        &self.conns
    }
}

impl DerefMut for ShardConns {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conns
    }
}

impl<S: Stream> Session<S> {
    /// A connection to each of `shards` (replicas per the read rules for `Target::Replica`),
    /// reachable by the client's CancelRequest until dropped. Fails without sending anything
    /// when any shard cannot give one.
    pub(super) async fn shard_connections(
        &mut self,
        shards: &[usize],
        target: Target,
    ) -> Result<ShardConns, SessionError> {
        let mut conns = Vec::with_capacity(shards.len());
        for &shard in shards {
            let turn = self.replica_turn(shard, target);
            conns.push(self.connection_for(shard, turn).await?.0);
        }
        // Writes on primaries: reading one's own writes waits for them (they end before the
        // next statement is routed).
        if target == Target::Primary {
            for &shard in shards {
                self.own_writes.writing(&self.shared.shards, shard);
            }
        }
        let cancel = self
            .meter
            .client
            .entry
            .reach_all(conns.iter().map(|c| c.cancel_key()));
        Ok(ShardConns { cancel, conns })
    }

    /// A statement failed or was refused: as in PostgreSQL, the error aborts the client's
    /// transaction (only its end may run), and over the extended protocol the rest of the batch
    /// is skipped up to its Sync.
    pub(super) fn fail_statement(&mut self, simple: bool) {
        self.tx.abort();
        if !simple {
            self.proto.pending.clear();
            self.proto.skipping_until_sync = true;
        }
    }
}
