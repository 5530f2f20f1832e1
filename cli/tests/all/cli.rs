use crate::harness::*;
use std::process::Output;

fn wisp(node: &Node, args: &[&str]) -> Output {
    node.cli(wisp_bin()).args(args).output().expect("running wisp")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "wisp failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_cli_deploys_invokes_and_inspects() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let hello = functions_dir().join("hello.wasm");
    let echo = functions_dir().join("echo.wasm");
    let out = stdout(&wisp(
        &node,
        &["deploy", "hello", hello.to_str().unwrap(), "--min-warm", "2", "--memory", "64Mi", "--timeout", "10s"],
    ));
    assert!(out.contains("deployed hello revision 1"), "{out}");
    stdout(&wisp(&node, &["deploy", "echo", echo.to_str().unwrap()]));

    assert_eq!(stdout(&wisp(&node, &["invoke", "hello"])), "Hello from Wisp!\n");
    let echoed = stdout(&wisp(&node, &["invoke", "echo", "--path", "/p?q=1", "--data", "hi", "-H", "x-test: yes"]));
    let echoed: serde_json::Value = serde_json::from_str(&echoed).unwrap();
    assert_eq!(
        (echoed["method"].as_str(), echoed["path"].as_str(), echoed["query"].as_str()),
        (Some("POST"), Some("/p"), Some("q=1"))
    );
    assert_eq!((echoed["body"].as_str(), echoed["headers"]["x-test"].as_str()), (Some("hi"), Some("yes")));

    let table = stdout(&wisp(&node, &["ls"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("hello") && table.contains("64 MiB"), "{table}");
    let listed: serde_json::Value = serde_json::from_str(&stdout(&wisp(&node, &["ls", "-o", "json"]))).unwrap();
    assert_eq!(listed["functions"].as_array().unwrap().len(), 2);

    let described = stdout(&wisp(&node, &["describe", "hello"]));
    assert!(described.contains("revision") && described.contains("10s"), "{described}");
    let usage = stdout(&wisp(&node, &["usage"]));
    assert!(usage.contains("hello") && usage.contains("echo"), "{usage}");
    let usage: serde_json::Value = serde_json::from_str(&stdout(&wisp(&node, &["usage", "-o", "json"]))).unwrap();
    assert_eq!(usage["summary"].as_array().unwrap().len(), 2);
    stdout(&wisp(&node, &["logs", "hello"]));

    // Errors from the node are shown plainly, with a non-zero exit.
    let missing = wisp(&node, &["invoke", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("\"nope\" not found"));
    let bad = wisp(&node, &["deploy", "Bad", hello.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid function name"));

    assert!(stdout(&wisp(&node, &["rm", "echo"])).contains("deleted echo"));
    assert!(!wisp(&node, &["describe", "echo"]).status.success());
}

#[test]
fn every_example_deploys_and_answers_through_the_cli() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let expected = [
        ("hello", "", "Hello from Wisp!"),
        ("echo", "/x?y=1", "\"path\":\"/x\""),
        ("fib", "/?n=10", "\"fib\":55"),
        ("misbehave", "/?mode=status&code=200", ""),
        ("rawhello", "", "plain wasi:http component"),
    ];
    for (name, path, needle) in expected {
        let file = functions_dir().join(format!("{name}.wasm"));
        stdout(&wisp(&node, &["deploy", name, file.to_str().unwrap()]));
        let mut args = vec!["invoke", name];
        if !path.is_empty() {
            args.extend(["--path", path]);
        }
        let body = stdout(&wisp(&node, &args));
        assert!(body.contains(needle), "{name}: {body}");
    }
    let failing = wisp(&node, &["invoke", "misbehave", "--path", "/?mode=trap"]);
    assert!(!failing.status.success());
    assert!(String::from_utf8_lossy(&failing.stderr).contains("function trapped"));
}

#[test]
fn wisp_up_deploys_a_directory_of_components() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--deploy-dir", functions_dir().to_str().unwrap()]);
    assert_eq!(node.get("/fn/hello").body, "Hello from Wisp!\n");
    assert_eq!(node.get("/fn/rawhello").status, 200);
    node.stop();
    // Unchanged components are not redeployed on the next start.
    let node = Node::start(dir.path(), &["--deploy-dir", functions_dir().to_str().unwrap()]);
    assert_eq!(node.function("hello")["revision"], 1);
}

#[test]
fn an_over_limit_deploy_prints_the_nodes_413_not_a_broken_pipe() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--max-component-size", "64Ki"]);
    let big = dir.path().join("big.wasm");
    // Larger than the socket buffers, so the client is still writing when the node refuses.
    std::fs::write(&big, vec![0u8; 8 << 20]).unwrap();
    let out = wisp(&node, &["deploy", "big", big.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exceeds the limit of 65536 bytes") && stderr.contains("413"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert_eq!(node.get("/v1/functions/big").status, 404);
    node.stop();
}

#[test]
fn a_redeploy_without_flags_keeps_the_functions_settings() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let hello = functions_dir().join("hello.wasm");
    let hello = hello.to_str().unwrap();
    stdout(&wisp(&node, &["deploy", "h", hello, "--memory", "64Mi", "--timeout", "5s", "--min-warm", "0"]));
    stdout(&wisp(&node, &["deploy", "h", hello]));
    stdout(&wisp(&node, &["deploy", "h", hello, "--timeout", "7s"]));
    let s = &node.function("h")["settings"];
    assert_eq!(
        (s["memory_bytes"].as_u64(), s["min_warm"].as_u64(), s["timeout_ms"].as_u64()),
        (Some(64 << 20), Some(0), Some(7000))
    );
    node.stop();
}
