//! Scenario warm: `hello` over keep-alive HTTP/1.1 at 1, 16 and 64 connections, closed loop,
//! Wisp and both `wasmtime serve` baselines alternating run by run; then open loop, Wisp and
//! tuned wasmtime each at half its own closed-loop throughput.

use crate::loadgen::{self, Run, Spec, Target};
use crate::{Ctx, Plan, Status, log};
use serde::Serialize;
use std::time::Duration;

pub const CONNECTIONS: [usize; 3] = [1, 16, 64];

#[derive(Debug, Default, Serialize)]
pub struct WarmRow {
    pub target: &'static str,
    pub connections: usize,
    pub status: Status,
    /// Throughput of each alternating round, to show the spread.
    pub rps_rounds: Vec<f64>,
    /// Wisp only: requests (warm-up included) that instantiated on demand during the runs.
    pub cold_starts: Option<u64>,
    /// The rounds merged.
    #[serde(flatten)]
    pub run: Option<Run>,
}

#[derive(Debug, Serialize)]
pub struct OpenRow {
    pub target: &'static str,
    pub status: Status,
    /// Half the target's closed-loop throughput at the highest connection count.
    pub rate_rps: f64,
    #[serde(flatten)]
    pub run: Option<Run>,
}

#[derive(Debug, Serialize)]
pub struct WarmReport {
    /// Measured requests, all rows.
    pub requests: u64,
    pub rounds: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rows: Vec<WarmRow>,
    pub open_loop: Vec<OpenRow>,
}

impl WarmReport {
    /// The merged run of a target at a connection count, if every round of it succeeded.
    pub fn run(&self, target: &str, connections: usize) -> Option<&Run> {
        let row = self.rows.iter().find(|r| r.target == target && r.connections == connections)?;
        row.run.as_ref().filter(|_| row.status.is_ok())
    }
}

fn cold_starts(wisp: &Target) -> Option<f64> {
    wisp_testkit::metric_value(&crate::metrics(wisp.addr).ok()?, "wisp_cold_starts_total{function=\"hello\"}")
}

pub fn run(plan: &Plan, ctx: &Ctx) -> WarmReport {
    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        let spec = Spec { connections, warmup: plan.warmup, duration: plan.duration, rate: None };
        let mut level: Vec<WarmRow> = ctx
            .servers
            .iter()
            .map(|c| {
                let cold_starts = (c.name == "wisp").then_some(0);
                WarmRow { target: c.name, connections, status: c.status(), cold_starts, ..WarmRow::default() }
            })
            .collect();
        for round in 1..=plan.rounds {
            for (c, row) in ctx.servers.iter().zip(&mut level) {
                let Some(target) = c.target().filter(|_| row.status.is_ok()) else { continue };
                let before = row.cold_starts.and_then(|_| cold_starts(&target));
                match loadgen::run(&target, spec) {
                    Ok(r) => {
                        log(&format!("warm {:>16} c={connections:<3} round {round}: {}", c.name, r.describe()));
                        if let (Some(n), Some(b), Some(a)) = (&mut row.cold_starts, before, cold_starts(&target)) {
                            *n += (a - b).max(0.0) as u64;
                        }
                        row.rps_rounds.push(r.rps());
                        row.run.get_or_insert_with(Run::default).merge(&r);
                    }
                    Err(e) => row.status = Status::failed(format!("{e:#}")),
                }
                settle();
            }
        }
        rows.extend(level);
    }
    let mut report = WarmReport {
        requests: rows.iter().filter_map(|r| r.run.as_ref()).map(|r| r.requests).sum(),
        rounds: plan.rounds,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: plan.duration.as_secs_f64(),
        rows,
        open_loop: Vec::new(),
    };
    report.open_loop = ctx
        .servers
        .iter()
        .filter(|c| c.name != "wasmtime-default")
        .map(|c| open_loop(plan, c, report.run(c.name, CONNECTIONS[2])))
        .collect();
    report
}

/// Open loop at the highest connection count, at half of `closed`'s throughput.
fn open_loop(plan: &Plan, c: &crate::servers::Contender, closed: Option<&Run>) -> OpenRow {
    let mut row = OpenRow { target: c.name, status: c.status(), rate_rps: 0.0, run: None };
    let (Some(target), Some(closed)) = (c.target(), closed) else {
        if row.status.is_ok() {
            row.status = Status::Skipped("no closed-loop result to derive the rate from".into());
        }
        return row;
    };
    let rate = (closed.rps() * 0.5).max(1.0);
    row.rate_rps = rate;
    settle();
    let spec =
        Spec { connections: CONNECTIONS[2], warmup: plan.warmup, duration: plan.open_duration, rate: Some(rate) };
    match loadgen::run(&target, spec) {
        Ok(r) => {
            let lag = r.pacer_lag.latency().p99_us;
            let (rps, unsent) = (r.describe(), r.unsent);
            log(&format!("open {:>16} rate {rate:>7.0}/s: {rps}, unsent {unsent}, pacer lag p99 {lag:.0} us", c.name));
            row.run = Some(r);
        }
        Err(e) => row.status = Status::failed(format!("{e:#}")),
    }
    row
}

/// Sleeps briefly between runs so one server's tail work does not bleed into the next run.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}
