//! Scenario density: one node per level K with `--pool-instances K+100 --max-ready 1`; deploy K
//! idle functions (`min_warm=0`), measure; then K warm ones (`min_warm=1`, one ready instance
//! each), measure. Levels grow until something breaks or the time budget runs out. The first
//! failure is classified from the HTTP status of the failed deploy (503: out of capacity), the
//! node's pool gauges and its footprint.

use crate::sys::{self, Footprint};
use crate::{Ctx, Plan, Section, Status, http, log, metrics};
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
    pub start_s: f64,
    pub idle_deployed: usize,
    pub idle_deploy_s: f64,
    pub warm_deployed: usize,
    pub warm_deploy_s: f64,
    /// Ready instances reached, and when (from the first warm deploy).
    pub warm_ready: usize,
    pub warm_ready_s: f64,
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

#[derive(Debug, Clone, Serialize)]
pub struct FirstLimit {
    pub functions: usize,
    pub phase: String,
    /// Which resource ran out, judged from the HTTP status, the gauges and the footprint.
    pub resource: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DensityReport {
    pub status: Status,
    /// Deploy requests that succeeded, all levels.
    pub requests: u64,
    pub vm_max_map_count: Option<u64>,
    pub open_files_limit: Option<u64>,
    pub budget_s: f64,
    pub levels: Vec<Level>,
    pub first_limit: Option<FirstLimit>,
    /// Largest K with one warm instance each that fits in vm.max_map_count, by `map_count_model`.
    pub max_warm_by_map_count: Option<f64>,
    pub map_count_model: Option<String>,
    /// Whether a node with a bigger pool starts at all (address space), full mode only.
    pub probe: Option<String>,
}

impl Section for DensityReport {
    fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }
}

pub fn run(plan: &Plan, ctx: &Ctx) -> DensityReport {
    let mut report = DensityReport {
        vm_max_map_count: sys::max_map_count(),
        open_files_limit: sys::open_files_limit(),
        budget_s: plan.density_budget.as_secs_f64(),
        ..DensityReport::default()
    };
    let started = Instant::now();
    let mut rate: Option<f64> = None;
    for &k in &plan.density_levels {
        let left = plan.density_budget.as_secs_f64() - started.elapsed().as_secs_f64();
        if let Some(r) = rate
            && 2.0 * k as f64 / r + 15.0 > left
        {
            let why = format!(
                "needs ~{:.0} s at {r:.0} deploys/s, {left:.0} s of the budget left",
                2.0 * k as f64 / r + 15.0
            );
            report.levels.push(Level { functions: k, status: Status::Skipped(why), ..Level::default() });
            continue;
        }
        let level = run_level(k, ctx);
        report.requests += (level.idle_deployed + level.warm_deployed) as u64;
        rate = Some(level.deploys_per_s).filter(|r| *r > 0.0).or(rate);
        let failed = !level.status.is_ok();
        if failed {
            report.first_limit = Some(classify(&level, report.vm_max_map_count, report.open_files_limit));
        }
        report.levels.push(level);
        if failed {
            break;
        }
    }
    // An empty node has `a + b * pool` maps and each warm instance adds `c`; with pool = K + 100,
    // solve for the K where vm.max_map_count runs out.
    let measured: Vec<&Level> = report.levels.iter().filter(|l| l.empty.is_some()).collect();
    if let (Some(max), [l0, l1, ..]) = (report.vm_max_map_count, &measured[..]) {
        let (e0, e1) = (l0.empty.map_or(0, |f| f.maps) as f64, l1.empty.map_or(0, |f| f.maps) as f64);
        let b = (e1 - e0) / (l1.pool_instances as f64 - l0.pool_instances as f64);
        let a = e0 - b * l0.pool_instances as f64;
        let c = report.levels.iter().find_map(|l| l.maps_per_warm_instance).unwrap_or(0.0);
        if b + c > 0.0 {
            let k = ((max as f64 - a - b * 100.0) / (b + c)).floor();
            report.max_warm_by_map_count = Some(k);
            report.map_count_model = Some(format!("maps ≈ {a:.0} + {b:.2} per pool slot + {c:.2} per warm instance"));
        }
    }
    if !plan.quick {
        let pool = plan.address_space_probe.to_string();
        let dir = ctx.work.join("density-probe");
        let node = Node::builder(&ctx.wisp_bin, dir.join("data")).args(["--pool-instances", &pool]);
        let result = match node.log_file(ctx.logs.join("density-probe.log")).spawn() {
            Ok(node) => {
                let fp = sys::footprint(node.pid());
                format!("started: VmSize {:.1} TiB, {} maps", fp.vm_size_kib as f64 / (1u64 << 30) as f64, fp.maps)
            }
            Err(e) => format!("did not start: {e:#}"),
        };
        log(&format!("density probe: --pool-instances {pool}: {result}"));
        report.probe = Some(format!("--pool-instances {pool}: {result}"));
    }
    report
}

