//! Helpers shared by the bench smoke tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `wisp` binary: next to `bench_bin` (same profile), else target/release/wisp, built if
/// missing.
pub fn wisp_bin(bench_bin: &str) -> PathBuf {
    let sibling = Path::new(bench_bin).with_file_name("wisp");
    let release = wisp_testkit::repo_root().join("target/release/wisp");
    if !sibling.exists() && !release.exists() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "wisp-cli", "--bin", "wisp"])
            .current_dir(wisp_testkit::repo_root())
            .status()
            .expect("running cargo build for wisp");
        assert!(status.success(), "building target/release/wisp failed");
    }
    if sibling.exists() { sibling } else { release }
}
