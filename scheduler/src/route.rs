//! A service's route: its traffic targets resolved to live revisions. Percent splits are
//! weighted by a counter (deterministic: 10,000 requests split exactly by the weights), tags
//! route to their revision alone.

use crate::revision::Revision;
use crate::service::TrafficTarget;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a target's requests go: a live revision, or why it cannot serve.
#[derive(Clone)]
pub(crate) enum Target {
    Live(Arc<Revision>),
    Unavailable { revision: String, reason: String },
}

/// A traffic target resolved to a concrete revision.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) spec: TrafficTarget,
    /// The concrete revision name (`latestRevision` resolved).
    pub(crate) revision_name: String,
    pub(crate) target: Target,
}

#[derive(Default)]
pub(crate) struct Route {
    pub(crate) targets: Vec<Resolved>,
    /// Cumulative percent (1..=100) and the target index it ends at.
    split: Vec<(u32, usize)>,
    tags: HashMap<String, usize>,
    next: AtomicU64,
}

impl Route {
    pub(crate) fn new(targets: Vec<Resolved>) -> Self {
        let mut split = Vec::new();
        let mut tags = HashMap::new();
        let mut sum = 0;
        for (i, t) in targets.iter().enumerate() {
            if t.spec.percent > 0 {
                sum += t.spec.percent;
                split.push((sum, i));
            }
            if let Some(tag) = &t.spec.tag {
                tags.insert(tag.clone(), i);
            }
        }
        Self { targets, split, tags, next: AtomicU64::new(0) }
    }

    /// The target for a request: by tag if it names one, else by weight.
    pub(crate) fn pick(&self, tag: Option<&str>) -> Option<&Target> {
        if let Some(tag) = tag {
            return self.tags.get(tag).map(|&i| &self.targets[i].target);
        }
        match self.split.as_slice() {
            [] => None,
            [(_, only)] => Some(&self.targets[*only].target),
            split => {
                // Spread consecutive requests over the 100 slots (a stride coprime to 100), so a
                // 50/50 split alternates instead of sending 50 in a row to each side.
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let slot = ((n % 100) * 37 % 100) as u32;
                let i = split.iter().find(|(end, _)| slot < *end).map_or(split[split.len() - 1].1, |(_, i)| *i);
                Some(&self.targets[i].target)
            }
        }
    }

    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains_key(tag)
    }

    /// Whether any target (by percent or tag) routes to this revision.
    pub(crate) fn routes_to(&self, revision_name: &str) -> bool {
        self.targets.iter().any(|t| t.revision_name == revision_name && (t.spec.percent > 0 || t.spec.tag.is_some()))
    }

    /// The percent and tags of one revision.
    pub(crate) fn share_of(&self, revision_name: &str) -> (u32, Vec<String>) {
        let mut percent = 0;
        let mut tags = Vec::new();
        for t in self.targets.iter().filter(|t| t.revision_name == revision_name) {
            percent += t.spec.percent;
            tags.extend(t.spec.tag.clone());
        }
        (percent, tags)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stride_visits_every_slot_once_per_hundred() {
        let mut seen: Vec<u64> = (0..100).map(|n| n * 37 % 100).collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
