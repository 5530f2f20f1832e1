use crate::harness::*;

#[test]
fn deploys_every_example_and_serves_it() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    for name in ["hello", "echo", "fib", "misbehave", "rawhello"] {
        let f = node.deploy(name, name, "").json();
        assert_eq!(f["name"], name);
        assert_eq!(f["revision"], 1);
        assert!(f["component_hash"].as_str().unwrap().starts_with("sha256:"));
    }
    let listed = node.get("/v1/functions").json();
    let names: Vec<&str> =
        listed["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "fib", "hello", "misbehave", "rawhello"]);

    let hello = node.get("/fn/hello");
    assert_eq!((hello.status, hello.body.as_str()), (200, "Hello from Wisp!\n"));
    assert_eq!(node.get("/fn/hello/").body, "Hello from Wisp!\n");

    // A plain wasi:http component, written without our SDK, runs unchanged.
    let raw = node.get("/fn/rawhello");
    assert_eq!((raw.status, raw.body.as_str()), (200, "Hello from a plain wasi:http component\n"));
    assert_eq!(raw.header("x-raw"), Some("yes"));

    let echo = request(
        "PUT",
        &format!("{}/fn/echo/some/path?a=1&b=two", node.url),
        Some(b"payload bytes"),
        &[("x-custom", "42"), ("content-type", "text/plain")],
    );
    assert_eq!(echo.status, 200, "{}", echo.body);
    let e = echo.json();
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["path"], "/some/path");
    assert_eq!(e["query"], "a=1&b=two");
    assert_eq!(e["body"], "payload bytes");
    assert_eq!(e["body_len"], 13);
    assert_eq!(e["headers"]["x-custom"], "42");

    let fib = node.get("/fn/fib?n=30").json();
    assert_eq!(fib["fib"], 832040);
    let bad = node.get("/fn/fib?n=1000");
    assert_eq!(bad.status, 400, "the function's own 4xx passes through");

    let described = node.function("hello");
    assert_eq!(described["settings"]["min_warm"], 1);
    assert_eq!(described["revisions"].as_array().unwrap().len(), 1);
    assert_eq!(node.get("/healthz").status, 200);
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--max-component-size", "1Mi"]);
    node.deploy("hello", "hello", "max_request_body=1Ki");
    let before = node.get("/v1/functions").body;

    let garbage = node.post("/v1/functions/hello", b"this is not wasm");
    assert_eq!(garbage.status, 400);
    assert!(garbage.error().contains("not a WebAssembly binary"), "{}", garbage.body);

    let core_module = node.post("/v1/functions/hello", b"\0asm\x01\0\0\0");
    assert_eq!(core_module.status, 400);
    assert!(core_module.error().contains("core WebAssembly module"), "{}", core_module.body);

    // A valid but empty component: no wasi:http/incoming-handler export.
    let empty_component = node.post("/v1/functions/hello", b"\0asm\x0d\0\x01\0");
    assert_eq!(empty_component.status, 400);
    assert!(empty_component.error().contains("does not export wasi:http/incoming-handler"), "{}", empty_component.body);

    let truncated = wasm("hello");
    let truncated = node.post("/v1/functions/hello", &truncated[..truncated.len() / 2]);
    assert_eq!(truncated.status, 400);
    assert!(truncated.error().contains("invalid component"), "{}", truncated.body);

    let name = node.post("/v1/functions/Bad_Name", &wasm("hello"));
    assert_eq!(name.status, 400);
    assert!(name.error().contains("invalid function name"), "{}", name.body);

    let setting = node.post("/v1/functions/other?memory=lots", &wasm("hello"));
    assert_eq!(setting.status, 400);
    assert!(setting.error().contains("`memory`"), "{}", setting.body);
    let unknown = node.post("/v1/functions/other?colour=red", &wasm("hello"));
    assert_eq!(unknown.status, 400);
    assert!(unknown.error().contains("`colour`"), "{}", unknown.body);
    let too_much = node.post("/v1/functions/other?memory=64Gi", &wasm("hello"));
    assert_eq!(too_much.status, 400);
    assert!(too_much.error().contains("exceeds this node's maximum"), "{}", too_much.body);

    // hello's initial linear memory is above 1 MiB: refused at deploy, not on every request.
    let cannot_start = node.post("/v1/functions/other?memory=1Mi", &wasm("hello"));
    assert_eq!(cannot_start.status, 400);
    assert!(cannot_start.error().contains("failed to instantiate"), "{}", cannot_start.body);

    // A declared oversized upload is refused before its body is sent.
    let head = format!(
        "POST /v1/functions/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 2097152\r\n\r\n",
        node.token
    );
    let huge_upload = raw_http(&node, head.as_bytes());
    assert!(huge_upload.starts_with("HTTP/1.1 413"), "{huge_upload}");
    assert!(huge_upload.contains("component upload exceeds the limit of 1048576 bytes"), "{huge_upload}");

    let missing = node.get("/fn/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("\"nope\" not found"), "{}", missing.body);
    assert_eq!(node.get("/v1/functions/nope").status, 404);
    assert_eq!(node.delete("/v1/functions/nope").status, 404);
    assert_eq!(node.get("/v1/functions/nope/logs").status, 404);

    let big_body = node.post("/fn/hello", &vec![b'x'; 4096]);
    assert_eq!(big_body.status, 413);
    assert!(big_body.error().contains("1024 bytes"), "{}", big_body.body);

    assert_eq!(node.get("/nowhere").status, 404);
    assert_eq!(node.post("/v1/usage", b"").status, 405);

    // Nothing changed: same functions, same revision, still serving.
    assert_eq!(
        node.get("/v1/functions").body.replace("\"ready_instances\":0", "\"ready_instances\":1"),
        before.replace("\"ready_instances\":0", "\"ready_instances\":1")
    );
    assert_eq!(node.function("hello")["revision"], 1);
    assert_eq!(node.get("/fn/hello").status, 200);
}

#[test]
fn concurrent_first_deploys_of_the_same_component_all_succeed() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let (url, bearer) = (node.url.clone(), format!("Bearer {}", node.token));
    let deploys: Vec<_> = (0..6)
        .map(|i| {
            let (url, bearer) = (url.clone(), bearer.clone());
            std::thread::spawn(move || {
                let auth = [("Authorization", bearer.as_str())];
                request("POST", &format!("{url}/v1/functions/copy-{i}"), Some(&wasm("echo")), &auth)
            })
        })
        .collect();
    for d in deploys {
        let r = d.join().unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(node.get("/fn/copy-5/x").json()["path"], "/x");
}

#[test]
fn a_node_out_of_instance_slots_answers_503_and_changes_nothing() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--pool-instances", "2"]);
    node.deploy("a", "hello", "");
    node.deploy("b", "hello", "");
    node.wait_for(std::time::Duration::from_secs(10), "both warm", |n| {
        n.function("a")["ready_instances"] == 1 && n.function("b")["ready_instances"] == 1
    });
    let full = node.post("/v1/functions/c", &wasm("hello"));
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.error().contains("out of instance capacity"), "{}", full.body);
    assert_eq!(node.get("/fn/c").status, 404);
    assert_eq!(node.get("/fn/a").status, 200);
}
