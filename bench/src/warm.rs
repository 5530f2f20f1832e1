//! Scenario 1 (warm): `hello` over keep-alive HTTP/1.1 at 1, 16 and 64 connections, closed loop,
//! Wisp and both `wasmtime serve` baselines alternating run by run; then open loop at half the
//! measured closed-loop throughput for Wisp and tuned wasmtime.

use crate::loadgen::{self, Latency, Mode, RunResult, SATURATED_PCT, Spec, Target};
use crate::servers::Contender;
use crate::{Ctx, Plan, Section, Status, log};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize)]
pub struct WarmRow {
    pub target: String,
    pub connections: usize,
    pub status: Status,
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenRow {
    pub target: String,
    pub status: Status,
    /// How the rate was chosen.
    pub basis: String,
    pub connections: usize,
    pub rate_rps: f64,
    pub achieved_rps: f64,
    pub requests: u64,
    pub errors: u64,
    /// Scheduled in the measured window but never sent (rate above capacity).
    pub unsent: u64,
    /// Latency from the intended send time.
    pub latency: Latency,
    pub pacer_lag_p99_us: f64,
    pub bench_cpu_pct: f64,
    pub loadgen_saturated: bool,
    pub server_cpu_pct: Option<f64>,
    pub other_cpu_pct: Option<f64>,
    pub server_cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WarmReport {
    pub status: Status,
    pub requests: u64,
    pub rounds: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub connection_levels: Vec<usize>,
    pub rows: Vec<WarmRow>,
    pub ratios: Vec<Ratio>,
    pub open_loop: Vec<OpenRow>,
}

impl Section for WarmReport {
    fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }
}

impl WarmReport {
    pub fn row(&self, target: &str, connections: usize) -> Option<&WarmRow> {
        self.rows.iter().find(|r| r.target == target && r.connections == connections && r.status.is_ok())
    }

    /// What a reader should not miss: a saturated load generator, errors, cold starts.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for r in self.rows.iter().filter(|r| r.status.is_ok()) {
            let at = format!("{} at {} connections", r.target, r.connections);
            if r.loadgen_saturated {
                notes.push(format!(
                    "{at}: load generator saturated ({:.0}%); throughput is a lower bound",
                    r.bench_cpu_pct
                ));
            }
            if r.errors + r.non_2xx > 0 {
                let first = r.first_error.as_deref().unwrap_or("-");
                notes.push(format!("{at}: {} errors, {} non-2xx (first: {first})", r.errors, r.non_2xx));
            }
            if let Some(c) = r.cold_starts.filter(|c| *c > 0) {
                notes.push(format!("{at}: {c} of {} requests instantiated on demand", r.answered));
            }
        }
        for o in self.open_loop.iter().filter(|o| o.status.is_ok() && o.unsent > 0) {
            notes.push(format!(
                "open loop {}: {} scheduled requests never sent (rate above capacity)",
                o.target, o.unsent
            ));
        }
        notes
    }
}

#[derive(Default)]
struct Acc {
    hist: Option<Histogram<u64>>,
    runs: Vec<RunResult>,
    cold: u64,
    failed: Option<Status>,
}

fn cold_starts(wisp: &Target) -> Option<f64> {
    wisp_testkit::metric_value(&crate::metrics(wisp.addr).ok()?, "wisp_cold_starts_total{function=\"hello\"}")
}

pub fn run(plan: &Plan, ctx: &Ctx) -> WarmReport {
    let contenders = &ctx.servers;
    let mut rows = Vec::new();
    for &connections in &plan.connection_levels {
        let spec = Spec { connections, warmup: plan.warm_warmup, duration: plan.warm_duration, mode: Mode::Closed };
        let mut accs: Vec<Acc> = contenders.iter().map(|_| Acc::default()).collect();
        for round in 1..=plan.rounds {
            for (c, acc) in contenders.iter().zip(accs.iter_mut()) {
                let Some(target) = c.target().filter(|_| acc.failed.is_none()) else { continue };
                let before = (c.name == "wisp").then(|| cold_starts(&target)).flatten();
                match loadgen::run(&target, spec) {
                    Ok(r) => {
                        log(&format!(
                            "warm {:>16} c={connections:<3} round {round}: {:>8.0} rps  p50 {:>7.1} us  p99 {:>8.1} us  (cpu: bench {:.0}%, server {:.0}%, other {:.0}%)",
                            c.name,
                            r.rps(),
                            r.hist.value_at_quantile(0.5) as f64 / 1e3,
                            r.hist.value_at_quantile(0.99) as f64 / 1e3,
                            r.bench_cpu_pct,
                            r.server_cpu_pct.unwrap_or(0.0),
                            r.other_cpu_pct.unwrap_or(0.0)
                        ));
                        if let (Some(b), Some(a)) = (before, before.and_then(|_| cold_starts(&target))) {
                            acc.cold += (a - b).max(0.0) as u64;
                        }
                        acc.hist.get_or_insert_with(loadgen::new_hist).add(&r.hist).ok();
                        acc.runs.push(r);
                    }
                    Err(e) => acc.failed = Some(Status::failed(format!("{e:#}"))),
                }
                settle();
            }
        }
        rows.extend(contenders.iter().zip(accs).map(|(c, acc)| row(c, connections, acc)));
    }
    let mut report = WarmReport {
        requests: rows.iter().map(|r| r.requests).sum(),
        rounds: plan.rounds,
        warmup_s: plan.warm_warmup.as_secs_f64(),
        duration_s: plan.warm_duration.as_secs_f64(),
        connection_levels: plan.connection_levels.clone(),
        rows,
        ..WarmReport::default()
    };
    for &connections in &plan.connection_levels {
        for baseline in contenders.iter().filter(|c| c.name != "wisp") {
            let both = report.row("wisp", connections).zip(report.row(baseline.name, connections));
            report.ratios.push(Ratio {
                connections,
                baseline: baseline.name.into(),
                throughput: both.map(|(w, b)| w.rps / b.rps),
                p99: both.map(|(w, b)| w.latency.p99_us / b.latency.p99_us),
                p50: both.map(|(w, b)| w.latency.p50_us / b.latency.p50_us),
            });
        }
    }
    report.open_loop = open_loop(plan, contenders, &report);
    report
}

