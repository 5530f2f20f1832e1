//! Container functions end to end: OCI images imported with `wisp image import`, deployed,
//! run by crun (real containers on this host), scaled by the autoscaler (to zero included),
//! metered, and the ways a bad image or a misbehaving server fails.

use crate::harness::*;
use crate::services::{apply, get_service};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wisp_oci::RunConfig;
use wisp_oci::build::{Entry, LayoutBuilder};

/// The example images `functions/containers/build.sh` (run by scripts/setup.sh) makes.
fn example(name: &str) -> PathBuf {
    let path = wisp_testkit::repo_root().join("functions/containers/target").join(format!("{name}.tar"));
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

/// A node whose stopped replicas go quickly (busybox httpd ignores SIGTERM as PID 1).
fn node(dir: &Path, extra: &[&str]) -> Node {
    let args: Vec<&str> = ["--container-stop-grace", "300ms"].into_iter().chain(extra.iter().copied()).collect();
    Node::start(dir, &args)
}

/// Runs the `wisp` CLI against `node`; returns (success, stdout + stderr).
fn wisp(node: &Node, args: &[&str]) -> (bool, String) {
    let out = node.cli(wisp_bin()).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn wisp_ok(node: &Node, args: &[&str]) -> String {
    let (ok, text) = wisp(node, args);
    assert!(ok, "wisp {args:?} failed: {text}");
    text
}

/// A busybox image (the host's static busybox) whose process is `args`.
fn busybox(args: &[&str]) -> LayoutBuilder {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh installs it)");
    LayoutBuilder::new()
        .layer(vec![
            Entry::Dir { path: "bin".into() },
            Entry::File { path: "bin/busybox".into(), bytes: busybox, mode: 0o755 },
            Entry::Symlink { path: "bin/sh".into(), target: "busybox".into() },
            Entry::Dir { path: "www".into() },
            Entry::file("www/index.html", "built by the test\n"),
        ])
        .config(RunConfig { entrypoint: args.iter().map(|s| s.to_string()).collect(), ..RunConfig::default() })
}

/// Replica bundles on disk: one per container the node runs.
fn bundles(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("containers")).map(|d| d.count()).unwrap_or(0)
}

/// Stops the node cleanly: its containers go with it (a node killed outright leaves them to
/// its next start, which deletes them).
fn stop(node: Node, data_dir: &Path) {
    node.stop();
    assert_eq!(bundles(data_dir), 0, "containers left behind");
}

fn ready_replicas(node: &Node, name: &str) -> u64 {
    let view = get_service(node, "default", name);
    view["revisions"].as_array().unwrap().iter().map(|r| r["scaling"]["ready_instances"].as_u64().unwrap_or(0)).sum()
}

fn usage_records(node: &Node, function: &str) -> Vec<Value> {
    let usage = node.get(&format!("/v1/usage?function={function}&limit=1000")).json();
    usage["records"].as_array().unwrap().clone()
}

#[test]
fn an_image_is_imported_deployed_invoked_scaled_to_zero_and_redeployed() {
    let dir = tempdir();
    let node = node(dir.path(), &["--scale-to-zero-grace", "0s"]);
    let imported = wisp_ok(&node, &["image", "import", example("httpd").to_str().unwrap(), "--name", "httpd:v1"]);
    assert!(imported.contains("httpd:v1") && imported.contains("container"), "{imported}");
    let listed = wisp_ok(&node, &["image", "ls"]);
    assert!(listed.contains("httpd") && listed.contains("v1") && listed.contains("container"), "{listed}");

    // Starts at zero: the first request waits while a replica starts (a cold start).
    wisp_ok(&node, &["deploy", "web", "--image", "httpd:v1", "--min-warm", "0", "--idle-timeout", "2s"]);
    assert_eq!(ready_replicas(&node, "web"), 0);
    let first = node.get("/fn/web/");
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("hello from a container"), "{}", first.body);
    // The Knative runtime contract's environment, seen by a CGI script in the container.
    let env = node.get("/fn/web/cgi-bin/env");
    assert_eq!(env.status, 200, "{}", env.body);
    for expected in ["K_SERVICE=web", "K_REVISION=web-00001", "K_CONFIGURATION=web", "PORT=8080"] {
        assert!(env.body.contains(expected), "{expected} missing from {}", env.body);
    }
    let records = usage_records(&node, "web");
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r["runtime"] == "container" && r["outcome"] == "ok"), "{records:?}");
    assert_eq!(records.iter().filter(|r| r["cold"] == true).count(), 1, "{records:?}");

    // Without requests for the stable window, the replica goes (and its lifetime is metered).
    node.wait_for(Duration::from_secs(20), "scale to zero", |n| ready_replicas(n, "web") == 0);
    node.wait_for(Duration::from_secs(10), "replica time metered", |n| {
        let usage = n.get("/v1/usage?function=web").json();
        usage["summary"][0]["replica_ms"].as_u64().unwrap_or(0) > 0
    });
    // CPU time from the replica's cgroup (a few ms for an idle httpd; 0 without cgroups).
    assert!(node.get("/v1/usage?function=web").json()["summary"][0]["replica_cpu_ms"].is_u64());
    let again = node.get("/fn/web/");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(usage_records(&node, "web")[0]["cold"], true);

    // A redeploy to another image: the new revision serves, the old one's replicas go.
    wisp_ok(&node, &["deploy", "web", "--image", example("native").to_str().unwrap()]);
    let native = node.get("/fn/web/");
    assert_eq!(native.status, 200, "{}", native.body);
    assert!(native.body.contains("zlib"), "{}", native.body);
    // zlib in the container: 100,000 bytes of one letter deflate to a few hundred.
    let compressed = ureq::post(&format!("{}/fn/web/compress", node.url)).send_bytes(&vec![b'a'; 100_000]).unwrap();
    assert_eq!(compressed.header("x-original-length"), Some("100000"));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut compressed.into_reader(), &mut body).unwrap();
    assert!(!body.is_empty() && body.len() < 1000, "{} bytes", body.len());
    let view = get_service(&node, "default", "web");
    assert_eq!(view["status"]["latestReadyRevisionName"], "web-00002", "{view}");

    // Image removal: the tag goes; the image stays while a revision uses it.
    wisp_ok(&node, &["image", "rm", "httpd:v1"]);
    assert!(!wisp_ok(&node, &["image", "ls"]).contains("v1"));
    stop(node, dir.path());
}

