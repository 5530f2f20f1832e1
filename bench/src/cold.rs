//! Scenario cold: deploy M copies of `hello` with `min_warm=0` (empty pools), then send the
//! first request to each over an already-open keep-alive connection; `wisp_cold_starts_total`
//! proves every first request instantiated on demand.
//!
//! Scenario overhead: one request at a time through the node, `/fn/hello` against `/healthz`
//! (the transport floor) and against the node's own invocation time from `/metrics`.

use crate::client::Conn;
use crate::loadgen::{self, Latency, Target};
use crate::{Ctx, Plan, Section, Status, block_on, http, log, metrics};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};
use wisp_testkit::metric_value;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdReport {
    pub status: Status,
    /// First requests sent (one per function).
    pub requests: u64,
    pub functions: usize,
    pub deploy_s: f64,
    /// Functions whose first request `/metrics` counts as a cold start (expected: all of them).
    pub verified_cold: usize,
    pub all_cold: bool,
    pub non_2xx: u64,
    pub latency: Latency,
    /// The second request to each function, right after the first.
    pub second: Latency,
    /// Of those, how many were cold too (`wisp_cold_starts_total` = 2).
    pub second_cold: usize,
    /// The warm `hello` requested just before each first request (after the same idle gap).
    pub warm_control: Latency,
    /// Every first-request latency, in deploy order, microseconds.
    pub samples_us: Vec<f64>,
    /// Wisp's warm p50 at 1 connection (scenario warm), for the ratios.
    pub warm_p50_us: Option<f64>,
    pub p50_vs_warm_p50: Option<f64>,
    pub p99_vs_warm_p50: Option<f64>,
}

impl Section for ColdReport {
    fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }
}

impl ColdReport {
    pub fn compare_to_warm(&mut self, warm_p50_us: Option<f64>) {
        self.warm_p50_us = warm_p50_us.filter(|w| *w > 0.0);
        if let (Some(w), true) = (self.warm_p50_us, self.latency.count > 0) {
            self.p50_vs_warm_p50 = Some(self.latency.p50_us / w);
            self.p99_vs_warm_p50 = Some(self.latency.p99_us / w);
        }
    }
}

pub fn run(plan: &Plan, ctx: &Ctx) -> ColdReport {
    let mut report = ColdReport { functions: plan.cold_functions, ..ColdReport::default() };
    let result = match ctx.wisp() {
        Some(wisp) => measure_cold(&wisp, ctx, &mut report),
        None => Err(anyhow::anyhow!("no wisp node")),
    };
    if let Err(e) = result {
        report.status = Status::failed(format!("{e:#}"));
    }
    report
}

fn measure_cold(wisp: &Target, ctx: &Ctx, report: &mut ColdReport) -> anyhow::Result<()> {
    let names: Vec<String> = (0..report.functions).map(|i| format!("cold-{i}")).collect();
    let t = Instant::now();
    for name in &names {
        let resp = http("POST", wisp.addr, &format!("/v1/functions/{name}?min_warm=0"), Some(&ctx.wasm))?;
        anyhow::ensure!(resp.status == 201, "deploying {name}: {} {}", resp.status, resp.body);
    }
    report.deploy_s = t.elapsed().as_secs_f64();

    // Per function, after a short idle gap: the warm `hello` (wakes idle threads; the control),
    // the first request to the new function, then a second one right away.
    let [mut first, mut second, mut control] = [(); 3].map(|_| loadgen::new_hist());
    block_on(async {
        let mut conn = Conn::connect(wisp.addr).await?;
        conn.get("/healthz").await?; // the connection is warm; the functions are not
        for name in &names {
            tokio::time::sleep(Duration::from_millis(5)).await;
            timed(&mut control, conn.get(&wisp.path)).await?;
            let (status, ns) = timed(&mut first, conn.get(&format!("/fn/{name}"))).await?;
            report.samples_us.push(ns as f64 / 1e3);
            let (status2, _) = timed(&mut second, conn.get(&format!("/fn/{name}"))).await?;
            report.requests += 1;
            report.non_2xx += u64::from(!status.is_success()) + u64::from(!status2.is_success());
        }
        anyhow::Ok(())
    })?;
    report.latency = Latency::from_hist(&first);
    report.second = Latency::from_hist(&second);
    report.warm_control = Latency::from_hist(&control);

    let text = metrics(wisp.addr)?;
    let cold = |n: &str| metric_value(&text, &format!("wisp_cold_starts_total{{function=\"{n}\"}}")).unwrap_or(0.0);
    report.verified_cold = names.iter().filter(|n| cold(n) >= 1.0).count();
    report.all_cold = report.verified_cold == names.len();
    report.second_cold = names.iter().filter(|n| cold(n) >= 2.0).count();
    log(&format!(
        "cold: {} first requests, p50 {:.1} us, p99 {:.1} us; {} of {} verified cold; second p50 {:.1} us ({} cold); warm control p50 {:.1} us",
        report.requests,
        report.latency.p50_us,
        report.latency.p99_us,
        report.verified_cold,
        names.len(),
        report.second.p50_us,
        report.second_cold,
        report.warm_control.p50_us
    ));
    Ok(())
}

