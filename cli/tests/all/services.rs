//! Knative Services end to end: real manifests through `POST /v1/apply`, revisions stamped by
//! template changes, percent splits and tags, rollbacks, namespaces, Host routing, refusals
//! that change nothing, and a restart that keeps it all. Revisions are told apart by serving
//! different guests (`hello` answers text, `echo` answers JSON describing the request).

use crate::harness::*;
use serde_json::{Value, json};
use std::thread;
use std::time::Instant;
use wisp_testkit::try_request;

/// Knative's hello-world sample, with the image pushed to the node under `helloworld:v1`.
const KNATIVE_HELLO_WORLD: &str = r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: helloworld:v1
          env:
            - name: TARGET
              value: "Go Sample v1"
"#;

/// Stores the guest `wasm_name` as `image` (`name:tag`) for manifests to name.
pub(crate) fn push(node: &Node, image: &str, wasm_name: &str) -> Value {
    let (name, tag) = image.split_once(':').expect("name:tag");
    let pushed = node.request("PUT", &format!("/v1/artifacts/{name}/{tag}"), Some(&wasm(wasm_name)), &[]);
    assert_eq!(pushed.status, 201, "pushing {image}: {}", pushed.body);
    pushed.json()
}

/// `POST /v1/apply{query}` with a manifest (YAML or JSON text), whatever the answer.
pub(crate) fn try_apply(node: &Node, query: &str, manifest: &str) -> Resp {
    node.post(&format!("/v1/apply{query}"), manifest.as_bytes())
}

/// Applies a JSON manifest; asserts 200 and returns the answer.
pub(crate) fn apply(node: &Node, manifest: &Value) -> Value {
    let applied = try_apply(node, "", &manifest.to_string());
    assert_eq!(applied.status, 200, "applying {manifest}: {}", applied.body);
    applied.json()
}

/// (action, revision) of an apply's only result; the revision is "" when none was stamped.
pub(crate) fn outcome(applied: &Value) -> (String, String) {
    let results = applied["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{applied}");
    let r = &results[0];
    (r["action"].as_str().unwrap().to_string(), r["revision"].as_str().unwrap_or("").to_string())
}

/// A minimal Service in the default namespace running `image`.
pub(crate) fn service(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    })
}

/// `GET /v1/services/{namespace}/{name}`, asserting 200.
pub(crate) fn get_service(node: &Node, namespace: &str, name: &str) -> Value {
    let got = node.get(&format!("/v1/services/{namespace}/{name}"));
    assert_eq!(got.status, 200, "{}", got.body);
    got.json()
}

/// The names of a service view's revisions, newest first.
pub(crate) fn revision_names(view: &Value) -> Vec<String> {
    view["revisions"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

/// Which guest answered a 200: `hello` or `echo`.
pub(crate) fn served_by(resp: &Resp) -> &'static str {
    assert_eq!(resp.status, 200, "{}", resp.body);
    if resp.body == "Hello from Wisp!\n" {
        "hello"
    } else if serde_json::from_str::<Value>(&resp.body).is_ok_and(|v| v["method"].is_string()) {
        "echo"
    } else {
        panic!("an answer from neither hello nor echo: {}", resp.body)
    }
}

/// `{label}.{namespace}.localhost:{port}`, the Host that addresses a service (or a tag).
fn host(node: &Node, label: &str, namespace: &str) -> String {
    format!("{label}.{namespace}.localhost:{}", node.addr.port())
}

/// A request to the node with this Host header.
fn at_host(node: &Node, host: &str, path: &str) -> Resp {
    request("GET", &format!("{}{path}", node.url), None, &[("Host", host)])
}

/// `n` GETs of `path` over `threads` keep-alive connections; returns (hello, echo) counts.
fn tally(node: &Node, path: &str, n: usize, threads: usize) -> (usize, usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = format!("{}{path}", node.url);
            let count = n / threads + usize::from(t < n % threads);
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(60)).build();
                let (mut hello, mut echo) = (0, 0);
                for _ in 0..count {
                    let resp = try_request(&agent, "GET", &url, None, &[]).unwrap();
                    match served_by(&resp) {
                        "hello" => hello += 1,
                        _ => echo += 1,
                    }
                }
                (hello, echo)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

fn condition<'a>(view: &'a Value, type_: &str) -> &'a Value {
    view["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {view}"))
}

