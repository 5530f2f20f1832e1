//! Invocation metrics, recorded on the one invoke path so every source (HTTP, triggers, async)
//! shows up, through `prometheus-client`. Each function's handles are resolved once when it is
//! activated, so the request path only touches atomics; its series are removed on delete.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;
use wisp_ledger::Outcome;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The node's invocation metric families.
pub(crate) struct Metrics {
    invocations: Family<OutcomeLabels, Counter>,
    cold_starts: Family<FunctionLabel, Counter>,
    throttled: Family<FunctionLabel, Counter>,
    duration: Family<FunctionLabel, Histogram, fn() -> Histogram>,
}

/// One function's handles into the families.
#[derive(Clone)]
pub(crate) struct FunctionMetrics {
    outcomes: [Counter; Outcome::ALL.len()],
    cold_starts: Counter,
    pub(crate) throttled: Counter,
    duration: Histogram,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            invocations: Family::default(),
            cold_starts: Family::default(),
            throttled: Family::default(),
            duration: Family::new_with_constructor(histogram),
        };
        registry.register(
            "wisp_invocations",
            "Function invocations by outcome, from every source",
            metrics.invocations.clone(),
        );
        registry.register(
            "wisp_cold_starts",
            "Invocations that had to instantiate on demand",
            metrics.cold_starts.clone(),
        );
        registry.register(
            "wisp_throttled",
            "Invocations refused with 429 because the function was at its max_concurrency",
            metrics.throttled.clone(),
        );
        registry.register(
            "wisp_invocation_duration_seconds",
            "Wall time of invocations, gateway excluded",
            metrics.duration.clone(),
        );
        metrics
    }

    pub(crate) fn function(&self, name: &str) -> FunctionMetrics {
        let label = FunctionLabel { function: name.to_string() };
        FunctionMetrics {
            outcomes: Outcome::ALL.map(|outcome| {
                self.invocations
                    .get_or_create(&OutcomeLabels { function: name.to_string(), outcome: outcome.as_str() })
                    .clone()
            }),
            cold_starts: self.cold_starts.get_or_create(&label).clone(),
            throttled: self.throttled.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
        }
    }

    /// Drops a deleted function's series.
    pub(crate) fn remove(&self, name: &str) {
        let label = FunctionLabel { function: name.to_string() };
        for outcome in Outcome::ALL {
            self.invocations.remove(&OutcomeLabels { function: name.to_string(), outcome: outcome.as_str() });
        }
        self.cold_starts.remove(&label);
        self.throttled.remove(&label);
        self.duration.remove(&label);
    }
}

impl FunctionMetrics {
    pub(crate) fn observe(&self, outcome: Outcome, cold: bool, wall: Duration) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].inc();
        if cold {
            self.cold_starts.inc();
        }
        self.duration.observe(wall.as_secs_f64());
    }
}
