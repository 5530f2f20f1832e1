//! Scenario density: one node per level K with `--pool-instances K+100 --max-ready 1`; deploy K
//! idle functions (`min_warm=0`), measure; then K warm ones (`min_warm=1`, one ready instance
//! each), measure. Levels grow until something breaks or the time budget runs out. The first
//! failure is classified from the HTTP status of the failed deploy (503: out of capacity), the
//! node's pool gauges and its footprint.

use crate::sys::{self, Footprint, Machine};
use crate::{Ctx, Plan, Status, log, metrics};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wisp_testkit::{Node, metric_samples, metric_value};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Level {
    pub functions: usize,
    pub pool_instances: u64,
    pub status: Status,
    /// Right after start-up, nothing deployed.
    pub empty: Option<Footprint>,
    /// After the first function (the component compiled and loaded once for the node).
    pub base: Option<Footprint>,
    /// After K idle functions (`min_warm=0`).
    pub idle: Option<Footprint>,
    /// After K more functions with one ready instance each.
    pub warm: Option<Footprint>,
    pub idle_deployed: usize,
    pub warm_deployed: usize,
    /// Ready warm instances reached.
    pub warm_ready: usize,
    pub deploys_per_s: f64,
    pub rss_per_idle_function_kib: Option<f64>,
    /// Deployment plus its ready instance.
    pub rss_per_warm_function_kib: Option<f64>,
    /// A warm function minus an idle one: what the ready instance itself costs.
    pub rss_per_warm_instance_kib: Option<f64>,
    pub maps_per_warm_instance: Option<f64>,
    /// The first failed deploy: HTTP status (None: no response) and message.
    pub failed_deploy: Option<(Option<u16>, String)>,
    /// `wisp_pool_instances` / `wisp_pool_instances_limit` when the level ended.
    pub pool_gauges: Option<(f64, f64)>,
    pub node_exit: Option<String>,
}

