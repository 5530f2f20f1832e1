#!/usr/bin/env bash
# Builds the JavaScript function into a wasi:http component with ComponentizeJS (from npm, pinned
# in package.json, resolved by package-lock.json): functions/target/wasm32-wasip2/release/hello-js.wasm, beside the Rust
# functions so `wisp up --deploy-dir` (scripts/up.sh) deploys it too.
# Idempotent: rebuilt only when an input is newer than the output (FORCE=1 rebuilds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../target/wasm32-wasip2/release/hello-js.wasm"
inputs=("$here/hello.js" "$here/package-lock.json" "$here"/../wit/*.wit "$here"/../wit/deps/*.wit)

fresh=1
[ "${FORCE:-0}" = 1 ] || [ ! -e "$out" ] && fresh=0
for f in "${inputs[@]}"; do [ "$f" -nt "$out" ] && fresh=0; done
[ "$fresh" = 1 ] && exit 0

cd "$here"
if [ ! -e node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install` rather than `npm ci`: npm 11's ci refuses this lock file over optional
  # packages of other platforms it lacks; install resolves from it and leaves it unchanged.
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error
fi
mkdir -p "$(dirname "$out")"
node node_modules/@bytecodealliance/componentize-js/src/cli.js hello.js \
  --wit ../wit --world-name http --out "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out"
