#!/usr/bin/env bash
# Installs what building and testing Wisp needs, then builds the node and the example functions.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host tools for container functions (OCI images run by crun): install only what is missing.
need_pkgs=0
for c in crun umoci skopeo; do command -v "$c" >/dev/null || need_pkgs=1; done
test -e /bin/busybox || need_pkgs=1
test -e /usr/include/zlib.h || need_pkgs=1
if [ "$need_pkgs" = 1 ]; then
  pkgs=(crun umoci skopeo busybox-static zlib1g-dev)
  apt-get install -y --no-install-recommends "${pkgs[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; }
fi

rustup target add wasm32-wasip2
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

scripts/services.sh
cargo build --release --workspace
cargo build --release --target wasm32-wasip2 --manifest-path functions/Cargo.toml
# Python (componentize-py, PyPI) and JavaScript (ComponentizeJS, npm) functions.
functions/python/build.sh
functions/js/build.sh
functions/containers/build.sh