#[test]
fn the_knative_hello_world_sample_serves_by_path_and_by_host() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "helloworld:v1", "hello");

    let applied = try_apply(&node, "", KNATIVE_HELLO_WORLD);
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(
        applied.json(),
        json!({"dry_run": false, "results": [{"kind": "Service", "namespace": "default", "name": "helloworld",
                                               "action": "created", "revision": "helloworld-00001"}]})
    );

    let by_path = node.get("/fn/helloworld");
    assert_eq!((by_path.status, by_path.body.as_str()), (200, "Hello from Wisp!\n"));
    let by_host = at_host(&node, &host(&node, "helloworld", "default"), "/any/path?x=1");
    assert_eq!((by_host.status, by_host.body.as_str()), (200, "Hello from Wisp!\n"));
    let without_port = at_host(&node, "helloworld.default.localhost", "/");
    assert_eq!((without_port.status, without_port.body.as_str()), (200, "Hello from Wisp!\n"));

    let view = get_service(&node, "default", "helloworld");
    let status = &view["status"];
    for c in status["conditions"].as_array().unwrap() {
        assert_eq!(c["status"], "True", "{c}");
    }
    assert_eq!(condition(&view, "Ready")["status"], "True");
    assert_eq!(status["url"], format!("http://helloworld.default.localhost:{}", node.addr.port()));
    assert_eq!(status["latestCreatedRevisionName"], "helloworld-00001");
    assert_eq!(status["latestReadyRevisionName"], "helloworld-00001");
    let traffic = status["traffic"].as_array().unwrap();
    assert_eq!(traffic.len(), 1, "{view}");
    assert_eq!(traffic[0]["revisionName"], "helloworld-00001");
    assert_eq!(traffic[0]["percent"], 100);
    assert_eq!(traffic[0]["latestRevision"], true);
    assert_eq!(revision_names(&view), ["helloworld-00001"]);
    assert_eq!(view["revisions"][0]["image"], "helloworld:v1");
    assert_eq!(view["revisions"][0]["ready"], true);

    let listed = node.get("/v1/services").json();
    let names: Vec<&str> =
        listed["services"].as_array().unwrap().iter().map(|s| s["spec"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["helloworld"]);
    node.stop();
}

