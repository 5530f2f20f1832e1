//! Bearer tokens end to end: every admin route refuses a request without a token (401) or
//! outside its token's role or namespace (403) and changes nothing; revokes take effect on the
//! next request; the first admin token's file; browsers; private functions; CLI contexts.

use crate::harness::*;
use std::process::{Command, Output};

/// Creates a token through the API; returns (id, text).
fn create_token(node: &Node, name: &str, role: &str, namespace: &str) -> (String, String) {
    let body = serde_json::json!({ "name": name, "role": role, "namespace": namespace }).to_string();
    let resp = node.post("/v1/tokens", body.as_bytes());
    assert_eq!(resp.status, 201, "{}", resp.body);
    let json = resp.json();
    (json["id"].as_str().unwrap().to_string(), json["token"].as_str().unwrap().to_string())
}

fn with_token(node: &Node, method: &str, path: &str, body: Option<&[u8]>, token: &str) -> Resp {
    let bearer = format!("Bearer {token}");
    node.request(method, path, body, &[("Authorization", &bearer)])
}

/// What an admin sees of the node's state: functions with their revisions, tokens, images,
/// triggers. Equal before and after a run of refused requests.
fn snapshot(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for f in node.get("/v1/functions").json()["functions"].as_array().unwrap() {
        out.push(format!("function {} r{}", f["name"], f["revision"]));
    }
    for t in node.get("/v1/tokens").json()["tokens"].as_array().unwrap() {
        out.push(format!("token {} {} {}", t["id"], t["role"], t["namespace"]));
    }
    for i in node.get("/v1/images").json()["images"].as_array().unwrap() {
        out.push(format!("image {} {}", i["name"], i["tag"]));
    }
    out.push(format!("triggers {}", node.get("/v1/triggers").json()["triggers"]));
    out
}

/// (method, path, body, 403 for the team viewer, 403 for the team deployer)
type Route<'a> = (&'a str, &'a str, Option<&'a [u8]>, bool, bool);