#[test]
fn a_layout_directory_and_a_wasm_image_import_too() {
    let dir = tempdir();
    let node = node(dir.path(), &["--replica-usage-interval", "1s"]);
    let layout = dir.path().join("layout");
    busybox(&["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
        .ref_name("site:1.0")
        .write_dir(&layout)
        .unwrap();
    let imported = wisp_ok(&node, &["image", "import", layout.to_str().unwrap()]);
    assert!(imported.contains("site:1.0"), "{imported}");
    wisp_ok(&node, &["deploy", "site", "--image", "site:1.0"]);
    let resp = node.get("/fn/site/");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body, "built by the test\n");
    // A running replica's time is metered as it goes (every --replica-usage-interval), not
    // only when it stops: a min-scale replica may never stop.
    node.wait_for(Duration::from_secs(10), "running replica time metered", |n| {
        n.get("/v1/usage?function=site").json()["summary"][0]["replica_ms"].as_u64().unwrap_or(0) >= 1000
    });
    assert_eq!(ready_replicas(&node, "site"), 1);

    // An OCI image whose layer is a Wasm component deploys as a Wasm function.
    let archive = dir.path().join("hello-wasm.tar");
    LayoutBuilder::new().wasm_layer(wasm("hello")).write_archive(&archive).unwrap();
    let imported = wisp_ok(&node, &["image", "import", archive.to_str().unwrap(), "--name", "hello-oci"]);
    assert!(imported.contains("wasm"), "{imported}");
    wisp_ok(&node, &["deploy", "hi", "--image", "hello-oci"]);
    let resp = node.get("/fn/hi/");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(usage_records(&node, "hi")[0]["runtime"], "wasm");
    stop(node, dir.path());
}

#[test]
fn bad_images_are_refused_naming_what_is_wrong() {
    let dir = tempdir();
    let node = node(dir.path(), &[]);
    let good = || busybox(&["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]);
    let import = |builder: LayoutBuilder, name: &str| {
        let path = dir.path().join(format!("{name}.tar"));
        builder.write_archive(&path).unwrap();
        wisp(&node, &["image", "import", path.to_str().unwrap(), "--name", name])
    };
    let refused = |(ok, text): (bool, String), expected: &str| {
        assert!(!ok, "accepted: {text}");
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
    };
    refused(import(good().corrupt_layer(0), "corrupt"), "digest mismatch");
    let escape = Entry::Raw {
        path: b"../../escaped".to_vec(),
        kind: tar::EntryType::Regular,
        link: vec![],
        bytes: b"x".to_vec(),
    };
    refused(import(good().layer(vec![escape]), "escape"), "escaped");
    let link = Entry::Symlink { path: "up".into(), target: "../../../../etc".into() };
    refused(import(good().layer(vec![link]), "symlink"), "points outside the rootfs");
    refused(import(good().omit_config(), "noconfig"), "config");
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"not a tar at all").unwrap();
    let (ok, text) = wisp(&node, &["image", "import", garbage.to_str().unwrap(), "--name", "garbage"]);
    assert!(!ok, "{text}");
    // Nothing was stored by any of them.
    assert!(node.get("/v1/images").json()["images"].as_array().unwrap().is_empty());

    // An entrypoint the image does not have is refused at deploy, naming the field.
    let (ok, text) = import(busybox(&["/bin/nope"]), "noentry");
    assert!(ok, "{text}");
    let resp = node.post("/v1/functions/noentry?image=noentry", b"");
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.error().contains("spec.template.spec.containers[0].image"), "{}", resp.body);
    assert!(resp.error().contains("/bin/nope"), "{}", resp.body);
    assert_eq!(node.get("/v1/functions/noentry").status, 404);
    stop(node, dir.path());
}

#[test]
fn a_server_that_never_listens_or_crashes_fails_only_its_own_requests() {
    let dir = tempdir();
    let node = node(dir.path(), &["--container-ready-timeout", "1s"]);
    let path = dir.path().join("sleeper.tar");
    busybox(&["/bin/busybox", "sleep", "600"]).write_archive(&path).unwrap();
    wisp_ok(&node, &["image", "import", path.to_str().unwrap(), "--name", "sleeper"]);
    wisp_ok(&node, &["deploy", "sleeper", "--image", "sleeper"]);
    let resp = node.get("/fn/sleeper/");
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.error().contains("did not listen on port 8080 within 1s"), "{}", resp.body);
    let logs = wisp_ok(&node, &["logs", "sleeper"]);
    assert!(logs.contains("readiness timeout"), "{logs}");

    // A server that dies under a request: that request gets a clear 502, the replica is
    // replaced, and the next request is served.
    wisp_ok(&node, &["image", "import", example("native").to_str().unwrap(), "--name", "native"]);
    wisp_ok(&node, &["deploy", "native", "--image", "native"]);
    assert_eq!(node.get("/fn/native/").status, 200);
    let crash = node.get("/fn/native/crash");
    assert_eq!(crash.status, 502, "{}", crash.body);
    assert!(crash.error().contains("exited (killed by signal"), "{}", crash.body);
    node.wait_for(Duration::from_secs(20), "a replacement replica", |n| n.get("/fn/native/").status == 200);
    // The rest of the node never noticed.
    assert_eq!(node.get("/healthz").status, 200);
    stop(node, dir.path());
}

