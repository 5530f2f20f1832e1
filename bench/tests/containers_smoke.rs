//! Smoke test: `wisp-bench-containers --quick` runs every scenario with small numbers and
//! writes its report. No timing assertions: only that the files exist, every scenario measured
//! something, the functions really started at zero, the idle replicas were found and measured,
//! and the node stopped leaving no container behind. Needs crun and the example images
//! (`functions/containers/build.sh`; scripts/setup.sh installs and builds both).

mod common;

use std::process::Command;

#[test]
fn quick_run_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench-containers"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .arg("--wisp-bin")
        .arg(common::wisp_bin(env!("CARGO_BIN_EXE_wisp-bench-containers")))
        .arg("--hello")
        .arg(wisp_testkit::wasm_path("hello"))
        .output()
        .expect("running wisp-bench-containers");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wisp-bench-containers --quick failed:\n{stderr}");

    for file in ["report.md", "report.json"] {
        let len = std::fs::metadata(out.path().join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} missing or empty; stderr:\n{stderr}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for scenario in ["cold", "warm", "replicas"] {
        assert_eq!(json[scenario]["status"], "ok", "`{scenario}` did not run: {:#}\nstderr:\n{stderr}", json[scenario]);
    }

    let cold = &json["cold"];
    for side in ["container", "wasm"] {
        let s = &cold[side];
        assert_eq!(s["first"]["count"], cold["samples"], "{side}: {s:#}");
        assert_eq!(s["verified_cold"], cold["samples"], "{side}: not every first request was a cold start: {s:#}");
        assert_eq!(s["not_at_zero"], 0, "{side}: {s:#}");
    }

    let rows = json["warm"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "3 functions × 2 connection counts: {rows:#?}");
    for row in rows {
        assert!(row["rps"].as_f64().unwrap_or(0.0) > 0.0, "no throughput: {row:#}");
        assert_eq!(row["run"]["errors"], 0, "{row:#}");
        assert_eq!(row["run"]["non_2xx"], 0, "{row:#}");
    }

    let r = &json["replicas"];
    assert_eq!(r["containers"], r["replicas"], "{r:#}");
    assert!(r["memory"]["pss_kib"].as_u64().unwrap_or(0) > 0, "no PSS measured: {r:#}");
    assert!(r["replicas_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r:#}");

    let stopped = &json["stopped"];
    assert!(json["node_exit"].is_null(), "the node exited during the run: {}", json["node_exit"]);
    assert_eq!(stopped["exit"], "exit status: 0", "{stopped:#}");
    assert_eq!(stopped["containers_left"].as_array().map(Vec::len), Some(0), "{stopped:#}");
    assert!(json["crun"].as_str().is_some_and(|c| c.starts_with("crun")), "{}", json["crun"]);
}