#[test]
fn every_admin_route_refuses_without_or_outside_its_token() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("hello", "hello", "");
    node.deploy("api", "hello", "namespace=team");
    let (viewer_id, _) = create_token(&node, "victim", "viewer", "*");
    let (_, viewer_team) = create_token(&node, "viewer-team", "viewer", "team");
    let (_, deployer_team) = create_token(&node, "deployer-team", "deployer", "team");
    let (_, invoker) = create_token(&node, "invoker", "invoker", "*");
    let (revoked_id, revoked) = create_token(&node, "revoked", "admin", "*");
    assert_eq!(node.delete(&format!("/v1/tokens/{revoked_id}")).status, 200);
    let before = snapshot(&node);

    let wasm = wasm("hello");
    let manifest = b"apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\n\
                     spec:\n  template:\n    spec:\n      containers:\n        - image: sha256:00\n";
    let trigger = br#"{"name":"t","function":"hello","source":{"kafka":{"brokers":"127.0.0.1:1","topics":["x"]}}}"#;
    let token = br#"{"name":"intruder","role":"admin"}"#;
    let tokens_path = format!("/v1/tokens/{viewer_id}");
    // Everyone without a valid token gets 401 and the invoker 403 on every route.
    let routes: Vec<Route> = vec![
        ("GET", "/v1/functions/hello", None, true, true),
        ("POST", "/v1/functions/hello", Some(&wasm), true, true),
        ("PUT", "/v1/functions/hello", Some(&wasm), true, true),
        ("DELETE", "/v1/functions/hello", None, true, true),
        ("POST", "/v1/functions/api?namespace=team", Some(&wasm), true, false),
        ("GET", "/v1/functions/hello/logs", None, true, true),
        ("POST", "/v1/apply", Some(manifest), true, true),
        ("GET", "/v1/services/default/hello", None, true, true),
        ("DELETE", "/v1/services/default/hello", None, true, true),
        ("DELETE", "/v1/services/team/api", None, true, false),
        ("PUT", "/v1/artifacts/x/v1", Some(&wasm), true, false),
        ("POST", "/v1/images", Some(b"not an archive"), true, false),
        ("DELETE", "/v1/images/x/v1", None, true, true),
        ("POST", "/v1/triggers", Some(trigger), true, true),
        ("DELETE", "/v1/triggers/t", None, true, false),
        ("GET", "/v1/usage?namespace=default", None, true, true),
        ("GET", "/v1/usage?function=hello", None, true, true),
        ("GET", "/v1/bill?period=2025-01&namespace=default", None, true, true),
        ("GET", "/v1/secrets?namespace=default", None, true, true),
        ("PUT", "/v1/secrets/db?namespace=team", Some(b"{}"), true, false),
        ("DELETE", "/v1/secrets/db", None, true, true),
        ("GET", "/v1/plans", None, true, true),
        ("PUT", "/v1/plans/team", Some(b"{}"), true, true),
        ("DELETE", "/v1/plans/team", None, true, true),
        ("GET", "/v1/tokens", None, true, true),
        ("POST", "/v1/tokens", Some(token), true, true),
        ("DELETE", &tokens_path, None, true, true),
        ("GET", "/v1/no-such-route", None, true, true),
        ("OPTIONS", "/v1/functions", None, true, false),
    ];
    let made_up = format!("Bearer wisp_{}_{}", "0".repeat(12), "0".repeat(64));
    let revoked = format!("Bearer {revoked}");
    let unauthenticated: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("not bearer", Some("Basic YWRtaW46YWRtaW4=")),
        ("garbage", Some("Bearer nonsense")),
        ("made-up", Some(&made_up)),
        ("revoked", Some(&revoked)),
    ];
    for (method, path, body, viewer_refused, deployer_refused) in &routes {
        let url = format!("{}{path}", node.url);
        for (who, authorization) in unauthenticated {
            let headers: Vec<(&str, &str)> = authorization.map(|a| ("Authorization", a)).into_iter().collect();
            let resp = request(method, &url, *body, &headers);
            assert_eq!(resp.status, 401, "{who}: {method} {path}: {}", resp.body);
            assert_eq!(resp.header("www-authenticate"), Some("Bearer realm=\"wisp\""), "{method} {path}");
            assert!(!resp.error().is_empty());
        }
        let mut refused = vec![("invoker", &invoker)];
        if *viewer_refused {
            refused.push(("team viewer", &viewer_team));
        }
        if *deployer_refused {
            refused.push(("team deployer", &deployer_team));
        }
        for (who, token) in refused {
            let resp = with_token(&node, method, path, *body, token);
            assert_eq!(resp.status, 403, "{who}: {method} {path}: {}", resp.body);
            assert!(resp.error().contains("may not"), "{}", resp.error());
        }
    }
    assert_eq!(snapshot(&node), before, "refused requests changed nothing");

    // The message names the token, its role and scope.
    let resp = with_token(&node, "DELETE", "/v1/functions/hello", None, &deployer_team);
    assert!(
        resp.error().contains("deployer-team: deployer in namespace team) may not write in namespace default"),
        "{}",
        resp.error()
    );

    // Lists are confined to a namespaced token's namespace.
    let listed = with_token(&node, "GET", "/v1/functions", None, &viewer_team).json();
    let names: Vec<&str> =
        listed["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["team/api"]);
    let services = with_token(&node, "GET", "/v1/services", None, &viewer_team).json();
    assert_eq!(services["services"].as_array().unwrap().len(), 1);
    // Within its scope, a token does its job.
    assert_eq!(with_token(&node, "GET", "/v1/functions/api?namespace=team", None, &viewer_team).status, 200);
    assert_eq!(with_token(&node, "GET", "/v1/images", None, &viewer_team).status, 200);
    let redeploy = with_token(&node, "POST", "/v1/functions/api?namespace=team", Some(&wasm), &deployer_team);
    assert_eq!(redeploy.status, 201, "{}", redeploy.body);
    node.stop();
}