#[test]
fn fifty_replicas_of_one_function_and_wasm_beside_them() {
    let dir = tempdir();
    let node = node(dir.path(), &[]);
    wisp_ok(&node, &["image", "import", example("httpd").to_str().unwrap(), "--name", "httpd"]);
    let service = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "many"},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "50"}},
            "spec": {"containerConcurrency": 1, "containers": [{"image": "httpd"}]},
        }},
    });
    apply(&node, &service);
    node.deploy("hello", "hello", "");
    node.wait_for(Duration::from_secs(60), "50 ready replicas", |n| ready_replicas(n, "many") == 50);
    // Both kinds served at once, from many threads.
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let url = format!("{}/fn/{}/", node.url, if i % 2 == 0 { "many" } else { "hello" });
            std::thread::spawn(move || request("GET", &url, None, &[]).status)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let records = usage_records(&node, "many");
    assert!(records.iter().all(|r| r["runtime"] == "container"), "{records:?}");
    // Deleting the service stops its 50 containers.
    wisp_ok(&node, &["rm", "many"]);
    node.wait_for(Duration::from_secs(30), "containers stopped", |_| bundles(dir.path()) == 0);
    stop(node, dir.path());
}

#[test]
fn a_replica_is_held_to_its_memory_limit_and_a_crashed_node_leaves_nothing_behind() {
    let dir = tempdir();
    let mut node = node(dir.path(), &[]);
    let enforced = node.metric("wisp_container_limit_enforced{limit=\"memory\"}") == 1.0;
    // A CGI script that allocates 96 MiB in one buffer (busybox dd's block), under a 32 MiB limit.
    let hog = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\ndd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null && echo allocated\necho end\n";
    let image = busybox(&["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]).layer(vec![
        Entry::Dir { path: "www/cgi-bin".into() },
        Entry::File { path: "www/cgi-bin/hog".into(), bytes: hog.into(), mode: 0o755 },
    ]);
    let path = dir.path().join("hog.tar");
    image.write_archive(&path).unwrap();
    wisp_ok(&node, &["image", "import", path.to_str().unwrap(), "--name", "hog"]);
    wisp_ok(&node, &["deploy", "hog", "--image", "hog", "--memory", "32Mi"]);
    let resp = node.get("/fn/hog/cgi-bin/hog");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body.contains("end"), "{}", resp.body);
    // Where the host has cgroups (this one does: v1 or v2), the allocation is refused.
    assert_eq!(!resp.body.contains("allocated"), enforced, "enforced={enforced}: {}", resp.body);
    let records = usage_records(&node, "hog");
    assert!(records[0]["peak_memory_bytes"].as_u64().unwrap() <= 32 << 20, "{records:?}");

    // A node killed outright leaves its replica running; its next start deletes it.
    let replicas = children(node.pid());
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    node.kill();
    assert!(alive(replicas[0]), "the replica went with the node");
    let node = self::node(dir.path(), &[]);
    assert!(!alive(replicas[0]), "a stale replica survived the restart");
    assert_eq!(node.get("/fn/hog/").status, 200);
    stop(node, dir.path());
}

/// Running processes whose parent is `pid` (a node's replicas: it is their subreaper).
fn children(pid: u32) -> Vec<u32> {
    let stats = std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then(|| e.file_name().to_str()?.parse().ok()).flatten()
    });
    stats.filter(|p| alive(*p)).collect()
}

/// Whether `pid` runs (a zombie nobody reaped does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}
