#!/usr/bin/env bash
# Runs the whole test suite (unit, SDK, end-to-end through real sockets, bench smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The guest SDK is a wasm-side crate outside the workspace; its pure logic tests run natively.
cargo test --release --manifest-path sdk/Cargo.toml --target-dir functions/target
cargo nextest run --release --workspace --no-fail-fast
