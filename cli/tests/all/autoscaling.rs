//! The KPA autoscaler and the activator end to end, driven by Knative annotations and
//! `containerConcurrency`: a burst at zero, requests held past a revision's capacity,
//! min-scale and max-scale bounds, and the activator queue's overflow and timeout.

use crate::harness::*;
use crate::services::{apply, get_service, push};
use serde_json::{Value, json};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// A Service running `image` with these template annotations and pod-spec fields
/// (`containerConcurrency`, `timeoutSeconds`...).
fn scaled(name: &str, image: &str, annotations: Value, pod: Value) -> Value {
    let mut spec = json!({"containers": [{"image": image}]});
    for (k, v) in pod.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}},
    })
}

/// `series{function="function",revision="revision"}` in /metrics (0 if absent).
fn revision_metric(node: &Node, series: &str, function: &str, revision: &str) -> f64 {
    node.metric(&format!("{series}{{function=\"{function}\",revision=\"{revision}\"}}"))
}

/// The scaling status of one revision of a default-namespace service.
fn scaling(node: &Node, name: &str, revision: &str) -> Value {
    let view = get_service(node, "default", name);
    let found = view["revisions"].as_array().unwrap().iter().find(|r| r["name"] == revision).cloned();
    found.unwrap_or_else(|| panic!("no revision {revision}: {view}"))["scaling"].clone()
}

fn count(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// A GET on its own thread.
fn spawn_get(node: &Node, path: &str) -> thread::JoinHandle<Resp> {
    let url = format!("{}{path}", node.url);
    thread::spawn(move || request("GET", &url, None, &[]))
}

#[test]
fn a_hundred_concurrent_first_requests_at_zero_are_all_served() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    // initial-scale 0 is refused (Knative's allow-zero-initial-scale is off), so the revisions
    // start at one replica and reach zero after a short stable window without requests. One
    // has no hard limit (the activator stays open); one has containerConcurrency 10 (requests
    // wait in the activator until replicas are granted).
    let window = json!({"autoscaling.knative.dev/window": "6s"});
    apply(&node, &scaled("zero", "hello:v1", window.clone(), json!({})));
    apply(&node, &scaled("zero-cc", "hello:v1", window, json!({"containerConcurrency": 10})));
    for name in ["zero", "zero-cc"] {
        let revision = format!("{name}-00001");
        node.wait_for(Duration::from_secs(40), &format!("{name} to scale to zero"), |n| {
            revision_metric(n, "wisp_revision_desired_replicas", name, &revision) == 0.0
                && revision_metric(n, "wisp_revision_ready_replicas", name, &revision) == 0.0
                && n.metric(&format!("wisp_ready_instances{{function=\"{name}\"}}")) == 0.0
        });
    }

    for name in ["zero", "zero-cc"] {
        let barrier = Arc::new(Barrier::new(100));
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let (url, barrier) = (format!("{}/fn/{name}", node.url), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    request("GET", &url, None, &[])
                })
            })
            .collect();
        let answers: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let failed: Vec<_> = answers.iter().filter(|r| r.status != 200 || r.body != "Hello from Wisp!\n").collect();
        assert!(failed.is_empty(), "{name}: {} of 100 failed, e.g. {:?}", failed.len(), failed.first());
        assert!(node.metric(&format!("wisp_cold_starts_total{{function=\"{name}\"}}")) >= 1.0);
        let status = scaling(&node, name, &format!("{name}-00001"));
        assert!(count(&status, "desired_replicas") >= 1, "{name} is wanted again: {status}");
        assert_eq!(count(&status, "activator_queue"), 0, "{status}");
    }
    node.stop();
}

#[test]
fn past_container_concurrency_requests_wait_in_the_activator() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "misbehave:v1", "misbehave");
    let annotations = json!({"autoscaling.knative.dev/max-scale": "2"});
    apply(
        &node,
        &scaled("held", "misbehave:v1", annotations, json!({"containerConcurrency": 1, "timeoutSeconds": 60})),
    );

    let started = Instant::now();
    let requests: Vec<_> = (0..3).map(|_| spawn_get(&node, "/fn/held?mode=sleep&ms=4000")).collect();
    // Two replicas of one request each run two; the third waits in the activator.
    node.wait_for(Duration::from_secs(10), "two running and one queued", |n| {
        let s = scaling(n, "held", "held-00001");
        assert!(count(&s, "desired_replicas") <= 2, "max-scale 2: {s}");
        count(&s, "in_flight") == 2 && count(&s, "activator_queue") == 1
    });
    assert_eq!(revision_metric(&node, "wisp_revision_activator_queue", "held", "held-00001"), 1.0);
    assert_eq!(revision_metric(&node, "wisp_revision_ready_replicas", "held", "held-00001"), 2.0);
    for r in requests {
        let r = r.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slept\n"));
    }
    // The third only started once one of the first two finished.
    assert!(started.elapsed() >= Duration::from_millis(7_500), "all three done in {:?}", started.elapsed());
    assert_eq!(count(&scaling(&node, "held", "held-00001"), "activator_queue"), 0);
    node.stop();
}

