//! The runtime in-process, on real wasmtime with the example components: pools, limits and
//! metering without the gateway in the way.

use bytes::Bytes;
use http_body_util::Full;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wisp_runtime::{DeployError, Limits, LogBuffer, Outcome, Revision, RevisionId, Runtime, RuntimeConfig, UsageRecord, UsageSink};

fn functions_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let target = root.join("functions/target");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("functions/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success());
        target.join("wasm32-wasip2/release")
    })
}

#[derive(Default)]
struct Collect(Mutex<Vec<UsageRecord>>);

impl UsageSink for Collect {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record);
    }
}

struct Fixture {
    runtime: Runtime,
    usage: Arc<Collect>,
    _cache: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let cache = tempfile::tempdir().unwrap();
    let usage = Arc::new(Collect::default());
    let config = RuntimeConfig { pool_instances: 16, ..RuntimeConfig::default() };
    let runtime = Runtime::new(config, cache.path(), usage.clone()).unwrap();
    Fixture { runtime, usage, _cache: cache }
}

fn revision(f: &Fixture, name: &str, limits: Limits) -> Revision {
    let bytes = std::fs::read(functions_dir().join(format!("{name}.wasm"))).unwrap();
    let compiled = f.runtime.compile(name, &bytes).unwrap();
    f.runtime.revision(RevisionId { function: name.into(), revision: 1 }, compiled, limits, LogBuffer::new(4096))
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).header("host", "test").body(Full::new(Bytes::new())).unwrap()
}

async fn wait_ready(rev: &Revision, n: usize) {
    for _ in 0..500 {
        if rev.stats().ready == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool never reached {n} ready instances: {:?}", rev.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_refill_and_requests_take_ready_instances() {
    let f = fixture();
    let rev = revision(&f, "hello", Limits::default());
    assert_eq!(rev.stats().ready, 0);
    rev.set_target(3);
    wait_ready(&rev, 3).await;

    let invoked = rev.invoke(get("/")).await;
    assert!(!invoked.cold, "served from the pool");
    assert_eq!(invoked.result.unwrap().body(), &Bytes::from_static(b"Hello from Wisp!\n"));
    wait_ready(&rev, 3).await;

    let (_, cold) = rev.probe_take().await.unwrap();
    assert!(!cold);
    rev.set_target(0);
    assert_eq!(rev.stats().ready, 0, "lowering the target drops idle instances at once");
    let (_, cold) = rev.probe_take().await.unwrap();
    assert!(cold, "an empty pool instantiates on demand");
    let invoked = rev.invoke(get("/")).await;
    assert!(invoked.cold);
    assert_eq!(invoked.outcome, Outcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_yields_exactly_one_record_even_when_cancelled() {
    let f = fixture();
    let limits = Limits { timeout: Duration::from_secs(5), ..Limits::default() };
    let rev = revision(&f, "misbehave", limits);
    rev.set_target(1);
    assert_eq!(rev.invoke(get("/?mode=log")).await.outcome, Outcome::Ok);
    assert_eq!(rev.invoke(get("/?mode=trap")).await.outcome, Outcome::Trap);
    // The caller gives up on an endless loop: still one record, marked cancelled.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), rev.invoke(get("/?mode=loop"))).await;
    assert!(abandoned.is_err());
    let records = f.usage.0.lock().unwrap().clone();
    let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Ok, Outcome::Trap, Outcome::Cancelled]);
    assert!(records.iter().all(|r| &*r.function == "misbehave" && r.revision == 1));
    assert_eq!(records[0].status, 200);
    assert_eq!(records[1].status, 500);
    // The abandoned instance's slot comes back: the 16-slot pool keeps serving.
    for _ in 0..40 {
        assert_eq!(rev.invoke(get("/?mode=trap")).await.outcome, Outcome::Trap);
    }
    assert_eq!(rev.invoke(get("/?mode=status&code=201")).await.result.unwrap().status(), 201);
    // Every slot a finished invocation used is returned: only the ready instances hold one.
    for _ in 0..500 {
        if f.runtime.pool_usage().component_instances == rev.stats().ready as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool slots leaked: {:?} in use, {:?}", f.runtime.pool_usage(), rev.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_are_enforced_before_an_instance_is_taken() {
    let f = fixture();
    let limits = Limits { max_request_body: 10, ..Limits::default() };
    let rev = revision(&f, "echo", limits);
    let big = http::Request::post("/").header("host", "t").body(Full::new(Bytes::from(vec![b'x'; 11]))).unwrap();
    let invoked = rev.invoke(big).await;
    assert_eq!(invoked.outcome, Outcome::Rejected);
    assert_eq!(invoked.result.unwrap_err().status(), 413);
    assert_eq!(rev.stats().cold_starts, 0, "no instance was taken");
    let small = http::Request::post("/p").header("host", "t").body(Full::new(Bytes::from_static(b"0123456789"))).unwrap();
    let body = rev.invoke(small).await.result.unwrap().into_body();
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
