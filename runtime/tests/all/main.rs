//! The runtime in-process, on real wasmtime with the example components: pools, limits and
//! the memory budget without the scheduler or the gateway in the way.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use wisp_runtime::wasm::{DeployError, InstancePool, PoolId, WasmConfig, WasmRuntime};
use wisp_runtime::{InvokeError, Limits, LogBuffer, MemoryBudget, Workload};
use wisp_testkit::functions_dir;

struct Fixture {
    runtime: WasmRuntime,
    _cache: tempfile::TempDir,
}

fn fixture_with(budget: u64) -> Fixture {
    let cache = tempfile::tempdir().unwrap();
    let config = WasmConfig { pool_instances: 16, ..WasmConfig::default() };
    let runtime = WasmRuntime::new(config, cache.path(), MemoryBudget::new(budget)).unwrap();
    Fixture { runtime, _cache: cache }
}

fn fixture() -> Fixture {
    fixture_with(u64::MAX)
}

fn pool(f: &Fixture, name: &str, limits: Limits) -> InstancePool {
    let bytes = std::fs::read(functions_dir().join(format!("{name}.wasm"))).unwrap();
    let compiled = f.runtime.compile(name, &bytes).unwrap();
    f.runtime.pool(
        PoolId { function: name.into(), revision: 1 },
        compiled,
        limits,
        Arc::new(LogBuffer::new(4096)),
        Default::default(),
    )
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).header("host", "test").body(Full::new(Bytes::new())).unwrap()
}

async fn wait_ready(pool: &InstancePool, n: usize) {
    for _ in 0..500 {
        if pool.stats().ready == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool never reached {n} ready instances: {:?}", pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_refill_and_requests_take_ready_instances() {
    let f = fixture();
    let pool = pool(&f, "hello", Limits::default());
    assert_eq!(pool.stats().ready, 0);
    pool.set_target(3);
    wait_ready(&pool, 3).await;

    let invoked = pool.invoke(get("/")).await;
    assert!(!invoked.cold, "served from the pool");
    assert_eq!(invoked.result.unwrap().body(), &Bytes::from_static(b"Hello from Wisp!\n"));
    wait_ready(&pool, 3).await;

    pool.set_target(0);
    assert_eq!(pool.stats().ready, 0, "lowering the target drops idle instances at once");
    let invoked = pool.invoke(get("/")).await;
    assert!(invoked.cold, "an empty pool instantiates on demand");
    assert!(invoked.result.is_ok());
    assert_eq!(pool.stats().cold_starts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_and_every_slot_comes_back() {
    let f = fixture();
    let limits = Limits { timeout: Duration::from_secs(5), ..Limits::default() };
    let pool = pool(&f, "misbehave", limits);
    pool.set_target(1);
    assert!(pool.invoke(get("/?mode=log")).await.result.is_ok());
    assert!(matches!(pool.invoke(get("/?mode=trap")).await.result, Err(InvokeError::Trap(_))));
    assert!(matches!(pool.invoke(get("/?mode=oom")).await.result, Err(InvokeError::Memory { .. })));
    // The caller gives up on an endless loop: the instance is dropped with the future.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), pool.invoke(get("/?mode=loop"))).await;
    assert!(abandoned.is_err());
    // The abandoned instance's slot comes back: the 16-slot pool keeps serving.
    for _ in 0..40 {
        assert!(matches!(pool.invoke(get("/?mode=trap")).await.result, Err(InvokeError::Trap(_))));
    }
    assert_eq!(pool.invoke(get("/?mode=status&code=201")).await.result.unwrap().status(), 201);
    // Every slot a finished invocation used is returned: only the ready instances hold one.
    for _ in 0..500 {
        if f.runtime.pool_usage().component_instances == pool.stats().ready as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool slots leaked: {:?} in use, {:?}", f.runtime.pool_usage(), pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deadline_covers_the_body_upload_and_the_late_response() {
    let f = fixture();
    let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
    let pool = pool(&f, "echo", limits);
    // A body that never finishes: the function's timeout ends the wait.
    let (_sender, body) = http_body_util::channel::Channel::<Bytes>::new(1);
    let req = http::Request::post("/").header("host", "t").body(body).unwrap();
    let started = std::time::Instant::now();
    let invoked = pool.invoke(req).await;
    assert!(matches!(invoked.result, Err(InvokeError::Timeout(_))), "{:?}", invoked.result);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(pool.stats().cold_starts, 0, "no instance was taken for a request that never arrived");

    // A guest blocked in a host call is cut off at the same deadline, not twice it.
    let pool = self::pool(&f, "misbehave", limits);
    let started = std::time::Instant::now();
    let invoked = pool.invoke(get("/?mode=sleep&ms=60000")).await;
    assert!(matches!(invoked.result, Err(InvokeError::Timeout(_))), "{:?}", invoked.result);
    assert!(started.elapsed() < Duration::from_millis(3000), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_memory_budget_refuses_growth_and_is_given_back() {
    // Enough for a few small instances, not for one that hoards memory.
    let f = fixture_with(48 << 20);
    let limits = Limits { timeout: Duration::from_secs(10), ..Limits::default() };
    let bomb = pool(&f, "misbehave", limits);
    let invoked = bomb.invoke(get("/?mode=oom")).await;
    assert!(matches!(invoked.result, Err(InvokeError::MemoryBudget { .. })), "{:?}", invoked.result);
    // Its memory went back to the budget: a normal function still runs.
    let hello = pool(&f, "hello", Limits::default());
    assert!(hello.invoke(get("/")).await.result.is_ok());
    for _ in 0..500 {
        if f.runtime.memory_budget().used() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("budget not given back: {} bytes still charged", f.runtime.memory_budget().used());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_are_enforced_before_an_instance_is_taken() {
    let f = fixture();
    let limits = Limits { max_request_body: 10, ..Limits::default() };
    let pool = pool(&f, "echo", limits);
    let big = http::Request::post("/").header("host", "t").body(Full::new(Bytes::from(vec![b'x'; 11]))).unwrap();
    let invoked = pool.invoke(big).await;
    assert!(matches!(invoked.result, Err(InvokeError::RequestTooLarge { limit: 10 })));
    assert_eq!(pool.stats().cold_starts, 0, "no instance was taken");
    let small =
        http::Request::post("/p").header("host", "t").body(Full::new(Bytes::from_static(b"0123456789"))).unwrap();
    let body = pool.invoke(small).await.result.unwrap().into_body();
    assert!(String::from_utf8_lossy(&body).contains("\"body_len\":10"));
}

#[test]
fn compile_rejects_what_is_not_an_http_component() {
    let f = fixture();
    assert!(matches!(f.runtime.compile("a", b"garbage"), Err(DeployError::NotWasm)));
    assert!(matches!(f.runtime.compile("b", b"\0asm\x01\0\0\0"), Err(DeployError::CoreModule)));
    let err = f.runtime.compile("c", b"\0asm\x0d\0\x01\0").err().unwrap();
    assert!(matches!(err, DeployError::MissingExport(_)), "{err}");
    // A component importing an interface the node does not provide: the error names it.
    let wat = r#"(component
        (import "acme:db/query" (instance (export "run" (func))))
        (instance $handler)
        (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#;
    let err = f.runtime.compile("d", &wat::parse_str(wat).unwrap()).err().unwrap();
    assert!(matches!(&err, DeployError::Link(m) if m.contains("acme:db/query")), "{err}");
}
