//! Throughput: each component on Wisp (`/fn/NAME`) and on its own `wasmtime serve` (`/`), closed
//! loop over keep-alive connections, rounds alternating between the two (which goes first
//! swaps every round). Then the same with instance reuse on both sides.
//!
//! Each run is a warm-up run (not recorded), a `/metrics` scrape, the measured run and another
//! scrape: Wisp's on-demand instantiations (`wisp_cold_starts_total`) are counted over exactly
//! the measured requests.

use crate::deploy::{Mem, mem, post_function};
use crate::loadgen::{self, Run, Spec, Target};
use crate::wasmtime::{Wasmtime, spawn_or_status};
use crate::{Component, Ctx, Plan, Status, log, probe};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use wisp_testkit::Node;

/// One side of a comparison, its rounds merged.
#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub status: Status,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub errors: u64,
    pub non_2xx: u64,
    /// The server's CPU time per measured request (all its threads), µs.
    pub server_us_per_req: f64,
    /// The load generator's CPU, % of one core: above 90 it may be the bottleneck.
    pub bench_cpu_pct: f64,
    pub rps_rounds: Vec<f64>,
    /// Wisp only: measured requests that found no ready instance and instantiated on demand.
    pub on_demand: Option<u64>,
    pub on_demand_pct: Option<f64>,
    /// Wisp only: the node's recent average instantiation time after the runs
    /// (`wisp_instantiation_seconds`), ms.
    pub instantiation_ms: Option<f64>,
    #[serde(skip)]
    run: Run,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub lang: &'static str,
    pub connections: usize,
    /// Requests one instance may serve (both sides), or `None`: one instance per request.
    pub reuse: Option<u32>,
    pub wisp: Side,
    pub wasmtime: Side,
    /// Wisp's requests/s over `wasmtime serve`'s, when both ran.
    pub ratio: Option<f64>,
}

/// A server's memory at the end of its runs.
#[derive(Debug, Serialize)]
pub struct ServerMem {
    pub server: String,
    pub mem: Mem,
    /// `wasmtime serve`: seconds from its spawn to the first 200.
    pub ready_s: Option<f64>,
}

pub struct Results {
    pub plain: Vec<Row>,
    pub reuse: Vec<Row>,
    pub servers_rss: Vec<ServerMem>,
}

/// What one side runs against, or why it cannot.
struct Contender<'a> {
    target: Result<Target, Status>,
    /// Wisp: the function, for its metrics.
    function: Option<&'a str>,
}

pub fn run(
    plan: &Plan,
    ctx: &Ctx,
    components: &[Component; 2],
    node: &Node,
    wasmtime_bin: Result<&Path, Status>,
) -> anyhow::Result<Results> {
    let mut servers_rss = Vec::new();
    let mut phases = Vec::new();
    for reuse in [None, Some(plan.reuse)] {
        let suffix = if reuse.is_some() { "-reuse" } else { "" };
        // Wisp: reuse needs a second deployment of each component (the same bytes, so the
        // compile cache has it).
        let functions: Vec<(String, Status)> = components
            .iter()
            .map(|c| {
                let name = format!("{}{suffix}", c.lang.function);
                let status = match reuse {
                    Some(n) => deploy_reuse(node, &name, n, c),
                    None => Status::Ok,
                };
                (name, status)
            })
            .collect();
        let baselines: Vec<Result<Wasmtime, Status>> = components
            .iter()
            .map(|c| {
                let log_file = ctx.logs.join(format!("wasmtime-{}{suffix}.log", c.lang.function));
                let server = spawn_or_status(&wasmtime_bin, &c.path, reuse, &log_file)
                    .and_then(|w| probe(w.addr, "/", c.lang.greeting).map(|()| w));
                match &server {
                    Ok(w) => {
                        log(&format!("wasmtime serve {}{suffix}: ready after {:.1} s", c.lang.function, w.ready_s))
                    }
                    Err(status) => log(&format!("wasmtime serve {}{suffix}: {status}", c.lang.function)),
                }
                server
            })
            .collect();
        let mut rows = Vec::new();
        for ((c, (function, status)), baseline) in components.iter().zip(&functions).zip(&baselines) {
            let wisp = Contender {
                target: match status {
                    Status::Ok => Ok(Target {
                        addr: node.addr,
                        path: format!("/fn/{function}"),
                        pid: node.pid(),
                        authorization: None,
                    }),
                    other => Err(other.clone()),
                },
                function: Some(function),
            };
            let wasmtime =
                Contender { target: baseline.as_ref().map(Wasmtime::target).map_err(Clone::clone), function: None };
            for &connections in &plan.connections {
                rows.push(compare(plan, c.lang.name, connections, reuse, &wisp, &wasmtime));
            }
        }
        for (c, baseline) in components.iter().zip(&baselines) {
            if let Ok(w) = baseline {
                servers_rss.push(ServerMem {
                    server: format!("wasmtime serve {}{suffix}", c.lang.function),
                    mem: mem(w.pid()),
                    ready_s: Some(w.ready_s),
                });
            }
        }
        let label = if reuse.is_some() { "after the reuse runs" } else { "after the runs with reuse off" };
        servers_rss.push(ServerMem { server: format!("wisp node, {label}"), mem: mem(node.pid()), ready_s: None });
        phases.push(rows);
        // The baselines stop here (dropped), before the next phase starts its own.
    }
    let reuse = phases.pop().unwrap_or_default();
    let plain = phases.pop().unwrap_or_default();
    Ok(Results { plain, reuse, servers_rss })
}