#[test]
fn only_template_changes_stamp_revisions() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    let revisions = |node: &Node| revision_names(&get_service(node, "default", "rules"));
    let routed_to = |node: &Node| get_service(node, "default", "rules")["status"]["traffic"][0]["revisionName"].clone();

    let mut m = service("rules", "hello:v1");
    assert_eq!(outcome(&apply(&node, &m)), ("created".into(), "rules-00001".into()));
    assert_eq!(outcome(&apply(&node, &m)), ("unchanged".into(), String::new()));
    assert_eq!(revisions(&node), ["rules-00001"]);

    // Metadata only: configured, no new revision.
    m["metadata"]["labels"] = json!({"team": "payments"});
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), String::new()));
    assert_eq!(revisions(&node), ["rules-00001"]);
    assert_eq!(get_service(&node, "default", "rules")["spec"]["labels"]["team"], "payments");

    // The template's env: a new revision, and the latest-following traffic moves to it.
    m["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "GREETING", "value": "hi"}]);
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), "rules-00002".into()));
    assert_eq!(revisions(&node), ["rules-00002", "rules-00001"]);
    assert_eq!(routed_to(&node), "rules-00002");
    assert_eq!(get_service(&node, "default", "rules")["status"]["latestReadyRevisionName"], "rules-00002");
    assert_eq!(served_by(&node.get("/fn/rules")), "hello");

    // The image: a new revision serving the new component.
    m["spec"]["template"]["spec"]["containers"][0]["image"] = json!("echo:v1");
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), "rules-00003".into()));
    assert_eq!(routed_to(&node), "rules-00003");
    assert_eq!(served_by(&node.get("/fn/rules")), "echo");

    // A bring-your-own revision name.
    m["spec"]["template"]["metadata"] = json!({"name": "rules-blue"});
    m["spec"]["template"]["spec"]["containers"][0]["image"] = json!("hello:v1");
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), "rules-blue".into()));
    assert_eq!(revisions(&node), ["rules-blue", "rules-00003", "rules-00002", "rules-00001"]);
    assert_eq!(routed_to(&node), "rules-blue");
    assert_eq!(served_by(&node.get("/fn/rules")), "hello");
    assert_eq!(outcome(&apply(&node, &m)), ("unchanged".into(), String::new()));

    // Changing the template while keeping that name is refused, and changes nothing.
    m["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "GREETING", "value": "bye"}]);
    let refused = try_apply(&node, "", &m.to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.error().contains("spec.template.metadata.name"), "{}", refused.body);
    assert_eq!(revisions(&node), ["rules-blue", "rules-00003", "rules-00002", "rules-00001"]);
    node.stop();
}

#[test]
fn a_70_30_split_serves_10000_requests_by_weight() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    apply(&node, &service("split", "hello:v1"));
    let mut m = service("split", "echo:v1");
    m["spec"]["traffic"] = json!([
        {"revisionName": "split-00001", "percent": 70},
        {"revisionName": "split-00002", "percent": 30},
    ]);
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), "split-00002".into()));

    let view = get_service(&node, "default", "split");
    let traffic: Vec<(&str, u64)> = view["status"]["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["revisionName"].as_str().unwrap(), t["percent"].as_u64().unwrap()))
        .collect();
    assert_eq!(traffic, [("split-00001", 70), ("split-00002", 30)]);
    let percents: Vec<u64> =
        view["revisions"].as_array().unwrap().iter().map(|r| r["percent"].as_u64().unwrap()).collect();
    assert_eq!(percents, [30, 70], "newest first");

    let started = Instant::now();
    let (hello, echo) = tally(&node, "/fn/split", 10_000, 8);
    eprintln!("10,000 split requests over 8 keep-alive connections in {:?}", started.elapsed());
    assert_eq!(hello + echo, 10_000);
    assert!(hello.abs_diff(7_000) <= 300, "revision 1 served {hello} of 10,000, want 70% ± 3%");
    assert!(echo.abs_diff(3_000) <= 300, "revision 2 served {echo} of 10,000, want 30% ± 3%");
    node.stop();
}

#[test]
fn a_tag_reaches_its_revision_by_host_and_by_header() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    apply(&node, &service("tags", "hello:v1"));
    // A canary: revision 2 gets a tag and no share of the untagged traffic.
    let canary = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: tags
spec:
  template:
    spec:
      containers:
        - image: echo:v1
  traffic:
    - revisionName: tags-00001
      percent: 100
    - revisionName: tags-00002
      percent: 0
      tag: canary
