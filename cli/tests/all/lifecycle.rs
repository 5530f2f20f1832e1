use crate::harness::*;
use std::thread;
use std::time::Duration;

#[test]
fn a_restart_keeps_functions_and_loads_them_from_the_compile_cache() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("hello", "hello", "memory=64Mi&timeout=5s");
    node.deploy("echo", "echo", "");
    node.deploy("hello", "hello", "memory=64Mi&timeout=5s&min_warm=2");
    assert_eq!(node.metric("wisp_compile_cache_misses_total"), 2.0);
    assert_eq!(node.get("/fn/hello").status, 200);
    node.stop();

    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.metric("wisp_compile_cache_misses_total"), 0.0, "restart must not recompile");
    assert_eq!(node.metric("wisp_compile_cache_hits_total"), 2.0);
    let hello = node.function("hello");
    assert_eq!(hello["revision"], 2);
    assert_eq!(hello["settings"]["min_warm"], 2);
    assert_eq!(hello["settings"]["memory_bytes"], 64 << 20);
    assert_eq!(hello["settings"]["timeout_ms"], 5000);
    assert_eq!(hello["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(node.get("/fn/hello").body, "Hello from Wisp!\n");
    assert_eq!(node.get("/fn/echo/x").json()["path"], "/x");
    node.wait_for(Duration::from_secs(10), "min_warm=2 ready instances", |n| {
        n.function("hello")["ready_instances"] == 2
    });

    // A crash (SIGKILL, no shutdown) loses nothing that was acknowledged.
    node.deploy("crash", "hello", "");
    drop(node);
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.get("/fn/crash").body, "Hello from Wisp!\n");

    let deleted = node.delete("/v1/functions/echo");
    assert_eq!((deleted.status, deleted.json()["deleted"].as_str()), (200, Some("echo")));
    assert_eq!(node.get("/fn/echo").status, 404);
    node.stop();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.get("/fn/echo").status, 404, "a delete survives a restart");
    assert_eq!(node.get("/fn/hello").status, 200);
}

#[test]
fn idle_functions_scale_to_zero_and_cold_start_transparently() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("hello", "hello", "idle_timeout=1s");
    node.wait_for(Duration::from_secs(10), "one warm instance", |n| n.function("hello")["ready_instances"] == 1);
    assert_eq!(node.get("/fn/hello").status, 200);
    assert_eq!(node.metric("wisp_cold_starts_total{function=\"hello\"}"), 0.0, "served from the pool");

    node.wait_for(Duration::from_secs(10), "scale to zero", |n| {
        n.metric("wisp_ready_instances{function=\"hello\"}") == 0.0
    });
    let cold = node.get("/fn/hello");
    assert_eq!((cold.status, cold.body.as_str()), (200, "Hello from Wisp!\n"));
    // The request pokes the autoscaler, whose refill may beat the request to the pool: either
    // way at most this one request instantiated for itself.
    assert!(node.metric("wisp_cold_starts_total{function=\"hello\"}") <= 1.0);
    // Back in use: the pool refills (to min_warm, or twice the recent peak for a second: the
    // exact count is the autoscaler's, and the 1 s window may already be closing).
    node.wait_for(Duration::from_secs(10), "warm again", |n| {
        n.function("hello")["ready_instances"].as_u64().unwrap_or(0) >= 1
    });

    // Many concurrent requests to a function with no instances are all served.
    node.deploy("zero", "hello", "min_warm=0");
    assert_eq!(node.function("zero")["ready_instances"], 0);
    let url = node.url.clone();
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || request("GET", &format!("{url}/fn/zero"), None, &[]).status)
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(node.metric("wisp_cold_starts_total{function=\"zero\"}") >= 1.0);
}

#[test]
fn a_redeploy_switches_traffic_without_dropping_in_flight_requests() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("svc", "fib", "");
    let url = node.url.clone();
    // fib(38) recursively takes long enough to still be running during the redeploy.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || request("GET", &format!("{url}/fn/svc?n=38"), None, &[]))
        })
        .collect();
    node.wait_for(Duration::from_secs(10), "requests in flight", |n| {
        n.function("svc")["in_flight"].as_u64() >= Some(1)
    });
    let redeployed = node.deploy("svc", "hello", "").json();
    assert_eq!(redeployed["revision"], 2);
    assert_eq!(node.get("/fn/svc").body, "Hello from Wisp!\n", "new requests go to the new revision");
    for h in in_flight {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["fib"], 39088169);
    }
}

#[test]
fn deleting_a_function_frees_its_files_code_and_metric_series() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let fib = node.deploy("fib", "fib", "").json();
    node.deploy("hello", "hello", "");
    node.deploy("hello2", "hello", "");
    assert_eq!(node.get("/fn/fib?n=10").status, 200);
    let hash = fib["component_hash"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let cached = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("cache"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&hash))
            .count()
    };
    assert_eq!(cached(dir.path()), 1);
    assert!(node.get("/metrics").body.contains("function=\"fib\""));
    assert_eq!(node.metric("wisp_loaded_components"), 2.0);

    assert_eq!(node.delete("/v1/functions/fib").status, 200);
    assert!(!dir.path().join(format!("components/{hash}.wasm")).exists(), "component file removed");
    assert_eq!(cached(dir.path()), 0, "compiled code removed");
    assert!(!node.get("/metrics").body.contains("function=\"fib\""), "metric series removed");
    node.wait_for(Duration::from_secs(10), "fib's code to be unloaded", |n| n.metric("wisp_loaded_components") == 1.0);

    // A component another function still uses stays.
    assert_eq!(node.delete("/v1/functions/hello").status, 200);
    assert_eq!(node.get("/fn/hello2").status, 200);
    let hello_hash =
        node.function("hello2")["component_hash"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert!(dir.path().join(format!("components/{hello_hash}.wasm")).exists());
    node.stop();
}
