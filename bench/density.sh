#!/usr/bin/env bash
# Density of idle named sandboxes: start N (default 200) through the engine, then measure the
# host-side memory they cost — the proportional set size (PSS) of each sandbox's supervisor and
# PID 1, and the drop in MemAvailable — and remove them all.
# Usage: bench/density.sh [N] [AIRLOCK_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
AIRLOCK=$(realpath "${2:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
work=$(mktemp -d)
export AIRLOCK_STATE_DIR="$work/state" AIRLOCK_RUNTIME_DIR="$work/run"
mkdir -p "$work/ws" && cd "$work/ws"
cleanup() {
  for i in $(seq "$N"); do "$AIRLOCK" rm --force "d$i" >/dev/null 2>&1 || true; done
  pkill -f "AIRLOCK_RUNTIME_DIR=$work/run" 2>/dev/null || true
  for p in $(pgrep -f "airlock engine serve"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "AIRLOCK_RUNTIME_DIR=$work/run" && kill "$p" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
avail() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }
"$AIRLOCK" list >/dev/null   # start the engine first: it is not part of a sandbox's cost
sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
before=$(avail)
start=$(date +%s.%N)
for i in $(seq "$N"); do
  "$AIRLOCK" create "d$i" --net off --workspace none >/dev/null
  "$AIRLOCK" start "d$i" >/dev/null
done
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
sleep 1
after=$(avail)
pss=0
for d in "$work"/state/sandboxes/*/; do
  sup=$(cat "$d/supervisor.pid"); pid1=$(cut -d' ' -f1 "$d/pid1")
  for p in $sup $pid1; do
    v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0); pss=$((pss + v))
  done
done
running=$("$AIRLOCK" list --json | grep -c '"running"' || true)
echo "| idle sandboxes running | host PSS per sandbox (supervisor + PID 1) | MemAvailable drop per sandbox | create+start each (s) |"
echo "|---:|---:|---:|---:|"
printf "| %d of %d | %d KiB | %d KiB | %.3f |\n" "$running" "$N" $((pss / N)) $(((before - after) / N)) "$(echo "$elapsed / $N" | bc -l)"
