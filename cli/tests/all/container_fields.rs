//! A container's `ports`, `command`, `args` and `workingDir` end to end: a busybox image whose
//! own entrypoint cannot serve is run as httpd on another port by the manifest, and the same
//! fields on a Wasm image are refused with the field named.

use crate::harness::*;
use crate::services::{push, try_apply};
use std::path::Path;
use wisp_oci::RunConfig;
use wisp_oci::build::{Entry, LayoutBuilder};

/// A busybox image whose entrypoint and cmd are `entrypoint` and `cmd`.
fn busybox(entrypoint: &[&str], cmd: &[&str]) -> LayoutBuilder {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh installs it)");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    LayoutBuilder::new()
        .layer(vec![
            Entry::Dir { path: "bin".into() },
            Entry::File { path: "bin/busybox".into(), bytes: busybox, mode: 0o755 },
            Entry::Symlink { path: "bin/sh".into(), target: "busybox".into() },
            Entry::Dir { path: "www".into() },
            Entry::file("www/index.html", "served from the manifest's port\n"),
        ])
        .config(RunConfig { entrypoint: strings(entrypoint), cmd: strings(cmd), ..RunConfig::default() })
}

/// Imports `builder` as `name` through `POST /v1/images`.
fn import(node: &Node, dir: &Path, builder: LayoutBuilder, name: &str) {
    let path = dir.join(format!("{}.tar", name.replace(':', "-")));
    builder.write_archive(&path).unwrap();
    let (repo, tag) = name.split_once(':').expect("name:tag");
    let resp = node.post(&format!("/v1/images?name={repo}&tag={tag}"), &std::fs::read(&path).unwrap());
    assert!(resp.status == 200 || resp.status == 201, "importing {name}: {}", resp.body);
}

fn manifest(name: &str, image: &str, container: &str) -> String {
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - image: {image}\n{container}"
    )
}

const FIELDS: &str = r#"          command: ["/bin/busybox"]
          args: ["httpd", "-f", "-p", "9000", "-h", "/www"]
          ports: [{containerPort: 9000}]
          workingDir: /www
"#;

#[test]
fn command_args_port_and_working_dir_run_a_container_and_refuse_a_wasm_image() {
    let dir = tempdir();
    let node = Node::start(dir.path(), &["--container-stop-grace", "300ms"]);

    // The image's own process does not exist: only the manifest's command can start it, and
    // only a connection to port 9000 finds its server.
    import(&node, dir.path(), busybox(&["/bin/nope"], &["serve"]), "overridden:v1");
    let applied = try_apply(&node, "", &manifest("overridden", "overridden:v1", FIELDS));
    assert_eq!(applied.status, 200, "{}", applied.body);
    let resp = node.get("/fn/overridden/");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body.contains("served from the manifest's port"), "{}", resp.body);

    // `wisp get service -o yaml` shows the fields back, and applying that changes nothing.
    let out = node.cli(wisp_bin()).args(["get", "service", "overridden", "-o", "yaml"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{shown}{}", String::from_utf8_lossy(&out.stderr));
    for field in ["command:", "/bin/busybox", "args:", "containerPort: 9000", "workingDir: /www"] {
        assert!(shown.contains(field), "{field} missing from {shown}");
    }
    let again = try_apply(&node, "", &shown);
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("unchanged"), "{}", again.body);

    // args alone keep the image's entrypoint (and drop its cmd); workingDir is the server's
    // cwd, which `-h .` serves.
    import(&node, dir.path(), busybox(&["/bin/busybox"], &["false"]), "entry:v1");
    let args_only = r#"          args: ["httpd", "-f", "-p", "9001", "-h", "."]
          ports: [{containerPort: 9001}]
          workingDir: /www
"#;
    let applied = try_apply(&node, "", &manifest("argsonly", "entry:v1", args_only));
    assert_eq!(applied.status, 200, "{}", applied.body);
    let resp = node.get("/fn/argsonly/");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body.contains("served from the manifest's port"), "{}", resp.body);

    // A command missing from the image is refused at apply, naming the field.
    let missing = try_apply(&node, "", &manifest("missing", "entry:v1", "          command: [\"/bin/none\"]\n"));
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(missing.error().contains("spec.template.spec.containers[0].command"), "{}", missing.body);
    assert!(missing.error().contains("/bin/none"), "{}", missing.body);

    // A Wasm component takes none of them; nothing is created.
    push(&node, "hello:v1", "hello");
    let refused = try_apply(&node, "", &manifest("wasm", "hello:v1", FIELDS));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.error().contains("spec.template.spec.containers[0].ports"), "{}", refused.body);
    assert!(refused.error().contains("Wasm component"), "{}", refused.body);
    for (field, yaml) in [
        ("command", "          command: [\"/hello\"]\n"),
        ("args", "          args: [\"--verbose\"]\n"),
        ("workingDir", "          workingDir: /tmp\n"),
    ] {
        let refused = try_apply(&node, "", &manifest("wasm", "hello:v1", yaml));
        assert_eq!(refused.status, 400, "{field}: {}", refused.body);
        let named = format!("spec.template.spec.containers[0].{field}");
        assert!(refused.error().contains(&named), "{named} not in {}", refused.body);
    }
    assert_eq!(node.get("/v1/services/default/wasm").status, 404);
    let plain = try_apply(&node, "", &manifest("wasm", "hello:v1", ""));
    assert_eq!(plain.status, 200, "{}", plain.body);

    node.stop();
}
