use crate::harness::*;
use std::thread;

fn invocations(node: &Node, function: &str) -> u64 {
    let report = node.get(&format!("/v1/usage?function={function}&limit=5")).json();
    report["summary"].as_array().unwrap().first().map_or(0, |s| s["invocations"].as_u64().unwrap())
}

#[test]
fn exactly_one_usage_record_per_invocation_under_concurrency_and_across_restarts() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("hello", "hello", "");
    node.deploy("bad", "misbehave", "");
    let url = node.url.clone();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                for j in 0..50 {
                    let path = if (i + j) % 10 == 0 { "/fn/bad?mode=trap" } else { "/fn/hello" };
                    request("GET", &format!("{url}{path}"), None, &[]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let hello_metric = node.metric("wisp_invocations_total{function=\"hello\",outcome=\"ok\"}") as u64;
    let bad_metric = node.metric("wisp_invocations_total{function=\"bad\",outcome=\"trap\"}") as u64;
    assert_eq!(hello_metric + bad_metric, 400);
    assert_eq!(invocations(&node, "hello"), hello_metric);
    assert_eq!(invocations(&node, "bad"), bad_metric);

    let report = node.get("/v1/usage?function=bad&limit=1").json();
    let record = &report["records"][0];
    assert_eq!(record["outcome"], "trap");
    // No response from the function: status 0, the outcome says why.
    assert_eq!(record["status"], 0);
    assert_eq!(report["summary"][0]["failed"], bad_metric);
    let hello = node.get("/v1/usage?function=hello&limit=1").json();
    let record = &hello["records"][0];
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["response_bytes"], 17);
    assert!(record["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(record["wall_us"].as_u64().unwrap() > 0);
    assert_eq!(record["revision"], 1);
    assert_eq!(record["source"], "http");
    assert_eq!(hello["summary"][0]["by_source"]["http"], hello_metric);
    assert_eq!(node.metric("wisp_usage_dropped_total"), 0.0, "the ledger dropped nothing");
    assert_eq!(node.metric("wisp_usage_write_errors_total"), 0.0);

    // Requests right before a graceful stop are all recorded too.
    for _ in 0..25 {
        node.get("/fn/hello");
    }
    node.stop();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(invocations(&node, "hello"), hello_metric + 25);
    assert_eq!(invocations(&node, "bad"), bad_metric);
    let all = node.get("/v1/usage").json();
    let total: u64 = all["summary"].as_array().unwrap().iter().map(|s| s["invocations"].as_u64().unwrap()).sum();
    assert_eq!(total, 425);
}
