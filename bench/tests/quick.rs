//! Smoke test: `wisp-bench --quick` runs every scenario and writes the report. No timing
//! assertions: only that the files exist and every scenario counted some requests.

mod common;

use std::process::Command;

#[test]
fn quick_run_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .arg("--wisp-bin")
        .arg(common::wisp_bin(env!("CARGO_BIN_EXE_wisp-bench")))
        .arg("--wasm")
        .arg(wisp_testkit::wasm_path("hello"))
        .output()
        .expect("running wisp-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wisp-bench --quick failed:\n{stderr}");

    for file in ["report.md", "report.json", "chart.svg"] {
        let len = std::fs::metadata(out.path().join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} missing or empty; stderr:\n{stderr}");
    }
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "chart.svg is not an SVG document");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for scenario in ["warm", "cold", "density", "overhead"] {
        let s = &json[scenario];
        assert!(s["requests"].as_u64().unwrap_or(0) > 0, "`{scenario}` counted no requests: {s:#}\nstderr:\n{stderr}");
    }
    // Wisp itself always runs; the baselines may be skipped when wasmtime is not installed.
    for row in json["warm"]["rows"].as_array().unwrap() {
        let (status, requests) = (row["status"].as_str().unwrap_or(""), row["requests"].as_u64().unwrap_or(0));
        let skipped = row["target"] != "wisp" && status.starts_with("skipped: wasmtime not installed");
        assert!(status == "ok" && requests > 0 || skipped, "row neither measured nor skipped: {row:#}");
    }
    assert_eq!(json["warm"]["rows"].as_array().unwrap().len(), 9, "3 targets × 1, 16, 64 connections");
    assert!(json["machine"]["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(json["machine"]["cpu_model"].as_str().is_some_and(|c| !c.is_empty()));
}
