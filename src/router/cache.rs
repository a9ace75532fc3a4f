//! A plan cache for simple queries, keyed by the exact query text and bounded in bytes, with
//! CLOCK (second-chance) eviction. Lookups take `&self` (the referenced bit is atomic), so a
//! shared cache can sit behind an `RwLock` with lookups under the read lock.
//!
//! Holds no globals and never does I/O; whoever owns it decides whether it is per client or
//! shared, and clears it when the router is rebuilt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Plan, Router};

/// Bytes charged per entry on top of its text: the plan, the map entry and the ring slot.
pub const ENTRY_OVERHEAD_BYTES: usize = 256;

#[derive(Debug)]
struct Entry {
    text: Arc<str>,
    plan: Arc<Plan>,
    referenced: AtomicBool,
}

/// Query text → plan, at most `max_bytes` of text plus [`ENTRY_OVERHEAD_BYTES`] per entry.
#[derive(Debug)]
pub struct PlanCache {
    max_bytes: usize,
    bytes: usize,
    index: HashMap<Arc<str>, usize>,
    ring: Vec<Option<Entry>>,
    free: Vec<usize>,
    hand: usize,
}

impl PlanCache {
    /// An empty cache holding at most `max_bytes`. A text larger than a quarter of that is
    /// never cached, so one huge statement cannot flush everything else.
    pub fn new(max_bytes: usize) -> PlanCache {
        PlanCache {
            max_bytes,
            bytes: 0,
            index: HashMap::new(),
            ring: Vec::new(),
            free: Vec::new(),
            hand: 0,
        }
    }

    /// The cached plan for exactly this text.
    pub fn get(&self, sql: &str) -> Option<Arc<Plan>> {
        let entry = self.ring[*self.index.get(sql)?].as_ref()?;
        entry.referenced.store(true, Ordering::Relaxed);
        Some(entry.plan.clone())
    }

    /// The cached plan, or a new one from `router` (then cached).
    pub fn get_or_plan(&mut self, router: &Router, sql: &str) -> Arc<Plan> {
        if let Some(plan) = self.get(sql) {
            return plan;
        }
        let plan = router.plan(sql);
        self.insert(sql, plan.clone());
        plan
    }

    /// Caches `plan` for `sql`, evicting entries not used since the hand last passed them.
    pub fn insert(&mut self, sql: &str, plan: Arc<Plan>) {
        let cost = sql.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.max_bytes / 4 {
            return;
        }
        if let Some(&slot) = self.index.get(sql) {
            if let Some(entry) = self.ring[slot].as_mut() {
                entry.plan = plan;
            }
            return;
        }
        while self.bytes + cost > self.max_bytes && !self.index.is_empty() {
            self.evict_one();
        }
        let text: Arc<str> = Arc::from(sql);
        let entry = Entry {
            text: text.clone(),
            plan,
            referenced: AtomicBool::new(false),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.ring[slot] = Some(entry);
                slot
            }
            None => {
                self.ring.push(Some(entry));
                self.ring.len() - 1
            }
        };
        self.index.insert(text, slot);
        self.bytes += cost;
    }

    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let slot = self.hand;
            self.hand += 1;
            let Some(entry) = &self.ring[slot] else {
                continue;
            };
            if entry.referenced.swap(false, Ordering::Relaxed) {
                continue;
            }
            if let Some(entry) = self.ring[slot].take() {
                self.index.remove(&entry.text);
                self.bytes -= entry.text.len() + ENTRY_OVERHEAD_BYTES;
                self.free.push(slot);
            }
            return;
        }
    }

    /// Number of cached plans.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes charged (texts plus per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every plan (after the router is rebuilt).
    pub fn clear(&mut self) {
        *self = PlanCache::new(self.max_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::router;

    #[test]
    fn same_text_is_planned_once() {
        let router = router();
        let mut cache = PlanCache::new(64 * 1024);
        let a = cache.get_or_plan(&router, "SELECT * FROM users WHERE user_id = 42");
        let b = cache.get_or_plan(&router, "SELECT * FROM users WHERE user_id = 42");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_stays_within_its_byte_budget() {
        let router = router();
        let budget = 16 * ENTRY_OVERHEAD_BYTES;
        let mut cache = PlanCache::new(budget);
        for i in 0..1000 {
            cache.get_or_plan(&router, &format!("SELECT * FROM users WHERE user_id = {i}"));
            assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
        }
        assert!(cache.len() > 1);
    }

    #[test]
    fn recently_used_entries_survive_eviction() {
        let router = router();
        let hot = "SELECT * FROM users WHERE user_id = 1";
        let mut cache = PlanCache::new(8 * (ENTRY_OVERHEAD_BYTES + 40));
        cache.get_or_plan(&router, hot);
        for i in 0..100 {
            assert!(cache.get(hot).is_some(), "hot entry evicted at {i}");
            cache.get_or_plan(&router, &format!("SELECT {i}"));
        }
    }

    #[test]
    fn oversized_texts_are_not_cached() {
        let router = router();
        let mut cache = PlanCache::new(1024);
        let long = format!("SELECT '{}'", "x".repeat(1024));
        cache.get_or_plan(&router, &long);
        assert!(cache.is_empty());
    }
}
