//! Metrics through `prometheus-client`. Invocation metrics are recorded on the one invoke path,
//! so every source (HTTP, triggers, async) shows up; each function's handles are resolved once
//! when it is activated, so the request path only touches atomics, and its series are removed
//! on delete. Gauges (pools, cache, budget, ledger) are read at scrape time by `NodeCollector`.

use crate::Inner;
use crate::ScalingStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Weak;
use std::time::Duration;
use wisp_ledger::Outcome;
use wisp_runtime::{Workload, WorkloadStats};

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

/// Node-wide and per-function gauges read at scrape time from the live state, so they need no
/// bookkeeping on the request path and vanish with their function.
pub(crate) struct NodeCollector(pub(crate) Weak<Inner>);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let g = ConstGauge::new(value as i64);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(inner) = self.0.upgrade() else { return Ok(()) };
        let mut services = inner.services();
        services.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        // Per function: summed over its live revisions.
        let per_function: Vec<(&str, WorkloadStats, u32)> = services
            .iter()
            .map(|s| {
                let mut sum = WorkloadStats::default();
                for r in s.live.values() {
                    let stats = r.live.stats();
                    sum.ready += stats.ready;
                    sum.in_flight += stats.in_flight;
                    sum.instantiation = sum.instantiation.max(stats.instantiation);
                }
                (&*s.state.name, sum, inner.concurrency_limit(&s.latest().settings))
            })
            .collect();
        type Read = fn(&WorkloadStats, u32) -> i64;
        let function_gauges: [(&str, &str, Read); 3] = [
            ("wisp_ready_instances", "Pre-instantiated instances waiting for a request", |s, _| s.ready as i64),
            ("wisp_in_flight", "Invocations running now", |s, _| s.in_flight as i64),
            (
                "wisp_function_concurrency_limit",
                "Invocations a function may run at once (max_concurrency or --function-concurrency)",
                |_, limit| limit.into(),
            ),
        ];
        for (name, help, read) in function_gauges {
            let g = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            for (function, stats, limit) in &per_function {
                ConstGauge::new(read(stats, *limit)).encode(family.encode_family(&[("function", *function)])?)?;
            }
        }
        let g = ConstGauge::new(0f64);
        let help = "Recent average time to instantiate the function's component (slowest live revision)";
        let mut family = encoder.encode_descriptor("wisp_instantiation_seconds", help, None, g.metric_type())?;
        for (function, stats, _) in &per_function {
            ConstGauge::new(stats.instantiation.as_secs_f64())
                .encode(family.encode_family(&[("function", *function)])?)?;
        }
        // Per revision: the autoscaler's view.
        let revisions: Vec<(&str, &str, ScalingStatus)> = services
            .iter()
            .flat_map(|s| s.live.values().map(|r| (&*s.state.name, r.stored.name.as_str(), r.status())))
            .collect();
        type ReadScaling = fn(&ScalingStatus) -> f64;
        let revision_gauges: [(&str, &str, ReadScaling); 8] = [
            ("wisp_revision_desired_replicas", "Replicas the KPA decider wants", |s| s.desired_replicas.into()),
            ("wisp_revision_ready_replicas", "Replicas granted (activator capacity / containerConcurrency)", |s| {
                s.ready_replicas.into()
            }),
            ("wisp_revision_panic", "1 while the autoscaler is in panic mode", |s| u8::from(s.panic).into()),
            ("wisp_revision_stable_concurrency", "Average concurrency over the stable window", |s| {
                s.stable_concurrency
            }),
            ("wisp_revision_panic_concurrency", "Average concurrency over the panic window", |s| s.panic_concurrency),
            ("wisp_revision_stable_rps", "Requests per second over the stable window", |s| s.stable_rps),
            ("wisp_revision_panic_rps", "Requests per second over the panic window", |s| s.panic_rps),
            ("wisp_revision_activator_queue", "Requests waiting in the activator", |s| s.activator_queue as f64),
        ];
        for (name, help, read) in revision_gauges {
            let g = ConstGauge::new(0f64);
            let mut family = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            for (function, revision, status) in &revisions {
                let labels = [("function", *function), ("revision", *revision)];
                ConstGauge::new(read(status)).encode(family.encode_family(&labels)?)?;
            }
        }
        let runtime = &inner.runtime;
        let (cache, pool, budget, config) =
            (runtime.cache_stats(), runtime.pool_usage(), runtime.memory_budget(), runtime.config());
        let ledger = inner.ledger.stats();
        counter(&mut encoder, "wisp_compile_cache_hits", "Components loaded from the compile cache", cache.hits)?;
        counter(
            &mut encoder,
            "wisp_compile_cache_misses",
            "Components compiled because the cache had none",
            cache.misses,
        )?;
        gauge(
            &mut encoder,
            "wisp_loaded_components",
            "Compiled components held in memory",
            runtime.loaded_components() as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_pool_instances",
            "Component instances allocated in the pool (ready, running, awaiting reset)",
            pool.component_instances,
        )?;
        gauge(
            &mut encoder,
            "wisp_pool_instances_limit",
            "The pool's capacity (--pool-instances)",
            pool.component_instances_limit.into(),
        )?;
        gauge(
            &mut encoder,
            "wisp_pool_unused_memory_resident_bytes",
            "Memory kept resident in free pool slots",
            pool.unused_memory_bytes_resident as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_memory_budget_bytes",
            "Node-wide budget for guest memory and buffered bodies (--memory-budget)",
            budget.limit(),
        )?;
        gauge(
            &mut encoder,
            "wisp_memory_budget_used_bytes",
            "Bytes charged against the memory budget now",
            budget.used(),
        )?;
        gauge(
            &mut encoder,
            "wisp_host_resources_limit",
            "Host resources one instance may hold (--max-resources)",
            config.max_resources as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_host_field_size_limit_bytes",
            "Largest wasi:http fields resource (--max-field-size)",
            config.max_field_size as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_functions_failed",
            "Functions whose latest revision could not be loaded",
            services.iter().filter(|s| s.failed.contains_key(&s.latest().revision)).count() as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_usage_queue_depth",
            "Usage records waiting for the ledger writer",
            ledger.queue_depth as u64,
        )?;
        gauge(
            &mut encoder,
            "wisp_usage_queue_capacity",
            "Capacity of the ledger queue (--ledger-queue)",
            ledger.queue_capacity as u64,
        )?;
        counter(&mut encoder, "wisp_usage_written", "Usage records written to the ledger", ledger.written_total)?;
        counter(
            &mut encoder,
            "wisp_usage_dropped",
            "Usage records dropped because the ledger queue was full",
            ledger.dropped_total,
        )?;
        counter(
            &mut encoder,
            "wisp_usage_write_errors",
            "Ledger batch writes that failed and were retried",
            ledger.write_errors_total,
        )?;
        Ok(())
    }
}
