//! In-process microbenchmarks of the Wasm runtime on the `hello` example component, no HTTP
//! server or scheduler in the way (what `bench/src/inproc.rs` used to measure):
//!
//! - `instantiate`: one instantiation thrown away (`WasmRuntime::check_instantiates`).
//! - `invoke/warm`: one request served by a ready instance taken from a pool of 4. The pool is
//!   refilled, and the finished instance's slot returned, before each timed request.
//! - `invoke/cold`: one request with pool target 0: instantiate on demand, then handle.
//!
//! Run with `cargo bench -p wisp-runtime --bench instantiate` (quicker:
//! `... -- --warm-up-time 1 --measurement-time 3`). The example functions are built for
//! `wasm32-wasip2` first if `functions/target/wasm32-wasip2/release/hello.wasm` is missing.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wisp_runtime::wasm::{InstancePool, PoolId, WasmConfig, WasmRuntime};
use wisp_runtime::{Limits, LogBuffer, MemoryBudget, Workload};

/// Pool target of `invoke/warm`.
const WARM: usize = 4;

/// The bytes of `hello.wasm` (the example functions are built once if needed).
fn hello_wasm() -> Vec<u8> {
    wisp_testkit::wasm("hello")
}

/// Waits until the pool holds exactly `n` ready instances and nothing else holds a slot (the
/// previous request's store is dropped), so no background work overlaps the next sample.
/// Spins rather than sleeps: this is criterion's `block_on` thread, not a runtime worker, so
/// the refill task is undisturbed, and a parked thread would add its wake-up to the sample.
fn wait_settled(runtime: &WasmRuntime, pool: &InstancePool, n: usize) {
    let start = Instant::now();
    while pool.stats().ready != n || runtime.pool_usage().component_instances != n as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pool never settled at {n}: {:?} {:?}",
            pool.stats(),
            runtime.pool_usage()
        );
        std::thread::yield_now();
    }
}

/// Times `iters` requests one at a time with pool target `target`, excluding the refills.
async fn invoke_n(runtime: &WasmRuntime, pool: &InstancePool, target: usize, iters: u64) -> Duration {
    pool.set_target(target);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        wait_settled(runtime, pool, target);
        let req = http::Request::get("/").header("host", "bench").body(Full::new(Bytes::new())).unwrap();
        let start = Instant::now();
        let invoked = pool.invoke(req).await;
        total += start.elapsed();
        assert_eq!(invoked.cold, target == 0, "warm requests take a ready instance, cold ones start one");
        let response = invoked.result.expect("hello failed");
        assert!(response.status().is_success(), "hello answered {}", response.status());
    }
    total
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let _enter = rt.enter(); // pools spawn their refill task
    let cache = tempfile::tempdir().unwrap();
    let config = WasmConfig { pool_instances: 64, ..WasmConfig::default() };
    let runtime = WasmRuntime::new(config, cache.path(), MemoryBudget::new(u64::MAX)).unwrap();
    let bytes = hello_wasm();
    let compiled = runtime.compile(&hex::encode(Sha256::digest(&bytes)), &bytes).unwrap();

    c.bench_function("instantiate", |b| {
        b.to_async(&rt).iter(|| async { runtime.check_instantiates(&compiled, Limits::default()).await.unwrap() });
    });

    let id = PoolId { function: "hello".into(), revision: 1 };
    let pool = runtime.pool(id, compiled, Limits::default(), Arc::new(LogBuffer::new(4096)), Default::default());
    let mut group = c.benchmark_group("invoke");
    group.bench_function("warm", |b| b.to_async(&rt).iter_custom(|iters| invoke_n(&runtime, &pool, WARM, iters)));
    group.bench_function("cold", |b| b.to_async(&rt).iter_custom(|iters| invoke_n(&runtime, &pool, 0, iters)));
    group.finish();
}

criterion_group!(instantiate, benches);
criterion_main!(instantiate);