/// Deploys `name` with `max_instance_reuse_count=n`; a node that does not know the setting
/// (400) makes the reuse rows "not available".
fn deploy_reuse(node: &Node, name: &str, n: u32, c: &Component) -> Status {
    let (resp, seconds) = post_function(node, name, &format!("max_instance_reuse_count={n}"), &c.bytes);
    let status = match resp {
        Ok((201, _)) => probe(node.addr, &format!("/fn/{name}"), c.lang.greeting).err().unwrap_or_default(),
        Ok((400, body)) => Status::NotAvailable(format!("the node refused max_instance_reuse_count: 400 {body}")),
        Ok((code, body)) => Status::failed(format!("deploying {name}: {code} {body}")),
        Err(e) => Status::failed(format!("deploying {name}: {e:#}")),
    };
    log(&format!("deploy {name} (max_instance_reuse_count={n}): {status} in {seconds:.2} s"));
    status
}

fn compare(
    plan: &Plan,
    lang: &'static str,
    connections: usize,
    reuse: Option<u32>,
    wisp: &Contender,
    wasmtime: &Contender,
) -> Row {
    let side = |c: &Contender| Side { status: c.target.as_ref().err().cloned().unwrap_or_default(), ..Side::default() };
    let mut sides = [side(wisp), side(wasmtime)];
    // Counted for Wisp only (from its /metrics): wasmtime serve instantiates for every request.
    sides[0].on_demand = wisp.function.map(|_| 0);
    let contenders = [wisp, wasmtime];
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let name = if i == 0 { "wisp" } else { "wasmtime" };
            let what = format!("{lang} c={connections}{} {name:>8} round {}", reuse_label(reuse), round + 1);
            measure(plan, connections, contenders[i], &mut sides[i], &what);
        }
    }
    let [mut wisp_side, mut wasmtime_side] = sides;
    for (s, c) in [(&mut wisp_side, wisp), (&mut wasmtime_side, wasmtime)] {
        finish(s);
        if let (Some(function), Ok(target)) = (c.function, &c.target) {
            let series = format!("wisp_instantiation_seconds{{function=\"{function}\"}}");
            s.instantiation_ms = scrape(target, &series).map(|v| v * 1000.0);
        }
    }
    let ratio =
        (wisp_side.status.is_ok() && wasmtime_side.status.is_ok()).then(|| wisp_side.rps / wasmtime_side.rps.max(1e-9));
    if let Some(r) = ratio {
        log(&format!("{lang} c={connections}{}: Wisp/wasmtime {r:.2}x", reuse_label(reuse)));
    }
    Row { lang, connections, reuse, wisp: wisp_side, wasmtime: wasmtime_side, ratio }
}

fn reuse_label(reuse: Option<u32>) -> String {
    reuse.map_or(String::new(), |n| format!(" reuse={n}"))
}

/// One warm-up run and one measured run of `c`, merged into `side`.
fn measure(plan: &Plan, connections: usize, c: &Contender, side: &mut Side, what: &str) {
    let Ok(target) = &c.target else { return };
    if !side.status.is_ok() {
        return;
    }
    let spec =
        |secs: f64| Spec { connections, warmup: Duration::ZERO, duration: Duration::from_secs_f64(secs), rate: None };
    let cold = |t: &Target| c.function.and_then(|f| scrape(t, &format!("wisp_cold_starts_total{{function=\"{f}\"}}")));
    let result = loadgen::run(target, spec(plan.warmup_s)).and_then(|_| {
        let before = cold(target);
        let run = loadgen::run(target, spec(plan.secs))?;
        Ok((run, before, cold(target)))
    });
    match result {
        Ok((run, before, after)) => {
            let on_demand = before.zip(after).map(|(b, a)| (a - b).max(0.0) as u64);
            side.on_demand = side.on_demand.zip(on_demand).map(|(sum, n)| sum + n);
            let cold = on_demand.map_or(String::new(), |n| format!("  on demand {n}"));
            log(&format!("{what}: {}{cold}", run.describe()));
            side.rps_rounds.push(run.rps());
            side.run.merge(&run);
        }
        Err(e) => side.status = Status::failed(format!("{e:#}")),
    }
    // Let one server's tail work finish before the other's run.
    std::thread::sleep(Duration::from_millis(100));
}

/// Fills in the summary numbers from the merged run; failed requests fail the side.
fn finish(s: &mut Side) {
    let r = &s.run;
    let l = r.hist.latency();
    (s.rps, s.p50_us, s.p99_us) = (r.rps(), l.p50_us, l.p99_us);
    (s.requests, s.errors, s.non_2xx) = (r.requests, r.errors, r.non_2xx);
    s.server_us_per_req = r.server_us_per_req();
    s.bench_cpu_pct = r.pct(r.bench_cpu_s);
    s.on_demand_pct = s.on_demand.filter(|_| r.requests > 0).map(|n| n as f64 * 100.0 / r.requests as f64);
    if s.status.is_ok() && r.errors + r.non_2xx > 0 {
        let first = r.first_error.as_deref().unwrap_or("non-2xx answers");
        s.status = Status::failed(format!("{} errors, {} non-2xx (first: {first})", r.errors, r.non_2xx));
    }
}

/// One series of the node's /metrics.
fn scrape(target: &Target, series: &str) -> Option<f64> {
    let text = crate::http("GET", target.addr, "/metrics", None).ok()?.body;
    wisp_testkit::metric_value(&text, series)
}
