#!/usr/bin/env bash
# Manual smoke test: runs each built image under crun (no Wisp involved) and curls it.
#   functions/containers/check.sh [httpd|native]...     (default: both; run build.sh first)
# Bundle: `umoci unpack` of the oci-archive, then config.json adjusted the way the research note
# (shared/research/containers-billing.md, A2) describes: terminal off, read-only root, tmpfs /tmp,
# no /sys/fs/cgroup mount, host network (unique port via $PORT), K_* env set.
# On hosts with a hybrid cgroup layout (v2 tree at /sys/fs/cgroup/unified) crun 1.8 refuses to
# run; crun is then started inside `unshare -m` with that tree unmounted, and
# --cgroup-manager=disabled. Needs root, crun, umoci, curl, python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="$here/target"
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(httpd native)
work="$(mktemp -d /tmp/wisp-ctr-check.XXXXXX)"
port_base=${PORT_BASE:-18480}
failures=0
ids=()

cleanup() {
  local id
  for id in "${ids[@]}"; do crun delete -f "$id" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "  ok   $*"; }
bad() { echo "  FAIL $*"; failures=$((failures + 1)); }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

crun_run() { # crun_run ID BUNDLE LOG
  local hybrid=0
  mountpoint -q /sys/fs/cgroup/unified 2>/dev/null && hybrid=1
  if [ "$hybrid" = 1 ]; then
    unshare -m --propagation private sh -c \
      'umount /sys/fs/cgroup/unified && exec crun --cgroup-manager=disabled run -d --bundle "$2" "$1"' \
      sh "$1" "$2" >"$3" 2>&1 </dev/null
  else
    crun run -d --bundle "$2" "$1" >"$3" 2>&1 </dev/null
  fi
}

