//! Smoke test: `wisp-bench-scaling --quick` runs every scenario with small numbers and writes
//! its report. No timing assertions: only that the files exist, every scenario measured
//! something, the autoscaler reacted to the step, and the revision really was at zero.

mod common;

use std::process::Command;

#[test]
fn quick_run_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench-scaling"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .arg("--wisp-bin")
        .arg(common::wisp_bin(env!("CARGO_BIN_EXE_wisp-bench-scaling")))
        .arg("--misbehave")
        .arg(wisp_testkit::wasm_path("misbehave"))
        .arg("--hello")
        .arg(wisp_testkit::wasm_path("hello"))
        .output()
        .expect("running wisp-bench-scaling");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wisp-bench-scaling --quick failed:\n{stderr}");

    for file in ["scaling.md", "scaling.json"] {
        let len = std::fs::metadata(out.path().join(file)).map_or(0, |m| m.len());
        assert!(len > 0, "{file} missing or empty; stderr:\n{stderr}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("scaling.json")).unwrap()).unwrap();
    for scenario in ["step", "zero", "gate"] {
        assert_eq!(json[scenario]["status"], "ok", "`{scenario}` did not run: {:#}\nstderr:\n{stderr}", json[scenario]);
    }

    let step = &json["step"];
    for phase in ["pre", "post"] {
        assert!(step[phase]["requests"].as_u64().unwrap_or(0) > 0, "no requests {phase} the step: {step:#}");
    }
    assert!(step["polls"].as_u64().unwrap_or(0) > 0, "/metrics never polled: {step:#}");
    assert!(
        step["desired_max_after"].as_f64() > step["desired_before"].as_f64(),
        "no scale-up after a 10x step: {step:#}"
    );
    assert!(step["decision_ms"].is_number(), "the decision never showed in /metrics: {step:#}");

    let zero = &json["zero"];
    let round = &zero["rounds"][0];
    assert_eq!(round["at_zero"]["desired"], 0.0, "the burst did not start at zero: {round:#}");
    for burst in ["cold", "warm"] {
        assert_eq!(round[burst]["requests"], zero["requests_per_burst"], "{burst} burst: {round:#}");
    }
    assert!(round["cold"]["cold_starts"].as_f64().unwrap_or(0.0) >= 1.0, "no cold start from zero: {round:#}");

    let gate = &json["gate"];
    for side in ["open", "gated"] {
        assert!(gate[side]["rps"].as_f64().unwrap_or(0.0) > 0.0, "gate {side}: no throughput: {gate:#}");
    }
    assert!(json["machine"]["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(json["node_exit"].is_null(), "the node exited during the run: {}", json["node_exit"]);
}
