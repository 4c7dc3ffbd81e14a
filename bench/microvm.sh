#!/usr/bin/env bash
# Boot-to-exit of a microVM sandbox next to raw QEMU booting the same kernel, in one hyperfine run.
# Usage: bench/microvm.sh [AIRLOCK_BIN]   (default: target/release/airlock; builds it if missing)
#   raw QEMU: the same machine, accelerator, memory and kernel (the cached vmlinux airlock boots),
#     with an initramfs holding only busybox and an /init that powers off at once;
#   airlock:  `airlock run --backend microvm --workspace none --net off -- true` — its init
#     loads the virtio/erofs/overlay modules, mounts the host image under an overlay, runs
#     `true` as the sandbox user, reports over virtio-serial, powers off; plus the container
#     around QEMU and the host side.
# Needs hyperfine, busybox-static, cpio, QEMU and a warm cache (run airlock once first; the first
# run builds the host image). Prints a markdown table of medians and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
for t in hyperfine busybox cpio qemu-system-x86_64; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AIRLOCK_STATE_DIR="$work/state"
cd "$work"
# Warm (and find) the cache: the kernel airlock boots, and its accelerator.
"$AIRLOCK" run --backend microvm --workspace none --net off -- true
cache=${AIRLOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock}/microvm
[ -d "$cache" ] || cache=$AIRLOCK_CACHE_DIR/microvm
vmlinux=$(ls -t "$cache"/vmlinux-* | head -1)
accel=tcg,tb-size=128; cpu=max
if ls "$cache"/accel-* >/dev/null 2>&1 && grep -qx kvm "$cache"/accel-*; then accel=kvm; cpu=host; fi
mkdir -p ird/bin && cp "$(command -v busybox)" ird/bin/busybox
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > ird/init && chmod +x ird/init
(cd ird && find . | cpio -o -H newc 2>/dev/null) > trivial.cpio
raw="qemu-system-x86_64 -M microvm -nodefaults -no-user-config -display none -no-reboot -serial none -parallel none -monitor none -accel $accel -cpu $cpu -m 1024M -smp 1 -kernel $vmlinux -initrd $work/trivial.cpio -append 'quiet loglevel=1 panic=-1 tsc_early_khz=2000000' -nic none"
hyperfine --runs "$RUNS" --warmup "$WARMUP" --export-json "$work/r.json" \
  -n 'raw qemu (trivial init)' "$raw" \
  -n 'airlock run --backend microvm -- true' "$AIRLOCK run --backend microvm --workspace none --net off -- true" >&2
python3 - "$work/r.json" "$accel" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
med = {x["command"]: x["median"] for x in r}
raw = med["raw qemu (trivial init)"]
print(f"accelerator: {sys.argv[2]}")
print("| command | median (s) | ratio to raw QEMU |")
print("|---|---:|---:|")
for name, m in med.items():
    print(f"| {name} | {m:.2f} | {m / raw:.2f} |")
PY