impl Level {
    /// The last footprint taken.
    pub fn last(&self) -> Option<Footprint> {
        self.warm.or(self.idle).or(self.base).or(self.empty)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DensityReport {
    /// Deploy requests that succeeded, all levels.
    pub requests: u64,
    pub budget_s: f64,
    pub levels: Vec<Level>,
    /// Which resource ran out first, and the evidence.
    pub first_limit: Option<String>,
    /// Largest K with one warm instance each that fits in vm.max_map_count, by `map_count_model`.
    pub max_warm_by_map_count: Option<f64>,
    pub map_count_model: Option<String>,
}

pub fn run(plan: &Plan, ctx: &Ctx, machine: &Machine) -> DensityReport {
    let mut report = DensityReport { budget_s: plan.density_budget.as_secs_f64(), ..DensityReport::default() };
    let started = Instant::now();
    let mut rate: Option<f64> = None;
    for &k in &plan.density_levels {
        let left = plan.density_budget.as_secs_f64() - started.elapsed().as_secs_f64();
        // Two deploys per function at the last level's rate, plus start-up and settling.
        if let Some(needed) = rate.map(|r| 2.0 * k as f64 / r + 15.0).filter(|needed| *needed > left) {
            let why = format!("needs ~{needed:.0} s at the last level's deploy rate, {left:.0} s of the budget left");
            report.levels.push(Level { functions: k, status: Status::Skipped(why), ..Level::default() });
            continue;
        }
        let level = run_level(k, ctx);
        report.requests += (level.idle_deployed + level.warm_deployed) as u64;
        rate = Some(level.deploys_per_s).filter(|r| *r > 0.0).or(rate);
        let failed = !level.status.is_ok();
        if failed {
            report.first_limit = Some(classify(&level, machine.vm_max_map_count, machine.open_files_limit));
        }
        report.levels.push(level);
        if failed {
            break;
        }
    }
    // An empty node has `a + b * pool` maps and each warm instance adds `c`; with pool = K + 100,
    // solve for the K where vm.max_map_count runs out.
    let measured: Vec<(f64, f64)> =
        report.levels.iter().filter_map(|l| Some((l.pool_instances as f64, l.empty?.maps as f64))).collect();
    if let (Some(max), &[(p0, e0), (p1, e1), ..]) = (machine.vm_max_map_count, &measured[..]) {
        let b = (e1 - e0) / (p1 - p0);
        let a = e0 - b * p0;
        let c = report.levels.iter().find_map(|l| l.maps_per_warm_instance).unwrap_or(0.0);
        if b + c > 0.0 {
            report.max_warm_by_map_count = Some(((max as f64 - a - b * 100.0) / (b + c)).floor());
            report.map_count_model = Some(format!("maps ≈ {a:.0} + {b:.2} per pool slot + {c:.2} per warm instance"));
        }
    }
    report
}

fn run_level(k: usize, ctx: &Ctx) -> Level {
    let pool = k as u64 + 100;
    let mut level = Level { functions: k, pool_instances: pool, ..Level::default() };
    let node = Node::builder(&ctx.wisp_bin, ctx.work.join(format!("density-{k}")))
        .args(["--pool-instances", &pool.to_string(), "--max-ready", "1"])
        .env("RUST_LOG", "info,wasmtime=warn")
        .log_file(ctx.logs.join(format!("density-{k}.log")))
        .spawn();
    let mut node = match node {
        Ok(n) => n,
        Err(e) => {
            level.status = Status::failed("node did not start");
            level.node_exit = Some(format!("{e:#}"));
            log(&format!("density K={k}: node did not start: {e:#}"));
            return level;
        }
    };
    let pid = node.pid();
    level.empty = Some(sys::footprint(pid));
    let settle = || std::thread::sleep(Duration::from_millis(300));

    // The first function alone: it compiles the component (once per node), a one-time cost
    // kept out of the per-function numbers by measuring `base` after it.
    let mut idle = deploy_many(&node, "idle-", 0..1, "min_warm=0&idle_timeout=1h", ctx, 1);
    settle();
    level.base = Some(sys::footprint(pid));
    if idle.failure.is_none() {
        let rest = deploy_many(&node, "idle-", 1..k, "min_warm=0&idle_timeout=1h", ctx, 4);
        idle = Deployed { ok: idle.ok + rest.ok, secs: idle.secs + rest.secs, failure: rest.failure };
    }
    level.idle_deployed = idle.ok;
    settle();
    level.idle = Some(sys::footprint(pid));
    log(&format!("density K={k}: {} idle deployed in {:.1} s", idle.ok, idle.secs));
    let mut deploy_s = idle.secs;
    if let Some(f) = idle.failure {
        level.status = Status::failed("deploying idle functions");
        level.failed_deploy = Some(f);
    } else {
        let t = Instant::now();
        let warm = deploy_many(&node, "warm-", 0..k, "min_warm=1&idle_timeout=1h", ctx, 4);
        (level.warm_deployed, deploy_s) = (warm.ok, deploy_s + warm.secs);
        level.warm_ready = wait_ready(&mut node, k);
        let ready_s = t.elapsed().as_secs_f64();
        settle();
        level.warm = node.exited().is_none().then(|| sys::footprint(pid));
        if let Some(f) = warm.failure {
            level.status = Status::failed("deploying warm functions");
            level.failed_deploy = Some(f);
        } else if level.warm_ready < k {
            level.status = Status::failed(format!("only {} of {k} warm instances became ready", level.warm_ready));
        }
        let (ok, ready) = (warm.ok, level.warm_ready);
        log(&format!("density K={k}: {ok} warm deployed in {:.1} s, {ready} ready after {ready_s:.1} s", warm.secs));
    }
    level.deploys_per_s = (level.idle_deployed + level.warm_deployed) as f64 / deploy_s.max(1e-9);
    // (after − before) / n of one footprint field.
    let per = |before: Option<Footprint>, after: Option<Footprint>, n: usize, field: fn(Footprint) -> u64| {
        Some((field(after?) as f64 - field(before?) as f64) / (n > 0).then_some(n as f64)?)
    };
    let idle_fns = level.idle_deployed.saturating_sub(1); // after the first one (`base`)
    level.rss_per_idle_function_kib = per(level.base, level.idle, idle_fns, |f| f.rss_kib);
    level.rss_per_warm_function_kib = per(level.idle, level.warm, level.warm_deployed, |f| f.rss_kib);
    level.rss_per_warm_instance_kib =
        level.rss_per_warm_function_kib.zip(level.rss_per_idle_function_kib).map(|(warm, idle)| warm - idle);
    level.maps_per_warm_instance = per(level.idle, level.warm, level.warm_ready, |f| f.maps);
    level.pool_gauges = metrics(node.addr).ok().and_then(|text| {
        Some((metric_value(&text, "wisp_pool_instances")?, metric_value(&text, "wisp_pool_instances_limit")?))
    });
    level.node_exit = node.exited().map(|s| s.to_string());
    node.terminate(Duration::from_secs(30));
    level
}

struct Deployed {
    ok: usize,
    secs: f64,
    /// The first failed deploy: its HTTP status (None: no response) and message.
    failure: Option<(Option<u16>, String)>,
}

/// Deploys `{prefix}{i}` for `i` in `range` over `conns` keep-alive connections (threads);
/// stops after 20 failures.
fn deploy_many(
    node: &Node,
    prefix: &str,
    range: std::ops::Range<usize>,
    query: &str,
    ctx: &Ctx,
    conns: usize,
) -> Deployed {
    let t = Instant::now();
    let (next, ok, failures) = (AtomicUsize::new(range.start), AtomicUsize::new(0), AtomicUsize::new(0));
    let failure = Mutex::new(None);
    let bearer = format!("Bearer {}", node.token);
    std::thread::scope(|s| {
        for _ in 0..conns {
            s.spawn(|| {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                while failures.load(Ordering::Relaxed) < 20 {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= range.end {
                        break;
                    }
                    let url = format!("{}/v1/functions/{prefix}{i}?{query}", node.url);
                    let auth = [("Authorization", bearer.as_str())];
                    let fail = match wisp_testkit::try_request(&agent, "POST", &url, Some(&ctx.wasm), &auth) {
                        Ok(r) if r.status == 201 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok(r) => (Some(r.status), format!("POST {url}: {} {}", r.status, r.body.trim())),
                        Err(e) => (None, format!("{e:#}")),
                    };
                    failures.fetch_add(1, Ordering::Relaxed);
                    failure.lock().unwrap().get_or_insert(fail);
                }
            });
        }
    });
    Deployed { ok: ok.into_inner(), secs: t.elapsed().as_secs_f64(), failure: failure.into_inner().unwrap() }
}

/// Polls `/metrics` until `k` warm instances are ready, the node dies, or progress stops for 10 s.
fn wait_ready(node: &mut Node, k: usize) -> usize {
    let (mut best, mut last_progress) = (0, Instant::now());
    while node.exited().is_none() && last_progress.elapsed() < Duration::from_secs(10) {
        let Ok(text) = metrics(node.addr) else { break };
        let ready = metric_samples(&text)
            .filter(|(s, _)| s.starts_with("wisp_ready_instances{function=\"warm-"))
            .map(|(_, v)| v)
            .sum::<f64>() as usize;
        if ready > best {
            (best, last_progress) = (ready, Instant::now());
        }
        if ready >= k {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    best
}

/// Which resource ran out first, judged from the HTTP status of the failed deploy, the pool
/// gauges and the footprint; with the evidence.
fn classify(level: &Level, max_maps: Option<u64>, nofile: Option<u64>) -> String {
    let near = |used: u64, limit: Option<u64>, margin: u64| limit.is_some_and(|l| used + margin >= l);
    let pool_full = level.pool_gauges.is_some_and(|(used, limit)| used >= limit);
    let resource = match (&level.failed_deploy, level.last()) {
        (_, None) => format!("node start-up ({} pool slots reserved up front; address space?)", level.pool_instances),
        (Some((Some(503), _)), _) | (None, _) if pool_full => "pool slots (out of capacity)".into(),
        (Some((Some(503), _)), _) => "capacity (503 with pool slots free)".into(),
        (_, Some(fp)) if near(fp.maps, max_maps, 1000) => format!("vm.max_map_count ({})", max_maps.unwrap_or(0)),
        (_, Some(fp)) if near(fp.fds, nofile, 50) => {
            format!("file descriptors (RLIMIT_NOFILE {})", nofile.unwrap_or(0))
        }
        (Some((status, _)), _) => {
            format!("unknown (deploy failed with {})", status.map_or("no response".into(), |s| s.to_string()))
        }
        (None, _) => "unknown (instances did not become ready)".into(),
    };
    let mut evidence = vec![format!("{} at K = {}", level.status, level.functions)];
    if let Some((_, msg)) = &level.failed_deploy {
        evidence.push(format!("first failed deploy: {msg}"));
    }
    if let Some((used, limit)) = level.pool_gauges {
        evidence.push(format!("wisp_pool_instances {used} of {limit}"));
    }
    if let Some(exit) = &level.node_exit {
        evidence.push(format!("node exited: {exit}"));
    }
    format!("{resource}; {}", evidence.join("; "))
}
