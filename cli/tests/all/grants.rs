//! Guest grants: nothing by default (no env, no files, no sockets, outbound HTTP denied);
//! environment variables and secrets, and outbound HTTP to the origins on the allow-list only,
//! metered. Secret values never appear in describe, get, logs or errors.

use crate::harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A distinctive secret value: any place it shows up is a leak.
const SECRET: &str = "hunter2-Zq8vXw";

/// A local HTTP server answering every request with `body`; counts connections and keeps
/// the request bodies it got.
struct Upstream {
    addr: String,
    connections: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start(body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (connections, bodies) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (seen, got) = (connections.clone(), bodies.clone());
        // Serves until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut request_body = vec![0; length];
                reader.read_exact(&mut request_body).unwrap();
                got.lock().unwrap().push(String::from_utf8(request_body).unwrap());
                let answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { addr, connections, bodies }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn wisp(node: &Node, args: &[&str]) -> Output {
    node.cli(wisp_bin()).args(args).output().expect("running wisp")
}

fn wisp_ok(node: &Node, args: &[&str]) -> String {
    let out = wisp(node, args);
    assert!(out.status.success(), "wisp {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn wisp_err(node: &Node, args: &[&str]) -> String {
    let out = wisp(node, args);
    assert!(!out.status.success(), "wisp {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_guest_without_grants_reads_no_env_no_files_and_reaches_no_network() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let upstream = Upstream::start("should never be read");
    node.deploy("bare", "grants", "");

    let env = node.get("/fn/bare/env");
    assert_eq!((env.status, env.body.as_str()), (200, ""), "the guest saw an environment");
    let file = node.get("/fn/bare/file?path=/etc/passwd");
    assert_eq!(file.status, 403, "{}", file.body);
    assert!(!file.body.contains("root:"), "{}", file.body);
    let tcp = node.get(&format!("/fn/bare/tcp?addr={}", upstream.addr));
    assert_eq!(tcp.status, 403, "{}", tcp.body);
    let fetch = node.get(&format!("/fn/bare/fetch?url=http://{}/", upstream.addr));
    assert_eq!(fetch.status, 502, "{}", fetch.body);
    assert!(fetch.body.contains("HttpRequestDenied"), "{}", fetch.body);
    assert_eq!(upstream.connections(), 0, "an ungranted guest reached the network");
    node.stop();
}

#[test]
fn granted_env_secrets_and_origins_reach_the_guest_and_secret_values_stay_hidden() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let granted = Upstream::start("hello from upstream");
    let other = Upstream::start("not granted");
    let wasm_file = functions_dir().join("grants.wasm");
    let wasm_file = wasm_file.to_str().unwrap();

    // A reference to a secret that does not exist is refused and changes nothing.
    let missing = wisp_err(&node, &["deploy", "f", wasm_file, "--secret", "db"]);
    assert!(missing.contains(r#"secret "db" not found in namespace "default""#), "{missing}");
    assert_eq!(node.get("/v1/functions/f").status, 404);

    let created = wisp_ok(&node, &["secret", "create", "db", "--from-literal", &format!("PASSWORD={SECRET}")]);
    assert!(created.contains("PASSWORD") && !created.contains(SECRET), "{created}");
    let listed = wisp_ok(&node, &["secret", "ls"]);
    assert!(listed.contains("db") && listed.contains("PASSWORD") && !listed.contains(SECRET), "{listed}");
    let api = node.get("/v1/secrets?namespace=default");
    assert_eq!(api.json()["secrets"][0]["keys"], serde_json::json!(["PASSWORD"]), "{}", api.body);
    assert!(!api.body.contains(SECRET));

    let allowed = format!("http://{}", granted.addr);
    wisp_ok(&node, &["deploy", "f", wasm_file, "--env", "MODE=live", "--secret", "db", "--allow-outbound", &allowed]);
    let env = node.get("/fn/f/env");
    assert_eq!(env.body, format!("MODE=live\nPASSWORD={SECRET}\n"));

    // The granted origin answers; another local server is refused before any connection.
    let fetched = node.get(&format!("/fn/f/fetch?url=http://{}/hi&body=ping", granted.addr));
    assert_eq!((fetched.status, fetched.body.as_str()), (200, "200\nhello from upstream"));
    assert_eq!(*granted.bodies.lock().unwrap(), ["ping"]);
    let refused = node.get(&format!("/fn/f/fetch?url=http://{}/", other.addr));
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert!(refused.body.contains("HttpRequestDenied"), "{}", refused.body);
    assert_eq!(other.connections(), 0);

    // Outbound bytes (request and response bodies) are metered per invocation.
    let usage = node.get("/v1/usage?function=f&limit=10").json();
    let metered: Vec<u64> =
        usage["records"].as_array().unwrap().iter().map(|r| r["outbound_bytes"].as_u64().unwrap()).collect();
    assert!(metered.contains(&(("ping".len() + "hello from upstream".len()) as u64)), "{usage}");

    // Settings name the secret; its value is nowhere an operator can read.
    let described = wisp_ok(&node, &["describe", "f"]);
    let yaml = wisp_ok(&node, &["-o", "yaml", "get", "service", "f"]);
    let json = node.get("/v1/functions/f").body;
    assert!(yaml.contains("secretRef") && yaml.contains(&allowed), "{yaml}");
    for (what, text) in [("describe", &described), ("get -o yaml", &yaml), ("GET /v1/functions/f", &json)] {
        assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    }

    // A manifest reading one key: a missing key is refused, naming it; an existing one works.
    let manifest = |key: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: g\nspec:\n  template:\n    spec:\n      containers:\n        - image: sha256:{}\n          env:\n            - name: PW\n              valueFrom:\n                secretKeyRef: {{name: db, key: {key}}}\n",
            node.function("f")["component_hash"].as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let bad = node.post("/v1/apply", manifest("nope").as_bytes());
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains(r#"secret \"db\" has no key \"nope\""#), "{}", bad.body);
    assert_eq!(node.get("/v1/functions/g").status, 404);
    let applied = node.post("/v1/apply", manifest("PASSWORD").as_bytes());
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(node.get("/fn/g/env").body, format!("PW={SECRET}\n"));

    // Replacing the secret reaches the next instances; dropping a key g reads is refused.
    let rotated = format!("{SECRET}-2");
    wisp_ok(&node, &["secret", "create", "db", "--from-literal", &format!("PASSWORD={rotated}")]);
    assert_eq!(node.get("/fn/g/env").body, format!("PW={rotated}\n"));
    let conflict = node.request("PUT", "/v1/secrets/db", Some(br#"{"data": {"OTHER": "x"}}"#), &[]);
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert!(conflict.body.contains("has no key \\\"PASSWORD\\\""), "{}", conflict.body);
    // Deleting a secret functions read is refused, naming them.
    let in_use = wisp_err(&node, &["secret", "rm", "db"]);
    assert!(in_use.contains("used by f, g") || in_use.contains("used by g, f"), "{in_use}");

    // Bad input names the field and changes nothing.
    let bad_origin = node.post("/v1/functions/f?allow_outbound=https://api.example.com/v1", &wasm("grants"));
    assert_eq!(bad_origin.status, 400);
    assert!(bad_origin.body.contains("allow_outbound") && bad_origin.body.contains("no path"), "{}", bad_origin.body);
    let bad_value =
        node.request("PUT", "/v1/secrets/x", Some(format!(r#"{{"data": {{"K": 7{SECRET}}}}}"#).as_bytes()), &[]);
    assert_eq!(bad_value.status, 400);

    // Neither the node's log nor the functions' logs nor any error above carried the value.
    let errors = [&missing, &conflict.body, &in_use, &bad.body, &bad_value.body];
    for text in
        errors.into_iter().chain([&node.get("/v1/functions/f/logs").body, &node.get("/v1/functions/g/logs").body])
    {
        assert!(!text.contains(SECRET), "leaked: {text}");
    }
    assert!(!node.log_tail(10_000).contains(SECRET), "the node logged the secret");

    // Once nothing reads it, it can be deleted.
    wisp_ok(&node, &["rm", "f"]);
    wisp_ok(&node, &["rm", "g"]);
    wisp_ok(&node, &["secret", "rm", "db"]);
    assert!(!wisp_ok(&node, &["secret", "ls"]).contains("db"));
    node.stop();
}

#[test]
fn secrets_and_grants_survive_a_restart() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let created = node.request("PUT", "/v1/secrets/api?namespace=team", Some(br#"{"data": {"TOKEN": "t0k"}}"#), &[]);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        node.request("PUT", "/v1/secrets/api?namespace=team", Some(br#"{"data": {"TOKEN": "t0k"}}"#), &[]).status,
        200
    );
    node.deploy("f", "grants", "namespace=team&secret=api&env=A=1");
    node.stop();

    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.get("/fn/team/f/env").body, "A=1\nTOKEN=t0k\n");
    // The registry holding the values is readable by its owner only.
    let mode = std::fs::metadata(dir.path().join("wisp.db")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    node.stop();
}
