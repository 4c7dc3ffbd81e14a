#!/usr/bin/env bash
# Builds airlock's minimal microVM guest kernel: Debian's linux-source-6.1, `make tinyconfig`,
# guest/kernel/airlock-guest.config merged over it (everything the guest needs built in, no
# modules; the choices are documented there), `make vmlinux` — an uncompressed ELF that QEMU
# boots through PVH. Reproducible: the same source package and fragment give the same build
# (fixed build user, host and timestamp), kept under a key of both; built once.
#
# Usage: scripts/guest-kernel.sh [OUTDIR]
#   OUTDIR: default the microVM cache's guest-kernel/ ($AIRLOCK_CACHE_DIR, else
#   $XDG_CACHE_HOME/airlock, else ~/.cache/airlock, then microvm/guest-kernel), where
#   `airlock doctor` looks. Leaves OUTDIR/KEY/vmlinux (and its .config) and OUTDIR/vmlinux, a
#   symbolic link to it; prints the path last on stdout. JOBS: make's -j (default: nproc).
# Needs: apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev
# Boot it with `airlock run --backend microvm --kernel PATH`, `[sandbox] kernel = "PATH"` or
# AIRLOCK_KERNEL=PATH; a distribution kernel stays the default.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fragment=$here/guest/kernel/airlock-guest.config
src=/usr/src/linux-source-6.1.tar.xz
base=${AIRLOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock}
out=${1:-$base/microvm/guest-kernel}
jobs=${JOBS:-$(nproc)}
say() { echo "guest-kernel: $*" >&2; }
[ -f "$src" ] || { say "$src is missing (hint: apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev)"; exit 1; }
for t in make gcc flex bison bc; do
  command -v "$t" >/dev/null || { say "needs $t (hint: apt-get install build-essential flex bison bc libelf-dev)"; exit 1; }
done
[ -f /usr/include/libelf.h ] || { say "needs libelf's headers (hint: apt-get install libelf-dev)"; exit 1; }
# The key: the source package's version, the fragment, and the steps below (this script).
version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s-%Y "$src")
key=$( { echo "$version"; cat "$fragment" "$0"; } | sha256sum | cut -c1-16)
dest=$out/$key
if [ -f "$dest/vmlinux" ]; then
  say "already built ($key)"
else
  mkdir -p "$out"
  build=$(mktemp -d "$out/.build-XXXXXX")
  trap 'rm -rf "$build"' EXIT
  say "building from $src ($version), $jobs jobs; the source unpacks to ~1.3 GB in $build (removed after)"
  start=$(date +%s)
  tar -xf "$src" -C "$build" --strip-components=1
  export KBUILD_BUILD_USER=airlock KBUILD_BUILD_HOST=airlock KBUILD_BUILD_VERSION=1
  export KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 1970'
  make -s -C "$build" tinyconfig >/dev/null
  (cd "$build" && ./scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null)
  make -s -C "$build" olddefconfig >/dev/null
  # Every option the fragment sets must have survived olddefconfig (a missing dependency
  # silently drops one).
  lost=$(python3 - "$fragment" "$build/.config" <<'PY'
import sys
def opts(path, want):
    d = {}
    for l in open(path):
        l = l.strip()
        if l.startswith("CONFIG_"):
            k, v = l.split("=", 1)
            d[k] = v
        elif want and l.startswith("# CONFIG_") and l.endswith(" is not set"):
            d[l[2:-11]] = None
    return d
want, have = opts(sys.argv[1], True), opts(sys.argv[2], False)
print(" ".join(f"{k}={v or 'n'}(got {have.get(k) or 'n'})" for k, v in want.items() if have.get(k) != v))
PY
)
  [ -z "$lost" ] || { say "the configuration lost: $lost"; exit 1; }
  make -s -C "$build" -j"$jobs" vmlinux >&2
  mkdir -p "$dest.tmp"
  cp "$build/vmlinux" "$dest.tmp/vmlinux"
  cp "$build/.config" "$dest.tmp/vmlinux.config"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  say "built in $(( $(date +%s) - start )) s: $(grep -a -o -m1 'Linux version [^ ]*' "$dest/vmlinux" | head -1)"
fi
ln -sfn "$key/vmlinux" "$out/vmlinux"
say "use it: airlock run --backend microvm --kernel $dest/vmlinux …, or [sandbox] kernel = \"$dest/vmlinux\", or AIRLOCK_KERNEL=$dest/vmlinux"
echo "$dest/vmlinux"
