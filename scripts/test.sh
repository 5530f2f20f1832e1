#!/usr/bin/env bash
# Runs the whole test suite: formatting and lints, then unit, SDK, end-to-end through real
# sockets, and the bench smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The guest SDK is a wasm-side crate outside the workspace; its pure logic tests run natively.
cargo test --release --manifest-path sdk/Cargo.toml --target-dir functions/target
cargo nextest run --release --workspace --no-fail-fast
