#!/usr/bin/env bash
# Boot-to-exit of a microVM sandbox next to raw QEMU booting the same kernel, in one hyperfine run.
# Usage: bench/microvm.sh [AIRLOCK_BIN]   (default: target/release/airlock; builds it if missing)
#   raw QEMU: airlock's own QEMU command line (taken from AIRLOCK_TIMING=1) without its disks,
#     channel and NIC, with an initramfs holding only busybox and an /init that powers off at once;
#   raw QEMU with airlock's devices: the same with airlock's disks (read-only) and its channel's
#     virtio-serial port (on a null chardev) kept — the issue's "same QEMU command line started
#     by hand with a trivial init": its kernel probes the same devices;
#   airlock:  `airlock run --backend microvm --workspace none --net off -- true` — under TCG
#     from its boot snapshot (the warm-up run saves it if the cache has none: a guest that
#     booted, loaded its modules and waits for its job): QEMU loads the devices' state, the
#     guest's init mounts the host image under an overlay, runs `true` as the sandbox user,
#     reports over virtio-serial; plus the container around QEMU and the host side. With
#     AIRLOCK_VM_SNAPSHOT=0 it boots instead (the init then also loads the virtio/erofs/overlay
#     modules of a distribution kernel): the boot path against raw QEMU's boot.
# Needs hyperfine, busybox-static, cpio, QEMU and a warm cache (run airlock once first; the first
# run builds the host image). Prints a markdown table of medians and the ratio (hyperfine), the
# same from PAIRS interleaved runs (default 5; 0: none), and one run's AIRLOCK_TIMING phases.
#   CHRT=1: every timed run (both sides) under `chrt -f 1` (root): on a machine loaded by other
#     builds, QEMU's threads then get their CPU when they want it, and the spread shrinks. The
#     other builds wait for the VM; use it for seconds, not for hours.
#   BASE=/path/to/another/airlock: a third side in the pairs (e.g. a build of main: before/after).
#   CPU columns: since a run ends QEMU's sandbox by SIGKILL at the guest's exit report, QEMU is
#     not reaped by airlock and its CPU time is no longer in airlock's rusage: airlock's CPU
#     figure is its own process only (~0.01 s); compare wall times.
#   AIRLOCK_KERNEL=/path/to/vmlinux: boot that kernel (both sides: raw QEMU takes airlock's
#     command line), e.g. airlock's minimal guest kernel (scripts/guest-kernel.sh); default:
#     the distribution kernel airlock finds.
#   GAP=N: N seconds of idle before every timed run (hyperfine's --prepare, and in the pairs):
#     runs a few seconds apart, as a user starts them, instead of back to back — on a host that
#     hands free memory back to its hypervisor (free page reporting) a run's memory then comes
#     back cold, which back-to-back runs (reusing the last run's freed pages) never see.
#   THP=off: the whole bench (raw QEMU too) without transparent huge pages (PR_SET_THP_DISABLE,
#     inherited): airlock runs its QEMU that way under TCG; by hand, QEMU's guest RAM is
#     faulted in 2 MiB at a time where THP is enabled (`always`, or `madvise`: QEMU asks).
set -euo pipefail
if [ "${THP:-}" = off ] && [ -z "${THP_IS_OFF:-}" ]; then
  exec env THP_IS_OFF=1 python3 -c 'import ctypes, os, sys
