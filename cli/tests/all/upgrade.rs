//! State written by older releases keeps working: a data dir of release 921004f opens, serves
//! its functions with their settings and keeps its usage; a corrupt component file takes down
//! only its own function.

use crate::harness::*;
use std::path::Path;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_data_dir_written_by_release_921004f_opens_and_serves_with_its_usage() {
    let dir = tempdir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-921004f");
    copy_dir(&fixture, dir.path());

    let node = Node::start(dir.path(), &[]);
    let hello = node.function("hello");
    assert_eq!(hello["revision"], 2);
    assert_eq!(hello["settings"]["min_warm"], 2);
    assert_eq!(hello["settings"]["memory_bytes"], 64 << 20);
    assert_eq!(hello["settings"]["timeout_ms"], 5000);
    assert_eq!(hello["artifact"]["kind"], "wasm");
    assert_eq!(hello["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(node.get("/fn/hello").body, "Hello from Wisp!\n");
    assert_eq!(node.get("/fn/echo/x").json()["path"], "/x");

    // The old usage (3 hello, 1 echo) is there, with the new invocations added to it.
    let usage = node.get("/v1/usage").json();
    let count = |name: &str| {
        usage["summary"].as_array().unwrap().iter().find(|s| s["function"] == name).unwrap()["invocations"].clone()
    };
    assert_eq!(count("hello"), 4);
    assert_eq!(count("echo"), 2);
    assert_eq!(usage["records"].as_array().unwrap().len(), 6);
    assert_eq!(usage["records"][5]["id"], 1, "old records keep their ids");

    // A redeploy of the same component without flags keeps the stored settings and, as with
    // Knative, stamps no revision: nothing changed. (The fixture's own bytes: a fresh build of
    // `hello` need not be byte-identical.)
    let hash = hello["component_hash"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let same = std::fs::read(dir.path().join(format!("components/{hash}.wasm"))).unwrap();
    let redeployed = node.request("POST", "/v1/functions/hello", Some(&same), &[]);
    assert_eq!(redeployed.status, 201, "{}", redeployed.body);
    assert_eq!(node.function("hello")["settings"]["memory_bytes"], 64 << 20);
    node.stop();

    // Opening it again migrates nothing twice and duplicates nothing.
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.function("hello")["revision"], 2);
    let usage = node.get("/v1/usage").json();
    let total: u64 = usage["summary"].as_array().unwrap().iter().map(|s| s["invocations"].as_u64().unwrap()).sum();
    assert_eq!(total, 6);
    assert_eq!(node.metric("wisp_usage_dropped_total"), 0.0);
    node.stop();
}

#[test]
fn a_corrupt_component_file_names_itself_and_spares_the_other_functions() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &[]);
    node.deploy("hello", "hello", "");
    let echo = node.deploy("echo", "echo", "").json();
    node.stop();

    let hash = echo["component_hash"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let file = dir.path().join(format!("components/{hash}.wasm"));
    std::fs::write(&file, b"\0asm garbage").unwrap();
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();

    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.get("/fn/hello").status, 200);
    let broken = node.get("/fn/echo");
    assert_eq!(broken.status, 503);
    assert!(broken.error().contains("echo") && broken.error().contains(&format!("{hash}.wasm")), "{}", broken.body);
    let listed = node.function("echo");
    assert!(listed["error"].as_str().unwrap().contains(&format!("{hash}.wasm")), "{listed}");
    assert_eq!(node.metric("wisp_functions_failed"), 1.0);

    // Redeploying it brings it back.
    node.deploy("echo", "echo", "");
    node.wait_for(Duration::from_secs(5), "echo serving", |n| n.get("/fn/echo").status == 200);
    assert_eq!(node.metric("wisp_functions_failed"), 0.0);
    node.stop();
}
