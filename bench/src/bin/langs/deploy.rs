//! Deploying the two components: wall time of each `POST /v1/functions/NAME` on a fresh node
//! (fresh data dir, so an empty compile cache: compilation is included), the node's memory
//! after, a few seconds later and after a restart that loads both from the compile cache; then
//! both deployed at once on another fresh node.

use crate::{Component, Ctx, Plan, Status, log, probe};
use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wisp_testkit::Node;

/// A process's resident memory (`VmRSS`) and its peak since it started (`VmHWM`), MiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Mem {
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

pub fn mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |name| status_kib(&status, name) as f64 / 1024.0;
    Mem { rss_mib: mib("VmRSS:"), hwm_mib: mib("VmHWM:") }
}

fn status_kib(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
pub struct Deploy {
    pub function: &'static str,
    /// From sending the upload to the 201.
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Restart {
    /// From spawning `wisp up` on the same data dir until both functions answered.
    pub ready_s: f64,
    /// Right after both answered their first request.
    pub mem: Mem,
    pub compile_cache_hits: Option<f64>,
    pub compile_cache_misses: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Concurrent {
    pub status: Status,
    pub deploys: Vec<Deploy>,
    /// From the start of both uploads to the second 201.
    pub wall_s: f64,
    pub after: Mem,
    pub peak_tree_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    /// One after the other, Python first.
    pub sequential: Vec<Deploy>,
    /// Peak of the node's RSS plus its child processes' during the deploys (sampled every
    /// 50 ms), MiB: a compile in a child process shows here, not in the node's VmHWM.
    pub peak_tree_mib: f64,
    pub after_deploy: Mem,
    /// `plan.settle_s` later, the node idle.
    pub after_settle: Mem,
    pub restart: Restart,
    pub concurrent: Concurrent,
}

/// Runs the deploy measurements and returns the restarted node (both functions deployed,
/// loaded from the compile cache) for the throughput runs.
pub fn run(plan: &Plan, ctx: &Ctx, components: &[Component; 2]) -> anyhow::Result<(DeployReport, Node)> {
    let data = ctx.work.join("node");
    let node = start(ctx, &data, "deploy")?;
    let pid = node.pid();
    let peak = PeakSampler::start(pid);
    let mut sequential = Vec::new();
    for c in components {
        let (d, result) = deploy(&node, c.lang.function, &c.bytes);
        result.with_context(|| format!("deploying {}", c.lang.function))?;
        log(&format!("deploy {}: {:.2} s", d.function, d.seconds));
        sequential.push(d);
    }
    let after_deploy = mem(pid);
    let peak_tree_mib = peak.stop();
    std::thread::sleep(Duration::from_secs_f64(plan.settle_s));
    let after_settle = mem(pid);
    log(&format!(
        "node after both deploys: RSS {:.0} MiB (peak {:.0}), {:.0} s later {:.0} MiB",
        after_deploy.rss_mib, after_deploy.hwm_mib, plan.settle_s, after_settle.rss_mib
    ));
    for c in components {
        probe(node.addr, &format!("/fn/{}", c.lang.function), c.lang.greeting).map_err(|s| anyhow::anyhow!("{s}"))?;
    }
    stop(node)?;

    let concurrent = concurrent(ctx, components);

    let started = Instant::now();
    let node = start(ctx, &data, "node")?;
    let deadline = started + Duration::from_secs(120);
    for c in components {
        let path = format!("/fn/{}", c.lang.function);
        while let Err(status) = probe(node.addr, &path, c.lang.greeting) {
            if Instant::now() > deadline {
                bail!("after the restart, {path} did not answer in 120 s: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ready_s = started.elapsed().as_secs_f64();
    let metrics = crate::http("GET", node.addr, "/metrics", None).map(|r| r.body).unwrap_or_default();
    let restart = Restart {
        ready_s,
        mem: mem(node.pid()),
        compile_cache_hits: wisp_testkit::metric_value(&metrics, "wisp_compile_cache_hits_total"),
        compile_cache_misses: wisp_testkit::metric_value(&metrics, "wisp_compile_cache_misses_total"),
    };
    log(&format!(
        "restart: both answering after {ready_s:.2} s, RSS {:.0} MiB; compile cache hits {:?}, misses {:?}",
        restart.mem.rss_mib, restart.compile_cache_hits, restart.compile_cache_misses
    ));
    let report = DeployReport { sequential, peak_tree_mib, after_deploy, after_settle, restart, concurrent };
    Ok((report, node))
}

/// Both components deployed at once (one thread each) on a fresh node.
fn concurrent(ctx: &Ctx, components: &[Component; 2]) -> Concurrent {
    let mut out =
        Concurrent { status: Status::Ok, deploys: Vec::new(), wall_s: 0.0, after: Mem::default(), peak_tree_mib: 0.0 };
    let node = match start(ctx, &ctx.work.join("concurrent"), "concurrent") {
        Ok(n) => n,
        Err(e) => {
            out.status = Status::failed(format!("{e:#}"));
            return out;
        }
    };
    let peak = PeakSampler::start(node.pid());
    let barrier = Barrier::new(components.len());
    let started = OnceLock::new();
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = components
            .iter()
            .map(|c| {
                let (node, barrier, started) = (&node, &barrier, &started);
                s.spawn(move || {
                    barrier.wait();
                    started.get_or_init(Instant::now);
                    deploy(node, c.lang.function, &c.bytes)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("deploy thread panicked")).collect()
    });
    out.wall_s = started.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    out.after = mem(node.pid());
    out.peak_tree_mib = peak.stop();
    for (d, result) in results {
        if let Err(e) = result {
            out.status = Status::failed(format!("{}: {e:#}", d.function));
        }
        log(&format!("concurrent deploy {}: {:.2} s", d.function, d.seconds));
        out.deploys.push(d);
    }
    log(&format!("concurrent deploys: both in {:.2} s, node RSS {:.0} MiB", out.wall_s, out.after.rss_mib));
    if let Err(e) = stop(node) {
        log(&format!("concurrent node: {e:#}"));
    }
    out
}

pub fn start(ctx: &Ctx, data: &Path, name: &str) -> anyhow::Result<Node> {
    let log_file = ctx.logs.join(format!("{name}.log"));
    Node::builder(&ctx.wisp_bin, data)
        .env("RUST_LOG", "warn")
        .log_file(&log_file)
        .spawn()
        .with_context(|| format!("starting wisp up (log: {})", log_file.display()))
}

/// SIGTERM and a clean exit (the registry and compile cache are on disk for the restart).
pub fn stop(mut node: Node) -> anyhow::Result<()> {
    match node.terminate(Duration::from_secs(60)) {
        Some(status) if status.success() => Ok(()),
        other => bail!("wisp up did not exit cleanly ({other:?}){}", node.log_tail(20)),
    }
}

/// `POST /v1/functions/NAME` with the component, timed; ok on 201.
pub fn deploy(node: &Node, function: &'static str, wasm: &[u8]) -> (Deploy, anyhow::Result<()>) {
    let (status, seconds) = post_function(node, function, "", wasm);
    let result = match status {
        Ok((201, _)) => Ok(()),
        Ok((code, body)) => Err(anyhow::anyhow!("{code} {body}")),
        Err(e) => Err(e),
    };
    (Deploy { function, seconds }, result)
}

/// `POST /v1/functions/NAME?QUERY`: the status and body, and the seconds it took.
pub fn post_function(node: &Node, name: &str, query: &str, wasm: &[u8]) -> (anyhow::Result<(u16, String)>, f64) {
    // Compiling a large component on a busy machine can take minutes: wait for it.
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build());
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    let url = format!("{}/v1/functions/{name}{query}", node.url);
    let bearer = format!("Bearer {}", node.token);
    let started = Instant::now();
    let resp = wisp_testkit::try_request(agent, "POST", &url, Some(wasm), &[("Authorization", &bearer)]);
    (resp.map(|r| (r.status, r.body)), started.elapsed().as_secs_f64())
}

/// Samples the RSS of a process and all its descendants every 50 ms on a thread, keeping the
/// largest sum.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(tree_rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(tree_rss_kib(pid))
        });
        Self { stop, thread }
    }

    /// The peak in MiB.
    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0) as f64 / 1024.0
    }
}

/// VmRSS of `pid` and its descendants, KiB. Parents come from /proc/*/stat (the `children`
/// files need a kernel option not every machine has).
fn tree_rss_kib(pid: u32) -> u64 {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // After "(comm)": state, then the parent pid.
        let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(child);
        }
    }
    let (mut total, mut stack) = (0, vec![pid]);
    while let Some(p) = stack.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        total += status_kib(&status, "VmRSS:");
        stack.extend(children.get(&p).into_iter().flatten());
    }
    total
}
