//! Smoke test: `wisp-bench-tenants --quick` measures every comparison and the export, and writes
//! its report. No timing assertions: only that both sides of each comparison answered, and that
//! every invocation in the ledger reached the bench's receiver.

mod common;

use std::process::Command;

#[test]
fn quick_run_writes_a_complete_report() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wisp-bench-tenants"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .arg("--wisp-bin")
        .arg(common::wisp_bin(env!("CARGO_BIN_EXE_wisp-bench-tenants")))
        .output()
        .expect("running wisp-bench-tenants");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wisp-bench-tenants --quick failed:\n{stderr}");
    assert!(std::fs::metadata(out.path().join("tenants.md")).is_ok_and(|m| m.len() > 0), "no tenants.md");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("tenants.json")).unwrap()).unwrap();
    let comparisons = json["comparisons"].as_array().unwrap();
    let whats: Vec<&str> = comparisons.iter().map(|c| c["what"].as_str().unwrap()).collect();
    assert_eq!(whats, ["auth", "auth", "metering", "metering"]);
    for c in comparisons {
        for side in ["baseline", "measured"] {
            assert!(c[side]["requests"].as_u64().unwrap() > 0, "{side} of {c:#} sent nothing");
        }
    }
    for run in json["export"].as_array().unwrap() {
        assert!(run["events"].as_u64().unwrap() >= json["export_records"].as_u64().unwrap(), "{run:#}");
    }
}
