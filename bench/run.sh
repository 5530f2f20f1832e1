#!/usr/bin/env bash
# Reproduces the full benchmark report: builds Wisp (release) and the example functions,
# installs the `wasmtime serve` baseline if needed, then runs every scenario.
#
#   bench/run.sh [OUT_DIR]      (default: bench-out; extra wisp-bench flags after it)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench-out}"
shift || true

cargo build --release
cargo build --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml
bench/setup.sh
target/release/wisp-bench --out "$OUT" "$@"
echo "report: $OUT/report.md ($OUT/report.json, $OUT/chart.svg)"