if ctypes.CDLL(None).prctl(41, 1, 0, 0, 0): sys.exit("prctl(PR_SET_THP_DISABLE) failed")
os.execvp(sys.argv[1], sys.argv[1:])' "$0" "$@"
fi
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
for t in hyperfine busybox cpio qemu-system-x86_64; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
RUNS=${RUNS:-10}
PRIO=()
[ "${CHRT:-0}" = 1 ] && PRIO=(chrt -f 1)
BASE=${BASE:+$(realpath "$BASE")}
WARMUP=${WARMUP:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AIRLOCK_STATE_DIR="$work/state"
cd "$work"
# Warm the cache, and take airlock's exact QEMU command line (AIRLOCK_TIMING prints it).
AIRLOCK_TIMING=1 "$AIRLOCK" run --backend microvm --workspace none --net off -- true 2> warm.log
cache=${AIRLOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock}/microvm
mkdir -p ird/bin && cp "$(command -v busybox)" ird/bin/busybox
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > ird/init && chmod +x ird/init
(cd ird && find . | cpio -o -H newc 2>/dev/null) > trivial.cpio
# Raw QEMU: airlock's command line (same machine, accelerator, CPU, memory, kernel, kernel
# command line) with the trivial initramfs and the kernel command line up to airlock's own
# arguments; twice: without airlock's devices (disks, channel) — `raw`, the strict baseline —
# and with them (`rawdev`: the same disks read-only, the channel's virtio-serial port on a null
# chardev), the issue's "same QEMU command line started by hand" whose kernel probes the
# same devices. Both ratios are printed.
raws=$(python3 - "$cache" "$work/trivial.cpio" <<'PY'
import json, shlex, sys
cache, trivial = sys.argv[1], sys.argv[2]
line = next(l for l in open("warm.log") if "qemu argv " in l)
argv = json.loads(line.split("qemu argv ", 1)[1])
def raw(devices):
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        v = argv[i + 1] if i + 1 < len(argv) else ""
        if a in ("-netdev", "-nic") or (a in ("-drive", "-device", "-chardev") and not devices):
            i += 2
            continue
        if a == "-initrd":
            out += [a, trivial]
        elif a in ("-kernel", "-drive"):
            out += [a, v.replace("/airlock-vm/cache", cache)]
        elif a == "-chardev":
            out += [a, "null,id=" + v.split("id=", 1)[1].split(",")[0]]
        elif a == "-append":
            out += [a, v.split(" airlock.v=")[0]]
        else:
            out.append(a)
            i += 1
            continue
        i += 2
    return shlex.join(out + ["-nic", "none"])
print(raw(False))
print(raw(True))
PY
)
raw=$(sed -n 1p <<<"$raws")
rawdev=$(sed -n 2p <<<"$raws")
echo "raw: $raw" >&2
echo "rawdev: $rawdev" >&2
accel=$(grep -o -- '-accel","[^"]*' warm.log | head -1 | cut -d'"' -f3)
[ -n "$BASE" ] && "$BASE" run --backend microvm --workspace none --net off -- true
GAP=${GAP:-0}
"${PRIO[@]}" hyperfine --runs "$RUNS" --warmup "$WARMUP" --prepare "sleep $GAP" --export-json "$work/r.json" \
  -n 'raw qemu (trivial init)' "$raw" \
  -n 'raw qemu, airlock devices (trivial init)' "$rawdev" \
  -n 'airlock run --backend microvm -- true' "$AIRLOCK run --backend microvm --workspace none --net off -- true" >&2
kernel=$(grep -o -- '-kernel","[^"]*' warm.log | head -1 | cut -d'"' -f3)
python3 - "$work/r.json" "$accel" "${kernel##*/}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
med = {x["command"]: x["median"] for x in r}
cpu = {x["command"]: x["user"] + x["system"] for x in r}
raw = med["raw qemu (trivial init)"]
rawdev = med["raw qemu, airlock devices (trivial init)"]
raw_cpu = cpu["raw qemu (trivial init)"]
print(f"accelerator: {sys.argv[2]}; kernel: {sys.argv[3]}")
print("| command | median (s) | ratio to raw QEMU | ratio to raw QEMU with airlock's devices | CPU user+sys, mean (s) | CPU ratio |")
print("|---|---:|---:|---:|---:|---:|")
for name, m in med.items():
    print(f"| {name} | {m:.2f} | {m / raw:.2f} | {m / rawdev:.2f} | {cpu[name]:.2f} | {cpu[name] / raw_cpu:.2f} |")
PY
# The same pair interleaved (PAIRS times, raw then airlock): on a loaded machine hyperfine's two
# blocks run under different load; pairs see the same. Medians of wall and CPU (user+sys).
PAIRS=${PAIRS:-5}
if [ "$PAIRS" -gt 0 ]; then
  for _ in $(seq "$PAIRS"); do
    sleep "$GAP"
    "${PRIO[@]}" /usr/bin/time -f "raw %e %U %S" -a -o pairs.txt sh -c "$raw"
    sleep "$GAP"
    "${PRIO[@]}" /usr/bin/time -f "rawdev %e %U %S" -a -o pairs.txt sh -c "$rawdev"
    sleep "$GAP"
    "${PRIO[@]}" /usr/bin/time -f "airlock %e %U %S" -a -o pairs.txt \
      "$AIRLOCK" run --backend microvm --workspace none --net off -- true
    if [ -n "$BASE" ]; then
      sleep "$GAP"
      "${PRIO[@]}" /usr/bin/time -f "base %e %U %S" -a -o pairs.txt \
        "$BASE" run --backend microvm --workspace none --net off -- true
    fi
  done
  python3 - <<'PY'
import statistics as st
rows = [l.split() for l in open("pairs.txt") if l.split()[:1] in (["raw"], ["rawdev"], ["airlock"], ["base"])]
sides = [k for k in ("raw", "rawdev", "airlock", "base") if any(r[0] == k for r in rows)]
walls = {k: [float(r[1]) for r in rows if r[0] == k] for k in sides}
wall = {k: st.median(v) for k, v in walls.items()}
cpu = {k: st.median(float(r[2]) + float(r[3]) for r in rows if r[0] == k) for k in sides}
# Each round's own ratio (its sides ran back to back, under about the same load).
per = {k: st.median(a / r for a, r in zip(walls[k], walls["raw"])) for k in sides}
dev = {k: st.median(a / r for a, r in zip(walls[k], walls["rawdev"])) for k in sides}
print()
print(f"interleaved rounds ({len(walls['raw'])}):")
print("| command | median (s) | ratio of medians | median of per-round ratios | per-round ratio to rawdev | CPU user+sys, median (s) | CPU ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for k in sides:
    print(f"| {k} | {wall[k]:.2f} | {wall[k] / wall['raw']:.2f} | {per[k]:.2f} | {dev[k]:.2f} | {cpu[k]:.2f} | {cpu[k] / cpu['raw']:.2f} |")
PY
fi
# Where the time goes: one run's phases (host) and the guest init's steps.
echo >&2
AIRLOCK_TIMING=1 "$AIRLOCK" run --backend microvm --workspace none --net off -- true 2>&1 \
  | grep -E 'planned|before exec|channel connected|guest up|guest \+|cmd exited|cleaned up' >&2
