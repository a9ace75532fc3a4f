//! Cancel keys: each client gets its own BackendKeyData from pgshard, and a CancelRequest carrying it
//! is forwarded to the server connections that client is using at that moment: none, one, or
//! one per shard while the session runs cross-shard work itself (a read, a write on several
//! shards, a split or gathered COPY). Each client's [`CancelSlot`] lives in its entry of the
//! client registry (`stats::ClientRegistry`, which issues the keys and looks them up); this
//! module holds what the slot keeps and never touches a connection itself.

use std::sync::{Arc, Mutex};

pub use crate::backend::connection::CancelKey as ServerKey;

/// The server connections a client is using right now.
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Keys>);

/// One connection (the common case: a checkout) is kept without allocating; a cross-shard
/// statement's several connections in a list.
#[derive(Debug, Default)]
struct Keys {
    one: Option<Arc<ServerKey>>,
    more: Vec<Arc<ServerKey>>,
}

impl CancelSlot {
    /// The one connection the client holds now, or none (which also gives back the list's
    /// memory: an idle client keeps none).
    pub fn set(&self, key: Option<&Arc<ServerKey>>) {
        let mut keys = lock(&self.0);
        keys.one = key.cloned();
        keys.more = Vec::new();
    }
    /// Every one of these connections (one per shard of a cross-shard statement), until the
    /// next `set`.
    pub fn set_all<'a>(&self, keys: impl IntoIterator<Item = &'a Arc<ServerKey>>) {
        let mut all = lock(&self.0);
        all.one = None;
        all.more.clear();
        all.more.extend(keys.into_iter().cloned());
    }
    pub fn get(&self) -> Vec<Arc<ServerKey>> {
        let keys = lock(&self.0);
        keys.one.iter().chain(&keys.more).cloned().collect()
    }
}

/// A fresh cancel key: a process id (positive, as PostgreSQL's) and a secret.
pub fn random_key() -> (i32, i32) {
    (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The list stays valid even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_lists_the_connections_set_last() {
        let slot = CancelSlot::default();
        assert!(slot.get().is_empty());
        let key = Arc::new(ServerKey {
            addr: "127.0.0.1:5432".into(),
            process_id: 7,
            secret_key: 9,
        });
        slot.set(Some(&key));
        assert_eq!(slot.get(), vec![key.clone()]);
        let other = Arc::new(ServerKey {
            process_id: 8,
            ..(*key).clone()
        });
        slot.set_all([&key, &other]);
        assert_eq!(slot.get().len(), 2);
        slot.set(None);
        assert!(slot.get().is_empty());
    }
}
