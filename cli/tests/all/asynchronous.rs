//! Async invocations end to end: a 202 is stored before it is answered and survives kill -9,
//! runs at least once with retries visible in its state, and its response reaches the callback.

use crate::harness::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

fn submit(node: &Node, path: &str, body: &[u8], headers: &[(&str, &str)]) -> String {
    let resp = request("POST", &format!("{}{path}", node.url), Some(body), headers);
    assert_eq!(resp.status, 202, "{}", resp.body);
    let id = resp.json()["id"].as_str().unwrap().to_string();
    assert_eq!(resp.header("location"), Some(format!("/v1/invocations/{id}").as_str()));
    id
}

fn invocation(node: &Node, id: &str) -> serde_json::Value {
    let resp = node.get(&format!("/v1/invocations/{id}"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

fn wait_state(node: &Node, id: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    node.wait_for(Duration::from_secs(60), &format!("invocation {id} to be {state}"), |n| {
        last = invocation(n, id);
        last["state"] == state
    });
    last
}

/// A request the callback server received: headers (names lower-cased) and body.
type Call = (HashMap<String, String>, String);

/// One HTTP request per connection, handed to the test.
fn callback_server() -> (String, mpsc::Receiver<Call>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((k, v)) = line.trim_end().split_once(':') else { break };
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").unwrap();
            let _ = tx.send((headers, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (url, rx)
}

#[test]
fn accepted_invocations_survive_kill_9_and_run_at_least_once() {
    let dir = tempdir();
    // One at a time, each 100 ms: most are still queued when the node dies.
    let flags = ["--async-concurrency", "1", "--ledger-sync"];
    let mut node = Node::start(dir.path(), &flags);
    node.deploy("slow", "misbehave", "");
    let ids: Vec<String> =
        (0..40).map(|i| submit(&node, "/async/fn/slow?mode=sleep&ms=100", format!("{i}").as_bytes(), &[])).collect();
    let queued = ids.iter().filter(|id| invocation(&node, id)["state"] == "queued").count();
    assert!(queued > 20, "most should still wait when the node is killed ({queued} queued)");
    node.kill();

    let node = Node::start(dir.path(), &flags);
    for id in &ids {
        let v = wait_state(&node, id, "succeeded");
        assert_eq!(v["status"], 200);
        assert_eq!(v["response_body"], "slept\n");
    }
    // Every one ran; only what was running at the kill ran twice (one slot).
    let usage = node.get("/v1/usage?function=slow&limit=10000").json();
    let mut runs: HashMap<String, u32> = HashMap::new();
    for r in usage["records"].as_array().unwrap() {
        assert_eq!(r["source"], "async");
        *runs.entry(r["event_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(ids.iter().all(|id| runs.get(id).copied().unwrap_or(0) >= 1), "every 202 ran: {runs:?}");
    let duplicates: u32 = runs.values().map(|n| n - 1).sum();
    eprintln!("async after kill -9: {} invocations, {duplicates} ran twice", ids.len());
    assert!(duplicates <= 1, "at most the one in flight runs again: {runs:?}");
}

#[test]
fn retries_show_in_the_state_and_the_callback_gets_the_response() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--async-retries", "2", "--async-backoff", "10ms"]);
    node.deploy("m", "misbehave", "");
    node.deploy("echo", "echo", "");
    let (callback, calls) = callback_server();

    // A function that keeps failing: every attempt is recorded, then it fails for good.
    let id =
        submit(&node, "/fn/m?mode=status&code=503", b"", &[("prefer", "respond-async"), ("x-callback-url", &callback)]);
    let v = wait_state(&node, &id, "failed");
    assert_eq!((v["attempts"].as_u64(), v["status"].as_u64()), (Some(3), Some(503)), "{v}");
    let (headers, _) = calls.recv_timeout(Duration::from_secs(30)).expect("callback for the failure");
    assert_eq!(headers["x-wisp-invocation-id"], id);
    assert_eq!(headers["x-function-status"], "503");
    // A final (non-retryable) answer is not retried.
    let id = submit(&node, "/async/fn/m?mode=status&code=400", b"", &[]);
    assert_eq!(wait_state(&node, &id, "failed")["attempts"], 1);

    // Success: the callback carries the function's response body, sent by the node.
    let id = submit(&node, "/async/fn/echo/path?q=1", b"payload", &[("x-callback-url", &callback)]);
    let v = wait_state(&node, &id, "succeeded");
    let (headers, body) = calls.recv_timeout(Duration::from_secs(30)).expect("callback for the success");
    assert_eq!(headers["x-wisp-function-status"], "200");
    assert_eq!(headers["content-type"], "application/json");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (echoed["path"].as_str(), echoed["query"].as_str(), echoed["body"].as_str()),
        (Some("/path"), Some("q=1"), Some("payload"))
    );
    assert_eq!(v["callback"]["state"], "delivered");
    assert_eq!(v["callback"]["status"], 204);
}

#[test]
fn bad_async_requests_are_refused_and_store_nothing() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("echo", "echo", "max_request_body=16");
    let post = |path: &str, body: &[u8], headers: &[(&str, &str)]| {
        request("POST", &format!("{}{path}", node.url), Some(body), headers)
    };
    let r = post("/async/fn/nope", b"", &[]);
    assert_eq!((r.status, r.error()), (404, "function \"nope\" not found".to_string()));
    let r = post("/async/fn/echo", b"", &[("x-callback-url", "https://example.com/x")]);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("X-Callback-Url"), "{}", r.body);
    let r = post("/async/fn/echo", &[b'x'; 17], &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.error().contains("16 bytes"), "{}", r.body);
    assert_eq!(node.get("/v1/invocations/0000").status, 404);
    // Nothing was run.
    let usage = node.get("/v1/usage?function=echo").json();
    assert_eq!(usage["records"].as_array().unwrap().len(), 0, "{usage}");
}