fn row(c: &Contender, connections: usize, acc: Acc) -> WarmRow {
    let mut r = WarmRow {
        target: c.name.into(),
        connections,
        status: acc.failed.unwrap_or_else(|| c.status()),
        cold_starts: (c.name == "wisp").then_some(acc.cold),
        ..WarmRow::default()
    };
    let (Some(hist), false) = (acc.hist, acc.runs.is_empty()) else { return r };
    let runs = &acc.runs;
    let avg = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let measured: f64 = runs.iter().map(|x| x.measured_s).sum();
    r.requests = runs.iter().map(|x| x.requests).sum();
    r.answered = runs.iter().map(|x| x.answered).sum();
    r.errors = runs.iter().map(|x| x.errors).sum();
    r.non_2xx = runs.iter().map(|x| x.non_2xx).sum();
    r.first_error = runs.iter().find_map(|x| x.first_error.clone());
    r.rps = r.requests as f64 / measured;
    r.rps_rounds = runs.iter().map(|x| x.rps()).collect();
    r.latency = Latency::from_hist(&hist);
    r.bench_cpu_pct = runs.iter().map(|x| x.bench_cpu_pct).fold(0.0, f64::max);
    r.loadgen_saturated = r.bench_cpu_pct > SATURATED_PCT;
    r.server_cpu_pct = avg(runs.iter().filter_map(|x| x.server_cpu_pct).collect());
    r.server_cpu_us_per_req = r.server_cpu_pct.map(|pct| pct / 100.0 * 1e6 / r.rps.max(1e-9));
    r.other_cpu_pct = avg(runs.iter().filter_map(|x| x.other_cpu_pct).collect());
    r.server_threads_pct = runs.last().map(|x| x.server_threads_pct.clone()).unwrap_or_default();
    r
}

/// Wisp and tuned wasmtime, each at half its own closed-loop throughput at the highest
/// connection count; then, when both ran, both at half the lower one (same offered load).
fn open_loop(plan: &Plan, contenders: &[Contender], warm: &WarmReport) -> Vec<OpenRow> {
    let top = plan.connection_levels.iter().copied().max().unwrap_or(1);
    let chosen: Vec<&Contender> =
        contenders.iter().filter(|c| c.name == "wisp" || c.name == "wasmtime-tuned").collect();
    let half = |c: &Contender| warm.row(c.name, top).map(|r| (r.rps * 0.5).max(1.0));
    let mut runs: Vec<_> = chosen.iter().map(|c| (*c, half(c), "50% of own closed-loop max")).collect();
    let own: Vec<f64> = chosen.iter().filter_map(|c| half(c)).collect();
    if let [a, b] = own[..] {
        let common = a.min(b);
        runs.extend(
            chosen
                .iter()
                .filter(|c| half(c).is_some_and(|h| (h - common).abs() > 1.0))
                .map(|c| (*c, Some(common), "same rate for both")),
        );
    }
    let mut out = Vec::new();
    for (c, rate, basis) in runs {
        let mut row = OpenRow {
            target: c.name.into(),
            status: c.status(),
            basis: basis.into(),
            connections: top,
            ..OpenRow::default()
        };
        let (Some(target), Some(rate)) = (c.target(), rate) else {
            if row.status.is_ok() {
                row.status = Status::Skipped("no closed-loop result to derive the rate from".into());
            }
            out.push(row);
            continue;
        };
        row.rate_rps = rate;
        settle();
        let spec = Spec {
            connections: top,
            warmup: plan.warm_warmup,
            duration: plan.open_duration,
            mode: Mode::Open { rate },
        };
        match loadgen::run(&target, spec) {
            Ok(r) => {
                let lag_p99 = r.pacer_lag.as_ref().map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3);
                row.achieved_rps = r.rps();
                row.requests = r.requests;
                row.errors = r.errors;
                row.unsent = r.unsent;
                row.latency = Latency::from_hist(&r.hist);
                row.pacer_lag_p99_us = lag_p99;
                row.bench_cpu_pct = r.bench_cpu_pct;
                row.loadgen_saturated = r.bench_cpu_pct > SATURATED_PCT;
                row.server_cpu_pct = r.server_cpu_pct;
                row.other_cpu_pct = r.other_cpu_pct;
                row.server_cpu_us_per_req = r.server_cpu_pct.map(|pct| pct / 100.0 * 1e6 / r.rps().max(1e-9));
                log(&format!(
                    "open {:>16} rate {rate:>7.0}/s: achieved {:>7.0} rps  p50 {:>7.1} us  p99 {:>8.1} us  unsent {}  (pacer lag p99 {lag_p99:.0} us, cpu: bench {:.0}%)",
                    c.name, row.achieved_rps, row.latency.p50_us, row.latency.p99_us, row.unsent, row.bench_cpu_pct
                ));
            }
            Err(e) => row.status = Status::failed(format!("{e:#}")),
        }
        out.push(row);
    }
    out
}

/// Sleeps briefly between runs so one server's tail work does not bleed into the next run.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}