"#;
    let applied = try_apply(&node, "", canary);
    assert_eq!(applied.status, 200, "{}", applied.body);
    assert_eq!(outcome(&applied.json()), ("configured".into(), "tags-00002".into()));

    let view = get_service(&node, "default", "tags");
    let tagged = &view["status"]["traffic"][1];
    assert_eq!((tagged["revisionName"].as_str(), tagged["tag"].as_str()), (Some("tags-00002"), Some("canary")));
    assert_eq!(tagged["percent"], 0);
    assert_eq!(tagged["url"], format!("http://canary-tags.default.localhost:{}", node.addr.port()));

    // By host: the tag's host reaches revision 2, which sees the tag and the whole path.
    let canary_host = at_host(&node, &host(&node, "canary-tags", "default"), "/a/b?c=d");
    assert_eq!(served_by(&canary_host), "echo");
    let seen = canary_host.json();
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["headers"]["knative-serving-tag"], "canary");
    // By header, on the path route.
    let by_header = request("GET", &format!("{}/fn/tags", node.url), None, &[("Knative-Serving-Tag", "canary")]);
    assert_eq!(served_by(&by_header), "echo");

    // Untagged requests all go to revision 1 (revision 2 has 0%).
    for _ in 0..20 {
        assert_eq!(served_by(&at_host(&node, &host(&node, "tags", "default"), "/")), "hello");
        assert_eq!(served_by(&node.get("/fn/tags")), "hello");
    }

    // A tag the service does not have.
    let unknown = request("GET", &format!("{}/fn/tags", node.url), None, &[("Knative-Serving-Tag", "nope")]);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.error().contains("nope"), "{}", unknown.body);
    assert_eq!(at_host(&node, &host(&node, "nope-tags", "default"), "/").status, 404);
    node.stop();
}

#[test]
fn pinning_traffic_to_an_old_revision_rolls_back_without_a_new_revision() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    apply(&node, &service("rb", "hello:v1"));
    let mut m = service("rb", "echo:v1");
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), "rb-00002".into()));
    assert_eq!(served_by(&node.get("/fn/rb")), "echo");
    assert_eq!(get_service(&node, "default", "rb")["status"]["traffic"][0]["revisionName"], "rb-00002");

    m["spec"]["traffic"] = json!([{"revisionName": "rb-00001", "percent": 100}]);
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), String::new()));
    for _ in 0..10 {
        assert_eq!(served_by(&node.get("/fn/rb")), "hello");
    }
    let view = get_service(&node, "default", "rb");
    assert_eq!(revision_names(&view), ["rb-00002", "rb-00001"], "no new revision");
    let traffic = &view["status"]["traffic"];
    assert_eq!(traffic.as_array().unwrap().len(), 1);
    assert_eq!(traffic[0]["revisionName"], "rb-00001");
    assert_eq!(traffic[0]["latestRevision"], false);
    assert_eq!(view["status"]["latestCreatedRevisionName"], "rb-00002");
    assert_eq!(condition(&view, "Ready")["status"], "True");

    // And forward again: back to following the latest.
    m["spec"].as_object_mut().unwrap().remove("traffic");
    assert_eq!(outcome(&apply(&node, &m)), ("configured".into(), String::new()));
    assert_eq!(served_by(&node.get("/fn/rb")), "echo");
    node.stop();
}

#[test]
fn the_same_name_in_two_namespaces_is_two_services() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    apply(&node, &service("api", "hello:v1"));
    let mut team = service("api", "echo:v1");
    team["metadata"]["namespace"] = json!("team-a");
    let applied = apply(&node, &team);
    assert_eq!(applied["results"][0]["namespace"], "team-a");
    assert_eq!(outcome(&applied), ("created".into(), "api-00001".into()));

    assert_eq!(served_by(&node.get("/fn/api")), "hello");
    let team_a = node.get("/fn/team-a/api/x/y");
    assert_eq!(served_by(&team_a), "echo");
    assert_eq!(team_a.json()["path"], "/x/y");
    assert_eq!(served_by(&at_host(&node, &host(&node, "api", "team-a"), "/")), "echo");
    assert_eq!(served_by(&at_host(&node, &host(&node, "api", "default"), "/")), "hello");

    let view = get_service(&node, "team-a", "api");
    assert_eq!(view["status"]["url"], format!("http://api.team-a.localhost:{}", node.addr.port()));
    assert_eq!(view["revisions"][0]["image"], "echo:v1");
    assert_eq!(get_service(&node, "default", "api")["revisions"][0]["image"], "hello:v1");
    assert_eq!(node.get("/v1/services/team-b/api").status, 404);

    // Deleting one leaves the other.
    assert_eq!(node.delete("/v1/services/team-a/api").status, 200);
    assert_eq!(node.get("/v1/services/team-a/api").status, 404);
    assert_eq!(served_by(&node.get("/fn/api")), "hello");
    node.stop();
}

