//! Opt-in instance reuse (`max_instance_reuse_count`): off by default, per revision, never
//! across functions, an instance dropped after any failure; through the flag and the manifest.

use crate::harness::*;
use crate::services::{apply, push};
use serde_json::json;

/// `count N` from misbehave's `?mode=count`: requests the instance that answered has served.
fn count(node: &Node, function: &str) -> u32 {
    let resp = node.get(&format!("/fn/{function}?mode=count"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body.trim().strip_prefix("count ").and_then(|n| n.parse().ok()).expect(&resp.body)
}

#[test]
fn reuse_is_off_by_default_bounded_by_its_count_and_never_crosses_functions() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);

    node.deploy("fresh", "misbehave", "");
    assert_eq!(node.function("fresh")["settings"]["max_instance_reuse_count"], 1);
    let counts: Vec<u32> = (0..10).map(|_| count(&node, "fresh")).collect();
    assert_eq!(counts, vec![1; 10], "by default every request gets a fresh instance");

    node.deploy("reused", "misbehave", "max_instance_reuse_count=3");
    let counts: Vec<u32> = (0..12).map(|_| count(&node, "reused")).collect();
    assert!(counts.iter().all(|n| (1..=3).contains(n)), "at most 3 requests per instance: {counts:?}");
    assert!(counts.iter().any(|&n| n > 1), "sequential requests reuse instances: {counts:?}");

    // A trap drops its instance; reuse goes on with the others, still within the bound.
    for _ in 0..3 {
        assert_eq!(node.get("/fn/reused?mode=trap").status, 500);
        let n = count(&node, "reused");
        assert!((1..=3).contains(&n), "{n}");
    }
    assert_eq!(node.get("/fn/reused?mode=status&code=503").status, 503, "a guest's own error status is an answer");

    // Two functions of the same component: each instance serves one function only, so each
    // function sees its own counts go up by one (or restart at 1 on a fresh instance).
    node.deploy("a", "misbehave", "max_instance_reuse_count=1000");
    node.deploy("b", "misbehave", "max_instance_reuse_count=1000");
    let (mut last_a, mut last_b) = (0, 0);
    for _ in 0..10 {
        for (f, last) in [("a", &mut last_a), ("b", &mut last_b)] {
            let n = count(&node, f);
            assert!(n == *last + 1 || n == 1, "{f}: {last} then {n}: an instance shared across functions?");
            *last = n;
        }
    }
    assert!(last_a > 1 && last_b > 1, "{last_a} {last_b}");

    // Bad values are refused, naming the setting, and change nothing.
    for bad in ["0", "10001", "x", "-1"] {
        let resp = node.post(&format!("/v1/functions/reused?max_instance_reuse_count={bad}"), &wasm("misbehave"));
        assert_eq!(resp.status, 400, "{bad}: {}", resp.body);
        assert!(resp.error().contains("max_instance_reuse_count"), "{}", resp.error());
    }
    let reused = node.function("reused");
    assert_eq!((reused["revision"].as_u64(), &reused["settings"]["max_instance_reuse_count"]), (Some(1), &json!(3)));
    node.stop();
}

#[test]
fn the_manifest_annotation_sets_reuse_and_round_trips() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "misbehave:v1", "misbehave");
    let manifest = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "counter"},
        "spec": {"template": {
            "metadata": {"annotations": {"wisp.dev/max-instance-reuse-count": "5"}},
            "spec": {"containers": [{"image": "misbehave:v1"}]},
        }},
    });
    apply(&node, &manifest);
    assert_eq!(node.function("counter")["settings"]["max_instance_reuse_count"], 5);
    let counts: Vec<u32> = (0..10).map(|_| count(&node, "counter")).collect();
    assert!(counts.iter().all(|n| (1..=5).contains(n)) && counts.iter().any(|&n| n > 1), "{counts:?}");

    let yaml = node.cli(wisp_bin()).args(["get", "service", "counter", "-o", "yaml"]).output().unwrap();
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(yaml.contains("wisp.dev/max-instance-reuse-count: '5'"), "{yaml}");

    let mut bad = manifest.clone();
    bad["spec"]["template"]["metadata"]["annotations"]["wisp.dev/max-instance-reuse-count"] = json!("0");
    let refused = crate::services::try_apply(&node, "", &bad.to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("wisp.dev/max-instance-reuse-count"), "{}", refused.body);
    assert_eq!(node.function("counter")["settings"]["max_instance_reuse_count"], 5);
    node.stop();
}
