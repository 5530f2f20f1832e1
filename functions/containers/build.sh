#!/usr/bin/env bash
# Builds the example container functions as OCI images (oci-archive tarballs):
#   target/httpd.tar   static site served by busybox httpd
#   target/native.tar  C HTTP server using POSIX threads and zlib
# No registry, no daemon, no Dockerfile: umoci writes an OCI image layout, tar makes it an
# oci-archive. Needs umoci, gcc with static glibc + zlib (zlib1g-dev), busybox-static.
# Idempotent: an image is rebuilt only when one of its inputs is newer than it (FORCE=1 rebuilds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
target="$here/target"
mkdir -p "$target"

# up_to_date OUT INPUT...: OUT exists and no INPUT is newer.
up_to_date() {
  local out="$1"; shift
  [ "${FORCE:-0}" = 1 ] && return 1
  [ -e "$out" ] || return 1
  local f
  for f in "$@"; do
    [ "$f" -nt "$out" ] && return 1
  done
  return 0
}

# new_image NAME: fresh layout + unpacked empty bundle in $target/work-NAME; sets $work $rootfs.
new_image() {
  work="$target/work-$1"
  rm -rf "$work"
  mkdir -p "$work"
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:latest"
  umoci unpack --image "$work/layout:latest" "$work/bundle" >/dev/null
  rootfs="$work/bundle/rootfs"
  # Mount points and a minimal /etc, so a runtime never has to create them in a (shared,
  # read-only) rootfs.
  mkdir -p "$rootfs"/{proc,sys,dev,tmp,etc}
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
}

# finish_image NAME [umoci config args...]: repack the rootfs as one layer, set the config,
# drop unreferenced blobs, write $target/NAME.tar atomically.
finish_image() {
  local name="$1"; shift
  umoci repack --image "$work/layout:latest" --history.comment "wisp example: $name" "$work/bundle"
  umoci config --image "$work/layout:latest" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env PORT=8080 --config.exposedports 8080/tcp --config.workingdir / \
    --config.label "org.opencontainers.image.title=wisp-$name" \
    --history.comment "wisp example: $name config" "$@"
  umoci gc --layout "$work/layout"
  tar -C "$work/layout" -cf "$target/$name.tar.tmp" .
  mv -f "$target/$name.tar.tmp" "$target/$name.tar"
  rm -rf "$work"
  echo "built $target/$name.tar ($(stat -c %s "$target/$name.tar") bytes)"
}

# --- httpd: busybox httpd serving httpd/www ------------------------------------------------
busybox=/bin/busybox
httpd_inputs=("$here/build.sh" "$busybox" $(find httpd -type f))
if up_to_date "$target/httpd.tar" "${httpd_inputs[@]}"; then
  echo "up to date: $target/httpd.tar"
else
  [ -x "$busybox" ] || { echo "missing $busybox (apt-get install busybox-static)" >&2; exit 1; }
  if ldd "$busybox" >/dev/null 2>&1; then
    echo "$busybox is not a static binary (install busybox-static)" >&2; exit 1
  fi
  new_image httpd
  mkdir -p "$rootfs/bin"
  cp "$busybox" "$rootfs/bin/busybox"
  ln -s busybox "$rootfs/bin/sh"
  cp -a httpd/www "$rootfs/www"
  chmod 755 "$rootfs/www/cgi-bin"/*
  # The runtime does not expand ${PORT}; the shell does. exec: httpd becomes PID 1.
  # Note: busybox httpd installs no SIGTERM handler, so as PID 1 it ignores SIGTERM and is
  # stopped by the platform's SIGKILL after the grace period.
  finish_image httpd \
    --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.entrypoint 'exec /bin/busybox httpd -f -v -p ${PORT:-8080} -h /www'
fi

# --- native: C server with pthreads + zlib ------------------------------------------------
native_inputs=("$here/build.sh" native/server.c)
if up_to_date "$target/native.tar" "${native_inputs[@]}"; then
  echo "up to date: $target/native.tar"
else
  [ -e /usr/include/zlib.h ] || { echo "missing zlib.h (apt-get install zlib1g-dev)" >&2; exit 1; }
  new_image native
  gcc -O2 -Wall -Wextra -static -pthread native/server.c -lz -o "$rootfs/server"
  strip "$rootfs/server"
  finish_image native --config.entrypoint /server
fi