/// Awaits `f`, recording its duration in `hist`; returns its output and the nanoseconds.
async fn timed<T>(hist: &mut Histogram<u64>, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, u64)> {
    let t0 = Instant::now();
    let out = f.await?;
    let ns = t0.elapsed().as_nanos() as u64;
    hist.saturating_record(ns);
    Ok((out, ns))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OverheadReport {
    pub status: Status,
    pub requests: u64,
    pub samples: usize,
    /// `/fn/hello`, one keep-alive connection, one request at a time (back to back).
    pub http: Latency,
    pub http_cold_starts: u64,
    /// `GET /healthz` the same way: client, loopback, hyper and tower without a function.
    pub healthz: Latency,
    /// Mean time inside the runtime per invocation over the same requests
    /// (`wisp_invocation_duration_seconds` sum / count deltas): gateway excluded.
    pub runtime_mean_us: Option<f64>,
    /// HTTP mean − runtime mean: what the gateway, transport and client add.
    pub added_mean_us: Option<f64>,
    /// hello p50 − healthz p50: routing to a function and invoking it.
    pub function_p50_over_healthz_us: f64,
}

impl Section for OverheadReport {
    fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }
}

pub fn overhead(plan: &Plan, ctx: &Ctx) -> OverheadReport {
    let mut report = OverheadReport { samples: plan.samples, ..OverheadReport::default() };
    let result = match ctx.wisp() {
        Some(wisp) => measure_overhead(&wisp, plan, &mut report),
        None => Err(anyhow::anyhow!("no wisp node")),
    };
    if let Err(e) = result {
        report.status = Status::failed(format!("{e:#}"));
    }
    report
}

fn measure_overhead(wisp: &Target, plan: &Plan, report: &mut OverheadReport) -> anyhow::Result<()> {
    let series = |suffix: &str| format!("wisp_{suffix}{{function=\"hello\"}}");
    let scrape = || -> anyhow::Result<[f64; 3]> {
        let text = metrics(wisp.addr)?;
        let value = |s: &str| metric_value(&text, &series(s)).unwrap_or(0.0);
        Ok([
            value("cold_starts_total"),
            value("invocation_duration_seconds_sum"),
            value("invocation_duration_seconds_count"),
        ])
    };
    let [mut hello, mut healthz] = [(); 2].map(|_| loadgen::new_hist());
    let paths = [(wisp.path.as_str(), &mut hello), ("/healthz", &mut healthz)];
    let mut before = [0.0; 3];
    block_on(async {
        let mut conn = Conn::connect(wisp.addr).await?;
        let mut paths = paths;
        for i in 0..plan.samples / 10 + plan.samples {
            if i == plan.samples / 10 {
                before = scrape()?; // after the warm-up
            }
            for (path, hist) in paths.iter_mut() {
                let t0 = Instant::now();
                let status = conn.get(path).await?;
                if i >= plan.samples / 10 {
                    hist.saturating_record(t0.elapsed().as_nanos() as u64);
                }
                anyhow::ensure!(status.is_success(), "{path} answered {status}");
            }
        }
        anyhow::Ok(())
    })?;
    let after = scrape()?;
    report.http = Latency::from_hist(&hello);
    report.healthz = Latency::from_hist(&healthz);
    report.requests = report.http.count + report.healthz.count;
    report.http_cold_starts = (after[0] - before[0]).max(0.0) as u64;
    let invocations = after[2] - before[2];
    report.runtime_mean_us = (invocations > 0.0).then(|| (after[1] - before[1]) / invocations * 1e6);
    report.added_mean_us = report.runtime_mean_us.map(|r| report.http.mean_us - r);
    report.function_p50_over_healthz_us = report.http.p50_us - report.healthz.p50_us;
    log(&format!(
        "overhead: HTTP p50 {:.1} us, mean {:.1} us; runtime mean {:.1} us; /healthz p50 {:.1} us; {} cold",
        report.http.p50_us,
        report.http.mean_us,
        report.runtime_mean_us.unwrap_or(0.0),
        report.healthz.p50_us,
        report.http_cold_starts
    ));
    Ok(())
}
