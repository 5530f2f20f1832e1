//! Scenario gate: what the activator costs when it never has to hold a request. Two services on
//! the same `hello` component: containerConcurrency 0 (no hard limit: the gate is open, one
//! atomic load) and containerConcurrency 1000 (a hard limit: every request takes and releases
//! a slot under the activator's lock, but one replica's 1000 slots are far above the
//! connections, so nothing ever queues). Both on a node of their own with `--max-ready N` (2 ×
//! the connections), the open one with min-scale N: both pools keep N ready instances, so the
//! services differ only in the gate. Closed loop at `--gate-connections`, runs interleaved
//! (open, gated, open, gated, ...) to spread drift over both; histograms merged over rounds;
//! `wisp_cold_starts_total` read around every run shows whether the pools really matched.

use crate::loadgen::{self, Latency, Run, Spec, Target};
use crate::node::{Gauges, HELLO, Service, Wisp};
use crate::{Plan, log};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct Side {
    pub service: &'static str,
    pub container_concurrency: u32,
    /// Every round merged.
    pub run: Run,
    pub rps: f64,
    pub rounds_rps: Vec<f64>,
    /// Node CPU per request, µs (all threads).
    pub node_us_per_req: f64,
    /// The load generator used more than 90% of a core: its req/s is a lower bound.
    pub bench_saturated: bool,
    /// Requests that found no pre-instantiated instance (`wisp_cold_starts_total`) during the
    /// measured runs, and during their warm-ups.
    pub cold_starts: f64,
    pub warmup_cold_starts: f64,
    /// The gauges after the last round: ready replicas × containerConcurrency is the gate's capacity.
    pub after: Gauges,
}

#[derive(Debug, Serialize)]
pub struct GateReport {
    pub connections: u32,
    pub rounds: u32,
    /// The gated service's ready replicas × containerConcurrency after the runs: above the
    /// connections, nothing could queue.
    pub gated_capacity: f64,
    pub open: Side,
    pub gated: Side,
    /// Gated over open: req/s (below 1: the gate costs throughput), p50 and p99 (above 1: it
    /// costs latency).
    pub ratio_rps: f64,
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    /// Per round, gated req/s over open req/s, and their median (robust to a round that
    /// other work on the machine slowed down).
    pub rounds_ratio_rps: Vec<f64>,
    pub median_ratio_rps: f64,
}

const SERVICES: [(&str, u32); 2] = [("gate-open", 0), ("gate-1000", 1000)];

pub fn run(plan: &Plan, wisp: &Wisp) -> anyhow::Result<GateReport> {
    let mut sides = Vec::new();
    for (name, cc) in SERVICES {
        // The pool keeps replicas × max(containerConcurrency, 1) ready instances (at most
        // --max-ready, at least twice the recent peak): min-scale gives the open service's pool
        // the same --max-ready instances the gated one gets from its 1000 slots, so the two
        // differ only in the gate. Replicas do nothing else while containerConcurrency is 0.
        let annotations = match cc {
            0 => vec![("autoscaling.knative.dev/min-scale", plan.gate_max_ready.to_string())],
            _ => Vec::new(),
        };
        let revision = wisp.apply(&Service { name, image: HELLO, container_concurrency: cc, annotations })?;
        wisp.check(&format!("/fn/{name}"))?;
        log(&format!("gate: {name} (containerConcurrency {cc}), revision {revision}"));
        sides.push(Side {
            service: name,
            container_concurrency: cc,
            run: Run::default(),
            rps: 0.0,
            rounds_rps: Vec::new(),
            node_us_per_req: 0.0,
            bench_saturated: false,
            cold_starts: 0.0,
            warmup_cold_starts: 0.0,
            after: Gauges::default(),
        });
    }
    // Each run: a warm-up run (the pool refills after the other service's turn), then the
    // measured one right after, with /metrics read around it for the cold starts inside it.
    let connections = plan.gate_connections as usize;
    let warmup =
        Spec { connections, warmup: Duration::ZERO, duration: Duration::from_secs_f64(plan.gate_warmup_s), rate: None };
    let spec = Spec { duration: Duration::from_secs_f64(plan.gate_duration_s), ..warmup };
    for round in 1..=plan.gate_rounds {
        for side in &mut sides {
            let target =
                Target { addr: wisp.addr, path: format!("/fn/{}", side.service), pid: wisp.pid, authorization: None };
            let before_warmup = wisp.gauges(side.service)?.cold_starts;
            loadgen::run(&target, warmup)?;
            let before = wisp.gauges(side.service)?.cold_starts;
            let run = loadgen::run(&target, spec)?;
            let after = wisp.gauges(side.service)?.cold_starts;
            side.warmup_cold_starts += before - before_warmup;
            side.cold_starts += after - before;
            log(&format!(
                "gate round {round}: {:<10} {}, {} cold starts ({} in the warm-up)",
                side.service,
                run.describe(),
                after - before,
                before - before_warmup
            ));
            side.rounds_rps.push(run.rps());
            side.run.merge(&run);
        }
    }
    for side in &mut sides {
        side.rps = side.run.rps();
        side.node_us_per_req = side.run.server_us_per_req();
        side.bench_saturated = side.run.saturated();
        side.after = wisp.gauges(side.service)?;
    }
    let gated = sides.pop().expect("two sides");
    let open = sides.pop().expect("two sides");
    let (o, g): (Latency, Latency) = (open.run.hist.latency(), gated.run.hist.latency());
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    let rounds_ratio_rps: Vec<f64> =
        gated.rounds_rps.iter().zip(&open.rounds_rps).map(|(g, o)| ratio(*g, *o)).collect();
    let mut sorted = rounds_ratio_rps.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median_ratio_rps = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    Ok(GateReport {
        connections: plan.gate_connections,
        gated_capacity: gated.after.ready * f64::from(gated.container_concurrency),
        rounds: plan.gate_rounds,
        ratio_rps: ratio(gated.rps, open.rps),
        ratio_p50: ratio(g.p50_us, o.p50_us),
        ratio_p99: ratio(g.p99_us, o.p99_us),
        rounds_ratio_rps,
        median_ratio_rps,
        open,
        gated,
    })
}