container_status() { # running | stopped | gone
  local s
  s=$(crun state "$1" 2>/dev/null) || { echo gone; return; }
  s=${s#*\"status\"}; s=${s#*\"}; echo "${s%%\"*}"
}

wait_http() { # wait_http PORT: up to 5 s
  local i
  for i in $(seq 1 5000); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
    sleep 0.001
  done
  return 1
}

wait_stopped() { # wait_stopped ID MAX_MS -> prints ms
  local t0 id=$1 max=$2
  t0=$(date +%s%N)
  while [ "$(container_status "$id")" = running ]; do
    [ "$(ms_since "$t0")" -gt "$max" ] && return 1
    sleep 0.005
  done
  ms_since "$t0"
}

start() { # start NAME PORT -> sets $id, $bundle; container running, HTTP answering
  local name=$1 port=$2
  id="wisp-check-$name-$$"
  bundle="$work/$name-bundle"
  local layout="$work/$name-layout"
  mkdir -p "$layout"
  tar -C "$layout" -xf "$target/$name.tar"
  umoci unpack --image "$layout:latest" "$bundle" >/dev/null
  python3 - "$bundle/config.json" "$port" "$name" <<'EOF'
import json, sys
path, port, name = sys.argv[1], sys.argv[2], sys.argv[3]
c = json.load(open(path))
c["process"]["terminal"] = False
env = [e for e in c["process"].get("env", []) if not e.startswith(("PORT=", "K_"))]
env += [f"PORT={port}", f"K_SERVICE={name}", f"K_REVISION={name}-00001", f"K_CONFIGURATION={name}"]
c["process"]["env"] = env
c["root"]["readonly"] = True
c["hostname"] = name
c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys/fs/cgroup", "/tmp")]
c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777", "size=16m"]})
ns = c["linux"]["namespaces"]
c["linux"]["namespaces"] = [n for n in ns if n["type"] not in ("network", "cgroup")]
c["linux"].pop("resources", None)
json.dump(c, open(path, "w"), indent=1)
EOF
  ids+=("$id")
  local t0; t0=$(date +%s%N)
  crun_run "$id" "$bundle" "$work/$name.log"
  local t_run; t_run=$(ms_since "$t0")
  if wait_http "$port"; then
    ok "$name: crun run -d returned in ${t_run} ms, first HTTP answer after $(ms_since "$t0") ms (incl. curl spawns)"
  else
    bad "$name: no HTTP answer on port $port; log:"; sed 's/^/       /' "$work/$name.log"; return 1
  fi
}

check_httpd() {
  local port=$((port_base + 0)) body
  echo "httpd:"
  start httpd "$port" || return 0
  body=$(curl -s "http://127.0.0.1:$port/")
  [[ $body == *"hello from a container"* ]] && ok "GET / contains 'hello from a container'" || bad "GET / -> $body"
  body=$(curl -s "http://127.0.0.1:$port/cgi-bin/env")
  [[ $body == *"K_SERVICE=httpd"* && $body == *"K_REVISION=httpd-00001"* ]] \
    && ok "GET /cgi-bin/env shows K_SERVICE=httpd K_REVISION=httpd-00001" || bad "GET /cgi-bin/env -> $body"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nope")
  [ "$code" = 404 ] && ok "GET /nope -> 404" || bad "GET /nope -> $code"
  # busybox httpd as PID 1 has no SIGTERM handler: the signal is dropped, SIGKILL is needed.
  crun kill "$id" TERM
  if ms=$(wait_stopped "$id" 500); then
    ok "SIGTERM stopped it in $ms ms"
  else
    ok "SIGTERM ignored (expected: busybox httpd as PID 1 has no handler); SIGKILL next"
    crun kill "$id" KILL
    ms=$(wait_stopped "$id" 2000) && ok "SIGKILL stopped it in $ms ms" || bad "still running after SIGKILL"
  fi
  crun delete -f "$id" && ok "crun delete"
}

check_native() {
  local port=$((port_base + 1)) body code
  echo "native:"
  start native "$port" || return 0
  body=$(curl -s "http://127.0.0.1:$port/")
  [[ $body == *"threads: "* && $body == *"zlib: "* && $body == *"K_SERVICE: native"* ]] \
    && ok "GET / -> $(echo "$body" | sed -n '2,3p' | tr '\n' ' ')" || bad "GET / -> $body"
  head -c 300000 /dev/urandom | base64 >"$work/in"
  curl -s -D "$work/h" --data-binary @"$work/in" -o "$work/out" "http://127.0.0.1:$port/compress"
  if python3 -c 'import zlib,sys; a=open(sys.argv[1],"rb").read(); b=open(sys.argv[2],"rb").read(); sys.exit(zlib.decompress(b)!=a)' "$work/in" "$work/out" \
     && grep -qi "^X-Original-Length: $(stat -c %s "$work/in")" "$work/h"; then
    ok "POST /compress: $(stat -c %s "$work/in") -> $(stat -c %s "$work/out") bytes, round-trips, X-Original-Length ok"
  else
    bad "POST /compress"; cat "$work/h"
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nope")
  [ "$code" = 404 ] && ok "GET /nope -> 404" || bad "GET /nope -> $code"
  # keep-alive: three requests on one connection
  n=$(curl -sv "http://127.0.0.1:$port/" "http://127.0.0.1:$port/" "http://127.0.0.1:$port/nope" 2>&1 | grep -c 'Re-using existing connection' || true)
  [ "$n" = 2 ] && ok "keep-alive: 3 requests on 1 connection" || bad "keep-alive reuse count $n"
  # concurrency: 32 parallel compress requests
  seq 1 32 | xargs -P 32 -I{} curl -s -o /dev/null -w '%{http_code}\n' --data-binary @"$work/in" "http://127.0.0.1:$port/compress" >"$work/par"
  [ "$(grep -c '^200$' "$work/par")" = 32 ] && ok "32 parallel POST /compress -> 200" || bad "parallel: $(sort "$work/par" | uniq -c | tr '\n' ' ')"
  # limits
  head -c $((8 * 1024 * 1024 + 1)) /dev/zero >"$work/big"
  code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$work/big" "http://127.0.0.1:$port/compress")
  [ "$code" = 413 ] && ok "8 MiB + 1 body -> 413" || bad "big body -> $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 17000 /dev/zero | tr '\0' a)" "http://127.0.0.1:$port/")
  [ "$code" = 431 ] && ok "17 KB header -> 431" || bad "big header -> $code"
  # SIGTERM -> prompt exit
  crun kill "$id" TERM
  ms=$(wait_stopped "$id" 2000) && ok "SIGTERM: stopped in $ms ms" || bad "SIGTERM: still running after 2 s"
  crun delete -f "$id" && ok "crun delete"
  # /crash: the process dies under the request
  port=$((port_base + 2))
  rm -rf "$work/native-layout" "$work/native-bundle"
  start native "$port" || return 0
  code=0; curl -s -o /dev/null "http://127.0.0.1:$port/crash" || code=$?
  [ "$code" = 52 ] || [ "$code" = 56 ] && ok "GET /crash: curl exit $code (connection closed without a response)" || bad "GET /crash: curl exit $code"
  ms=$(wait_stopped "$id" 2000) && ok "container stopped $ms ms after the crash" || bad "still running after /crash"
  crun delete -f "$id" && ok "crun delete"
}

for img in "${images[@]}"; do
  [ -e "$target/$img.tar" ] || { bad "$target/$img.tar missing (run build.sh)"; continue; }
  "check_$img"
done
[ "$failures" = 0 ] && echo "all checks passed" || { echo "$failures check(s) failed"; exit 1; }
