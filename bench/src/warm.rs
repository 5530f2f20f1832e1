//! Scenario 1 (warm): `hello` over keep-alive HTTP/1.1 at 1, 16 and 64 connections, closed loop,
//! Wisp and both `wasmtime serve` baselines alternating run by run; then open loop at half the
//! measured closed-loop throughput for Wisp and tuned wasmtime.

use crate::client;
use crate::loadgen::{self, Latency, Mode, RunResult, SATURATED_PCT, Spec, Target};
use crate::node::Server;
use crate::{Plan, log};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A server under test, or why it is not.
pub struct Contender {
    pub name: &'static str,
    pub server: Result<Server, String>,
    pub path: &'static str,
}

impl Contender {
    pub fn target(&self) -> Option<Target> {
        let s = self.server.as_ref().ok()?;
        Some(Target { addr: s.addr, path: self.path.into(), pid: Some(s.pid) })
    }

    pub fn status(&self) -> String {
        match &self.server {
            Ok(_) => "ok".into(),
            Err(e) => e.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WarmRow {
    pub target: String,
    pub connections: usize,
    /// "ok", or why the row has no numbers ("skipped: ...", "failed: ...").
    pub status: String,
    pub requests: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub first_error: Option<String>,
    pub rps: f64,
    /// Throughput of each alternating round, to show the spread.
    pub rps_rounds: Vec<f64>,
    pub latency: Latency,
    /// Highest load-generator CPU over the rounds, % of one core.
    pub bench_cpu_pct: f64,
    pub loadgen_saturated: bool,
    /// Server CPU averaged over the rounds, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Other processes' CPU averaged over the rounds, % of one core: noise from the machine.
    pub other_cpu_pct: Option<f64>,
    /// Server CPU time per answered request, µs (all cores).
    pub server_cpu_us_per_req: Option<f64>,
    /// Load generator CPU time per request, µs.
    pub bench_cpu_us_per_req: f64,
    /// Server CPU by thread name (last round), % of one core.
    pub server_threads_pct: BTreeMap<String, f64>,
    /// Wisp only: invocations that instantiated on demand during the runs (incl. warm-up)...
    pub cold_starts: Option<u64>,
    /// ...out of this many answered requests (incl. warm-up).
    pub answered: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub connections: usize,
    pub baseline: String,
    /// Wisp rps / baseline rps: above 1 means Wisp serves more.
    pub throughput: Option<f64>,
    /// Wisp p99 / baseline p99: below 1 means Wisp's tail is lower.
    pub p99: Option<f64>,
    pub p50: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenRow {
    pub target: String,
    pub status: String,
    /// How the rate was chosen.
    pub basis: String,
    pub connections: usize,
    /// Scheduled rate: half the closed-loop throughput at the highest connection count.
    pub rate_rps: f64,
    pub achieved_rps: f64,
    pub requests: u64,
    pub errors: u64,
    pub unsent: u64,
    /// Latency from the intended send time.
    pub latency: Latency,
    pub pacer_lag_p99_us: f64,
    pub bench_cpu_pct: f64,
    pub loadgen_saturated: bool,
    pub server_cpu_pct: Option<f64>,
    pub other_cpu_pct: Option<f64>,
    /// Server CPU time per request, µs.
    pub server_cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    pub requests: u64,
    pub rounds: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub connection_levels: Vec<usize>,
    pub rows: Vec<WarmRow>,
    pub ratios: Vec<Ratio>,
    pub open_loop: Vec<OpenRow>,
    /// Wisp's `wisp_invocation_duration_seconds` histogram for hello after all warm and open-loop
    /// runs: (bucket upper bound in µs, cumulative count). Time inside the runtime only.
    pub wisp_invocation_buckets: Vec<(f64, u64)>,
}

impl WarmReport {
    pub fn row(&self, target: &str, connections: usize) -> Option<&WarmRow> {
        self.rows.iter().find(|r| r.target == target && r.connections == connections && r.status == "ok")
    }
}

struct Acc {
    hist: Histogram<u64>,
    runs: Vec<RunResult>,
    cold: u64,
    failed: Option<String>,
}

async fn cold_starts(wisp: &Target) -> Option<u64> {
    let (_, body) = client::once(wisp.addr, http::Method::GET, "/metrics", Bytes::new()).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    Some(client::metric_sum(&text, "wisp_cold_starts_total", "function=\"hello\"") as u64)
}

fn cold_starts_blocking(wisp: &Target) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(cold_starts(wisp))
}

pub fn run(plan: &Plan, contenders: &[Contender]) -> WarmReport {
    let mut rows = Vec::new();
    let spec_for =
        |connections| Spec { connections, warmup: plan.warm_warmup, duration: plan.warm_duration, mode: Mode::Closed };
    for &connections in &plan.connection_levels {
        let mut accs: Vec<Acc> = contenders
            .iter()
            .map(|_| Acc { hist: loadgen::new_hist(), runs: Vec::new(), cold: 0, failed: None })
            .collect();
        for round in 0..plan.rounds {
            for (c, acc) in contenders.iter().zip(accs.iter_mut()) {
                let Some(target) = c.target() else { continue };
                if acc.failed.is_some() {
                    continue;
                }
                let before = (c.name == "wisp").then(|| cold_starts_blocking(&target)).flatten();
                match loadgen::run(&target, spec_for(connections)) {
                    Ok(r) => {
                        log(&format!(
                            "warm {:>16} c={connections:<3} round {}: {:>8.0} rps  p50 {:>7.1} us  p99 {:>8.1} us  (cpu: bench {:.0}%, server {:.0}%, other {:.0}%)",
                            c.name,
                            round + 1,
                            r.rps(),
                            r.hist.value_at_quantile(0.5) as f64 / 1e3,
                            r.hist.value_at_quantile(0.99) as f64 / 1e3,
                            r.bench_cpu_pct,
                            r.server_cpu_pct.unwrap_or(0.0),
                            r.other_cpu_pct.unwrap_or(0.0)
                        ));
                        if let (Some(b), Some(a)) =
                            (before, (c.name == "wisp").then(|| cold_starts_blocking(&target)).flatten())
                        {
                            acc.cold += a.saturating_sub(b);
                        }
                        acc.hist.add(&r.hist).ok();
                        acc.runs.push(r);
                    }
                    Err(e) => acc.failed = Some(format!("failed: {e:#}")),
                }
                settle();
            }
        }
        for (c, acc) in contenders.iter().zip(accs) {
            rows.push(row(c, connections, acc));
        }
    }
    let mut ratios = Vec::new();
    for &connections in &plan.connection_levels {
        let wisp = rows.iter().find(|r| r.target == "wisp" && r.connections == connections && r.status == "ok");
        for baseline in contenders.iter().filter(|c| c.name != "wisp") {
            let base =
                rows.iter().find(|r| r.target == baseline.name && r.connections == connections && r.status == "ok");
            let both = wisp.zip(base);
            ratios.push(Ratio {
                connections,
                baseline: baseline.name.into(),
                throughput: both.map(|(w, b)| w.rps / b.rps),
                p99: both.map(|(w, b)| w.latency.p99_us / b.latency.p99_us),
                p50: both.map(|(w, b)| w.latency.p50_us / b.latency.p50_us),
            });
        }
    }
    let mut report = WarmReport {
        requests: rows.iter().map(|r| r.requests).sum(),
        rounds: plan.rounds,
        warmup_s: plan.warm_warmup.as_secs_f64(),
        duration_s: plan.warm_duration.as_secs_f64(),
        connection_levels: plan.connection_levels.clone(),
        rows,
        ratios,
        open_loop: Vec::new(),
        wisp_invocation_buckets: Vec::new(),
    };
    report.open_loop = open_loop(plan, contenders, &report);
    if let Some(wisp) = contenders.iter().find(|c| c.name == "wisp").and_then(|c| c.target()) {
        report.wisp_invocation_buckets = invocation_buckets(&wisp);
    }
    report
}

/// Wisp's own view of the runs: `wisp_invocation_duration_seconds` for hello (time inside
/// `Revision::invoke`, gateway excluded) as (upper bound in µs, cumulative count).
fn invocation_buckets(wisp: &Target) -> Vec<(f64, u64)> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Vec::new() };
    let Ok((_, body)) = rt.block_on(client::once(wisp.addr, http::Method::GET, "/metrics", Bytes::new())) else {
        return Vec::new();
    };
    let prefix = "wisp_invocation_duration_seconds_bucket{function=\"hello\",le=\"";
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (le, tail) = rest.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().ok()? * 1e6 };
            Some((le, tail.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn row(c: &Contender, connections: usize, acc: Acc) -> WarmRow {
    let mut r = WarmRow {
        target: c.name.into(),
        connections,
        status: c.status(),
        requests: 0,
        errors: 0,
        non_2xx: 0,
        first_error: None,
        rps: 0.0,
        rps_rounds: Vec::new(),
        latency: Latency::default(),
        bench_cpu_pct: 0.0,
        loadgen_saturated: false,
        server_cpu_pct: None,
        other_cpu_pct: None,
        server_cpu_us_per_req: None,
        bench_cpu_us_per_req: 0.0,
        server_threads_pct: BTreeMap::new(),
        cold_starts: (c.name == "wisp").then_some(acc.cold),
        answered: 0,
    };
    if let Some(f) = acc.failed {
        r.status = f;
    }
    if acc.runs.is_empty() {
        return r;
    }
    let measured: f64 = acc.runs.iter().map(|x| x.measured_s).sum();
    r.requests = acc.runs.iter().map(|x| x.requests).sum();
    r.answered = acc.runs.iter().map(|x| x.answered).sum();
    r.errors = acc.runs.iter().map(|x| x.errors).sum();
    r.non_2xx = acc.runs.iter().map(|x| x.non_2xx).sum();
    r.first_error = acc.runs.iter().find_map(|x| x.first_error.clone());
    r.rps = r.requests as f64 / measured;
    r.rps_rounds = acc.runs.iter().map(|x| x.rps()).collect();
    r.latency = Latency::from_hist(&acc.hist);
    r.bench_cpu_pct = acc.runs.iter().map(|x| x.bench_cpu_pct).fold(0.0, f64::max);
    r.loadgen_saturated = r.bench_cpu_pct > SATURATED_PCT;
    let cpus: Vec<f64> = acc.runs.iter().filter_map(|x| x.server_cpu_pct).collect();
    r.server_cpu_pct = (!cpus.is_empty()).then(|| cpus.iter().sum::<f64>() / cpus.len() as f64);
    r.server_cpu_us_per_req = r.server_cpu_pct.map(|pct| pct / 100.0 * 1e6 / r.rps.max(1e-9));
    let bench_avg = acc.runs.iter().map(|x| x.bench_cpu_pct).sum::<f64>() / acc.runs.len() as f64;
    r.bench_cpu_us_per_req = bench_avg / 100.0 * 1e6 / r.rps.max(1e-9);
    let other: Vec<f64> = acc.runs.iter().filter_map(|x| x.other_cpu_pct).collect();
    r.other_cpu_pct = (!other.is_empty()).then(|| other.iter().sum::<f64>() / other.len() as f64);
    r.server_threads_pct = acc.runs.last().map(|x| x.server_threads_pct.clone()).unwrap_or_default();
    r
}

fn open_loop(plan: &Plan, contenders: &[Contender], warm: &WarmReport) -> Vec<OpenRow> {
    let top = plan.connection_levels.iter().copied().max().unwrap_or(1);
    let chosen: Vec<&Contender> =
        contenders.iter().filter(|c| c.name == "wisp" || c.name == "wasmtime-tuned").collect();
    // Each at half its own closed-loop throughput; then, when both ran, both at half the lower
    // one, so their tails are also compared at the same offered load.
    let mut runs: Vec<(&Contender, Option<f64>, &'static str)> = chosen
        .iter()
        .map(|c| (*c, warm.row(c.name, top).map(|r| (r.rps * 0.5).max(1.0)), "50% of own closed-loop max"))
        .collect();
    let own: Vec<f64> = runs.iter().filter_map(|(_, r, _)| *r).collect();
    if own.len() == 2 {
        let common = own.iter().copied().fold(f64::INFINITY, f64::min);
        for c in &chosen {
            if warm.row(c.name, top).is_some_and(|r| (r.rps * 0.5 - common).abs() > 1.0) {
                runs.push((*c, Some(common), "same rate for both"));
            }
        }
    }
    let mut out = Vec::new();
    for (c, rate, basis) in runs {
        let mut row = OpenRow {
            target: c.name.into(),
            status: c.status(),
            basis: basis.into(),
            connections: top,
            rate_rps: 0.0,
            achieved_rps: 0.0,
            requests: 0,
            errors: 0,
            unsent: 0,
            latency: Latency::default(),
            pacer_lag_p99_us: 0.0,
            bench_cpu_pct: 0.0,
            loadgen_saturated: false,
            server_cpu_pct: None,
            other_cpu_pct: None,
            server_cpu_us_per_req: None,
        };
        let (Some(target), Some(rate)) = (c.target(), rate) else {
            if row.status == "ok" {
                row.status = "skipped: no closed-loop result to derive the rate from".into();
            }
            out.push(row);
            continue;
        };
        row.rate_rps = rate;
        let spec = Spec {
            connections: top,
            warmup: plan.warm_warmup,
            duration: plan.open_duration,
            mode: Mode::Open { rate },
        };
        settle();
        match loadgen::run(&target, spec) {
            Ok(r) => {
                log(&format!(
                    "open {:>16} rate {:>7.0}/s: achieved {:>7.0} rps  p50 {:>7.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  unsent {}  (pacer lag p99 {:.0} us, cpu: bench {:.0}%, server {:.0}%)",
                    c.name,
                    row.rate_rps,
                    r.rps(),
                    r.hist.value_at_quantile(0.5) as f64 / 1e3,
                    r.hist.value_at_quantile(0.99) as f64 / 1e3,
                    r.hist.value_at_quantile(0.999) as f64 / 1e3,
                    r.unsent,
                    r.pacer_lag.as_ref().map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3),
                    r.bench_cpu_pct,
                    r.server_cpu_pct.unwrap_or(0.0)
                ));
                row.achieved_rps = r.rps();
                row.requests = r.requests;
                row.errors = r.errors;
                row.unsent = r.unsent;
                row.latency = Latency::from_hist(&r.hist);
                row.pacer_lag_p99_us = r.pacer_lag.as_ref().map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3);
                row.bench_cpu_pct = r.bench_cpu_pct;
                row.loadgen_saturated = r.bench_cpu_pct > SATURATED_PCT;
                row.server_cpu_pct = r.server_cpu_pct;
                row.other_cpu_pct = r.other_cpu_pct;
                row.server_cpu_us_per_req = r.server_cpu_pct.map(|pct| pct / 100.0 * 1e6 / r.rps().max(1e-9));
            }
            Err(e) => row.status = format!("failed: {e:#}"),
        }
        out.push(row);
    }
    out
}

/// Sleeps briefly between runs so one server's tail work does not bleed into the next run.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}
