//! Cancel keys: each client gets its own BackendKeyData from pgshard, and a CancelRequest carrying it
//! is forwarded to the server connections that client is using at that moment: none, one, or
//! one per shard while the session runs cross-shard work itself (a read, a write on several
//! shards, a split or gathered COPY), registered for that work's duration by
//! [`CancelSlot::reach_all`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::backend::connection::CancelKey as ServerKey;

/// The server connections a client is using right now.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Vec<Arc<ServerKey>>>);

impl CancelSlot {
    pub fn set(&self, key: Option<Arc<ServerKey>>) {
        *lock(&self.0) = key.into_iter().collect();
    }
    /// Every one of these connections (one per shard of a cross-shard statement) until the
    /// returned guard drops; drop it before the connections go back to the pool.
    pub fn reach_all<'a>(
        self: &Arc<Self>,
        keys: impl IntoIterator<Item = &'a Arc<ServerKey>>,
    ) -> SlotInUse {
        *lock(&self.0) = keys.into_iter().cloned().collect();
        SlotInUse(self.clone())
    }
    pub fn get(&self) -> Vec<Arc<ServerKey>> {
        lock(&self.0).clone()
    }
}

/// Clears a [`CancelSlot`] on drop, so a cancel never reaches connections given back.
#[derive(Debug)]
#[must_use = "the connections stop being reachable by a cancel when this guard drops"]
pub struct SlotInUse(Arc<CancelSlot>);

impl Drop for SlotInUse {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// All clients' cancel keys, shared by the accept loop's sessions.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Issues a fresh, unused key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelGuard {
        let slot = Arc::new(CancelSlot::default());
        let mut clients = lock(&self.clients);
        let key = loop {
            let key = (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>());
            if !clients.contains_key(&key) {
                break key;
            }
        };
        clients.insert(key, slot.clone());
        CancelGuard {
            registry: self.clone(),
            key,
            slot,
        }
    }

    /// The server connections to cancel for a client key (those the client is using now).
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Vec<Arc<ServerKey>> {
        lock(&self.clients)
            .get(&(process_id, secret_key))
            .map(|slot| slot.get())
            .unwrap_or_default()
    }
}

/// A client's registration; removed from the registry on drop.
#[derive(Debug)]
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pub key: (i32, i32),
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay valid even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_current_server_and_forgets_departed_clients() {
        let registry = Arc::new(CancelRegistry::default());
        let guard = registry.register();
        let (pid, secret) = guard.key;
        assert!(registry.lookup(pid, secret).is_empty());
        let key = ServerKey {
            addr: "127.0.0.1:5432".into(),
            process_id: 7,
            secret_key: 9,
        };
        guard.slot.set(Some(Arc::new(key.clone())));
        assert_eq!(registry.lookup(pid, secret), vec![Arc::new(key.clone())]);
        assert!(registry.lookup(pid, secret.wrapping_add(1)).is_empty());
        let other = Arc::new(ServerKey {
            process_id: 8,
            ..key.clone()
        });
        let in_use = guard.slot.reach_all(&[Arc::new(key.clone()), other]);
        assert_eq!(registry.lookup(pid, secret).len(), 2);
        drop(in_use);
        assert!(registry.lookup(pid, secret).is_empty());
        drop(guard);
        assert!(registry.lookup(pid, secret).is_empty());
    }
}
