//! Smoke test: `wisp-bench --quick` runs every scenario and writes the report. No timing
//! assertions: only that the files exist and every scenario counted some requests.

use std::path::PathBuf;
use std::process::Command;

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The `wisp` binary: next to the bench binary (same profile), else target/release/wisp, else
/// build it.
fn wisp_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_wisp-bench"));
    let sibling = bench.with_file_name("wisp");
    if sibling.exists() {
        return sibling;
    }
    let release = wisp_testkit::repo_root().join("target/release/wisp");
    if !release.exists() {
        let status = cargo()
            .args(["build", "--release", "-p", "wisp-cli", "--bin", "wisp"])
            .current_dir(wisp_testkit::repo_root())
            .status()
            .expect("running cargo build for wisp");
        assert!(status.success(), "building target/release/wisp failed");
    }
    release
}

#[test]
fn quick_run_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(out.path())
        .arg("--wisp-bin")
        .arg(wisp_bin())
        .arg("--wasm")
        .arg(wisp_testkit::wasm_path("hello"))
        .output()
        .expect("running wisp-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wisp-bench --quick failed:\n{stderr}");

    for file in ["report.md", "report.json", "chart.svg"] {
        let path = out.path().join(file);
        assert!(path.exists(), "{file} missing; stderr:\n{stderr}");
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "{file} is empty");
    }
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "chart.svg is not an SVG document");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for scenario in ["warm", "cold", "density", "overhead"] {
        let s = &json[scenario];
        assert!(s.is_object(), "report.json has no `{scenario}`");
        let requests = s["requests"].as_u64().unwrap_or(0);
        assert!(requests > 0, "`{scenario}` counted no requests: {s:#}\nstderr:\n{stderr}");
    }
    // Wisp itself always runs; the baselines may be skipped when wasmtime is not installed.
    let rows = json["warm"]["rows"].as_array().unwrap();
    for conns in [1, 16, 64] {
        let wisp = rows.iter().find(|r| r["target"] == "wisp" && r["connections"] == conns);
        let wisp = wisp.unwrap_or_else(|| panic!("no wisp row at {conns} connections"));
        assert!(wisp["requests"].as_u64().unwrap_or(0) > 0, "wisp at {conns} connections: no requests: {wisp:#}");
    }
    for row in rows.iter().filter(|r| r["target"] != "wisp") {
        let status = row["status"].as_str().unwrap_or("");
        assert!(
            status == "ok" && row["requests"].as_u64().unwrap_or(0) > 0
                || status.starts_with("skipped: wasmtime not installed"),
            "baseline row neither measured nor skipped for a missing wasmtime: {row:#}"
        );
    }
    assert!(json["machine"]["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(json["machine"]["cpu_model"].as_str().is_some_and(|c| !c.is_empty()));
}
