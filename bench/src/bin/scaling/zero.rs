//! Scenario zero: a service with a 6 s stable window (`autoscaling.knative.dev/window`, the
//! shortest Knative allows) and containerConcurrency 10, on the sleeping guest, left idle until
//! `/metrics` shows it at zero (desired and ready replicas 0, no ready instance); then
//! `--zero-requests` concurrent first requests, each on a connection opened beforehand. The
//! baseline: the same burst on the same connections right after, warm. `--zero-rounds` rounds,
//! each waiting for zero again.

use crate::loadgen::{Conn, Hist};
use crate::node::{Gauges, MISBEHAVE, Service, Wisp};
use crate::{Plan, block_on, log};
use futures::future::join_all;
use serde::Serialize;
use std::time::{Duration, Instant};

const SERVICE: &str = "zero";
const CONTAINER_CONCURRENCY: u32 = 10;

/// One burst of concurrent requests, each timed from the burst's release.
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    pub requests: u64,
    /// Non-200 answers and transport errors.
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Hist,
    /// `wisp_cold_starts_total` of the function grew by this much during the burst.
    pub cold_starts: f64,
    /// The gauges right after the burst.
    pub after: Gauges,
}

#[derive(Debug, Serialize)]
pub struct Round {
    /// From the previous traffic (or the apply) until /metrics showed the revision at zero.
    pub wait_zero_s: f64,
    pub at_zero: Gauges,
    pub cold: Burst,
    pub warm: Burst,
}

#[derive(Debug, Serialize)]
pub struct ZeroReport {
    pub service: &'static str,
    pub container_concurrency: u32,
    pub window_s: u64,
    pub work_ms: u64,
    pub requests_per_burst: usize,
    /// Every round's bursts merged.
    pub cold: Hist,
    pub warm: Hist,
    pub cold_errors: u64,
    pub warm_errors: u64,
    pub cold_starts: f64,
    /// Cold over warm, of p50, p99 and max.
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    pub ratio_max: f64,
    pub rounds: Vec<Round>,
}

pub fn run(plan: &Plan, wisp: &Wisp) -> anyhow::Result<ZeroReport> {
    let window = format!("{}s", plan.zero_window_s);
    let revision = wisp.apply(&Service {
        name: SERVICE,
        image: MISBEHAVE,
        container_concurrency: CONTAINER_CONCURRENCY,
        annotations: vec![("autoscaling.knative.dev/window", window.clone())],
    })?;
    let path = format!("/fn/{SERVICE}?mode=sleep&ms={}", plan.work_ms);
    wisp.check(&path)?;
    let n = plan.zero_requests;
    log(&format!("zero: revision {revision}, window {window}, {n} concurrent requests per burst"));

    let mut rounds = Vec::new();
    for round in 1..=plan.zero_rounds {
        let timeout = Duration::from_secs(plan.zero_window_s * 2 + 60);
        let at_zero = |g: &Gauges| g.desired == 0.0 && g.ready == 0.0 && g.ready_instances == 0.0;
        let (at_zero_gauges, waited) =
            wisp.wait_gauges(SERVICE, Duration::from_millis(50), timeout, "scaled to zero", at_zero)?;
        let (cold, warm) = block_on(async {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                conns.push(Conn::connect(wisp.addr).await?);
            }
            // Still at zero once every connection is open (opening them invokes nothing).
            let g = wisp.gauges(SERVICE)?;
            anyhow::ensure!(at_zero(&g), "{SERVICE} left zero before the burst: {g:?}");
            let cold = burst(wisp, &mut conns, &path, g.cold_starts).await?;
            let warm = burst(wisp, &mut conns, &path, cold.after.cold_starts).await?;
            anyhow::Ok((cold, warm))
        })?;
        let (c, w) = (cold.latency.latency(), warm.latency.latency());
        log(&format!(
            "zero round {round}: at zero after {:.1} s; cold p50 {:.1} / p99 {:.1} / max {:.1} ms, {} errors, \
             {} cold starts, desired {} after; warm p50 {:.1} / p99 {:.1} / max {:.1} ms, {} errors",
            waited.as_secs_f64(),
            c.p50_us / 1e3,
            c.p99_us / 1e3,
            c.max_us / 1e3,
            cold.errors,
            cold.cold_starts,
            cold.after.desired,
            w.p50_us / 1e3,
            w.p99_us / 1e3,
            w.max_us / 1e3,
            warm.errors
        ));
        rounds.push(Round { wait_zero_s: waited.as_secs_f64(), at_zero: at_zero_gauges, cold, warm });
    }

    let (mut cold, mut warm) = (Hist::default(), Hist::default());
    for r in &rounds {
        cold.add(&r.cold.latency);
        warm.add(&r.warm.latency);
    }
    let (c, w) = (cold.latency(), warm.latency());
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    Ok(ZeroReport {
        service: SERVICE,
        container_concurrency: CONTAINER_CONCURRENCY,
        window_s: plan.zero_window_s,
        work_ms: plan.work_ms,
        requests_per_burst: n,
        cold_errors: rounds.iter().map(|r| r.cold.errors).sum(),
        warm_errors: rounds.iter().map(|r| r.warm.errors).sum(),
        cold_starts: rounds.iter().map(|r| r.cold.cold_starts).sum(),
        ratio_p50: ratio(c.p50_us, w.p50_us),
        ratio_p99: ratio(c.p99_us, w.p99_us),
        ratio_max: ratio(c.max_us, w.max_us),
        cold,
        warm,
        rounds,
    })
}

/// Sends one request on every connection at once and waits for all the answers; a connection
/// that failed is replaced for the next burst.
async fn burst(wisp: &Wisp, conns: &mut [Conn], path: &str, cold_before: f64) -> anyhow::Result<Burst> {
    let start = Instant::now();
    let results = join_all(conns.iter_mut().map(|conn| async move {
        let result = conn.get(path).await;
        (start.elapsed(), result)
    }))
    .await;
    let mut out = Burst {
        requests: 0,
        errors: 0,
        first_error: None,
        latency: Hist::default(),
        cold_starts: 0.0,
        after: Gauges::default(),
    };
    let mut broken = Vec::new();
    for (i, (elapsed, result)) in results.into_iter().enumerate() {
        out.requests += 1;
        out.latency.record(elapsed);
        match result {
            Ok(status) if status.as_u16() == 200 => {}
            Ok(status) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("answered {status}"));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                broken.push(i);
            }
        }
    }
    for i in broken {
        conns[i] = Conn::connect(wisp.addr).await?;
    }
    out.after = wisp.gauges(SERVICE)?;
    out.cold_starts = out.after.cold_starts - cold_before;
    Ok(out)
}
