//! The node-wide memory budget: guest linear memory and buffered request bodies are charged
//! against one limit, so many functions growing at once cannot take the node's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes the node may hand out to guests and buffered bodies, and how many it has.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicU64::new(0) })
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or nothing if they do not fit.
    pub(crate) fn try_take(&self, bytes: u64) -> bool {
        // One atomic add in the common case (a CAS loop retried under contention between the
        // request workers); an add that overshoots is undone.
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.checked_add(bytes).is_some_and(|total| total <= self.limit) {
            return true;
        }
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        false
    }

    pub(crate) fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Charges `bytes` until the returned guard is dropped; `None` when the budget is spent.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Option<MemoryCharge> {
        self.try_take(bytes).then(|| MemoryCharge { budget: self.clone(), bytes })
    }
}

/// Bytes held against the budget; given back on drop.
#[derive(Debug)]
pub struct MemoryCharge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_until_spent_and_returns_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.charge(60).unwrap();
        assert!(budget.charge(41).is_none());
        let b = budget.charge(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.charge(u64::MAX).is_none(), "no overflow");
    }
}
