//! In-process measurements with wisp-runtime linked into the bench: scenario 3 (taking an
//! instance from a full pool vs instantiating on demand) and the in-process half of scenario 5
//! (a direct `Revision::invoke`, one at a time, no HTTP).

use crate::loadgen::{self, Latency};
use crate::{Plan, log};
use bytes::Bytes;
use http_body_util::Empty;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wisp_runtime::{Limits, LogBuffer, Revision, RevisionId, Runtime, RuntimeConfig, UsageRecord, UsageSink};

struct NoUsage;

impl UsageSink for NoUsage {
    fn record(&self, _record: UsageRecord) {}
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sampled {
    pub latency: Latency,
    /// How many samples instantiated on demand.
    pub cold: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InProc {
    pub compile_s: f64,
    /// `probe_take` with `pool_size` ready instances (the pool refilled before each take).
    pub take_pooled: Sampled,
    /// `probe_take` with target 0: every take instantiates.
    pub take_on_demand: Sampled,
    pub pool_size: usize,
    /// `invoke` one at a time with target 1, waiting (spinning) until the pool is refilled
    /// before each call: the warm path alone.
    pub invoke_pooled: Sampled,
    /// `invoke` back to back with target 1 (like a `min_warm=1` function at 1 connection):
    /// whenever the refill loses the race with the next call, the call instantiates.
    pub invoke_back_to_back: Sampled,
    /// `invoke` one at a time with target 0 (every invocation instantiates: what `wasmtime
    /// serve` does per request, minus its HTTP server).
    pub invoke_on_demand: Sampled,
    pub samples: usize,
}

pub fn run(plan: &Plan, wasm: &Bytes) -> anyhow::Result<InProc> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cache = tempfile::tempdir()?;
    let config = RuntimeConfig::default();
    let runtime = Runtime::new(config, cache.path(), Arc::new(NoUsage))?;
    let hash = hex::encode(Sha256::digest(wasm));
    let t = Instant::now();
    let compiled = runtime.compile(&hash, wasm)?;
    let compile_s = t.elapsed().as_secs_f64();
    let samples = plan.samples;
    let pool_size = 4;
    let out = rt.block_on(async {
        let revision = runtime.revision(
            RevisionId { function: "hello".into(), revision: 1 },
            compiled,
            Limits::default(),
            LogBuffer::new(64 << 10),
        );
        let warmup = (samples / 10).max(20);

        // Taking from a full pool.
        revision.set_target(pool_size);
        let mut hist = loadgen::new_hist();
        let mut cold = 0;
        for i in 0..warmup + samples {
            wait_ready(&revision, pool_size).await?;
            let (took, was_cold) = revision.probe_take().await.map_err(anyhow::Error::msg)?;
            if i >= warmup {
                hist.saturating_record(took.as_nanos() as u64);
                cold += was_cold as u64;
            }
        }
        let take_pooled = Sampled { latency: Latency::from_hist(&hist), cold };

        // Instantiating on demand.
        revision.set_target(0);
        wait_ready(&revision, 0).await?;
        let mut hist = loadgen::new_hist();
        let mut cold = 0;
        for i in 0..warmup + samples {
            let (took, was_cold) = revision.probe_take().await.map_err(anyhow::Error::msg)?;
            if i >= warmup {
                hist.saturating_record(took.as_nanos() as u64);
                cold += was_cold as u64;
            }
        }
        let take_on_demand = Sampled { latency: Latency::from_hist(&hist), cold };

        // Direct invocations.
        let invoke_pooled = invoke_series(&revision, 1, warmup, samples, true).await?;
        let invoke_back_to_back = invoke_series(&revision, 1, warmup, samples, false).await?;
        let invoke_on_demand = invoke_series(&revision, 0, warmup, samples, false).await?;
        anyhow::Ok(InProc {
            compile_s,
            take_pooled,
            take_on_demand,
            pool_size,
            invoke_pooled,
            invoke_back_to_back,
            invoke_on_demand,
            samples,
        })
    })?;
    log(&format!(
        "instantiate: take from pool p50 {:.1} us p99 {:.1} us; on demand p50 {:.1} us p99 {:.1} us",
        out.take_pooled.latency.p50_us,
        out.take_pooled.latency.p99_us,
        out.take_on_demand.latency.p50_us,
        out.take_on_demand.latency.p99_us
    ));
    log(&format!(
        "in-process invoke: pooled p50 {:.1} us p99 {:.1} us ({} cold); back to back p50 {:.1} us ({} of {} cold); on demand p50 {:.1} us p99 {:.1} us",
        out.invoke_pooled.latency.p50_us,
        out.invoke_pooled.latency.p99_us,
        out.invoke_pooled.cold,
        out.invoke_back_to_back.latency.p50_us,
        out.invoke_back_to_back.cold,
        out.samples,
        out.invoke_on_demand.latency.p50_us,
        out.invoke_on_demand.latency.p99_us
    ));
    drop(rt);
    Ok(out)
}

async fn invoke_series(
    revision: &Revision,
    target: usize,
    warmup: usize,
    samples: usize,
    refilled: bool,
) -> anyhow::Result<Sampled> {
    revision.set_target(target);
    wait_ready(revision, target).await?;
    let mut hist = loadgen::new_hist();
    let mut cold = 0;
    for i in 0..warmup + samples {
        if refilled {
            wait_ready(revision, target).await?;
        }
        let req = http::Request::get("/").header(http::header::HOST, "localhost").body(Empty::<Bytes>::new())?;
        let t0 = Instant::now();
        let invoked = revision.invoke(req).await;
        let ns = t0.elapsed().as_nanos() as u64;
        let response = invoked
            .result
            .map_err(|e| anyhow::anyhow!("invoke #{i} (pool target {target}, {:?}): {e}", revision.stats()))?;
        anyhow::ensure!(response.status().is_success(), "hello answered {}", response.status());
        if i >= warmup {
            hist.saturating_record(ns);
            cold += invoked.cold as u64;
        }
    }
    Ok(Sampled { latency: Latency::from_hist(&hist), cold })
}

/// Waits until the pool holds exactly `n` ready instances. Spins (yielding the core) rather
/// than sleeps: block_on's thread is not a runtime worker, so the refill task is undisturbed,
/// and a parked thread would add its wake-up latency to the next sample.
async fn wait_ready(revision: &Revision, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while revision.stats().ready != n {
        anyhow::ensure!(Instant::now() < deadline, "pool never reached {n} ready (at {})", revision.stats().ready);
        std::thread::yield_now();
    }
    Ok(())
}
