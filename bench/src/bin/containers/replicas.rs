//! Scenario replicas: how fast replicas start, and what an idle one costs. A Knative Service
//! of the httpd image with min-scale K and containerConcurrency 0 is applied
//! (`POST /v1/apply`); its service view (`GET /v1/services/default/idle-fleet`) is polled every
//! `--poll-ms` until `ready_instances` is K: replicas per second = K / (apply sent → K ready).
//! Then, after 1 s idle, the PSS (`/proc/PID/smaps_rollup`) of the service's containers is
//! summed: each container's init is a direct child of the node (its subreaper) in a pid
//! namespace of its own, attributed to the service by its cgroup name, plus anything it
//! forked. PSS splits shared pages (the shared read-only rootfs's busybox, mapped by every
//! replica) among the processes mapping them, so the sum counts each page once and the sum
//! over K is the memory one more replica costs. The node's RSS before and after is reported
//! too: replicas also cost the node (its bookkeeping, log pipes, connections).

use crate::node::{Replicas, Service, Wisp};
use crate::procs::{self, Memory};
use crate::{Plan, log, sys};
use serde::Serialize;
use std::time::{Duration, Instant};

const SERVICE: &str = "idle-fleet";

#[derive(Debug, Serialize)]
pub struct ReplicasReport {
    pub replicas: u32,
    pub poll_ms: u64,
    /// Apply sent → its answer, ms.
    pub apply_ms: f64,
    /// Apply sent → the first replica ready, and → K ready, ms.
    pub first_ready_ms: f64,
    pub all_ready_ms: f64,
    /// K / (apply sent → K ready).
    pub replicas_per_s: f64,
    /// Ready replicas over time: (ms since the apply was sent, ready), one entry per change.
    pub ready_series: Vec<(f64, u64)>,
    pub polls: u64,
    /// How long one poll of the view took (its answer is as late as that): mean and max, ms.
    pub poll_mean_ms: f64,
    pub poll_max_ms: f64,
    pub after: Replicas,
    /// The service's containers found under the node, and their summed memory.
    pub containers: usize,
    pub memory: Memory,
    pub pss_per_replica_kib: f64,
    pub pss_anon_per_replica_kib: f64,
    pub rss_per_replica_kib: f64,
    pub processes_per_replica: f64,
    /// The node's own RSS before the apply and with K replicas idle.
    pub node_rss_before_kib: u64,
    pub node_rss_after_kib: u64,
    pub node_rss_per_replica_kib: f64,
    /// Every container the node runs at the measurement (other services' too).
    pub node_containers: usize,
}

pub fn run(plan: &Plan, wisp: &Wisp) -> anyhow::Result<ReplicasReport> {
    let k = plan.replicas;
    let node_rss_before_kib = sys::footprint(wisp.pid).rss_kib;
    let service = Service { name: SERVICE.into(), image: crate::HTTPD.into(), container_concurrency: 0, min_scale: k };
    let interval = Duration::from_millis(plan.poll_ms);
    let timeout = Duration::from_secs(60 + u64::from(k));

    let start = Instant::now();
    wisp.apply(&service)?;
    let apply_ms = crate::ms(start.elapsed());
    let (mut series, mut polls, mut first_ready_ms) = (Vec::<(f64, u64)>::new(), 0u64, None);
    let (mut poll_total_ms, mut poll_max_ms) = (0.0f64, 0.0f64);
    let mut next = Instant::now();
    let after = loop {
        let sent = Instant::now();
        let r = wisp.replicas(SERVICE)?;
        let at = crate::ms(start.elapsed());
        let took = crate::ms(sent.elapsed());
        (poll_total_ms, poll_max_ms) = (poll_total_ms + took, poll_max_ms.max(took));
        polls += 1;
        if series.last().is_none_or(|&(_, ready)| ready != r.ready) {
            series.push((at, r.ready));
        }
        if r.ready > 0 && first_ready_ms.is_none() {
            first_ready_ms = Some(at);
        }
        if r.ready >= u64::from(k) {
            break r;
        }
        anyhow::ensure!(start.elapsed() < timeout, "{SERVICE}: {} of {k} replicas ready after {timeout:?}", r.ready);
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now(); // a slow poll: no burst to catch up
        }
    };
    let all_ready_ms = series.last().map_or(0.0, |&(at, _)| at);
    let replicas_per_s = f64::from(k) / (all_ready_ms / 1e3).max(1e-9);
    log(&format!(
        "replicas: {k} ready {all_ready_ms:.0} ms after the apply (first {:.0} ms): {replicas_per_s:.1} replicas/s",
        first_ready_ms.unwrap_or(0.0)
    ));

    std::thread::sleep(Duration::from_secs(1));
    let all = procs::containers(wisp.pid);
    let prefix = format!("default.{SERVICE}.");
    let mine: Vec<u32> = all.iter().filter(|c| c.id.starts_with(&prefix)).map(|c| c.pid).collect();
    anyhow::ensure!(
        mine.len() == k as usize,
        "found {} containers of {SERVICE} under the node (pid {}), expected {k} ({} containers in all)",
        mine.len(),
        wisp.pid,
        all.len()
    );
    let memory = procs::memory(&mine);
    let node_rss_after_kib = sys::footprint(wisp.pid).rss_kib;
    let per = |v: u64| v as f64 / f64::from(k);
    let report = ReplicasReport {
        replicas: k,
        poll_ms: plan.poll_ms,
        apply_ms,
        first_ready_ms: first_ready_ms.unwrap_or(all_ready_ms),
        all_ready_ms,
        replicas_per_s,
        ready_series: series,
        polls,
        poll_mean_ms: poll_total_ms / polls.max(1) as f64,
        poll_max_ms,
        after,
        containers: mine.len(),
        pss_per_replica_kib: per(memory.pss_kib),
        pss_anon_per_replica_kib: per(memory.pss_anon_kib),
        rss_per_replica_kib: per(memory.rss_kib),
        processes_per_replica: per(memory.processes),
        memory,
        node_rss_before_kib,
        node_rss_after_kib,
        node_rss_per_replica_kib: (node_rss_after_kib as f64 - node_rss_before_kib as f64) / f64::from(k),
        node_containers: all.len(),
    };
    log(&format!(
        "replicas: PSS {:.0} KiB per replica ({} KiB over {} processes); node RSS {} → {} KiB",
        report.pss_per_replica_kib, memory.pss_kib, memory.processes, node_rss_before_kib, node_rss_after_kib
    ));
    Ok(report)
}