fn run_level(k: usize, ctx: &Ctx) -> Level {
    let pool = k as u64 + 100;
    let mut level = Level { functions: k, pool_instances: pool, ..Level::default() };
    let t = Instant::now();
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
    level.start_s = t.elapsed().as_secs_f64();
    let pid = node.pid();
    level.empty = Some(sys::footprint(pid));

    // The first function alone: it compiles the component (once per node), a one-time cost
    // kept out of the per-function numbers by measuring `base` after it.
    let settle = || std::thread::sleep(Duration::from_millis(300));
    let mut idle = deploy_many(&node, "idle-", 0..1, "min_warm=0&idle_timeout=1h", ctx, 1);
    settle();
    level.base = Some(sys::footprint(pid));
    if idle.failure.is_none() {
        let rest = deploy_many(&node, "idle-", 1..k, "min_warm=0&idle_timeout=1h", ctx, 4);
        idle = Deployed { ok: idle.ok + rest.ok, secs: idle.secs + rest.secs, failure: rest.failure };
    }
    (level.idle_deployed, level.idle_deploy_s) = (idle.ok, idle.secs);
    settle();
    level.idle = Some(sys::footprint(pid));
    log(&format!("density K={k}: {} idle deployed in {:.1} s; {}", idle.ok, idle.secs, fmt_fp(level.idle)));
    if let Some(f) = idle.failure {
        level.status = Status::failed("deploying idle functions");
        level.failed_deploy = Some(f);
    } else {
        let t = Instant::now();
        let warm = deploy_many(&node, "warm-", 0..k, "min_warm=1&idle_timeout=1h", ctx, 4);
        (level.warm_deployed, level.warm_deploy_s) = (warm.ok, warm.secs);
        level.warm_ready = wait_ready(&mut node, k);
        level.warm_ready_s = t.elapsed().as_secs_f64();
        settle();
        level.warm = node.exited().is_none().then(|| sys::footprint(pid));
        if let Some(f) = warm.failure {
            level.status = Status::failed("deploying warm functions");
            level.failed_deploy = Some(f);
        } else if level.warm_ready < k {
            level.status = Status::failed(format!("only {} of {k} warm instances became ready", level.warm_ready));
        }
        log(&format!(
            "density K={k}: {} warm deployed in {:.1} s, {} ready after {:.1} s; {}",
            warm.ok,
            warm.secs,
            level.warm_ready,
            level.warm_ready_s,
            fmt_fp(level.warm)
        ));
    }
    let secs = level.idle_deploy_s + level.warm_deploy_s;
    level.deploys_per_s = if secs > 0.0 { (level.idle_deployed + level.warm_deployed) as f64 / secs } else { 0.0 };
    if let (Some(b), Some(i)) = (level.base, level.idle)
        && level.idle_deployed > 1
    {
        level.rss_per_idle_function_kib =
            Some((i.rss_kib as f64 - b.rss_kib as f64) / (level.idle_deployed - 1) as f64);
    }
    if let (Some(i), Some(w)) = (level.idle, level.warm)
        && level.warm_deployed > 0
    {
        let per_warm = (w.rss_kib as f64 - i.rss_kib as f64) / level.warm_deployed as f64;
        level.rss_per_warm_function_kib = Some(per_warm);
        level.rss_per_warm_instance_kib = level.rss_per_idle_function_kib.map(|idle| per_warm - idle);
        level.maps_per_warm_instance =
            (level.warm_ready > 0).then(|| (w.maps as f64 - i.maps as f64) / level.warm_ready as f64);
    }
    level.pool_gauges = metrics(node.addr).ok().and_then(|text| {
        Some((metric_value(&text, "wisp_pool_instances")?, metric_value(&text, "wisp_pool_instances_limit")?))
    });
    level.node_exit = node.exited().map(|s| s.to_string());
    node.terminate(Duration::from_secs(30));
    level
}

fn fmt_fp(fp: Option<Footprint>) -> String {
    fp.map_or("node gone".into(), |f| format!("RSS {} MiB, maps {}", f.rss_kib / 1024, f.maps))
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
                    let fail = match wisp_testkit::try_request(&agent, "POST", &url, Some(&ctx.wasm), &[]) {
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
        let Ok(text) = http("GET", node.addr, "/metrics", None).map(|r| r.body) else { break };
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

fn classify(level: &Level, max_maps: Option<u64>, nofile: Option<u64>) -> FirstLimit {
    let phase = match (&level.empty, level.idle_deployed < level.functions) {
        (None, _) => "node start-up",
        (_, true) => "deploying idle functions",
        _ => "warm instances",
    };
    let fp = level.warm.or(level.idle).or(level.base).or(level.empty);
    let near = |used: u64, limit: Option<u64>, margin: u64| limit.is_some_and(|l| used + margin >= l);
    let pool_full = level.pool_gauges.is_some_and(|(used, limit)| used >= limit);
    let resource = match (&level.failed_deploy, fp) {
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
    let mut evidence = Vec::new();
    if let Some((_, msg)) = &level.failed_deploy {
        evidence.push(format!("first failed deploy: {msg}"));
    }
    if let Some((used, limit)) = level.pool_gauges {
        evidence.push(format!("wisp_pool_instances {used} of {limit}"));
    }
    if let Some(fp) = fp {
        evidence.push(format!(
            "RSS {:.1} GiB, VmSize {:.1} TiB, {} maps (max {}), {} fds, {} threads",
            fp.rss_kib as f64 / (1u64 << 20) as f64,
            fp.vm_size_kib as f64 / (1u64 << 30) as f64,
            fp.maps,
            max_maps.map_or("?".into(), |m| m.to_string()),
            fp.fds,
            fp.threads
        ));
    }
    if let Some(exit) = &level.node_exit {
        evidence.push(format!("node exited: {exit}"));
    }
    FirstLimit { functions: level.functions, phase: phase.into(), resource, evidence: evidence.join("; ") }
}
