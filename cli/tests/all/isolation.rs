use crate::harness::*;
use std::thread;

#[test]
fn a_misbehaving_function_hurts_only_its_own_invocation() {
    let dir = tempdir();
    // A small pool: if a failed invocation leaked its slot, this node would run out quickly.
    let node = Node::start(dir.path(), &["--pool-instances", "12"]);
    node.deploy("hello", "hello", "");
    node.deploy("bad", "misbehave", "timeout=1s&memory=32Mi");

    let trap = node.get("/fn/bad?mode=trap");
    assert_eq!(trap.status, 500);
    assert!(trap.error().contains("function trapped"), "{}", trap.body);

    let oom = node.get("/fn/bad?mode=oom");
    assert_eq!(oom.status, 500);
    assert!(oom.error().contains("memory limit of 33554432 bytes"), "{}", oom.body);

    // An endless loop times out by epoch deadline while other functions keep answering.
    let url = node.url.clone();
    let looping = thread::spawn(move || request("GET", &format!("{url}/fn/bad?mode=loop"), None, &[]));
    thread::sleep(std::time::Duration::from_millis(100));
    for _ in 0..20 {
        assert_eq!(node.get("/fn/hello").status, 200);
    }
    let looped = looping.join().unwrap();
    assert_eq!(looped.status, 504);
    assert!(looped.error().contains("timed out after 1s"), "{}", looped.body);
    // A guest blocked in the host (not running wasm, so no epoch check) is timed out too.
    let slept = node.get("/fn/bad?mode=sleep");
    assert_eq!(slept.status, 504, "{}", slept.body);
    assert_eq!(node.get("/fn/bad?mode=sleep&ms=10").body, "slept\n");

    // Many failures in a row on a 12-slot pool: slots always come back.
    for _ in 0..40 {
        assert_eq!(node.get("/fn/bad?mode=trap").status, 500);
        assert_eq!(node.get("/fn/hello").status, 200);
    }
    let panicked = node.get("/fn/bad?mode=panic");
    assert_eq!(panicked.status, 500);
    assert_eq!(node.metric("wisp_invocations_total{function=\"bad\",outcome=\"trap\"}"), 42.0);
    assert_eq!(node.metric("wisp_invocations_total{function=\"bad\",outcome=\"memory\"}"), 1.0);
    assert_eq!(node.metric("wisp_invocations_total{function=\"bad\",outcome=\"timeout\"}"), 2.0);
    node.wait_for(std::time::Duration::from_secs(10), "pools to refill", |n| {
        n.function("hello")["ready_instances"] == 1 && n.function("bad")["ready_instances"].as_u64() >= Some(1)
    });

    // Oversized responses are cut off at the function's limit.
    node.deploy("big", "misbehave", "max_response_body=64Ki");
    assert_eq!(node.get("/fn/big?mode=big&bytes=1000").body.len(), 1000);
    let big = node.get("/fn/big?mode=big&bytes=1000000");
    assert_eq!(big.status, 500);
    assert!(big.error().contains("response body exceeds the function's limit of 65536 bytes"), "{}", big.body);

    // Guest stdout and stderr land in the function's logs; a panic's message too.
    assert_eq!(node.get("/fn/bad?mode=log").status, 200);
    let logs = node.get("/v1/functions/bad/logs").body;
    assert!(logs.contains("misbehave: stdout line") && logs.contains("misbehave: stderr line"), "{logs}");
    assert!(logs.contains("panicked"), "{logs}");
}
