#!/usr/bin/env bash
# Builds the Python function into a wasi:http component with componentize-py (from PyPI, pinned
# in requirements.txt, installed into a venv under functions/target):
# functions/target/wasm32-wasip2/release/hello-py.wasm, beside the Rust functions so
# `wisp up --deploy-dir` (scripts/up.sh) deploys it too.
# Idempotent: rebuilt only when an input is newer than the output (FORCE=1 rebuilds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="$here/../target"
out="$target/wasm32-wasip2/release/hello-py.wasm"
venv="$target/python-venv"
inputs=("$here/app.py" "$here/requirements.txt" "$here"/../wit/*.wit "$here"/../wit/deps/*.wit)

fresh=1
[ "${FORCE:-0}" = 1 ] || [ ! -e "$out" ] && fresh=0
for f in "${inputs[@]}"; do [ "$f" -nt "$out" ] && fresh=0; done
[ "$fresh" = 1 ] && exit 0

if [ ! -e "$venv/.installed" ] || [ "$here/requirements.txt" -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  touch "$venv/.installed"
fi
mkdir -p "$(dirname "$out")"
cd "$here"
"$venv/bin/componentize-py" --quiet -d ../wit -w http componentize app -o "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out"
