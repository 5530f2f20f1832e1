#!/usr/bin/env bash
# Installs what building and testing Wisp needs, then builds the node and the example functions.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

scripts/services.sh
cargo build --release --workspace
cargo build --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml
