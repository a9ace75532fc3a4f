//! Cancel keys: each client gets its own BackendKeyData from pgshard, and a CancelRequest carrying it
//! is forwarded to the server connection that client is using at that moment (if any).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::backend::connection::CancelKey as ServerKey;

/// The server connection a client is using right now, if any.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Option<Arc<ServerKey>>>);

impl CancelSlot {
    pub fn set(&self, key: Option<Arc<ServerKey>>) {
        *lock(&self.0) = key;
    }
    pub fn get(&self) -> Option<Arc<ServerKey>> {
        lock(&self.0).clone()
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

    /// The server connection to cancel for a client key, if that client is using one now.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<Arc<ServerKey>> {
        lock(&self.clients)
            .get(&(process_id, secret_key))
            .and_then(|slot| slot.get())
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
        assert_eq!(registry.lookup(pid, secret), None);
        let key = ServerKey {
            addr: "127.0.0.1:5432".into(),
            process_id: 7,
            secret_key: 9,
        };
        guard.slot.set(Some(Arc::new(key.clone())));
        assert_eq!(registry.lookup(pid, secret).as_deref(), Some(&key));
        assert_eq!(registry.lookup(pid, secret.wrapping_add(1)), None);
        drop(guard);
        assert_eq!(registry.lookup(pid, secret), None);
    }
}
