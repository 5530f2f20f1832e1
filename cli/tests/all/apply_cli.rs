//! `wisp apply`, `push`, `get`, `revisions` and `describe` against a real node: Knative
//! manifests with local components, pushed artifacts, namespaces, dry runs and refusals.

use crate::harness::*;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

/// Runs `wisp --node URL ARGS` in `cwd`, feeding `stdin`.
fn wisp_in(node: &Node, cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = node
        .cli(wisp_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running wisp");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("running wisp")
}

fn wisp(node: &Node, args: &[&str]) -> Output {
    wisp_in(node, Path::new("/"), args, "")
}

fn ok(out: Output, args: &[&str]) -> String {
    assert!(out.status.success(), "wisp {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn wisp_ok(node: &Node, args: &[&str]) -> String {
    ok(wisp(node, args), args)
}

/// `wisp ARGS` must fail; returns its stderr.
fn wisp_err(node: &Node, args: &[&str]) -> String {
    let out = wisp(node, args);
    assert!(!out.status.success(), "wisp {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// A Service manifest; `extra` is appended to the container (indented for it).
fn service(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n{extra}      containers:\n        - image: {image}\n"
    )
}

/// A temp dir holding `hello.wasm` and `service.yaml` (image `./hello.wasm`, `template`
/// lines added under `template.spec`).
fn manifest_dir(template: &str) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    std::fs::copy(wisp_testkit::wasm_path("hello"), dir.path().join("hello.wasm")).unwrap();
    let path = dir.path().join("service.yaml");
    std::fs::write(&path, service("hello", "./hello.wasm", template)).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

fn artifacts(node: &Node) -> Vec<serde_json::Value> {
    node.get("/v1/artifacts").json()["artifacts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn apply_uploads_a_local_component_and_the_service_answers() {
    let data = tempdir();
    let node = Node::start(data.path(), &[]);
    let (dir, manifest) = manifest_dir("");

    // Run from elsewhere: ./hello.wasm is next to the manifest, not in the CWD.
    let out = wisp_ok(&node, &["apply", "-f", &manifest]);
    assert!(out.contains("uploaded ./hello.wasm as hello:"), "{out}");
    assert!(out.contains("service.serving.knative.dev/hello created (revision hello-00001)\n"), "{out}");
    assert_eq!(node.get("/fn/hello").body, "Hello from Wisp!\n");
    let pushed = artifacts(&node);
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let sha = pushed[0]["artifact"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(pushed[0]["tag"].as_str(), Some(&sha[..12]));

    // Unchanged: no upload, no revision.
    let out = wisp_ok(&node, &["apply", "-f", &manifest]);
    assert_eq!(out, "service.serving.knative.dev/hello unchanged\n");

    // -o yaml: the Knative object, with its status.
    let yaml = wisp_ok(&node, &["get", "service", "hello", "-o", "yaml"]);
    let object: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(object["apiVersion"], "serving.knative.dev/v1", "{yaml}");
    assert_eq!(object["kind"], "Service");
    assert_eq!(object["spec"]["template"]["spec"]["containers"][0]["image"], format!("sha256:{sha}"), "{yaml}");
    let status = &object["status"];
    assert!(status["url"].as_str().unwrap().starts_with("http://hello.default."), "{yaml}");
    assert_eq!(status["traffic"][0]["revisionName"], "hello-00001", "{yaml}");
    assert_eq!(
        (status["traffic"][0]["percent"].as_u64(), status["traffic"][0]["latestRevision"].as_bool()),
        (Some(100), Some(true))
    );
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned();
    assert_eq!(ready.map(|c| c["status"].clone()), Some("True".into()), "{yaml}");
    // -o json is the same object; and what get prints, apply takes back unchanged.
    let json: serde_json::Value =
        serde_json::from_str(&wisp_ok(&node, &["get", "service", "hello", "-o", "json"])).unwrap();
    assert_eq!(json, object);
    std::fs::write(dir.path().join("got.yaml"), &yaml).unwrap();
    let again = wisp_ok(&node, &["apply", "-f", dir.path().join("got.yaml").to_str().unwrap()]);
    assert_eq!(again, "service.serving.knative.dev/hello unchanged\n");

    // A dry run of a change says what would happen and changes nothing.
    let changed = service("hello", "./hello.wasm", "      containerConcurrency: 4\n");
    std::fs::write(&manifest, &changed).unwrap();
    let out = wisp_ok(&node, &["apply", "--dry-run", "-f", &manifest]);
    assert!(out.contains("./hello.wasm: a ") && out.contains("(not uploaded: dry run)"), "{out}");
    assert!(out.contains("service.serving.knative.dev/hello configured (revision hello-00002) (dry run)\n"), "{out}");
    assert_eq!(node.get("/v1/services/default/hello").json()["revisions"].as_array().unwrap().len(), 1);

    // A real change: a second revision that takes the traffic.
    let out = wisp_ok(&node, &["apply", "-f", &manifest]);
    assert_eq!(out, "service.serving.knative.dev/hello configured (revision hello-00002)\n", "no upload: same bytes");
    let table = wisp_ok(&node, &["revisions", "hello"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("TRAFFIC") && lines[0].ends_with("REPLICAS"), "{table}");
    let cells = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let (new, old) = (cells(lines[1]), cells(lines[2]));
    assert_eq!((new[0].as_str(), new[1].as_str(), new[2].as_str()), ("hello-00002", "hello", "100%"), "{table}");
    assert_eq!((old[0].as_str(), old[2].as_str()), ("hello-00001", "1"), "no traffic, generation 1: {table}");
    assert!(!lines[2].contains('%'), "{table}");

    let described = wisp_ok(&node, &["describe", "hello"]);
    for needle in
        ["Name:", "Namespace: default", "URL:", "Revisions:", "100%  @latest (hello-00002) [2]", "+  hello-00001 [1]"]
    {
        assert!(described.contains(needle), "{needle:?} in\n{described}");
    }
    for needle in ["Image:", "Replicas:", "Autoscaler: panic no", "Container concurrency:", "++  Ready"] {
        assert!(described.contains(needle), "{needle:?} in\n{described}");
    }
    let view: serde_json::Value = serde_json::from_str(&wisp_ok(&node, &["describe", "hello", "-o", "json"])).unwrap();
    assert_eq!(view["status"]["latestReadyRevisionName"], "hello-00002");

    let list = wisp_ok(&node, &["get", "services"]);
    assert!(list.starts_with("NAME") && list.contains("LATEST"), "{list}");
    assert!(
        list.lines().any(|l| l.starts_with("hello ") && l.contains("hello-00002") && l.ends_with("True")),
        "{list}"
    );
    node.stop();
}

#[test]
fn a_dry_run_before_the_first_apply_uploads_and_changes_nothing() {
    let data = tempdir();
    let node = Node::start(data.path(), &[]);
    let (_dir, manifest) = manifest_dir("");
    let out = wisp_ok(&node, &["apply", "-f", &manifest, "--dry-run"]);
    assert!(out.contains("service.serving.knative.dev/hello created (revision hello-00001) (dry run)\n"), "{out}");
    assert_eq!(node.get("/v1/services/default/hello").status, 404);
    assert_eq!(artifacts(&node).len(), 0);
    node.stop();
}

#[test]
fn push_then_apply_by_name_and_tag_in_a_namespace() {
    let data = tempdir();
    let node = Node::start(data.path(), &[]);
    let hello = wisp_testkit::wasm_path("hello");
    let out = wisp_ok(&node, &["push", hello.to_str().unwrap(), "greeter:v1"]);
    let size = std::fs::metadata(&hello).unwrap().len();
    assert!(out.starts_with("pushed greeter:v1 sha256:") && out.ends_with(&format!(" ({size} bytes)\n")), "{out}");
    assert!(wisp_ok(&node, &["get", "artifacts"]).contains("greeter  v1"));

    // From stdin, in namespace team.
    let manifest = service("web", "greeter:v1", "").replace("  name: web\n", "  name: web\n  namespace: team\n");
    let out = ok(wisp_in(&node, Path::new("/"), &["apply", "-f", "-"], &manifest), &["apply"]);
    assert_eq!(out, "service.serving.knative.dev/team/web created (revision web-00001)\n");
    assert_eq!(node.get("/fn/team/web").body, "Hello from Wisp!\n");
    assert_eq!(wisp_ok(&node, &["invoke", "web", "-n", "team"]), "Hello from Wisp!\n");
    assert!(wisp_ok(&node, &["describe", "web", "-n", "team"]).contains("Namespace: team"));
    assert!(!wisp(&node, &["describe", "web"]).status.success(), "not in the default namespace");
    assert!(wisp_ok(&node, &["get", "services"]).is_empty(), "default has none");
    assert!(wisp_ok(&node, &["get", "services", "-A"]).contains("team"));
    let yaml = wisp_ok(&node, &["get", "ksvc", "web", "-n", "team", "-o", "yaml"]);
    assert!(yaml.contains("namespace: team") && yaml.contains("image: greeter:v1"), "{yaml}");

    // The default tag is latest; an unknown one is the node's clear refusal.
    wisp_ok(&node, &["push", hello.to_str().unwrap(), "greeter"]);
    let out = wisp_in(&node, Path::new("/"), &["apply", "-o", "json", "-f", "-"], &service("plain", "greeter", ""));
    let answer: serde_json::Value = serde_json::from_str(&ok(out, &["apply", "-o", "json"])).unwrap();
    assert_eq!(answer["results"][0]["action"], "created", "{answer}");
    let missing = wisp_in(&node, Path::new("/"), &["apply", "-f", "-"], &service("nope", "greeter:v9", ""));
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("greeter:v9") && stderr.contains("not found"), "{stderr}");

    assert!(wisp_ok(&node, &["rm", "web", "-n", "team"]).contains("deleted"));
    assert_eq!(node.get("/v1/services/team/web").status, 404);
    node.stop();
}

#[test]
fn an_invalid_manifest_prints_the_knative_message_and_changes_nothing() {
    let data = tempdir();
    let node = Node::start(data.path(), &[]);
    let expected = "expected 0 <= -1 <= 1000: spec.template.spec.containerConcurrency";

    // With a local image: refused before anything is uploaded.
    let (dir, manifest) = manifest_dir("      containerConcurrency: -1\n");
    let stderr = wisp_err(&node, &["apply", "-f", &manifest]);
    assert!(stderr.contains(expected) && stderr.contains("service.yaml: document 1"), "{stderr}");
    assert_eq!(artifacts(&node).len(), 0);

    // With a pushed image: the node's refusal, as it is.
    wisp_ok(&node, &["push", wisp_testkit::wasm_path("hello").to_str().unwrap(), "hello"]);
    let bad = service("hello", "hello", "      containerConcurrency: -1\n");
    let out = wisp_in(&node, Path::new("/"), &["apply", "-f", "-"], &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected) && stderr.contains("stdin: document 1"), "{stderr}");
    assert_eq!(node.get("/v1/services/default/hello").status, 404);

    // A second, valid document does not get applied either.
    let two = format!("{}---\n{bad}", service("other", "hello", ""));
    let out = wisp_in(&node, Path::new("/"), &["apply", "-f", "-"], &two);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin: document 2"));
    assert_eq!(node.get("/v1/services/default/other").status, 404);

    // A local file that is not a component is imported as an OCI archive: garbage is refused,
    // saying why, and nothing is applied.
    std::fs::write(dir.path().join("app.tar"), b"oci-layout\0\0\0").unwrap();
    std::fs::write(&manifest, service("hello", "./app.tar", "")).unwrap();
    let stderr = wisp_err(&node, &["apply", "-f", &manifest]);
    assert!(stderr.contains("not a readable tar archive"), "{stderr}");
    assert_eq!(node.get("/v1/services/default/hello").status, 404);
    let stderr = wisp_err(&node, &["apply", "-f", "-"]);
    assert!(stderr.contains("no objects to apply"), "{stderr}");
    node.stop();
}
