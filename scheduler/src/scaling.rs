//! A revision's autoscaling knobs: Knative's KPA annotations (`autoscaling.knative.dev/*`),
//! parsed and validated by the manifest crate, stored with the revision's settings. The stable
//! window is `Settings::idle_timeout_ms` and the activation scale `Settings::min_warm`: the
//! knobs `wisp deploy` always had are the same numbers under their Knative names.

use serde::{Deserialize, Serialize};

/// Which metric the autoscaler scales on (`autoscaling.knative.dev/metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// In-flight requests per replica (activator-queued ones included).
    #[default]
    Concurrency,
    /// Requests per second per replica.
    Rps,
}

/// Per-revision KPA settings; every field defaults to Knative's default when missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scaling {
    pub metric: Metric,
    /// `autoscaling.knative.dev/target`: the soft per-replica target. `None`: the
    /// revision's `containerConcurrency` if set, else 100 (concurrency) or 200 (rps).
    pub target: Option<f64>,
    /// `target-utilization-percentage` (1..100): the share of the target aimed for.
    pub target_utilization_percentage: f64,
    /// `panic-window-percentage` (1..100) of the stable window.
    pub panic_window_percentage: f64,
    /// `panic-threshold-percentage` (110..1000): panic when the panic-window demand reaches
    /// this share of the ready capacity.
    pub panic_threshold_percentage: f64,
    /// `min-scale`: replicas kept while the revision is routed.
    pub min_scale: u32,
    /// `max-scale`: 0 means unlimited.
    pub max_scale: u32,
    /// `initial-scale`: replicas a new revision starts with, and must reach before it is Ready.
    pub initial_scale: u32,
    /// `scale-down-delay`: scale down only to the highest desired count of this long ago.
    pub scale_down_delay_ms: u64,
    /// `scale-to-zero-pod-retention-period`: the last replica stays at least this long after
    /// the revision went idle.
    pub scale_to_zero_retention_ms: u64,
    /// `target-burst-capacity`: spare capacity (in requests) below which the activator stays
    /// in the path; -1 keeps it there always, 0 only at zero.
    pub target_burst_capacity: f64,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            metric: Metric::Concurrency,
            target: None,
            target_utilization_percentage: 70.0,
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            min_scale: 0,
            max_scale: 0,
            initial_scale: 1,
            scale_down_delay_ms: 0,
            scale_to_zero_retention_ms: 0,
            target_burst_capacity: 211.0,
        }
    }
}

impl Scaling {
    /// The per-replica target before utilization: the annotation, capped by a hard
    /// `container_concurrency` for the concurrency metric; else the defaults.
    pub fn total_target(&self, container_concurrency: u32) -> f64 {
        let cc = container_concurrency as f64;
        match (self.metric, self.target) {
            (Metric::Concurrency, Some(t)) if container_concurrency > 0 => t.min(cc),
            (_, Some(t)) => t,
            (Metric::Concurrency, None) if container_concurrency > 0 => cc,
            (Metric::Concurrency, None) => 100.0,
            (Metric::Rps, None) => 200.0,
        }
    }

    /// What one replica is aimed to carry: the total target times utilization, at least 0.01.
    pub fn replica_target(&self, container_concurrency: u32) -> f64 {
        (self.total_target(container_concurrency) * self.target_utilization_percentage / 100.0).max(0.01)
    }
}
