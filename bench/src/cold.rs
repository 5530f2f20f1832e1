//! Scenario cold: deploy M copies of `hello` with `min_warm=0` (empty pools), then send the
//! first request to each over an already-open keep-alive connection; `wisp_cold_starts_total`
//! proves every first request instantiated on demand.
//!
//! Scenario overhead: one request at a time through the node, `/fn/hello` against `/healthz`
//! (the transport floor) and against the node's own invocation time from `/metrics`.

use crate::loadgen::{Conn, Hist};
use crate::{Ctx, Plan, block_on, http, log, metrics};
use serde::Serialize;
use std::time::{Duration, Instant};
use wisp_testkit::metric_value;

#[derive(Debug, Serialize)]
pub struct ColdReport {
    /// First requests sent (one per function).
    pub requests: u64,
    pub deploy_s: f64,
    /// Functions whose first request `/metrics` counts as a cold start (expected: all of them).
    pub verified_cold: usize,
    pub first: Hist,
    /// The second request to each function, right after the first...
    pub second: Hist,
    /// ...of which this many were cold too (`wisp_cold_starts_total` = 2).
    pub second_cold: usize,
    /// The warm `hello` requested just before each first request (after the same idle gap).
    pub warm_control: Hist,
}

pub fn run(plan: &Plan, ctx: &Ctx) -> anyhow::Result<ColdReport> {
    let wisp = ctx.wisp()?;
    let names: Vec<String> = (0..plan.cold_functions).map(|i| format!("cold-{i}")).collect();
    let t = Instant::now();
    for name in &names {
        let resp = http("POST", wisp.addr, &format!("/v1/functions/{name}?min_warm=0"), Some(&ctx.wasm))?;
        anyhow::ensure!(resp.status == 201, "deploying {name}: {} {}", resp.status, resp.body);
    }
    let deploy_s = t.elapsed().as_secs_f64();

    // Per function, after a short idle gap: the warm `hello` (wakes idle threads; the control),
    // the first request to the new function, then a second one right away.
    let [mut first, mut second, mut control] = [(); 3].map(|_| Hist::default());
    block_on(async {
        let mut conn = Conn::connect(wisp.addr).await?;
        conn.get("/healthz").await?; // the connection is warm; the functions are not
        for name in &names {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let path = format!("/fn/{name}");
            for (hist, path) in [(&mut control, wisp.path.as_str()), (&mut first, &path), (&mut second, &path)] {
                let t0 = Instant::now();
                let status = conn.get(path).await?;
                hist.record(t0.elapsed());
                anyhow::ensure!(status.is_success(), "{path} answered {status}");
            }
        }
        anyhow::Ok(())
    })?;

    let text = metrics(wisp.addr)?;
    let cold = |n: &str| metric_value(&text, &format!("wisp_cold_starts_total{{function=\"{n}\"}}")).unwrap_or(0.0);
    let report = ColdReport {
        requests: names.len() as u64,
        deploy_s,
        verified_cold: names.iter().filter(|n| cold(n) >= 1.0).count(),
        first,
        second,
        second_cold: names.iter().filter(|n| cold(n) >= 2.0).count(),
        warm_control: control,
    };
    let (p50, p99, verified) = (report.first.latency().p50_us, report.first.latency().p99_us, report.verified_cold);
    log(&format!("cold: first request p50 {p50:.1} us, p99 {p99:.1} us; {verified} of {} verified cold", names.len()));
    Ok(report)
}

#[derive(Debug, Serialize)]
pub struct OverheadReport {
    pub requests: u64,
    /// `/fn/hello`, one keep-alive connection, one request at a time (back to back).
    pub hello: Hist,
    pub hello_cold_starts: u64,
    /// `GET /healthz` the same way: client, loopback, hyper and tower without a function.
    pub healthz: Hist,
    /// Mean time inside the runtime per invocation over the same requests
    /// (`wisp_invocation_duration_seconds` sum / count deltas): gateway excluded.
    pub runtime_mean_us: Option<f64>,
}

pub fn overhead(plan: &Plan, ctx: &Ctx) -> anyhow::Result<OverheadReport> {
    let wisp = ctx.wisp()?;
    let scrape = || -> anyhow::Result<[f64; 3]> {
        let text = metrics(wisp.addr)?;
        let series = ["cold_starts_total", "invocation_duration_seconds_sum", "invocation_duration_seconds_count"];
        Ok(series.map(|s| metric_value(&text, &format!("wisp_{s}{{function=\"hello\"}}")).unwrap_or(0.0)))
    };
    let [mut hello, mut healthz] = [(); 2].map(|_| Hist::default());
    let warmup = plan.samples / 10;
    let mut before = [0.0; 3];
    block_on(async {
        let mut conn = Conn::connect(wisp.addr).await?;
        for i in 0..warmup + plan.samples {
            if i == warmup {
                before = scrape()?;
            }
            for (path, hist) in [(wisp.path.as_str(), &mut hello), ("/healthz", &mut healthz)] {
                let t0 = Instant::now();
                let status = conn.get(path).await?;
                if i >= warmup {
                    hist.record(t0.elapsed());
                }
                anyhow::ensure!(status.is_success(), "{path} answered {status}");
            }
        }
        anyhow::Ok(())
    })?;
    let after = scrape()?;
    let invocations = after[2] - before[2];
    let report = OverheadReport {
        requests: hello.latency().count + healthz.latency().count,
        hello,
        hello_cold_starts: (after[0] - before[0]).max(0.0) as u64,
        healthz,
        runtime_mean_us: (invocations > 0.0).then(|| (after[1] - before[1]) / invocations * 1e6),
    };
    let (hello, healthz) = (report.hello.latency().p50_us, report.healthz.latency().p50_us);
    log(&format!("overhead: /fn/hello p50 {hello:.1} us, /healthz p50 {healthz:.1} us"));
    Ok(report)
}
