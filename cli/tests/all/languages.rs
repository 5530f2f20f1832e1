//! Functions written in Python (componentize-py) and JavaScript (ComponentizeJS): large
//! components on the standard `wasi:http/proxy` world, deployed and served like Rust ones.

use crate::harness::*;
use std::thread;

#[test]
fn python_and_javascript_functions_deploy_serve_concurrently_and_restart_from_the_cache() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("py", "hello-py", "");
    node.deploy("js", "hello-js", "");
    // Both compiled in a child process: the compiler's working memory (about 500 MiB for
    // these two when it ran in the node) never reached the node.
    let peak_kib = peak_rss_kib(node.pid());
    assert!(peak_kib < 350 << 10, "the node peaked at {peak_kib} KiB while deploying");

    for (name, lang, greeting) in [("py", "python", "Python"), ("js", "js", "JavaScript")] {
        let resp = node.get(&format!("/fn/{name}"));
        assert_eq!((resp.status, resp.body.as_str()), (200, format!("Hello from {greeting}!\n").as_str()));
        assert_eq!(resp.header("x-lang"), Some(lang));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        let named = node.get(&format!("/fn/{name}?name=Ada"));
        assert_eq!(named.body, format!("Hello, Ada, from {greeting}!\n"));
    }

    // Concurrent requests, each on a fresh instance: all answered, none failed.
    thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let node = &node;
                s.spawn(move || {
                    let name = if i % 2 == 0 { "py" } else { "js" };
                    (0..25).filter(|_| node.get(&format!("/fn/{name}")).status == 200).count()
                })
            })
            .collect();
        let ok: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(ok, 100);
    });
    let ok = |f: &str| node.metric(&format!("wisp_invocations_total{{function=\"{f}\",outcome=\"ok\"}}"));
    assert_eq!((ok("py"), ok("js")), (52.0, 52.0));
    node.stop();

    // A restart loads both from the compile cache: nothing is compiled again.
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.metric("wisp_compile_cache_misses_total"), 0.0, "restart must not recompile");
    assert_eq!(node.get("/fn/py").body, "Hello from Python!\n");
    assert_eq!(node.get("/fn/js").body, "Hello from JavaScript!\n");
    node.stop();
}

#[test]
fn reuse_serves_python_from_one_instance_and_turns_itself_off_for_a_guest_that_cannot_serve_twice() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("py", "hello-py", "max_instance_reuse_count=100");
    node.deploy("js", "hello-js", "max_instance_reuse_count=100");
    for _ in 0..20 {
        assert_eq!(node.get("/fn/py").body, "Hello from Python!\n");
        // ComponentizeJS's fetch event answers once per instance: the second call on a reused
        // instance sets no response, so the request runs again on a fresh one and reuse stops.
        let js = node.get("/fn/js");
        assert_eq!((js.status, js.body.as_str()), (200, "Hello from JavaScript!\n"));
    }
    let ok = |f: &str| node.metric(&format!("wisp_invocations_total{{function=\"{f}\",outcome=\"ok\"}}"));
    assert_eq!((ok("py"), ok("js")), (20.0, 20.0));
    node.stop();
}

/// VmHWM of a process: the most resident memory it ever had.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect(line)
}