#[test]
fn min_scale_keeps_replicas_while_idle() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    let window = "6s";
    let floor = json!({"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/window": window});
    apply(&node, &scaled("floor", "hello:v1", floor, json!({})));
    // The same revision without min-scale, to show the idle time was long enough to scale down.
    apply(&node, &scaled("free", "hello:v1", json!({"autoscaling.knative.dev/window": window}), json!({})));
    node.wait_for(Duration::from_secs(10), "min-scale 3 replicas and their instances", |n| {
        let s = scaling(n, "floor", "floor-00001");
        count(&s, "ready_replicas") == 3 && count(&s, "ready_instances") >= 3
    });

    let started = Instant::now();
    let mut free_at_zero = None;
    while free_at_zero.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(2)) {
        assert!(started.elapsed() < Duration::from_secs(40), "free never scaled to zero");
        let s = scaling(&node, "floor", "floor-00001");
        assert!(count(&s, "ready_replicas") >= 3 && count(&s, "desired_replicas") >= 3, "idle floor: {s}");
        assert!(revision_metric(&node, "wisp_revision_ready_replicas", "floor", "floor-00001") >= 3.0);
        if free_at_zero.is_none() && count(&scaling(&node, "free", "free-00001"), "ready_replicas") == 0 {
            free_at_zero = Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(count(&scaling(&node, "floor", "floor-00001"), "ready_instances") >= 3);
    node.stop();
}

#[test]
fn max_scale_caps_replicas_under_load() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "misbehave:v1", "misbehave");
    let annotations = json!({"autoscaling.knative.dev/max-scale": "2"});
    let pod = json!({"containerConcurrency": 1, "timeoutSeconds": 120});
    apply(&node, &scaled("capped", "misbehave:v1", annotations, pod));

    let started = Instant::now();
    let requests: Vec<_> = (0..6).map(|_| spawn_get(&node, "/fn/capped?mode=sleep&ms=1500")).collect();
    let (mut desired, mut ready, mut running, mut queued) = (0, 0, 0, 0);
    while !requests.iter().all(|h| h.is_finished()) {
        let s = scaling(&node, "capped", "capped-00001");
        desired = desired.max(count(&s, "desired_replicas"));
        ready = ready.max(count(&s, "ready_replicas"));
        running = running.max(count(&s, "in_flight"));
        queued = queued.max(count(&s, "activator_queue"));
        thread::sleep(Duration::from_millis(50));
    }
    for r in requests {
        let r = r.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slept\n"));
    }
    let elapsed = started.elapsed();
    assert!(desired <= 2 && ready <= 2, "max-scale 2, saw desired {desired} and ready {ready}");
    assert_eq!(desired, 2, "six waiting requests want more than one replica");
    assert!(running <= 2, "{running} ran at once on 2 replicas of containerConcurrency 1");
    assert!(queued >= 1, "the excess waited in the activator");
    // Six 1.5 s requests, two at a time: three rounds.
    assert!(elapsed >= Duration::from_millis(4_400), "six requests done in {elapsed:?}");
    node.stop();
}

#[test]
fn an_overflowing_activator_queue_answers_503() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--activator-queue", "1"]);
    push(&node, "misbehave:v1", "misbehave");
    let annotations = json!({"autoscaling.knative.dev/max-scale": "1"});
    apply(
        &node,
        &scaled("full", "misbehave:v1", annotations, json!({"containerConcurrency": 1, "timeoutSeconds": 60})),
    );

    let running = spawn_get(&node, "/fn/full?mode=sleep&ms=3000");
    node.wait_for(Duration::from_secs(10), "one running", |n| {
        count(&scaling(n, "full", "full-00001"), "in_flight") == 1
    });
    let queued = spawn_get(&node, "/fn/full?mode=sleep&ms=10");
    node.wait_for(Duration::from_secs(10), "one queued", |n| {
        revision_metric(n, "wisp_revision_activator_queue", "full", "full-00001") == 1.0
    });
    let started = Instant::now();
    let overflow = node.get("/fn/full?mode=sleep&ms=10");
    assert_eq!(overflow.status, 503, "{}", overflow.body);
    assert!(overflow.error().contains("pending request queue full"), "{}", overflow.body);
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after {:?}", started.elapsed());

    let running = running.join().unwrap();
    assert_eq!((running.status, running.body.as_str()), (200, "slept\n"));
    let queued = queued.join().unwrap();
    assert_eq!((queued.status, queued.body.as_str()), (200, "slept\n"));
    node.stop();
}

#[test]
fn a_request_queued_past_timeout_seconds_answers_504() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "misbehave:v1", "misbehave");
    let annotations = json!({"autoscaling.knative.dev/max-scale": "1"});
    apply(&node, &scaled("slow", "misbehave:v1", annotations, json!({"containerConcurrency": 1, "timeoutSeconds": 3})));
    let queue = |n: &Node| revision_metric(n, "wisp_revision_activator_queue", "slow", "slow-00001");

    // Each request runs 2 s of its 3 s; one slot. The second gets the slot at ~2 s and holds it
    // to ~4 s, so the third, queued at ~0 s, is still waiting when its 3 s run out.
    let first = spawn_get(&node, "/fn/slow?mode=sleep&ms=2000");
    node.wait_for(Duration::from_secs(10), "one running", |n| {
        count(&scaling(n, "slow", "slow-00001"), "in_flight") == 1
    });
    let second = spawn_get(&node, "/fn/slow?mode=sleep&ms=2000");
    node.wait_for(Duration::from_secs(2), "one queued", |n| queue(n) == 1.0);
    let started = Instant::now();
    let third = request("GET", &format!("{}/fn/slow?mode=sleep&ms=2000", node.url), None, &[]);
    assert_eq!(third.status, 504, "{}", third.body);
    assert!(third.error().contains("activator request timeout"), "{}", third.body);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2_900) && waited < Duration::from_secs(6), "answered after {waited:?}");
    for r in [first, second] {
        let r = r.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "slept\n"));
    }
    assert_eq!(queue(&node), 0.0);
    node.stop();
}
