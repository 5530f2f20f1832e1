#!/usr/bin/env bash
# Starts one Wisp node with the example functions deployed, printing how to call them.
# Extra arguments go to `wisp up` (see `target/release/wisp up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/wisp up --deploy-dir functions/target/wasm32-wasip2/release "$@"
