//! A hostile-but-fair client cannot starve the node: slow headers, slow bodies and idle
//! connections are cut off by timeouts, connections are bounded, and one saturated function
//! leaves `/healthz`, the admin API and other functions answering.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn slow_headers_idle_connections_and_stalled_bodies_are_cut_off() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--header-read-timeout", "1s", "--body-read-timeout", "1s"]);
    node.deploy("echo", "echo", "timeout=30s");

    // Half a request head, then nothing: closed after the header timeout.
    let started = Instant::now();
    let mut slow_head = connect(&node);
    slow_head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    read_until_closed(&mut slow_head);
    assert!(started.elapsed() < Duration::from_secs(10), "slow header held {:?}", started.elapsed());

    // A connection that never sends anything, and one idle after a request: both closed.
    let started = Instant::now();
    let mut idle = connect(&node);
    let mut kept_alive = connect(&node);
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_until_closed(&mut idle).is_empty());
    assert!(read_until_closed(&mut kept_alive).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(10), "idle connections held {:?}", started.elapsed());

    // A body that stalls mid-way (well within the function's 30 s timeout) gets an answer
    // naming the failure once the body-read timeout passes.
    let started = Instant::now();
    let mut stalled = connect(&node);
    stalled.write_all(b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
    let answer = read_until_closed(&mut stalled);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("reading the body"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "stalled body held {:?}", started.elapsed());
    node.stop();
}

#[test]
fn a_flood_of_slow_uploads_leaves_health_admin_and_other_functions_answering() {
    let dir = tempdir();
    let node = Node::start(
        dir.path(),
        &["--function-concurrency", "20", "--max-concurrency", "64", "--body-read-timeout", "5s"],
    );
    node.deploy("echo", "echo", "timeout=20s");
    node.deploy("hello", "hello", "");

    // 300 uploads to echo that trickle a byte every 500 ms: more than the node's whole
    // function concurrency limit and far more than echo's own.
    let addr = node.url.trim_start_matches("http://").to_string();
    let uploads: Vec<_> = (0..300)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let _ = s.write_all(b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
                for _ in 0..8 {
                    if s.write_all(b"x").is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(500));
                }
                let mut buf = [0u8; 12];
                let n = s.read(&mut buf).unwrap_or(0);
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        assert_eq!(node.get("/healthz").status, 200);
        assert_eq!(node.get("/v1/functions").status, 200);
        assert_eq!(node.get("/fn/hello").status, 200, "another function keeps its capacity");
        assert!(node.get("/metrics").body.contains("wisp_open_connections"));
        thread::sleep(Duration::from_millis(300));
    }
    let answers: Vec<String> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
    let throttled = answers.iter().filter(|a| a.starts_with("HTTP/1.1 429")).count();
    assert!(throttled >= 250, "echo's excess uploads get 429 at once: {throttled} of 300");
    assert!(node.metric("wisp_throttled_total{function=\"echo\"}") >= 250.0);
    node.stop();
}

#[test]
fn connections_beyond_the_limit_wait_for_a_slot_instead_of_exhausting_descriptors() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--max-connections", "16", "--header-read-timeout", "1s"]);
    assert_eq!(node.metric("wisp_connection_limit"), 16.0);
    // 64 idle connections: 16 are served (and time out), the rest wait in the backlog.
    let idle: Vec<TcpStream> = (0..64).map(|_| connect(&node)).collect();
    let started = Instant::now();
    let health = node.get("/healthz");
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(30), "healthz waited {:?}", started.elapsed());
    drop(idle);
    node.stop();
}

#[test]
fn one_saturated_function_cannot_take_every_instance_slot() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--pool-instances", "40", "--function-concurrency", "10"]);
    node.deploy("sleepy", "misbehave", "timeout=10s&min_warm=0");
    node.deploy("hello", "hello", "");
    assert_eq!(node.function("sleepy")["concurrency_limit"], 10);

    let url = node.url.clone();
    let sleepers: Vec<_> = (0..30)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || request("GET", &format!("{url}/fn/sleepy?mode=sleep&ms=3000"), None, &[]))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        let hello = node.get("/fn/hello");
        assert_eq!(hello.status, 200, "{}", hello.body);
    }
    let answers: Vec<Resp> = sleepers.into_iter().map(|t| t.join().unwrap()).collect();
    let throttled: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 20, "the excess over max_concurrency=10 is refused");
    assert!(throttled[0].error().contains("concurrency limit of 10"), "{}", throttled[0].body);
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 10);

    // A per-function setting overrides the node default.
    node.deploy("sleepy", "misbehave", "max_concurrency=25");
    assert_eq!(node.function("sleepy")["concurrency_limit"], 25);
    assert_eq!(node.function("sleepy")["settings"]["timeout_ms"], 10_000, "earlier settings kept");
    node.stop();
}

#[test]
fn overflowing_and_out_of_range_inputs_are_refused_with_400() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    for (query, field) in [
        ("timeout=1147797409030816545h", "timeout"),
        ("idle_timeout=18446744073709551615m", "idle_timeout"),
        ("memory=99999999999999999999", "memory"),
        ("max_request_body=17179869184Gi", "max_request_body"),
        ("max_concurrency=99999999999", "max_concurrency"),
        ("min_warm=-1", "min_warm"),
    ] {
        let resp = node.post(&format!("/v1/functions/f?{query}"), &wasm("hello"));
        assert_eq!(resp.status, 400, "{query}: {}", resp.body);
        assert!(resp.error().contains(field), "{query}: {}", resp.body);
    }
    assert_eq!(node.get("/v1/functions/f").status, 404, "nothing was deployed");
    // 0 is allowed: totals without records.
    let totals = node.get("/v1/usage?limit=0");
    assert_eq!(totals.status, 200, "{}", totals.body);
    assert_eq!(totals.json()["records"].as_array().map_or(0, Vec::len), 0, "{}", totals.body);
    for limit in ["9223372036854775808", "-1", "ten", "10001"] {
        let resp = node.get(&format!("/v1/usage?limit={limit}"));
        assert_eq!(resp.status, 400, "limit={limit}: {}", resp.body);
        assert!(resp.error().contains("limit"), "{}", resp.body);
    }
    let bad_length = raw_http(&node, b"POST /fn/f HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello");
    assert!(bad_length.starts_with("HTTP/1.1 400"), "{bad_length}");
    node.stop();
}

#[test]
fn memory_bombs_are_held_to_the_node_budget_and_others_keep_answering() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--memory-budget", "256Mi"]);
    node.deploy("bomb", "misbehave", "memory=128Mi&timeout=10s");
    node.deploy("hello", "hello", "");
    let url = node.url.clone();
    // 20 bombs that each try to take 128 MiB: 2.5 GiB wanted, 256 MiB granted in all.
    let bombs: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || request("GET", &format!("{url}/fn/bomb?mode=oom"), None, &[]).status)
        })
        .collect();
    for _ in 0..10 {
        assert_eq!(node.get("/fn/hello").status, 200, "a ready instance of another function still serves");
    }
    let statuses: Vec<u16> = bombs.into_iter().map(|b| b.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 500 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&503), "the budget refused some growth: {statuses:?}");
    assert!(node.metric("wisp_memory_budget_used_bytes") <= (256 << 20) as f64);
    node.wait_for(Duration::from_secs(10), "the bombs' memory to be given back", |n| {
        n.metric("wisp_memory_budget_used_bytes") < (32 << 20) as f64
    });
    assert_eq!(node.get("/fn/hello").status, 200);
    node.stop();
}