#[test]
fn invalid_manifests_and_dry_runs_change_nothing() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    apply(&node, &service("good", "hello:v1"));
    let unchanged = |node: &Node| {
        let view = get_service(node, "default", "good");
        assert_eq!(revision_names(&view), ["good-00001"]);
        assert_eq!(view["spec"]["template"]["image"], "hello:v1");
        assert_eq!(view["status"]["traffic"][0]["percent"], 100);
        assert_eq!(served_by(&node.get("/fn/good")), "hello");
    };
    let refused = |manifest: &str, wanted: &str| {
        let resp = try_apply(&node, "", manifest);
        assert_eq!(resp.status, 400, "{}", resp.body);
        let error = resp.error();
        assert!(error.contains(wanted), "want {wanted:?} in: {error}");
        error
    };

    // Knative's validation: percents must sum to 100 (a change to an existing service, and a new one).
    let short = |name: &str| {
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: NAME
spec:
  template:
    spec:
      containers:
        - image: hello:v1
          env:
            - name: X
              value: "1"
  traffic:
    - latestRevision: true
      percent: 90
"#
        .replace("NAME", name)
    };
    refused(&short("good"), "Traffic targets sum to 90, want 100: spec.traffic");
    refused(&short("fresh"), "Traffic targets sum to 90, want 100: spec.traffic");
    assert_eq!(node.get("/v1/services/default/fresh").status, 404);

    // The node's checks: an image it does not have, traffic to a revision that does not exist.
    let missing = service("good", "nothere:v9").to_string();
    let error = refused(&missing, "spec.template.spec.containers[0].image");
    assert!(error.contains("nothere"), "{error}");
    let mut ghost = service("good", "hello:v1");
    ghost["spec"]["traffic"] = json!([{"revisionName": "good-00009", "percent": 100}]);
    refused(&ghost.to_string(), "spec.traffic[0].revisionName");
    unchanged(&node);

    // A bad document refuses the whole input: the good one beside it is not applied either.
    let both = format!("{}---\n{}", short("first").replace("percent: 90", "percent: 100"), short("second"));
    refused(&both, "Traffic targets sum to 90, want 100: spec.traffic");
    let both = json!([service("first", "hello:v1"), service("good", "nothere:v9")]);
    refused(&both.to_string(), "spec.template.spec.containers[0].image");
    assert_eq!(node.get("/v1/services/default/first").status, 404);
    assert_eq!(node.get("/fn/first").status, 404);

    // A dry run says what would happen and does none of it.
    let dry = try_apply(&node, "?dry_run=true", &service("dry", "hello:v1").to_string());
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(outcome(&dry.json()), ("created".into(), "dry-00001".into()));
    assert_eq!(node.get("/v1/services/default/dry").status, 404);
    assert_eq!(node.get("/fn/dry").status, 404);
    let mut changed = service("good", "hello:v1");
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "X", "value": "2"}]);
    let dry = try_apply(&node, "?dry_run=true", &changed.to_string());
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(outcome(&dry.json()), ("configured".into(), "good-00002".into()));
    unchanged(&node);
    // A dry run still validates.
    let dry = try_apply(&node, "?dry_run=true", &short("dry"));
    assert_eq!(dry.status, 400, "{}", dry.body);
    node.stop();
}

