#!/usr/bin/env bash
# Installs the baseline for wisp-bench: wasmtime-cli 48.0.8 (`wasmtime serve`) into a cache
# directory outside the repository. Idempotent: does nothing when the binary already exists.
#
#   WISP_BENCH_CACHE   where to install (default: $HOME/.cache/wisp-bench); the binary ends up
#                      in $WISP_BENCH_CACHE/bin/wasmtime
set -euo pipefail

VERSION=48.0.8
CACHE="${WISP_BENCH_CACHE:-$HOME/.cache/wisp-bench}"
BIN="$CACHE/bin/wasmtime"

if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "wasmtime $VERSION"; then
    echo "setup: $("$BIN" --version) already installed at $BIN"
    exit 0
fi

mkdir -p "$CACHE"
echo "setup: installing wasmtime-cli@$VERSION into $CACHE (takes 10-15 minutes on 2 cores)"
# Its own target dir, so it neither contends with nor pollutes the workspace's target/.
CARGO_TARGET_DIR="$CACHE/build" cargo install "wasmtime-cli@$VERSION" --locked --root "$CACHE"
rm -rf "$CACHE/build"
echo "setup: installed $("$BIN" --version) at $BIN"