#[test]
fn revoked_tokens_are_refused_at_once_and_the_admin_token_survives_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let file = dir.path().join("admin-token");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(node.token.starts_with("wisp_"), "{}", node.token);

    let (id, viewer) = create_token(&node, "ci", "viewer", "*");
    assert_eq!(with_token(&node, "GET", "/v1/functions", None, &viewer).status, 200);
    let listed = node.get("/v1/tokens");
    assert!(!listed.body.contains(viewer.rsplit('_').next().unwrap()), "ls never shows a secret");
    let out = node.cli(wisp_bin()).args(["token", "revoke", &id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(with_token(&node, "GET", "/v1/functions", None, &viewer).status, 401);
    node.stop();

    // Restart: the same admin token, still valid; the revoked one stays revoked.
    let node = Node::start(dir.path(), &[]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.trim(), node.token);
    assert_eq!(node.get("/v1/tokens").status, 200);
    assert_eq!(with_token(&node, "GET", "/v1/functions", None, &viewer).status, 401);
    node.stop();
}

#[test]
fn browser_borne_requests_cannot_act() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    // A web page can send a "simple" cross-origin POST without a preflight; it has no token.
    let headers = [("Origin", "http://evil.example"), ("Content-Type", "text/plain")];
    let url = format!("{}/v1/functions/x", node.url);
    let resp = request("POST", &url, Some(&wasm("hello")), &headers);
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert!(resp.headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-")));
    assert_eq!(node.get("/v1/functions").json()["functions"], serde_json::json!([]));
    let preflight = request(
        "OPTIONS",
        &url,
        None,
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    );
    assert!(
        preflight.headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-")),
        "{preflight:?}"
    );
    assert!(!(200..300).contains(&preflight.status));
    node.stop();
}

#[test]
fn private_functions_need_a_token_that_may_invoke_in_their_namespace() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    // Private by deploy flag, in namespace team; public by default.
    let echo = functions_dir().join("echo.wasm");
    let out = node
        .cli(wisp_bin())
        .args(["deploy", "api", echo.to_str().unwrap(), "-n", "team", "--private"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node.deploy("open", "echo", "");
    let (_, invoker) = create_token(&node, "caller", "invoker", "team");
    let (_, elsewhere) = create_token(&node, "elsewhere", "invoker", "other");
    let (_, viewer) = create_token(&node, "viewer", "viewer", "team");

    let call =
        |path: &str, headers: &[(&str, &str)]| request("POST", &format!("{}{path}", node.url), Some(b"x"), headers);
    let bearer = |t: &str| format!("Bearer {t}");
    for path in ["/fn/team/api/", "/async/fn/team/api/"] {
        let resp = call(path, &[]);
        assert_eq!(resp.status, 401, "{path}: {}", resp.body);
        assert_eq!(call(path, &[("Authorization", &bearer(&elsewhere))]).status, 403, "{path}");
        assert_eq!(call(path, &[("Authorization", &bearer(&viewer))]).status, 403, "{path}");
    }
    // A refused body is drained, not cut off: the client reads its 401.
    let big = request("POST", &format!("{}/fn/team/api/", node.url), Some(&vec![b'a'; 4 << 20]), &[]);
    assert_eq!(big.status, 401, "{}", big.body);
    // Host routing is held to the same rule.
    assert_eq!(call("/", &[("Host", "api.team.localhost")]).status, 401);
    let ok = call("/fn/team/api/", &[("Authorization", &bearer(&invoker))]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.json()["headers"].get("authorization").is_none(), "the token is not passed on: {}", ok.body);
    let by_host = call("/", &[("Host", "api.team.localhost"), ("Authorization", &bearer(&invoker))]);
    assert_eq!(by_host.status, 200, "{}", by_host.body);
    assert_eq!(call("/async/fn/team/api/", &[("Authorization", &bearer(&node.token))]).status, 202);

    // A public function needs nothing, and never sees a Wisp token either; its own
    // Authorization values pass through.
    assert_eq!(call("/fn/open/", &[]).status, 200);
    let public = call("/fn/open/", &[("Authorization", &bearer(&invoker))]);
    assert!(public.json()["headers"].get("authorization").is_none(), "{}", public.body);
    let own = call("/fn/open/", &[("Authorization", "Basic dXNlcjpwdw==")]);
    assert_eq!(own.json()["headers"]["authorization"], "Basic dXNlcjpwdw==");

    // The Knative label does the same; a bad value is refused naming the field, changing nothing.
    let manifest = |visibility: &str| {
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: open\n  labels:\n    \
             networking.knative.dev/visibility: {visibility}\nspec:\n  template:\n    spec:\n      containers:\n        \
             - image: {}\n",
            node.function("open")["component_hash"].as_str().unwrap()
        )
    };
    let bad = node.post("/v1/apply", manifest("internal").as_bytes());
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.error().contains("metadata.labels.networking.knative.dev/visibility"), "{}", bad.error());
    assert_eq!(call("/fn/open/", &[]).status, 200);
    let applied = node.post("/v1/apply", manifest("cluster-local").as_bytes());
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(call("/fn/open/", &[]).status, 401);
    // `wisp deploy --public` makes it public again.
    let out = node.cli(wisp_bin()).args(["deploy", "open", echo.to_str().unwrap(), "--public"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(call("/fn/open/", &[]).status, 200);
    node.stop();
}

/// `wisp` with no node or token from the environment, a config file of its own, and a
/// working directory without a `.wisp/`.
fn bare_cli(config: &std::path::Path, cwd: &std::path::Path) -> Command {
    let mut cmd = Command::new(wisp_bin());
    cmd.env_remove("WISP_TOKEN")
        .env_remove("WISP_NODE")
        .env_remove("WISP_CONTEXT")
        .env("WISP_CONFIG", config)
        .current_dir(cwd);
    cmd
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "wisp failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "wisp succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn cli_contexts_and_token_commands() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    let home = tempdir();
    let config = home.path().join("wisp/config.yaml");
    let cli = || bare_cli(&config, home.path());

    // No token anywhere: a 401 that says what was sent and how to send one.
    let err = failed(cli().args(["--node", &node.url, "ls"]).output().unwrap());
    assert!(err.contains("(HTTP 401)") && err.contains("sent no token") && err.contains("--token"), "{err}");

    // A context with the admin token in a file.
    let admin_file = dir.path().join("admin-token");
    let out = ok(cli()
        .args(["--node", &node.url, "context", "set", "local", "--token-file", admin_file.to_str().unwrap()])
        .output()
        .unwrap());
    assert!(out.contains("context local set"), "{out}");
    assert!(ok(cli().args(["ls", "-o", "json"]).output().unwrap()).contains("\"functions\""));

    // Tokens: create (shown once), ls, use through a second context, revoke.
    let created = ok(cli().args(["token", "create", "ci", "--role", "viewer", "-n", "team"]).output().unwrap());
    let viewer = created.trim().to_string();
    assert!(viewer.starts_with("wisp_"), "{created}");
    let err = failed(cli().args(["token", "create", "x", "--role", "viewer"]).output().unwrap());
    assert!(err.contains("--namespace"), "{err}");
    let err = failed(cli().args(["token", "create", "x", "--role", "root", "-A"]).output().unwrap());
    assert!(err.contains("role: \"root\" is not a role"), "{err}");
    let listed = ok(cli().args(["token", "ls"]).output().unwrap());
    assert!(listed.contains("ci") && listed.contains("viewer") && listed.contains("team"), "{listed}");
    assert!(!listed.contains(&viewer[18..]), "{listed}");

    ok(cli().args(["--node", &node.url, "--token", &viewer, "context", "set", "ci"]).output().unwrap());
    let contexts = ok(cli().args(["context", "ls"]).output().unwrap());
    assert!(contexts.lines().any(|l| l.starts_with('*') && l.contains("local")), "{contexts}");
    assert!(contexts.contains(&viewer[..18]) && !contexts.contains(&viewer[18..]), "masked: {contexts}");
    // --context picks one for a command; a 403 names its source.
    assert!(ok(cli().args(["--context", "ci", "ls", "-o", "json"]).output().unwrap()).contains("\"functions\""));
    let hello = functions_dir().join("hello.wasm");
    let err = failed(cli().args(["--context", "ci", "deploy", "h", hello.to_str().unwrap()]).output().unwrap());
    assert!(err.contains("(HTTP 403)") && err.contains("context \"ci\""), "{err}");
    // `use` switches the current one; flags beat the context.
    ok(cli().args(["context", "use", "ci"]).output().unwrap());
    assert!(failed(cli().args(["deploy", "h", hello.to_str().unwrap()]).output().unwrap()).contains("403"));
    let admin = node.token.clone();
    ok(cli().args(["--token", &admin, "deploy", "h", hello.to_str().unwrap()]).output().unwrap());
    let err = failed(cli().args(["--context", "nope", "ls"]).output().unwrap());
    assert!(err.contains("no context named \"nope\""), "{err}");

    ok(cli().args(["--context", "local", "token", "revoke", "ci"]).output().unwrap());
    let err = failed(cli().arg("ls").output().unwrap());
    assert!(err.contains("(HTTP 401)") && err.contains("context \"ci\""), "{err}");
    node.stop();
}
