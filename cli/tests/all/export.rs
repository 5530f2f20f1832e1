//! Usage export: batches of CloudEvents from the ledger to a webhook, at least once, with
//! stable ids, through a receiver that is down, then failing, and a node killed with -9.

use crate::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "export-signing-key";

/// A webhook on a real socket that keeps every event it receives, checks every batch's
/// signature and content type, and answers 500 (after keeping the events: a receiver that
/// stored a batch but failed to say so) while `failing` is set.
#[derive(Default)]
struct Receiver {
    events: Mutex<Vec<Value>>,
    failing: AtomicBool,
    batches: AtomicU64,
    refused: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Receiver {
    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let receiver = self.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let receiver = receiver.clone();
                thread::spawn(move || receiver.handle(stream));
            }
        });
    }

    fn handle(&self, mut stream: TcpStream) {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // One request per connection: the answer says `Connection: close`.
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut problems = Vec::new();
        if headers.get("content-type").map(String::as_str) != Some("application/cloudevents-batch+json") {
            problems.push(format!("content type {:?}", headers.get("content-type")));
        }
        let expected = wisp_ledger::export_signature(KEY.as_bytes(), &body);
        if headers.get("x-wisp-signature-256") != Some(&expected) {
            problems.push(format!("signature {:?}, expected {expected}", headers.get("x-wisp-signature-256")));
        }
        match serde_json::from_slice::<Vec<Value>>(&body) {
            Ok(batch) => self.events.lock().unwrap().extend(batch),
            Err(e) => problems.push(format!("not a JSON array: {e}")),
        }
        self.problems.lock().unwrap().extend(problems);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let status = if self.failing.load(Ordering::Relaxed) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            "500 Internal Server Error"
        } else {
            "204 No Content"
        };
        let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

fn ledger_ids(node: &Node) -> BTreeSet<u64> {
    let report = node.get("/v1/usage?limit=10000").json();
    report["records"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn invoke_many(node: &Node, n: usize) {
    for _ in 0..n {
        assert_eq!(node.get("/fn/hello").status, 200);
    }
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn usage_reaches_the_webhook_at_least_once_through_an_outage_and_a_kill() {
    let dir = tempdir();
    let key_file = dir.path().join("export.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // A port with nothing behind it yet: the receiver is down.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/api/v1/events");
    let data = dir.path().join("node");
    let flags = [
        "--usage-export-url",
        url.as_str(),
        "--usage-export-signing-key-file",
        key_file.to_str().unwrap(),
        "--usage-export-batch",
        "50",
        "--usage-export-interval",
        "50ms",
        "--usage-export-max-backoff",
        "200ms",
    ];
    let mut node = Node::start(&data, &flags);
    node.deploy("hello", "hello", "");
    invoke_many(&node, 120);
    wait_until(Duration::from_secs(30), "120 records in the ledger", || ledger_ids(&node).len() == 120);
    wait_until(Duration::from_secs(30), "failed export attempts", || {
        node.metric("wisp_usage_export_failures_total") >= 2.0
    });
    assert_eq!(node.metric("wisp_usage_export_pending"), 120.0);

    // The receiver comes up but fails every batch after storing it; then the node dies.
    let receiver = Arc::new(Receiver::default());
    receiver.failing.store(true, Ordering::Relaxed);
    receiver.serve(TcpListener::bind(("127.0.0.1", port)).unwrap());
    wait_until(Duration::from_secs(30), "a refused batch", || receiver.refused.load(Ordering::Relaxed) >= 2);
    node.kill();

    // It recovers; the node restarts, serves more, and catches up.
    receiver.failing.store(false, Ordering::Relaxed);
    let node = Node::start(&data, &flags);
    invoke_many(&node, 80);
    let all = {
        let mut ids = BTreeSet::new();
        wait_until(Duration::from_secs(30), "200 records in the ledger", || {
            ids = ledger_ids(&node);
            ids.len() == 200
        });
        ids
    };
    let exported = |receiver: &Receiver| -> BTreeSet<u64> {
        let events = receiver.events.lock().unwrap();
        events.iter().filter_map(|e| e["id"].as_str()?.rsplit_once('-')?.1.parse().ok()).collect()
    };
    wait_until(Duration::from_secs(60), "every record exported", || exported(&receiver).is_superset(&all));
    wait_until(Duration::from_secs(10), "nothing pending", || node.metric("wisp_usage_export_pending") == 0.0);

    let problems = receiver.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:?}");
    let events = receiver.events.lock().unwrap().clone();
    // The failed batches were sent again: duplicates, each with the same id and content.
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in &events {
        by_id.entry(e["id"].as_str().unwrap().to_string()).or_default().push(e);
    }
    assert!(by_id.len() < events.len(), "the refused batches came again");
    for (id, copies) in &by_id {
        assert!(copies.windows(2).all(|w| w[0] == w[1]), "copies of {id} differ: {copies:?}");
    }
    // One ledger: every id has the same prefix, and every event is a usable CloudEvent.
    let prefixes: BTreeSet<&str> = by_id.keys().map(|id| id.rsplit_once('-').unwrap().0).collect();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    let records = node.get("/v1/usage?function=hello&limit=10000").json();
    let newest = &records["records"][0];
    let event = by_id.iter().find(|(id, _)| id.ends_with(&format!("-{}", newest["id"]))).unwrap().1[0];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "dev.wisp.invocation");
    assert_eq!(event["subject"], "default");
    assert!(event["source"].as_str().unwrap().starts_with("wisp://"));
    assert!(event["time"].as_str().unwrap().ends_with('Z'));
    let data = &event["data"];
    assert_eq!(data["function"], "hello");
    assert_eq!(data["namespace"], "default");
    assert_eq!(data["status"], 200);
    assert_eq!(data["duration_us"], newest["wall_us"]);
    assert_eq!(data["bytes_out"], newest["response_bytes"]);
    assert_eq!(data["billed_ms"], newest["wall_us"].as_u64().unwrap().div_ceil(1000));
    node.stop();
}

#[test]
fn export_flags_are_checked_before_the_node_starts() {
    let dir = tempdir();
    let out = std::process::Command::new(wisp_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--usage-export-url", "ftp://example.com/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--usage-export-url"), "{stderr}");
    let missing = dir.path().join("nope.key");
    let out = std::process::Command::new(wisp_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--usage-export-url", "http://127.0.0.1:9/x", "--usage-export-signing-key-file"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.key"), "{stderr}");
}
