//! Cancel keys: each client gets its own BackendKeyData from pgshard, and a CancelRequest carrying it
//! is forwarded to the server connections that client is using at that moment: none, one, or
//! one per shard while the session runs cross-shard work itself (a read, a write on several
//! shards, a split or gathered COPY). Each client's [`CancelSlot`] lives in its entry of the
//! client registry (`stats::ClientRegistry`, which issues the keys and looks them up); this
//! module holds what the slot keeps and never touches a connection itself.

use std::sync::{Arc, Mutex};

pub use crate::backend::cancel::{CancelKey as ServerKey, CancelSent};

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
    /// A cancel for each connection listed now, counted as pending on its key before the lock
    /// is let go: a session clears the slot (under this lock) before it gives a connection back,
    /// so the pool sees the pending cancel and waits for it before anyone else gets the
    /// connection.
    pub fn start_cancels(&self) -> Vec<CancelSent> {
        let keys = lock(&self.0);
        keys.one
            .iter()
            .chain(&keys.more)
            .map(ServerKey::start)
            .collect()
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
        assert!(slot.start_cancels().is_empty());
        let key = Arc::new(ServerKey::new("127.0.0.1:5432".into(), 7, 9));
        slot.set(Some(&key));
        let started = slot.start_cancels();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].key().process_id, 7);
        assert!(key.in_flight(), "counted as pending while listed");
        drop(started);
        assert!(!key.in_flight());
        let other = Arc::new(ServerKey::new("127.0.0.1:5432".into(), 8, 9));
        slot.set_all([&key, &other]);
        assert_eq!(slot.start_cancels().len(), 2);
        slot.set(None);
        assert!(slot.start_cancels().is_empty());
    }
}
