//! Prometheus metrics. Per-function counters are atomics resolved once per function, so the
//! request path does no formatting and no allocation after a function's first request.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wisp_runtime::Outcome;
use wisp_scheduler::Scheduler;

/// Histogram bucket upper bounds, in microseconds.
const BUCKETS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

#[derive(Default)]
struct FunctionMetrics {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    cold_starts: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    functions: RwLock<HashMap<Arc<str>, Arc<FunctionMetrics>>>,
    pub(crate) shed: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, function: &str, outcome: Outcome, cold: bool, wall: Duration) {
        let existing = self.functions.read().unwrap().get(function).cloned();
        let m = existing.unwrap_or_else(|| self.functions.write().unwrap().entry(function.into()).or_default().clone());
        let idx = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        m.outcomes[idx].fetch_add(1, Relaxed);
        if cold {
            m.cold_starts.fetch_add(1, Relaxed);
        }
        let us = wall.as_micros() as u64;
        // Buckets are stored non-cumulatively and summed when rendered.
        if let Some(b) = BUCKETS_US.iter().position(|&le| us <= le) {
            m.buckets[b].fetch_add(1, Relaxed);
        }
        m.sum_us.fetch_add(us, Relaxed);
        m.count.fetch_add(1, Relaxed);
    }

    pub fn render(&self, scheduler: &Scheduler) -> String {
        let mut out = String::with_capacity(4096);
        let functions = self.functions.read().unwrap();
        let mut names: Vec<&Arc<str>> = functions.keys().collect();
        names.sort();

        header(&mut out, "wisp_invocations_total", "counter", "Function invocations by outcome.");
        for name in &names {
            for (i, outcome) in Outcome::ALL.iter().enumerate() {
                let n = functions[*name].outcomes[i].load(Relaxed);
                let _ = writeln!(out, "wisp_invocations_total{{function=\"{name}\",outcome=\"{}\"}} {n}", outcome.as_str());
            }
        }
        header(&mut out, "wisp_cold_starts_total", "counter", "Invocations that had to instantiate on demand.");
        for name in &names {
            let _ = writeln!(out, "wisp_cold_starts_total{{function=\"{name}\"}} {}", functions[*name].cold_starts.load(Relaxed));
        }
        let histogram = "wisp_invocation_duration_seconds";
        header(&mut out, histogram, "histogram", "Wall time of invocations, gateway excluded.");
        for name in &names {
            let m = &functions[*name];
            let mut cumulative = 0;
            for (i, le) in BUCKETS_US.iter().enumerate() {
                cumulative += m.buckets[i].load(Relaxed);
                let _ = writeln!(out, "{histogram}_bucket{{function=\"{name}\",le=\"{}\"}} {cumulative}", *le as f64 / 1e6);
            }
            let count = m.count.load(Relaxed);
            let _ = writeln!(out, "{histogram}_bucket{{function=\"{name}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{histogram}_sum{{function=\"{name}\"}} {}", m.sum_us.load(Relaxed) as f64 / 1e6);
            let _ = writeln!(out, "{histogram}_count{{function=\"{name}\"}} {count}");
        }
        drop(functions);

        let deployed = scheduler.list();
        header(&mut out, "wisp_ready_instances", "gauge", "Pre-instantiated instances waiting for a request.");
        for f in &deployed {
            let _ = writeln!(out, "wisp_ready_instances{{function=\"{}\"}} {}", f.name, f.ready_instances);
        }
        header(&mut out, "wisp_in_flight", "gauge", "Invocations running now.");
        for f in &deployed {
            let _ = writeln!(out, "wisp_in_flight{{function=\"{}\"}} {}", f.name, f.in_flight);
        }
        let cache = scheduler.cache_stats();
        let pool = scheduler.runtime().pool_usage();
        let node_wide: [(&str, &str, &str, u64); 6] = [
            ("wisp_compile_cache_hits_total", "counter", "Components loaded from the compile cache.", cache.hits),
            ("wisp_compile_cache_misses_total", "counter", "Components compiled because the cache had none.", cache.misses),
            (
                "wisp_pool_instances",
                "gauge",
                "Component instances allocated in the pool (ready, running, awaiting reset).",
                pool.component_instances,
            ),
            ("wisp_pool_instances_limit", "gauge", "The pool's capacity (--pool-instances).", pool.component_instances_limit.into()),
            (
                "wisp_pool_unused_memory_resident_bytes",
                "gauge",
                "Memory kept resident in free pool slots.",
                pool.unused_memory_bytes_resident as u64,
            ),
            (
                "wisp_requests_shed_total",
                "counter",
                "Requests refused with 429 because the node was at its concurrency limit.",
                self.shed.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in node_wide {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
