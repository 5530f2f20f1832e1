//! Scenario 2 (cold): deploy M copies of `hello` with `min_warm=0` (empty pools), then send the
//! first request to each over an already-open keep-alive connection. `/metrics`
//! (`wisp_cold_starts_total`) proves every first request instantiated on demand.
//!
//! Also the HTTP half of scenario 5 (overhead): sequential requests through the node.

use crate::client::{self, Conn};
use crate::loadgen::{self, Latency, Target};
use crate::{Plan, log};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdReport {
    pub status: String,
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
    /// Wisp's warm p50 at 1 connection (scenario 1), for the ratio.
    pub warm_p50_us: Option<f64>,
    pub p50_vs_warm_p50: Option<f64>,
    pub p99_vs_warm_p50: Option<f64>,
}

impl ColdReport {
    /// An empty report for `plan` with `status` ("ok" before running, or why it did not run).
    pub fn new(plan: &Plan, status: &str) -> Self {
        Self { status: status.into(), functions: plan.cold_functions, ..Self::default() }
    }
}

pub fn run(plan: &Plan, wisp: &Target, wasm: &Bytes, warm_p50_us: Option<f64>) -> ColdReport {
    // `wisp.path` is the warm hello, the control.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut report = ColdReport { warm_p50_us, ..ColdReport::new(plan, "ok") };
    if let Err(e) = rt.block_on(run_async(plan, wisp, wasm, &mut report)) {
        report.status = format!("failed: {e:#}");
    }
    report
}

async fn run_async(plan: &Plan, wisp: &Target, wasm: &Bytes, report: &mut ColdReport) -> anyhow::Result<()> {
    let names: Vec<String> = (0..plan.cold_functions).map(|i| format!("cold-{i}")).collect();
    let mut admin = Conn::connect(wisp.addr).await?;
    let t = Instant::now();
    for name in &names {
        let (status, body) =
            admin.send(Method::POST, &format!("/v1/functions/{name}?min_warm=0"), wasm.clone()).await?;
        if status != StatusCode::CREATED {
            anyhow::bail!("deploying {name}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    report.deploy_s = t.elapsed().as_secs_f64();

    // Per function, after a short idle gap: a request to the warm `hello` (absorbs the wake-up
    // of idle threads and is the warm control), then the first request to the new function,
    // then a second one right away (still on demand until the scaler's next tick raises the
    // target), which separates first-time costs from instantiation.
    let (mut hist, mut second, mut control) = (loadgen::new_hist(), loadgen::new_hist(), loadgen::new_hist());
    let mut conn = Conn::connect(wisp.addr).await?;
    conn.get("/healthz").await?; // the connection itself is warm; the functions are not
    let timed = |h: &mut hdrhistogram::Histogram<u64>, t0: Instant| {
        let ns = t0.elapsed().as_nanos() as u64;
        h.saturating_record(ns);
        ns
    };
    for name in &names {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        conn.get(&wisp.path).await?;
        timed(&mut control, t0);
        let t0 = Instant::now();
        let (status, _) = conn.get(&format!("/fn/{name}")).await?;
        let ns = timed(&mut hist, t0);
        report.samples_us.push(ns as f64 / 1e3);
        let t0 = Instant::now();
        let (status2, _) = conn.get(&format!("/fn/{name}")).await?;
        timed(&mut second, t0);
        report.requests += 1;
        report.non_2xx += u64::from(!status.is_success()) + u64::from(!status2.is_success());
    }
    report.latency = Latency::from_hist(&hist);
    report.second = Latency::from_hist(&second);
    report.warm_control = Latency::from_hist(&control);

    let (_, metrics) = client::once(wisp.addr, Method::GET, "/metrics", Bytes::new()).await?;
    let metrics = String::from_utf8_lossy(&metrics);
    let cold = client::metric_by_function(&metrics, "wisp_cold_starts_total");
    report.verified_cold = names.iter().filter(|n| cold.iter().any(|(f, v)| f == *n && *v >= 1.0)).count();
    report.all_cold = report.verified_cold == names.len();
    report.second_cold = names.iter().filter(|n| cold.iter().any(|(f, v)| f == *n && *v >= 2.0)).count();
    if let Some(w) = report.warm_p50_us.filter(|w| *w > 0.0) {
        report.p50_vs_warm_p50 = Some(report.latency.p50_us / w);
        report.p99_vs_warm_p50 = Some(report.latency.p99_us / w);
    }
    log(&format!(
        "cold: {} first requests, p50 {:.1} us, p99 {:.1} us, max {:.1} us; {} of {} verified cold in /metrics; second request p50 {:.1} us ({} cold); warm control p50 {:.1} us",
        report.requests,
        report.latency.p50_us,
        report.latency.p99_us,
        report.latency.max_us,
        report.verified_cold,
        names.len(),
        report.second.p50_us,
        report.second_cold,
        report.warm_control.p50_us
    ));
    Ok(())
}

/// Sequential requests (one at a time, back to back, one keep-alive connection) through the
/// node, `samples` to each of `paths`, interleaved so every path sees the same conditions;
/// returns each path's latency and the cold starts of `hello` the node counted meanwhile.
pub fn sequential_http(
    target: &Target,
    paths: &[&str],
    warmup: usize,
    samples: usize,
) -> anyhow::Result<(Vec<Latency>, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut conn = Conn::connect(target.addr).await?;
        for _ in 0..warmup {
            for path in paths {
                conn.get(path).await?;
            }
        }
        let metrics = |addr| async move {
            let (_, m) = client::once(addr, Method::GET, "/metrics", Bytes::new()).await?;
            anyhow::Ok(
                client::metric_sum(&String::from_utf8_lossy(&m), "wisp_cold_starts_total", "function=\"hello\"") as u64
            )
        };
        let before = metrics(target.addr).await?;
        let mut hists: Vec<_> = paths.iter().map(|_| loadgen::new_hist()).collect();
        for _ in 0..samples {
            for (path, hist) in paths.iter().zip(hists.iter_mut()) {
                let t0 = Instant::now();
                let (status, _) = conn.get(path).await?;
                hist.saturating_record(t0.elapsed().as_nanos() as u64);
                anyhow::ensure!(status.is_success(), "{path} answered {status}");
            }
        }
        let after = metrics(target.addr).await?;
        Ok((hists.iter().map(Latency::from_hist).collect(), after.saturating_sub(before)))
    })
}
