//! Scenario cold: the first request to a function at zero. N functions of the httpd image
//! (`POST /v1/functions/cold-c-I?image=httpd:bench&min_warm=0`) and, as the baseline, N of the
//! Wasm `hello` component (`min_warm=0`, same bytes, compiled once) are deployed, all at zero.
//! Then, one function at a time, alternating container and Wasm: its service view must show 0
//! ready replicas, 5 ms idle, then `GET /fn/NAME/` over an already-open keep-alive connection,
//! timed until the whole answer is read (a container: crun starts it, the node waits for it to
//! listen, then proxies). The node's `wisp_cold_starts_total` must then be 1 for the function
//! (`verified_cold`). Then a second request (warm for a container: its replica is up; a Wasm
//! one may make an instance on demand again, counted in `second_cold`). The functions
//! are deleted at the end (their replicas stop) so the next scenarios start clean.

use crate::loadgen::{Conn, Hist};
use crate::node::Wisp;
use crate::{Plan, log, procs};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub runtime: &'static str,
    /// The first request to each function (a cold start).
    pub first: Hist,
    /// The request right after it (and after a read of /metrics): the replica is up.
    pub second: Hist,
    /// Every first request, ms, in order.
    pub first_ms: Vec<f64>,
    /// Functions whose first request the node counted as exactly one cold start.
    pub verified_cold: u32,
    /// Second requests the node counted as a cold start too (Wasm: an instance made on demand
    /// again, unless the pool refilled in between).
    pub second_cold: u32,
    /// Functions whose view did not show 0 ready replicas before the first request.
    pub not_at_zero: u32,
    /// Non-200 answers and transport errors (first and second requests).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Mean time of one deploy call, ms.
    pub deploy_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ColdReport {
    pub samples: u32,
    pub container: Side,
    pub wasm: Side,
    /// container p50 and p99 over Wasm's.
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    /// How long the deleted functions' containers took to go.
    pub cleanup_s: f64,
}

fn name(runtime: &str, i: u32) -> String {
    format!("cold-{}-{i}", &runtime[..1])
}

pub fn run(plan: &Plan, wisp: &Wisp, hello: &[u8]) -> anyhow::Result<ColdReport> {
    let n = plan.cold_samples;
    let mut container = Side { runtime: "container", ..Side::default() };
    let mut wasm = Side { runtime: "wasm", ..Side::default() };
    let t = Instant::now();
    for i in 0..n {
        wisp.deploy_image(&name("container", i), crate::HTTPD, "min_warm=0")?;
    }
    container.deploy_ms = crate::ms(t.elapsed()) / f64::from(n);
    let t = Instant::now();
    for i in 0..n {
        wisp.deploy_wasm(&name("wasm", i), hello, "min_warm=0")?;
    }
    wasm.deploy_ms = crate::ms(t.elapsed()) / f64::from(n);
    log(&format!(
        "cold: {n} container and {n} Wasm functions deployed at zero ({:.1} / {:.1} ms per deploy)",
        container.deploy_ms, wasm.deploy_ms
    ));

    crate::block_on(async {
        let mut conn = Conn::connect(wisp.addr).await?;
        for i in 0..n {
            for side in [&mut container, &mut wasm] {
                let function = name(side.runtime, i);
                if wisp.replicas(&function)?.ready != 0 {
                    side.not_at_zero += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let path = format!("/fn/{function}/");
                for first in [true, false] {
                    let start = Instant::now();
                    let result = conn.get(&path).await;
                    let took = start.elapsed();
                    match result {
                        Ok(status) if status.is_success() => {
                            if first {
                                side.first.record(took);
                                side.first_ms.push(crate::ms(took));
                            } else {
                                side.second.record(took);
                            }
                        }
                        Ok(status) => {
                            side.errors += 1;
                            side.first_error.get_or_insert_with(|| format!("GET {path}: {status}"));
                        }
                        Err(e) => {
                            side.errors += 1;
                            side.first_error.get_or_insert_with(|| format!("GET {path}: {e:#}"));
                            conn = Conn::connect(wisp.addr).await?;
                        }
                    }
                    let cold_starts = wisp.cold_starts(&function)?;
                    // A Wasm function's first instance may come from a refill thread, started
                    // when the activator scaled the revision up, instead of the request itself.
                    let at_most_one = cold_starts == 1.0 || (side.runtime == "wasm" && cold_starts == 0.0);
                    if first && at_most_one {
                        side.verified_cold += 1;
                    }
                    if !first && cold_starts > 1.0 {
                        side.second_cold += 1;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    for side in [&container, &wasm] {
        let l = side.first.latency();
        log(&format!(
            "cold: {:<9} first request p50 {:.1} ms p99 {:.1} ms max {:.1} ms; second p50 {:.2} ms; {} of {n} verified cold",
            side.runtime,
            l.p50_us / 1e3,
            l.p99_us / 1e3,
            l.max_us / 1e3,
            side.second.latency().p50_us / 1e3,
            side.verified_cold
        ));
    }

    let t = Instant::now();
    for i in 0..n {
        wisp.delete(&name("container", i))?;
        wisp.delete(&name("wasm", i))?;
    }
    let cold_containers = || procs::containers(wisp.pid).iter().filter(|c| c.id.starts_with("default.cold-")).count();
    while cold_containers() > 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = cold_containers();
    anyhow::ensure!(left == 0, "{left} containers of the deleted cold functions still run after 60 s");
    let (c, w) = (container.first.latency(), wasm.first.latency());
    Ok(ColdReport {
        samples: n,
        ratio_p50: c.p50_us / w.p50_us.max(1e-9),
        ratio_p99: c.p99_us / w.p99_us.max(1e-9),
        cleanup_s: t.elapsed().as_secs_f64(),
        container,
        wasm,
    })
}