#[test]
fn a_restart_keeps_services_revisions_splits_and_tags() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    push(&node, "hello:v1", "hello");
    push(&node, "echo:v1", "echo");
    apply(&node, &service("keep", "hello:v1"));
    let mut m = service("keep", "echo:v1");
    m["spec"]["traffic"] = json!([
        {"revisionName": "keep-00001", "percent": 60, "tag": "stable"},
        {"revisionName": "keep-00002", "percent": 40, "tag": "canary"},
    ]);
    apply(&node, &m);
    let mut team = service("keep", "hello:v1");
    team["metadata"]["namespace"] = json!("team-a");
    apply(&node, &team);
    let routes = |view: &Value| -> Vec<(String, u64, String)> {
        view["status"]["traffic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let tag = t["tag"].as_str().unwrap_or("").to_string();
                (t["revisionName"].as_str().unwrap().to_string(), t["percent"].as_u64().unwrap(), tag)
            })
            .collect()
    };
    let before = get_service(&node, "default", "keep");
    node.stop();

    let node = Node::start(dir.path(), &[]);
    let after = get_service(&node, "default", "keep");
    assert_eq!(revision_names(&after), ["keep-00002", "keep-00001"]);
    assert_eq!(routes(&after), routes(&before));
    assert_eq!(routes(&after)[1], ("keep-00002".to_string(), 40, "canary".to_string()));
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(condition(&after, "Ready")["status"], "True");
    assert_eq!(
        after["status"]["traffic"][1]["url"],
        format!("http://canary-keep.default.localhost:{}", node.addr.port())
    );

    let (hello, echo) = tally(&node, "/fn/keep", 1_000, 4);
    assert!(hello.abs_diff(600) <= 30 && echo.abs_diff(400) <= 30, "60/40 split served {hello}/{echo}");
    assert_eq!(served_by(&at_host(&node, &host(&node, "canary-keep", "default"), "/")), "echo");
    assert_eq!(served_by(&at_host(&node, &host(&node, "stable-keep", "default"), "/")), "hello");
    let tagged = request("GET", &format!("{}/fn/keep", node.url), None, &[("Knative-Serving-Tag", "canary")]);
    assert_eq!(served_by(&tagged), "echo");
    assert_eq!(served_by(&node.get("/fn/team-a/keep")), "hello");

    // The stored spec is the applied one, and pushed images are still there.
    assert_eq!(outcome(&apply(&node, &m)), ("unchanged".into(), String::new()));
    team["spec"]["template"]["spec"]["containers"][0]["image"] = json!("echo:v1");
    assert_eq!(outcome(&apply(&node, &team)), ("configured".into(), "keep-00002".into()));
    assert_eq!(served_by(&node.get("/fn/team-a/keep")), "echo");
    node.stop();
}

#[test]
fn unrouted_revisions_are_unloaded_and_the_oldest_beyond_the_retention_deleted() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--revision-retention", "1"]);
    push(&node, "hello:v1", "hello");
    let mut m = service("gc", "hello:v1");
    for i in 0..4 {
        m["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "N", "value": i.to_string()}]);
        apply(&node, &m);
    }
    // The latest (routed) plus one unrouted revision are kept; the two oldest are gone.
    assert_eq!(revision_names(&get_service(&node, "default", "gc")), ["gc-00004", "gc-00003"]);
    // Nothing routes to gc-00003: it holds no instances.
    let view = get_service(&node, "default", "gc");
    assert_eq!(view["revisions"][1]["scaling"]["ready_instances"], 0, "{view}");
    // A revision traffic names is never collected: pin gc-00003, stamp two more.
    m["spec"]["traffic"] = json!([{"revisionName": "gc-00003", "percent": 100}]);
    for i in 4..6 {
        m["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "N", "value": i.to_string()}]);
        apply(&node, &m);
    }
    assert_eq!(revision_names(&get_service(&node, "default", "gc")), ["gc-00006", "gc-00005", "gc-00003"]);
    assert_eq!(node.get("/fn/gc").status, 200);
    node.stop();
}
