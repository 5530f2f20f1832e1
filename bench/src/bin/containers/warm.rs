//! Scenario warm: closed-loop keep-alive load at each `--connections` count against three
//! functions on the same node: the httpd image and the native C server image, each a Knative
//! Service (`POST /v1/apply`) with min-scale 2 and containerConcurrency 0 (replicas up before
//! the load, no per-replica limit), and the Wasm `hello` component deployed with the node's
//! defaults (`POST /v1/functions/warm-hello`, min_warm 1). Each run: a warm-up, then the
//! measured window; one run per function per connection count, functions in turn.
//!
//! The node proxies each request to a replica over connections it opens inside the
//! container's network namespace; busybox httpd closes every connection after one answer and
//! forks per connection, the native server keeps it alive. Container CPU is not the node's:
//! it shows in `other` (everything on the machine but the node and the load generator).

use crate::loadgen::{self, Run, Spec, Target};
use crate::node::{Replicas, Service, Wisp};
use crate::{Plan, log};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct Row {
    pub function: &'static str,
    pub runtime: &'static str,
    pub connections: u32,
    pub run: Run,
    pub rps: f64,
    /// The load generator used more than 90% of a core: its req/s is a lower bound.
    pub bench_saturated: bool,
    /// The service's replicas after the run (containers).
    pub after: Option<Replicas>,
}

#[derive(Debug, Serialize)]
pub struct WarmReport {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub min_scale: u32,
    pub rows: Vec<Row>,
}

/// (function, runtime, image): the Wasm one has no image.
const FUNCTIONS: [(&str, &str, Option<&str>); 3] = [
    ("warm-httpd", "container", Some(crate::HTTPD)),
    ("warm-native", "container", Some(crate::NATIVE)),
    ("warm-hello", "wasm", None),
];

pub fn run(plan: &Plan, wisp: &Wisp, hello: &[u8]) -> anyhow::Result<WarmReport> {
    for (name, _, image) in FUNCTIONS {
        match image {
            Some(image) => {
                let service = Service {
                    name: name.into(),
                    image: image.into(),
                    container_concurrency: 0,
                    min_scale: plan.warm_min_scale,
                };
                wisp.apply(&service)?;
                wisp.wait_replicas(name, Duration::from_millis(20), Duration::from_secs(60), "ready", |r| {
                    r.ready >= u64::from(plan.warm_min_scale)
                })?;
            }
            None => wisp.deploy_wasm(name, hello, "")?,
        }
        wisp.check(&format!("/fn/{name}/"))?;
    }
    log(&format!("warm: {} ready", FUNCTIONS.map(|f| f.0).join(", ")));
    let mut rows = Vec::new();
    for &connections in &plan.warm_connections {
        for (name, runtime, image) in FUNCTIONS {
            let target = Target { addr: wisp.addr, path: format!("/fn/{name}/"), pid: wisp.pid, authorization: None };
            let spec = Spec {
                connections: connections as usize,
                warmup: Duration::from_secs_f64(plan.warm_warmup_s),
                duration: Duration::from_secs_f64(plan.warm_duration_s),
                rate: None,
            };
            let run = loadgen::run(&target, spec)?;
            let after = image.map(|_| wisp.replicas(name)).transpose()?;
            log(&format!(
                "warm: {name:<12} {connections:>3} conns {}, {} errors",
                run.describe(),
                run.errors + run.non_2xx
            ));
            rows.push(Row {
                function: name,
                runtime,
                connections,
                rps: run.rps(),
                bench_saturated: run.saturated(),
                run,
                after,
            });
        }
    }
    Ok(WarmReport {
        duration_s: plan.warm_duration_s,
        warmup_s: plan.warm_warmup_s,
        min_scale: plan.warm_min_scale,
        rows,
    })
}
