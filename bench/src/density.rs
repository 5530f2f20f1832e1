//! Scenario 4 (density): one node per level K with `--pool-instances K+100 --max-ready 1`;
//! deploy K idle functions (`min_warm=0`), measure; then K warm ones (`min_warm=1`, one ready
//! instance each), measure. Levels grow until something breaks (or the time budget runs out);
//! the first failure is reported with its error and the footprint that explains it.

use crate::client::{self, Conn};
use crate::node::Server;
use crate::sys::{self, Footprint};
use crate::{Plan, log};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Level {
    pub functions: usize,
    pub pool_instances: u64,
    /// "ok", "failed: ...", or "skipped: ...".
    pub status: String,
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
    pub error: Option<String>,
    /// How many warning/error lines the node logged.
    pub node_warnings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FirstLimit {
    pub functions: usize,
    pub phase: String,
    /// Which resource ran out, judged from the error and the footprint.
    pub resource: String,
    pub error: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DensityReport {
    pub status: String,
    /// Deploy requests sent, all levels.
    pub requests: u64,
    pub vm_max_map_count: Option<u64>,
    pub open_files_limit: Option<u64>,
    pub mem_total_gib: f64,
    pub budget_s: f64,
    pub levels: Vec<Level>,
    pub first_limit: Option<FirstLimit>,
    /// Largest K with one warm instance each that fits in vm.max_map_count, by the model below.
    pub max_warm_by_map_count: Option<f64>,
    pub map_count_model: String,
    /// Further limits tried cheaply (e.g. whether a node with a bigger pool starts at all).
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub what: String,
    pub result: String,
}

pub fn run(plan: &Plan, wisp_bin: &Path, wasm: &Bytes, work: &Path) -> DensityReport {
    let machine_maps = sys::read_trimmed("/proc/sys/vm/max_map_count").and_then(|s| s.parse().ok());
    let mut report = DensityReport {
        status: "ok".into(),
        requests: 0,
        vm_max_map_count: machine_maps,
        open_files_limit: None,
        mem_total_gib: 0.0,
        budget_s: plan.density_budget.as_secs_f64(),
        levels: Vec::new(),
        first_limit: None,
        max_warm_by_map_count: None,
        map_count_model: String::new(),
        probes: Vec::new(),
    };
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } == 0 {
        report.open_files_limit = Some(nofile.rlim_cur);
    }
    let started = Instant::now();
    let mut rate: Option<f64> = None;
    for &k in &plan.density_levels {
        if let Some(r) = rate {
            let estimate = 2.0 * k as f64 / r + 15.0;
            let left = plan.density_budget.as_secs_f64() - started.elapsed().as_secs_f64();
            if estimate > left {
                report.levels.push(Level {
                    functions: k,
                    status: format!(
                        "skipped: needs ~{estimate:.0} s at {r:.0} deploys/s, {left:.0} s of the density budget left"
                    ),
                    ..Level::default()
                });
                continue;
            }
        }
        let level = run_level(k, wisp_bin, wasm, &work.join(format!("density-{k}")));
        report.requests += (level.idle_deployed + level.warm_deployed) as u64;
        if level.deploys_per_s > 0.0 {
            rate = Some(level.deploys_per_s);
        }
        let failed = level.status != "ok";
        if failed && report.first_limit.is_none() {
            report.first_limit = Some(classify(&level, machine_maps, report.open_files_limit));
        }
        report.levels.push(level);
        if failed {
            break;
        }
    }
    // Where vm.max_map_count ends density, from the measured map counts: an empty node has
    // `a + b * pool` maps, each warm instance adds `c`; with pool = K + 100, solve for K.
    let measured: Vec<&Level> = report.levels.iter().filter(|l| l.empty.is_some()).collect();
    if let (Some(max), [l0, l1, ..]) = (machine_maps, measured.as_slice()) {
        let (e0, e1) = (l0.empty.unwrap().maps as f64, l1.empty.unwrap().maps as f64);
        let b = (e1 - e0) / (l1.pool_instances as f64 - l0.pool_instances as f64);
        let a = e0 - b * l0.pool_instances as f64;
        let c = report.levels.iter().find_map(|l| l.maps_per_warm_instance).unwrap_or(0.0);
        if b + c > 0.0 {
            let k = (max as f64 - a - b * 100.0) / (b + c);
            report.max_warm_by_map_count = Some(k.floor());
            report.map_count_model = format!(
                "maps ≈ {a:.0} + {b:.2} per pool slot + {c:.2} per warm instance; with --pool-instances K+100 and \
                 vm.max_map_count {max}, at most K ≈ {k:.0} warm functions"
            );
        }
    }
    // The pools reserve address space up front; see whether the next size up can start at all.
    if !plan.quick {
        let pool = plan.address_space_probe;
        let dir = work.join("density-probe");
        let _ = std::fs::create_dir_all(&dir);
        let extra = vec!["--pool-instances".to_string(), pool.to_string()];
        let result = match Server::wisp(wisp_bin, &dir.join("data"), &extra, &dir.join("node.log")) {
            Ok(mut node) => {
                let fp = sys::footprint(node.pid);
                node.stop();
                format!("started: VmSize {:.1} TiB, {} maps", fp.vm_size_kib as f64 / (1u64 << 30) as f64, fp.maps)
            }
            Err(e) => format!("{e:#}").lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join(" "),
        };
        log(&format!("density probe: --pool-instances {pool}: {result}"));
        report.probes.push(Probe { what: format!("a node with --pool-instances {pool} (no functions)"), result });
    }
    report
}

fn run_level(k: usize, wisp_bin: &Path, wasm: &Bytes, dir: &Path) -> Level {
    let pool = k as u64 + 100;
    let mut level = Level { functions: k, pool_instances: pool, status: "ok".into(), ..Level::default() };
    let _ = std::fs::remove_dir_all(dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        level.status = format!("failed: {e}");
        return level;
    }
    let log_path = dir.join("node.log");
    let t = Instant::now();
    let extra: Vec<String> =
        ["--pool-instances", &pool.to_string(), "--max-ready", "1"].iter().map(|s| s.to_string()).collect();
    let mut node = match Server::wisp(wisp_bin, &dir.join("data"), &extra, &log_path) {
        Ok(n) => n,
        Err(e) => {
            level.status = "failed: node did not start".into();
            level.error = Some(format!("{e:#}"));
            level.node_warnings = warnings(&log_path).0;
            log(&format!("density K={k}: node failed to start: {e:#}"));
            return level;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(client::wait_ok(node.addr, "/healthz", Duration::from_secs(60))) {
        level.status = "failed: node not healthy".into();
        level.error = Some(format!("{e:#}"));
        return level;
    }
    level.start_s = t.elapsed().as_secs_f64();
    level.empty = Some(sys::footprint(node.pid));

    // Idle functions. The first one alone: it compiles the component (once for the node), a
    // one-time cost kept out of the per-function numbers by measuring `base` after it.
    let first = rt.block_on(deploy_many(node.addr, "idle-", 0, 1, "min_warm=0&idle_timeout=1h", wasm, 1));
    std::thread::sleep(Duration::from_millis(300));
    level.base = Some(sys::footprint(node.pid));
    let mut idle = rt.block_on(deploy_many(node.addr, "idle-", 1, k, "min_warm=0&idle_timeout=1h", wasm, 4));
    idle.ok += first.ok;
    idle.secs += first.secs;
    if idle.first_error.is_none() {
        idle.first_error = first.first_error;
    }
    level.idle_deployed = idle.ok;
    level.idle_deploy_s = idle.secs;
    std::thread::sleep(Duration::from_millis(300));
    level.idle = Some(sys::footprint(node.pid));
    log(&format!(
        "density K={k}: {} idle deployed in {:.1} s; RSS {} MiB, maps {}",
        idle.ok,
        idle.secs,
        level.idle.unwrap().rss_kib / 1024,
        level.idle.unwrap().maps
    ));
    if let Some(e) = idle.first_error {
        level.status = "failed: deploying idle functions".into();
        level.error = Some(e);
    } else {
        // Warm functions.
        let t = Instant::now();
        let warm = rt.block_on(deploy_many(node.addr, "warm-", 0, k, "min_warm=1&idle_timeout=1h", wasm, 4));
        level.warm_deployed = warm.ok;
        level.warm_deploy_s = warm.secs;
        let (ready, err) = rt.block_on(wait_ready(node.addr, k, &mut node));
        level.warm_ready = ready;
        level.warm_ready_s = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        level.warm = node.alive().then(|| sys::footprint(node.pid));
        if let Some(e) = warm.first_error {
            level.status = "failed: deploying warm functions".into();
            level.error = Some(e);
        } else if ready < k {
            level.status = format!("failed: only {ready} of {k} warm instances became ready");
            level.error = err;
        }
        log(&format!(
            "density K={k}: {} warm deployed in {:.1} s, {ready} ready after {:.1} s; RSS {} MiB, maps {}",
            warm.ok,
            warm.secs,
            level.warm_ready_s,
            level.warm.map_or(0, |f| f.rss_kib / 1024),
            level.warm.map_or(0, |f| f.maps)
        ));
    }
    let secs = level.idle_deploy_s + level.warm_deploy_s;
    if secs > 0.0 {
        level.deploys_per_s = (level.idle_deployed + level.warm_deployed) as f64 / secs;
    }
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
        if level.warm_ready > 0 {
            level.maps_per_warm_instance = Some((w.maps as f64 - i.maps as f64) / level.warm_ready as f64);
        }
    }
    let alive = node.alive();
    node.stop();
    let (count, first) = warnings(&log_path);
    level.node_warnings = count;
    if level.status != "ok" {
        if !alive {
            let tail = node.log_tail(5);
            level.error = Some(format!("node exited ({:?}): {tail}", node.exit));
        } else if let Some(first) = first {
            // The node's own first complaint is usually the root cause.
            level.error = Some(match level.error.take() {
                Some(e) => format!("{e}; node log: {first}"),
                None => format!("node log: {first}"),
            });
        }
    }
    level
}

struct Deployed {
    ok: usize,
    secs: f64,
    first_error: Option<String>,
}

/// Deploys `{prefix}{from}..{prefix}{n-1}` over `conns` connections. Stops early after
/// repeated failures.
///
/// The first deploy goes alone: it compiles the component, which the rest then share, so the
/// deploy rate measures deploys rather than one compile raced by many.
async fn deploy_many(
    addr: SocketAddr,
    prefix: &str,
    from: usize,
    n: usize,
    query: &str,
    wasm: &Bytes,
    conns: usize,
) -> Deployed {
    let t = Instant::now();
    let first = async {
        let path = format!("/v1/functions/{prefix}{from}?{query}");
        match Conn::connect(addr).await?.send(Method::POST, &path, wasm.clone()).await? {
            (StatusCode::CREATED, _) => anyhow::Ok(()),
            (status, body) => anyhow::bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body).trim()),
        }
    };
    if from >= n {
        return Deployed { ok: 0, secs: 0.0, first_error: None };
    }
    if let Err(e) = first.await {
        return Deployed { ok: 0, secs: t.elapsed().as_secs_f64(), first_error: Some(format!("{e:#}")) };
    }
    let next = Arc::new(AtomicUsize::new(from + 1));
    let ok = Arc::new(AtomicUsize::new(1));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, ok, failures, stop, first_error) =
            (next.clone(), ok.clone(), failures.clone(), stop.clone(), first_error.clone());
        let (prefix, query, wasm) = (prefix.to_string(), query.to_string(), wasm.clone());
        tasks.push(tokio::spawn(async move {
            let fail = |e: String| {
                first_error.lock().unwrap().get_or_insert(e);
                if failures.fetch_add(1, Ordering::Relaxed) >= 20 {
                    stop.store(true, Ordering::Relaxed);
                }
            };
            let mut conn = match Conn::connect(addr).await {
                Ok(c) => c,
                Err(e) => return fail(format!("{e:#}")),
            };
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let path = format!("/v1/functions/{prefix}{i}?{query}");
                match conn.send(Method::POST, &path, wasm.clone()).await {
                    Ok((StatusCode::CREATED, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => {
                        fail(format!("POST {path}: {status} {}", String::from_utf8_lossy(&body).trim()))
                    }
                    Err(e) => {
                        fail(format!("POST {path}: {e:#}"));
                        match Conn::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(e) => {
                                fail(format!("reconnecting: {e:#}"));
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let first_error = first_error.lock().unwrap().take();
    Deployed { ok: ok.load(Ordering::Relaxed), secs: t.elapsed().as_secs_f64(), first_error }
}

/// Polls `/metrics` until `k` warm instances are ready or progress stops for 10 s.
async fn wait_ready(addr: SocketAddr, k: usize, node: &mut Server) -> (usize, Option<String>) {
    let mut best = 0;
    let mut last_progress = Instant::now();
    loop {
        if !node.alive() {
            return (best, Some(format!("node exited ({:?})", node.exit)));
        }
        match client::once(addr, Method::GET, "/metrics", Bytes::new()).await {
            Ok((_, body)) => {
                let text = String::from_utf8_lossy(&body);
                let ready = client::metric_sum(&text, "wisp_ready_instances", "function=\"warm-") as usize;
                if ready > best {
                    best = ready;
                    last_progress = Instant::now();
                }
                if ready >= k {
                    return (ready, None);
                }
            }
            Err(e) => return (best, Some(format!("scraping /metrics: {e:#}"))),
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            return (best, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Warning and error lines in a node log, and the first one (timestamps stripped).
fn warnings(log: &Path) -> (usize, Option<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    let first = lines.first().map(|l| {
        let l = strip_ansi(l);
        match l.find(" WARN ").or_else(|| l.find(" ERROR ")) {
            Some(i) => l[i + 1..].to_string(),
            None => l,
        }
    });
    (lines.len(), first)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn classify(level: &Level, max_maps: Option<u64>, nofile: Option<u64>) -> FirstLimit {
    let error = level.error.clone().unwrap_or_else(|| level.status.clone());
    let phase = if level.empty.is_none() {
        "node start-up"
    } else if level.status.contains("idle") {
        "deploying idle functions"
    } else {
        "warm instances"
    };
    let fp = level.warm.or(level.idle).or(level.base).or(level.empty);
    let lower = error.to_lowercase();
    let mut resource = "unknown (see error)".to_string();
    let mut evidence = Vec::new();
    if let Some(fp) = fp {
        evidence.push(format!(
            "RSS {:.1} GiB, VmSize {:.1} TiB, {} maps, {} fds, {} threads",
            fp.rss_kib as f64 / (1024.0 * 1024.0),
            fp.vm_size_kib as f64 / (1024.0 * 1024.0 * 1024.0),
            fp.maps,
            fp.fds,
            fp.threads
        ));
        if let Some(max) = max_maps
            && fp.maps + 1000 >= max
        {
            resource = format!("vm.max_map_count ({max})");
        } else if let Some(n) = nofile
            && fp.fds + 50 >= n
        {
            resource = format!("file descriptors (RLIMIT_NOFILE {n})");
        }
    }
    if resource.starts_with("unknown") {
        if lower.contains("too many open files") {
            resource = "file descriptors".into();
        } else if phase == "node start-up" && (lower.contains("cannot allocate memory") || lower.contains("mmap")) {
            // The pools are reserved up front: 8 GiB-aligned 4 GiB memory slots per instance.
            resource = format!(
                "address space (the pooling allocator reserves ~4 GiB per memory slot: {} slots ~ {:.0} TiB of a 128 TiB user address space)",
                level.pool_instances,
                level.pool_instances as f64 * 4.0 / 1024.0
            );
        } else if lower.contains("cannot allocate memory") {
            resource = "memory mappings or address space (ENOMEM)".into();
        } else if lower.contains("no more") || lower.contains("maximum concurrent") || lower.contains("limit") {
            resource = "pool slots".into();
        }
    }
    if let Some(max) = max_maps {
        evidence.push(format!("vm.max_map_count = {max}"));
    }
    FirstLimit { functions: level.functions, phase: phase.into(), resource, error, evidence: evidence.join("; ") }
}
